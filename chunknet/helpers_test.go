package chunknet

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
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

// startNodeOn is startNodeIn with the index on fs (nil: the disk). With
// an identity (cfg.Identity, or every node under CHUNKNET_TLS=1) the node
// is a member of its test's network (see joinTestNetwork); a restart in
// the same directory keeps its key.
func startNodeOn(t testing.TB, dir string, fs vfs.FS, cfg Config) *testNode {
	t.Helper()
	if cfg.Identity == nil && secureTests {
		cfg.Identity = testKey(t, dir)
	}
	db, err := index.Open(dir, index.Options{FS: fs, Logger: quietLogger(), Identity: cfg.Identity})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Identity != nil {
		joinTestNetwork(t, db)
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
	if cfg.Identity != nil {
		netOf(t).add(tn)
	}
	return tn
}

// secureTests makes every test node a member of a network over TLS
// (make test runs the package both ways).
var secureTests = os.Getenv("CHUNKNET_TLS") == "1"

// testKey returns the key of the node in dir, made on first use.
func testKey(t testing.TB, dir string) ed25519.PrivateKey {
	path := filepath.Join(dir, "test-identity")
	if seed, err := os.ReadFile(path); err == nil && len(seed) == ed25519.SeedSize {
		return ed25519.NewKeyFromSeed(seed)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, key.Seed(), 0o600); err != nil {
		t.Fatal(err)
	}
	return key
}

// testNet is the network of one test's nodes.
type testNet struct {
	mu    sync.Mutex
	nodes []*testNode
}

var testNets sync.Map // top-level test name → *testNet

// netOf returns the network of t's top-level test: its subtests share it.
func netOf(t testing.TB) *testNet {
	root, _, sub := strings.Cut(t.Name(), "/")
	v, loaded := testNets.LoadOrStore(root, &testNet{})
	if !loaded && !sub {
		t.Cleanup(func() { testNets.Delete(root) })
	}
	return v.(*testNet)
}

func (tn *testNet) add(n *testNode) {
	tn.mu.Lock()
	tn.nodes = append(tn.nodes, n)
	tn.mu.Unlock()
}

// joinTestNetwork makes db a member of its test's network: the first
// index of a test founds it; a later one is added by the running member
// started last (the one a test's new node usually connects to first), as
// an invitation would (its entry committed and pushed, the network
// described to it), unless it belongs to the network already (a restart).
func joinTestNetwork(t testing.TB, db *index.DB) {
	t.Helper()
	if _, ok := db.Network(); ok {
		return
	}
	tnet := netOf(t)
	tnet.mu.Lock()
	var sponsor *testNode
	for i := len(tnet.nodes) - 1; i >= 0; i-- {
		n := tnet.nodes[i]
		n.mu.Lock()
		live := !n.nodeDone
		n.mu.Unlock()
		if live {
			sponsor = n
			break
		}
	}
	tnet.mu.Unlock()
	if sponsor == nil {
		if _, err := db.CreateNetwork("test", "n0"); err != nil {
			t.Fatal(err)
		}
		return
	}
	m := db.SelfMember("n")
	if _, err := sponsor.node.Publish([]index.Op{{Member: &m}}, Synced); err != nil {
		t.Fatal(err)
	}
	netw, _ := sponsor.db.Network()
	netw.Sponsor = sponsor.db.NodeID()
	copy(netw.SponsorKey[:], sponsor.node.cfg.Identity.Public().(ed25519.PublicKey))
	if err := db.JoinNetwork(netw); err != nil {
		t.Fatal(err)
	}
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

// connectRaw dials a node and completes an accepted handshake. Under
// CHUNKNET_TLS=1 the raw peer is a member of the test's network with a key
// of its own, over TLS: a hostile member.
func connectRaw(t *testing.T, addr string) *rawPeer {
	t.Helper()
	conn := dialRaw(t, addr)
	if secureTests {
		key := rawMember(t)
		tc := rawTLS(t, conn, key)
		if _, err := rawHandshakeAs(t, tc, wire.Hello{Node: keyID(key), Network: networkOf(t)}); err != nil {
			t.Fatalf("handshake refused: %v", err)
		}
		rc := rawRecords(t, tc)
		return &rawPeer{conn: rc, rd: wire.NewReader(rc, wire.MaxPayload)}
	}
	if _, err := rawHandshake(t, conn, testNetwork); err != nil {
		t.Fatalf("handshake refused: %v", err)
	}
	return &rawPeer{conn: conn, rd: wire.NewReader(conn, wire.MaxPayload)}
}

func keyID(key ed25519.PrivateKey) format.NodeID {
	return format.NodeIDOf(key.Public().(ed25519.PublicKey))
}

func newKey(t testing.TB) ed25519.PrivateKey {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// rawMember makes a fresh key a member of the test's network (as an
// invitation would) and waits until every running node knows it.
func rawMember(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	key := newKey(t)
	tnet := netOf(t)
	tnet.mu.Lock()
	nodes := append([]*testNode(nil), tnet.nodes...)
	tnet.mu.Unlock()
	var live []*testNode
	for _, n := range nodes {
		n.mu.Lock()
		if !n.nodeDone {
			live = append(live, n)
		}
		n.mu.Unlock()
	}
	if len(live) == 0 {
		t.Fatal("rawMember: no running node in the test's network")
	}
	m := index.Member{ID: keyID(key), Name: "raw"}
	copy(m.Key[:], key.Public().(ed25519.PublicKey))
	if _, err := live[0].node.Publish([]index.Op{{Member: &m}}, Synced); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the raw member to be known", func() bool {
		for _, n := range live {
			if !n.db.IsMember(m.ID) {
				return false
			}
		}
		return true
	})
	return key
}

// networkOf returns the hello network name of the test's network.
func networkOf(t *testing.T) string {
	tnet := netOf(t)
	tnet.mu.Lock()
	defer tnet.mu.Unlock()
	if len(tnet.nodes) == 0 {
		t.Fatal("networkOf: no node in the test's network")
	}
	return tnet.nodes[0].node.cfg.Network
}

// rawTLS runs the client side of TLS on conn with key, accepting any
// server key.
func rawTLS(t *testing.T, conn net.Conn, key ed25519.PrivateKey) net.Conn {
	t.Helper()
	cert, err := selfCert(key)
	if err != nil {
		t.Fatal(err)
	}
	tc, _, _, err := secureClient(t.Context(), conn, cert, func(format.NodeID) error { return nil })
	if err != nil {
		t.Fatalf("TLS: %v", err)
	}
	return tc
}

// rawRecords moves a raw member connection, its hello accepted, on to
// records, as a node does.
func rawRecords(t *testing.T, tc net.Conn) net.Conn {
	t.Helper()
	rc, err := toRecords(tc, true)
	if err != nil {
		t.Fatalf("records: %v", err)
	}
	return rc
}

// plainOnly skips a test of the plain-TCP protocol when every node speaks
// TLS; secure_test.go covers the same ground there.
func plainOnly(t *testing.T, why string) {
	if secureTests {
		t.Skip("plain TCP only (" + why + "); the TLS run covers it in secure_test.go")
	}
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
	return p.nextWithin(t, 5*time.Second)
}

// nextWithin reads one frame, failing the test after d: for an answer
// that takes real work (thousands of records applied, under the race
// detector, beside other packages' tests).
func (p *rawPeer) nextWithin(t *testing.T, d time.Duration) wire.Frame {
	t.Helper()
	p.conn.SetReadDeadline(time.Now().Add(d))
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
