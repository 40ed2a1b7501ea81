package chunknet

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oashare/oashare/index/format"
)

// flipProxy forwards TCP connections to target, and flips one bit in the
// middle of the first bulk record a client sends through it (it walks
// the TLS records of the handshake, then our records).
type flipProxy struct {
	ln      net.Listener
	target  string
	flipped atomic.Int32
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
}

func startFlipProxy(t *testing.T, target string) *flipProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &flipProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *flipProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); io.Copy(c, s); c.Close() }()
		go func() { defer p.wg.Done(); p.tamper(s, c); s.Close() }()
	}
}

// tamper copies src to dst record by record: a TLS record starts with
// its content type (20 to 23), one of ours with the high byte of its
// length (0, 0x40 for a key record, or 0x80 for a bulk record).
func (p *flipProxy) tamper(dst io.Writer, src io.Reader) {
	for {
		hdr := make([]byte, 5)
		if _, err := io.ReadFull(src, hdr[:1]); err != nil {
			return
		}
		var n int
		bulk := false
		switch b := hdr[0]; {
		case b >= 20 && b <= 23: // TLS
			if _, err := io.ReadFull(src, hdr[1:5]); err != nil {
				return
			}
			n = int(binary.BigEndian.Uint16(hdr[3:5]))
		default: // ours
			if _, err := io.ReadFull(src, hdr[1:4]); err != nil {
				return
			}
			hdr = hdr[:4]
			h := binary.BigEndian.Uint32(hdr)
			bulk, n = h&bulkFlag != 0, int(h&^(bulkFlag|keyFlag))
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(src, body); err != nil {
			return
		}
		if bulk && p.flipped.CompareAndSwap(0, 1) {
			body[n/2] ^= 0x10
		}
		if _, err := dst.Write(append(hdr, body...)); err != nil {
			return
		}
	}
}

// TestBulkFlippedOnTheWire: an attacker on the path between two members
// flips a bit of group data in a bulk record. The receiver refuses that
// group (its bytes do not match its name) and stores nothing wrong; the
// writer sends it again, and every copy of the file is intact.
func TestBulkFlippedOnTheWire(t *testing.T) {
	cfg := func() Config {
		_, key, _ := ed25519.GenerateKey(nil)
		return Config{Identity: key, Replicas: 2, RetryFor: 5 * time.Second}
	}
	a := startNode(t, cfg())
	b := startNode(t, cfg())
	proxy := startFlipProxy(t, b.node.Addr())
	a.node.AddPeerAddr(proxy.ln.Addr().String())
	waitFor(t, 10*time.Second, "a connected to b through the proxy", func() bool { return hasPeer(a.node, b.db.NodeID()) })
	content := randBytes(t, 4*format.MaxGroupData)
	v := writeFile(t, a.node, content)
	if proxy.flipped.Load() != 1 {
		t.Fatal("no bulk record went through the proxy")
	}
	// Every group is on both nodes, with its own bytes.
	for _, n := range []*testNode{a, b} {
		got, err := readWhole(t, n.node, v)
		if err != nil || !bytes.Equal(got, content) {
			t.Fatalf("reading on %s: %v", n.db.NodeID().Short(), err)
		}
	}
	node, ok, err := b.db.GetChunk(v.Root, nil)
	if err != nil || !ok || v.Depth != 2 {
		t.Fatalf("root of depth %d on b: %v, %v", v.Depth, ok, err)
	}
	for i := 0; i < len(node); i += len(format.Hash{}) {
		g := format.Hash(node[i : i+len(format.Hash{})])
		data, ok, err := b.db.GetGroup(g, 0, format.MaxGroupData, nil)
		if err != nil || !ok {
			t.Fatalf("group %d not on b: %v", i/32, err)
		}
		gnode, _, err := b.db.GetChunk(g, nil)
		if err != nil || !verifyGroup(g, gnode, data) {
			t.Fatalf("group %d on b does not match its name: %v", i/32, err)
		}
	}
}
