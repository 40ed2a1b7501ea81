package chunknet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index/format"
)

// Transport makes the byte streams peers talk over. The default is plain
// TCP; an authenticated, encrypted transport replaces it without touching
// anything above.
type Transport interface {
	Listen(addr string) (net.Listener, error)
	Dial(ctx context.Context, addr string) (net.Conn, error)
}

// TCP is the plain TCP transport.
type TCP struct{}

func (TCP) Listen(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
func (TCP) Dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// Sentinel errors of the peer layer.
var (
	ErrClosed      = errors.New("connection closed")
	ErrPeerLeft    = errors.New("peer left")
	ErrUnavailable = errors.New("no replica could serve the chunk")
	ErrNotDurable  = errors.New("chunk not stored on enough replicas")
	// ErrNotStored: chunks could not be stored anywhere, not even on this
	// node: the bytes are lost, and the write that made them must fail.
	ErrNotStored = errors.New("chunk stored nowhere")
)

// RemoteError is an Error frame a peer answered with.
type RemoteError struct {
	Code uint16
	Msg  string
}

func (e *RemoteError) Error() string { return fmt.Sprintf("peer error %d: %s", e.Code, e.Msg) }

const (
	handshakeTimeout = 5 * time.Second
	writeTimeout     = 15 * time.Second
)

// handshake runs the hello exchange on a fresh connection, the one place
// where a peer is admitted. Both sides send a Hello, check the other's, then
// send a verdict byte; either refusal ends the connection before any index
// or chunk data moves. A non-zero want is the node the connection
// authenticated (TLS): the hello must name it.
func handshake(conn net.Conn, self wire.Hello, want format.NodeID) (wire.Hello, error) {
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	defer conn.SetDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() { errc <- wire.WriteHello(conn, self) }()
	peer, err := wire.ReadHello(conn)
	if werr := <-errc; werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		if errors.Is(err, wire.ErrVersion) {
			wire.WriteVerdict(conn, wire.VerdictVersion)
		}
		return peer, err
	}
	verdict := byte(wire.VerdictAccept)
	var ourErr error
	switch {
	case peer.Network != self.Network:
		verdict = wire.VerdictWrongNetwork
		ourErr = fmt.Errorf("peer %s is on network %q, we are on %q", peer.Node.Short(), peer.Network, self.Network)
	case peer.Node == self.Node:
		verdict = wire.VerdictSameNode
		ourErr = errSelf
	case !want.IsZero() && peer.Node != want:
		verdict = wire.VerdictImpostor
		ourErr = fmt.Errorf("peer authenticated as %s says it is %s", want.Short(), peer.Node.Short())
	}
	go func() { errc <- wire.WriteVerdict(conn, verdict) }()
	perr := wire.ReadVerdict(conn)
	werr := <-errc
	switch {
	case ourErr != nil:
		return peer, ourErr
	case perr != nil:
		return peer, perr
	case werr != nil:
		return peer, werr
	}
	return peer, nil
}

var errSelf = errors.New("connected to ourselves")

// frameWriter serializes whole frames onto a connection: one writer at a
// time, one write per frame (writev(2) over plain TCP, one sealed buffer
// between members).
type frameWriter struct {
	mu     sync.Mutex
	conn   net.Conn
	sealed *sealedConn
}

func newFrameWriter(conn net.Conn) frameWriter {
	sc, _ := conn.(*sealedConn)
	return frameWriter{conn: conn, sealed: sc}
}

func (w *frameWriter) write(frame []byte) error {
	return w.writev([][]byte{frame}, nil, nil)
}

// writev writes one frame given as pieces; named(i), if not nil, says the
// receiver checks piece i against the names of its chunks (it may go in
// bulk records between members), and pre(i), if not nil, gives that
// piece encrypted once for every peer it goes to (sealedConn.writeFrame).
func (w *frameWriter) writev(frame [][]byte, named func(i int) bool, pre func(i int) *onceSealed) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if w.sealed != nil {
		return w.sealed.writeFrame(frame, named, pre)
	}
	if len(frame) == 1 {
		_, err := w.conn.Write(frame[0])
		return err
	}
	bufs := net.Buffers(frame)
	_, err := bufs.WriteTo(w.conn)
	return err
}

type response struct {
	typ     wire.Type
	payload []byte
	err     error
}

// clientConn is our outbound connection to one peer: we send requests on
// it, the peer answers. Requests are multiplexed by ID, so any number can be
// in flight; one goroutine (readLoop) reads and hands each response to its
// waiter. When the connection ends, every waiter is released with the error.
type clientConn struct {
	peer wire.Hello
	addr string
	w    frameWriter

	lastRecv atomic.Int64  // unix nanoseconds of the last frame received
	readIdle time.Duration // Config.ReadIdle, set by readLoop

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan response
	err     error // set once closed
	done    chan struct{}
}

func newClientConn(conn net.Conn, peer wire.Hello, addr string) *clientConn {
	c := &clientConn{
		peer:    peer,
		addr:    addr,
		w:       newFrameWriter(conn),
		nextID:  1,
		pending: make(map[uint64]chan response),
		done:    make(chan struct{}),
	}
	c.lastRecv.Store(time.Now().UnixNano())
	return c
}

// silentFor reports how long nothing has arrived on the connection.
func (c *clientConn) silentFor() time.Duration {
	return time.Duration(time.Now().UnixNano() - c.lastRecv.Load())
}

func (c *clientConn) close(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	c.w.conn.Close()
	for _, ch := range pending {
		ch <- response{err: err}
	}
	close(c.done)
}

func (c *clientConn) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// readLoop owns reading from the connection until it fails.
func (c *clientConn) readLoop(maxPayload int, readIdle time.Duration) {
	c.readIdle = readIdle
	rd := wire.NewReader(c.w.conn, maxPayload)
	// A response's payload goes to its caller as it was read, uncopied.
	rd.Alloc = func(n int) []byte { return make([]byte, n) }
	for {
		c.w.conn.SetReadDeadline(time.Now().Add(c.readIdle))
		f, err := rd.Next()
		if err != nil {
			c.close(fmt.Errorf("%w: %v", ErrClosed, err))
			return
		}
		c.lastRecv.Store(time.Now().UnixNano())
		if f.Type == wire.TypeBye {
			c.close(ErrPeerLeft)
			return
		}
		if !f.Type.IsResponse() {
			c.close(fmt.Errorf("%w: peer sent request type %v on our client connection", ErrClosed, f.Type))
			return
		}
		c.mu.Lock()
		ch, ok := c.pending[f.ReqID]
		delete(c.pending, f.ReqID)
		c.mu.Unlock()
		if !ok {
			continue // the caller gave up (context cancelled)
		}
		ch <- response{typ: f.Type, payload: f.Payload}
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// call sends one request built by build and waits for its response. An
// Error frame becomes a *RemoteError.
func (c *clientConn) call(ctx context.Context, build func(dst []byte, id uint64) []byte) (wire.Type, []byte, error) {
	return c.roundTrip(ctx, func(id uint64) error {
		bp := bufPool.Get().(*[]byte)
		frame := build((*bp)[:0], id)
		err := c.w.write(frame)
		*bp = frame[:0]
		bufPool.Put(bp)
		return err
	})
}

// putGroups is call for a PutGroups frame built as pieces (see
// wire.PutGroupsVec) and written with one writev: the groups' data is
// sent from the caller's buffers, not copied into a frame, and between
// members in bulk records (the receiver checks it against the groups'
// names).
func (c *clientConn) putGroups(ctx context.Context, groups []wire.Group, seals []*onceSealed) (wire.Type, []byte, error) {
	var pre func(i int) *onceSealed
	if seals != nil {
		pre = func(i int) *onceSealed { return seals[i/2] } // piece 2k+1 is group k's data
	}
	return c.roundTrip(ctx, func(id uint64) error {
		bp := bufPool.Get().(*[]byte)
		buf, frame := wire.PutGroupsVec((*bp)[:0], id, groups)
		err := c.w.writev(frame, wire.PutGroupsData, pre)
		*bp = buf[:0]
		bufPool.Put(bp)
		return err
	})
}

// roundTrip sends request id with send and waits for its response.
func (c *clientConn) roundTrip(ctx context.Context, send func(id uint64) error) (wire.Type, []byte, error) {
	ch := make(chan response, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, nil, err
	}
	id := c.nextID
	c.nextID++
	c.pending[id] = ch
	c.mu.Unlock()

	if err := send(id); err != nil {
		c.close(fmt.Errorf("%w: write: %v", ErrClosed, err))
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return 0, nil, r.err
		}
		if r.typ == wire.TypeError {
			code, msg, derr := wire.DecodeError(r.payload)
			if derr != nil {
				return 0, nil, derr
			}
			return 0, nil, &RemoteError{Code: code, Msg: msg}
		}
		return r.typ, r.payload, nil
	case <-ctx.Done():
		c.mu.Lock()
		if c.pending != nil {
			delete(c.pending, id)
		}
		c.mu.Unlock()
		return 0, nil, ctx.Err()
	}
}

// expect checks a response's type.
func expect(got, want wire.Type) error {
	if got != want {
		return fmt.Errorf("%w: got %v, want %v", wire.ErrBadFrame, got, want)
	}
	return nil
}

// peer is one live peer: the outbound connection we send requests on and
// the goroutines that keep it alive and in sync.
type peer struct {
	id    format.NodeID
	addr  string
	cc    *clientConn
	pushq chan []byte   // encoded records to push, in commit order
	kick  chan struct{} // ask the puller to pull now

	// Read latency, for hedged reads (askPeers): a moving average of the
	// peer's answers to gets, in ns, and whether a read gave up waiting
	// for it and it has not answered one since (it is then asked last).
	latency atomic.Int64
	stalled atomic.Bool
}
