package chunknet

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// testNetwork is the network name every node of these tests joins.
const testNetwork = "t"

// quietLogger discards log output unless the tests run with -v.
func quietLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// testNode is one in-process oashare node: its own Pebble index in a
// temporary directory and its own listener on loopback.
type testNode struct {
	t    testing.TB
	dir  string
	db   *index.DB
	node *Node

	mu       sync.Mutex
	nodeDone bool
	dbDone   bool
}

// startNode opens an index in a fresh directory and starts a node on it.
// cfg.DB and Listen are filled in, and Network, Logger and Replicas if
// unset.
func startNode(t testing.TB, cfg Config) *testNode {
	t.Helper()
	return startNodeIn(t, t.TempDir(), cfg)
}

// startNodeIn is startNode on an existing data directory (a restart).
func startNodeIn(t testing.TB, dir string, cfg Config) *testNode {
	t.Helper()
	return startNodeOn(t, dir, nil, cfg)
}

// startNodeOn is startNodeIn with the index on fs (nil: the disk).
func startNodeOn(t testing.TB, dir string, fs vfs.FS, cfg Config) *testNode {
	t.Helper()
	db, err := index.Open(dir, index.Options{FS: fs, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	cfg.DB = db
	if cfg.Network == "" {
		cfg.Network = testNetwork
	}
	cfg.Listen = "127.0.0.1:0"
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	node, err := New(cfg)
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	tn := &testNode{t: t, dir: dir, db: db, node: node}
	t.Cleanup(tn.stop)
	return tn
}

// closeNode closes the node (its peers see it leave); the index stays open.
func (tn *testNode) closeNode() {
	tn.mu.Lock()
	done := tn.nodeDone
	tn.nodeDone = true
	tn.mu.Unlock()
	if !done {
		if err := tn.node.Close(); err != nil {
			tn.t.Errorf("closing node: %v", err)
		}
	}
}

// stop closes the node, then its index (once: index.DB.Close must be
// called exactly once).
func (tn *testNode) stop() {
	tn.closeNode()
	tn.mu.Lock()
	done := tn.dbDone
	tn.dbDone = true
	tn.mu.Unlock()
	if !done {
		if err := tn.db.Close(); err != nil {
			tn.t.Errorf("closing index: %v", err)
		}
	}
}

// startCluster starts n nodes, connects every pair and waits until every
// node sees all the others.
func startCluster(t testing.TB, n int, cfg Config) []*testNode {
	t.Helper()
	nodes := make([]*testNode, n)
	for i := range nodes {
		nodes[i] = startNode(t, cfg)
	}
	connectAll(t, nodes...)
	return nodes
}

// connectAll makes every node dial every other and waits until each has
// all the others as live peers.
func connectAll(t testing.TB, nodes ...*testNode) {
	t.Helper()
	for i, a := range nodes {
		for j, b := range nodes {
			if i != j {
				a.node.AddPeerAddr(b.node.Addr())
			}
		}
	}
	waitFor(t, 10*time.Second, "all nodes connected", func() bool {
		for _, a := range nodes {
			if len(a.node.Peers()) != len(nodes)-1 {
				return false
			}
		}
		return true
	})
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// hasPeer reports whether id is among n's live peers.
func hasPeer(n *Node, id format.NodeID) bool {
	for _, p := range n.Peers() {
		if p.ID == id {
			return true
		}
	}
	return false
}

func randBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// randChunks returns n distinct random chunks of size bytes each.
func randChunks(t testing.TB, n, size int) []index.Chunk {
	out := make([]index.Chunk, n)
	for i := range out {
		d := randBytes(t, size)
		out[i] = index.Chunk{Hash: format.Sum(d), Data: d}
	}
	return out
}

func hashesOf(chunks []index.Chunk) []format.Hash {
	out := make([]format.Hash, len(chunks))
	for i, c := range chunks {
		out[i] = c.Hash
	}
	return out
}

// upload stores chunks from n through one Uploader and returns Wait's error.
func upload(t testing.TB, n *Node, chunks []index.Chunk) error {
	t.Helper()
	u := n.NewUploader(t.Context())
	for _, c := range chunks {
		if err := u.Put(t.Context(), c.Hash, c.Data); err != nil {
			u.Wait()
			return err
		}
	}
	return u.Wait()
}

// holders lists the nodes whose index stores h.
func holders(t *testing.T, h format.Hash, nodes []*testNode) []format.NodeID {
	t.Helper()
	var out []format.NodeID
	for _, tn := range nodes {
		ok, err := tn.db.HasChunk(h)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			out = append(out, tn.db.NodeID())
		}
	}
	return out
}

func sameSet(a, b []format.NodeID) bool {
	if len(a) != len(b) {
		return false
	}
	m := make(map[format.NodeID]int, len(a))
	for _, id := range a {
		m[id]++
	}
	for _, id := range b {
		if m[id] == 0 {
			return false
		}
		m[id]--
	}
	return true
}

func randNodeID(t testing.TB) format.NodeID {
	var id format.NodeID
	copy(id[:], randBytes(t, len(id)))
	return id
}

// rawPeer is a hand-driven client connection to a node: the test writes
// whatever bytes it likes after (or instead of) a handshake.
type rawPeer struct {
	conn net.Conn
	rd   *wire.Reader
}

// dialRaw opens a TCP connection to addr and closes it at cleanup.
func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// rawHandshake runs our half of the handshake as a peer of the given
// network (listen port 0: the node does not dial back) and returns the
// node's hello and the verdict error (wrapping wire.ErrRefused on refusal).
func rawHandshake(t *testing.T, conn net.Conn, network string) (wire.Hello, error) {
	t.Helper()
	return rawHandshakeAs(t, conn, wire.Hello{Node: randNodeID(t), Network: network})
}

// rawHandshakeAs is rawHandshake with our hello given.
func rawHandshakeAs(t *testing.T, conn net.Conn, ours wire.Hello) (wire.Hello, error) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	defer conn.SetDeadline(time.Time{})
	if err := wire.WriteHello(conn, ours); err != nil {
		t.Fatal(err)
	}
	theirs, err := wire.ReadHello(conn)
	if err != nil {
		t.Fatalf("reading the node's hello: %v", err)
	}
	if err := wire.WriteVerdict(conn, wire.VerdictAccept); err != nil {
		t.Fatal(err)
	}
	return theirs, wire.ReadVerdict(conn)
}

// connectRaw dials a node and completes an accepted handshake.
func connectRaw(t *testing.T, addr string) *rawPeer {
	t.Helper()
	conn := dialRaw(t, addr)
	if _, err := rawHandshake(t, conn, testNetwork); err != nil {
		t.Fatalf("handshake refused: %v", err)
	}
	return &rawPeer{conn: conn, rd: wire.NewReader(conn, wire.MaxPayload)}
}

func (p *rawPeer) send(t *testing.T, frame []byte) {
	t.Helper()
	p.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := p.conn.Write(frame); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// next reads one frame, failing the test after 5 s.
func (p *rawPeer) next(t *testing.T) wire.Frame {
	t.Helper()
	p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := p.rd.Next()
	if err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	return f
}

// expectClosed reads until the node closes conn and fails the test if
// that does not happen within 5 s. Whatever the node sent first is
// discarded.
func expectClosed(t *testing.T, conn net.Conn) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the node kept the connection open: %v", err)
	}
	// io.Copy returns nil on EOF; a reset is fine too.
}

// ctxTimeout returns a context that ends after d or with the test.
func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
