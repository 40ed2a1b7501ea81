package chunknet

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
)

// faultNet is a Transport over loopback TCP whose links the test breaks:
// it can freeze connections (reads deliver nothing, writes are swallowed:
// a hung peer or a partition that loses packets), kill them (close the
// socket under the node) and refuse new ones.
type faultNet struct {
	mu    sync.Mutex
	conns []*faultConn

	refuse atomic.Bool  // Dial fails and accepted connections are closed at once
	dials  atomic.Int64 // Dial calls
}

var errPartitioned = errors.New("faultNet: partitioned")

func (f *faultNet) Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &faultListener{Listener: ln, f: f}, nil
}

func (f *faultNet) Dial(ctx context.Context, addr string) (net.Conn, error) {
	f.dials.Add(1)
	if f.refuse.Load() {
		return nil, errPartitioned
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return f.track(c, addr), nil
}

func (f *faultNet) track(c net.Conn, dialed string) *faultConn {
	fc := &faultConn{Conn: c, dialed: dialed}
	f.mu.Lock()
	f.conns = append(f.conns, fc)
	f.mu.Unlock()
	return fc
}

// open returns the connections not closed yet (dialed == "" for all,
// else only those dialed to that address).
func (f *faultNet) open(dialed string) []*faultConn {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*faultConn
	for _, c := range f.conns {
		if !c.closed.Load() && (dialed == "" || c.dialed == dialed) {
			out = append(out, c)
		}
	}
	return out
}

type faultListener struct {
	net.Listener
	f *faultNet
}

func (l *faultListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.f.refuse.Load() {
			c.Close()
			continue
		}
		return l.f.track(c, ""), nil
	}
}

type faultConn struct {
	net.Conn
	dialed string // address dialed; "" for an accepted connection

	frozen atomic.Bool
	// drop[t] swallows the frames of type t written on this connection,
	// and only those: a peer that answers pings but not reads.
	drop   [256]atomic.Bool
	closed atomic.Bool // Close was called (by the node or by kill)
	// Frames written, by frame type, passed on or swallowed while frozen.
	// Nodes write one whole frame per Write; handshake bytes count as
	// type 0.
	sent, swallowed [256]atomic.Int64
}

// frameType is the type byte of a frame written in one Write.
func frameType(p []byte) wire.Type {
	if len(p) < wire.HeaderSize {
		return 0
	}
	return wire.Type(p[4])
}

// Read drops whatever arrives while the connection is frozen, so a frozen
// read blocks until the deadline or the close the node decides on.
func (c *faultConn) Read(p []byte) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		if !c.frozen.Load() {
			return n, err
		}
		if err != nil {
			return 0, err
		}
	}
}

func (c *faultConn) Write(p []byte) (int, error) {
	if c.frozen.Load() || c.drop[frameType(p)].Load() {
		c.swallowed[frameType(p)].Add(1)
		return len(p), nil
	}
	c.sent[frameType(p)].Add(1)
	return c.Conn.Write(p)
}

func (c *faultConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

// logRecorder collects the reasons of the "peer down" messages of a node.
type logRecorder struct {
	mu    sync.Mutex
	downs []string
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "peer down" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "why" {
			h.mu.Lock()
			h.downs = append(h.downs, a.Value.String())
			h.mu.Unlock()
		}
		return true
	})
	return nil
}

func (h *logRecorder) reasons() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.downs...)
}

// A peer that stops answering (its link frozen: nothing gets through, but
// no socket error either) is dropped by the pings within DeadAfter, on both
// sides; once the link heals, the nodes find each other again.
func TestPeerDroppedWhenLinkFreezes(t *testing.T) {
	fn := &faultNet{}
	timing := Config{PingInterval: 100 * time.Millisecond, DeadAfter: 500 * time.Millisecond}
	withFaults := timing
	withFaults.Transport = fn
	a := startNode(t, withFaults)
	b := startNode(t, timing)
	connectAll(t, a, b)

	frozen := fn.open("")
	if len(frozen) != 2 { // a's outbound connection and b's inbound one
		t.Fatalf("%d open connections, want 2", len(frozen))
	}
	fn.refuse.Store(true)
	start := time.Now()
	for _, c := range frozen {
		c.frozen.Store(true)
	}
	waitFor(t, 2*time.Second, "both nodes to drop the silent peer", func() bool {
		return len(a.node.Peers()) == 0 && len(b.node.Peers()) == 0
	})
	t.Logf("silent peer dropped after %v", time.Since(start).Round(time.Millisecond))
	// The nodes gave up on those connections: they closed them.
	waitFor(t, 2*time.Second, "the frozen connections to be closed", func() bool {
		for _, c := range frozen {
			if !c.closed.Load() {
				return false
			}
		}
		return true
	})

	fn.refuse.Store(false)
	waitFor(t, 10*time.Second, "the nodes to reconnect after the link healed", func() bool {
		return hasPeer(a.node, b.node.ID()) && hasPeer(b.node, a.node.ID())
	})
}

// A node that closes says goodbye: its peers drop it at once, without
// waiting for a ping to fail.
func TestPeerDroppedOnCleanClose(t *testing.T) {
	rec := &logRecorder{}
	slow := Config{PingInterval: time.Minute, DeadAfter: time.Minute}
	a := startNode(t, slow)
	withLog := slow
	withLog.Logger = slog.New(rec)
	b := startNode(t, withLog)
	connectAll(t, a, b)

	start := time.Now()
	a.closeNode()
	// The node logs "peer down" just after it drops the peer: wait for
	// both.
	waitFor(t, time.Second, "b to drop the node that closed", func() bool {
		return len(b.node.Peers()) == 0 && len(rec.reasons()) > 0
	})
	t.Logf("closed peer dropped after %v", time.Since(start).Round(time.Millisecond))
	reasons := rec.reasons()
	if len(reasons) != 1 || reasons[0] != ErrPeerLeft.Error() {
		t.Errorf("peer down reasons %q, want one %q (the goodbye)", reasons, ErrPeerLeft)
	}
}

// A connection that breaks under the node (socket closed, no goodbye) is
// noticed by the reader on both sides at once, not by the next ping.
func TestPeerDroppedWhenConnectionKilled(t *testing.T) {
	fn := &faultNet{}
	slow := Config{PingInterval: time.Minute, DeadAfter: time.Minute}
	withFaults := slow
	withFaults.Transport = fn
	a := startNode(t, withFaults)
	b := startNode(t, slow)
	connectAll(t, a, b)

	fn.refuse.Store(true)
	killed := fn.open("")
	if len(killed) != 2 {
		t.Fatalf("%d open connections, want 2", len(killed))
	}
	dials := fn.dials.Load()
	for _, c := range killed {
		c.Conn.Close()
	}
	waitFor(t, 2*time.Second, "both nodes to notice the broken connections", func() bool {
		return len(a.node.Peers()) == 0 && len(b.node.Peers()) == 0
	})
	waitFor(t, 2*time.Second, "a to redial", func() bool { return fn.dials.Load() > dials })

	fn.refuse.Store(false)
	waitFor(t, 10*time.Second, "the nodes to reconnect", func() bool {
		return hasPeer(a.node, b.node.ID()) && hasPeer(b.node, a.node.ID())
	})
}
