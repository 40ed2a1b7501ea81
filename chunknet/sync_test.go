package chunknet

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// fileOps creates file number i in the root directory: its inode and its
// directory entry.
func fileOps(i int) []index.Op {
	id := uint64(100 + i)
	return []index.Op{
		{Inode: &index.Inode{ID: id, Type: index.TypeFile, Mode: 0o644, Size: uint64(i)}},
		{Dirent: &index.Dirent{Parent: index.RootID, Name: fmt.Sprint(i), Child: id, Type: index.TypeFile}},
	}
}

func publishFiles(t *testing.T, n *Node, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if _, err := n.Publish(fileOps(i), Synced); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

// hasFiles reports whether db holds files 0..n-1 as fileOps made them.
func hasFiles(t *testing.T, db *index.DB, n int) bool {
	t.Helper()
	for i := range n {
		d, ok, err := db.LookupDirent(index.RootID, fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return false
		}
		if d.Child != uint64(100+i) || d.Type != index.TypeFile {
			t.Fatalf("file %d: dirent %+v", i, d)
		}
		in, ok, err := db.GetInode(uint64(100 + i))
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return false
		}
		if in.Size != uint64(i) || in.Mode != 0o644 {
			t.Fatalf("file %d: inode %+v", i, in)
		}
	}
	return true
}

func TestNamespaceReplication(t *testing.T) {
	nodes := startCluster(t, 2, Config{})
	a, b := nodes[0], nodes[1]
	publishFiles(t, a.node, 0, 50)
	waitFor(t, 2*time.Second, "b to see a's 50 records", func() bool { return hasFiles(t, b.db, 50) })

	// A late joiner that knows only b still gets a's records: a pull
	// carries every origin the peer has.
	c := startNode(t, Config{})
	c.node.AddPeerAddr(b.node.Addr())
	waitFor(t, 5*time.Second, "the late joiner to catch up through b", func() bool { return hasFiles(t, c.db, 50) })
	if hasPeer(c.node, a.node.ID()) || hasPeer(a.node, c.node.ID()) {
		t.Fatal("a and the late joiner connected: the test would not prove relaying")
	}

	// Restart: c goes down, a goes on, c comes back on the same data
	// directory and catches up on what it missed.
	had := c.db.Applied(a.node.ID()) // 50, and a's member records on a network
	c.stop()
	publishFiles(t, a.node, 50, 60)
	waitFor(t, 2*time.Second, "b to see a's 60 records", func() bool { return hasFiles(t, b.db, 60) })
	c2 := startNodeIn(t, c.dir, Config{})
	if c2.node.ID() != c.node.ID() {
		t.Fatal("the node ID changed across a restart")
	}
	if !hasFiles(t, c2.db, 50) {
		t.Fatal("the restarted node lost records it had applied")
	}
	if got := c2.db.VersionVector()[a.node.ID()]; got != had {
		t.Fatalf("restarted version vector for a: %d, want %d", got, had)
	}
	c2.node.AddPeerAddr(b.node.Addr())
	waitFor(t, 5*time.Second, "the restarted node to catch up to 60", func() bool { return hasFiles(t, c2.db, 60) })
	// The version vector in memory follows each commit by a moment.
	waitFor(t, 2*time.Second, "version vectors at a's 60", func() bool {
		want := a.db.Applied(a.node.ID())
		return c2.db.VersionVector()[a.node.ID()] == want && b.db.VersionVector()[a.node.ID()] == want
	})
}

// fakePeer is a hand-written peer that serves Pull from its own log and
// counts the pulls it answered, so a test decides exactly what a node
// can learn and when.
type fakePeer struct {
	db    *index.DB
	ln    net.Listener
	pulls atomic.Int64

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startFakePeer(t *testing.T) *fakePeer {
	t.Helper()
	db, err := index.Open(t.TempDir(), index.Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	fp := &fakePeer{db: db, ln: ln}
	fp.wg.Add(1)
	go fp.accept(t)
	t.Cleanup(func() {
		ln.Close()
		fp.mu.Lock()
		for _, c := range fp.conns {
			c.Close()
		}
		fp.mu.Unlock()
		fp.wg.Wait()
		db.Close()
	})
	return fp
}

func (fp *fakePeer) id() format.NodeID { return fp.db.NodeID() }

func (fp *fakePeer) accept(t *testing.T) {
	defer fp.wg.Done()
	for {
		conn, err := fp.ln.Accept()
		if err != nil {
			return
		}
		fp.mu.Lock()
		fp.conns = append(fp.conns, conn)
		fp.mu.Unlock()
		fp.wg.Add(1)
		go func() {
			defer fp.wg.Done()
			fp.serve(t, conn)
		}()
	}
}

func (fp *fakePeer) serve(t *testing.T, conn net.Conn) {
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := wire.WriteHello(conn, wire.Hello{Node: fp.id(), Network: testNetwork}); err != nil {
		return
	}
	if _, err := wire.ReadHello(conn); err != nil {
		return
	}
	if wire.WriteVerdict(conn, wire.VerdictAccept) != nil || wire.ReadVerdict(conn) != nil {
		return
	}
	conn.SetDeadline(time.Time{})
	rd := wire.NewReader(conn, wire.MaxPayload)
	for {
		f, err := rd.Next()
		if err != nil {
			return
		}
		var reply []byte
		switch f.Type {
		case wire.TypePing:
			reply = wire.AppendPong(nil, f.ReqID)
		case wire.TypePull:
			vv, err := wire.DecodePull(f.Payload)
			if err != nil {
				t.Errorf("fake peer: bad pull: %v", err)
				return
			}
			var after uint64
			for _, e := range vv {
				if e.Node == fp.id() {
					after = e.Seq
				}
			}
			recs, err := fp.db.LogSince(fp.id(), after, 0, 0)
			if err != nil {
				t.Errorf("fake peer: %v", err)
				return
			}
			reply = wire.AppendRecords(nil, f.ReqID, false, recs)
		default:
			reply = wire.AppendError(nil, f.ReqID, wire.CodeUnsupported, "fake peer")
		}
		if _, err := conn.Write(reply); err != nil {
			return
		}
		if f.Type == wire.TypePull {
			fp.pulls.Add(1)
		}
	}
}

// A pushed record that skips ahead of what a node has applied is not
// applied; the node answers "gap" and pulls the missing records from the
// peer at once, without waiting for its pull timer.
func TestPushGapTriggersPull(t *testing.T) {
	plainOnly(t, "a hand-written peer without TLS")
	fp := startFakePeer(t)
	n := startNode(t, Config{PullInterval: time.Hour})
	n.node.AddPeerAddr(fp.ln.Addr().String())
	waitFor(t, 5*time.Second, "the node to connect and pull once", func() bool {
		return hasPeer(n.node, fp.id()) && fp.pulls.Load() == 1
	})

	// Three records the node has not seen: the first pull found none.
	var recs []*index.Record
	for i := range 3 {
		rec, err := fp.db.Commit(fileOps(i), index.Synced)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	rp := connectRawAs(t, n.node.Addr(), fp.id())
	rp.send(t, wire.AppendPush(nil, 1, [][]byte{index.EncodeRecord(recs[2])}))
	f := rp.next(t)
	if f.Type != wire.TypePushResult || f.ReqID != 1 {
		t.Fatalf("got %v #%d, want PushResult #1", f.Type, f.ReqID)
	}
	st, err := wire.DecodeStatuses(f.Payload)
	if err != nil || len(st) != 1 || st[0] != pushGap {
		t.Fatalf("push of record 3 before 1 and 2: statuses %v, %v; want [%d]", st, err, pushGap)
	}
	waitFor(t, 2*time.Second, "the gap to be filled by a pull", func() bool {
		return n.db.VersionVector()[fp.id()] == 3 && fp.pulls.Load() >= 2
	})
	if got := fp.pulls.Load(); got != 2 {
		t.Errorf("%d pulls, want 2 (on connect and after the gap)", got)
	}
	if !hasFiles(t, n.db, 3) {
		t.Fatal("the records pulled after the gap are not applied")
	}

	// Records already applied and malformed ones are told apart.
	rp.send(t, wire.AppendPush(nil, 2, [][]byte{index.EncodeRecord(recs[1]), []byte("not a record")}))
	f = rp.next(t)
	st, err = wire.DecodeStatuses(f.Payload)
	if err != nil || len(st) != 2 || st[0] != pushApplied || st[1] != pushInvalid {
		t.Fatalf("statuses %v, %v; want [%d %d]", st, err, pushApplied, pushInvalid)
	}
}

// connectRawAs is connectRaw with a chosen node ID.
func connectRawAs(t *testing.T, addr string, id format.NodeID) *rawPeer {
	t.Helper()
	conn := dialRaw(t, addr)
	if _, err := rawHandshakeAs(t, conn, wire.Hello{Node: id, Network: testNetwork}); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return &rawPeer{conn: conn, rd: wire.NewReader(conn, wire.MaxPayload)}
}

// TestPublishSyncAtOnce: a change published with SyncAtOnce is in the local index at
// once and reaches every peer without any further call; a record that is
// not durable yet is neither pushed nor served to a puller.
func TestPublishSyncAtOnce(t *testing.T) {
	nodes := startCluster(t, 3, Config{})
	a := nodes[0]

	// A commit straight into the index, not synced (nothing unsynced was
	// published yet, so nothing syncs behind the test's back): a puller
	// does not get it until it is durable.
	rec, err := a.db.Commit(fileOps(50), index.Unsynced)
	if err != nil {
		t.Fatal(err)
	}
	var theirs []wire.VVEntry // all but the new record
	for o, seq := range a.db.VersionVector() {
		if o == a.node.ID() {
			seq = rec.Seq - 1
		}
		theirs = append(theirs, wire.VVEntry{Node: o, Seq: seq})
	}
	if _, recs, err := a.node.recordsFor(theirs); err != nil || len(recs) != 0 {
		t.Fatalf("a puller got %d records (%v) before the record was durable", len(recs), err)
	}
	if err := a.db.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, recs, err := a.node.recordsFor(theirs); err != nil || len(recs) != 1 {
		t.Fatalf("a puller got %d records (%v) after Sync, want 1", len(recs), err)
	}

	for i := range 20 {
		if _, err := a.node.Publish(fileOps(i), SyncAtOnce); err != nil {
			t.Fatal(err)
		}
		if !hasFiles(t, a.db, i+1) {
			t.Fatalf("file %d not in the local index after Publish", i)
		}
	}
	for _, tn := range nodes[1:] {
		waitFor(t, 5*time.Second, "lazily published files on a peer", func() bool { return hasFiles(t, tn.db, 20) })
	}
	waitFor(t, 5*time.Second, "every record durable", func() bool {
		return a.db.DurableSeq() == a.db.VersionVector()[a.node.ID()]
	})
}

// TestPublishSyncBatched: new entries published with SyncBatched reach every peer by
// themselves (the flusher's delayed wake-up), and a synced Publish right
// after one makes both durable and sends them in order.
func TestPublishSyncBatched(t *testing.T) {
	nodes := startCluster(t, 2, Config{})
	a, b := nodes[0], nodes[1]
	for i := range 30 {
		if _, err := a.node.Publish(fileOps(i), SyncBatched); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "new entries on the peer", func() bool { return hasFiles(t, b.db, 30) })
	rec, err := a.node.Publish(fileOps(30), SyncBatched)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.node.Publish(fileOps(31), Synced); err != nil {
		t.Fatal(err)
	}
	if d := a.db.DurableSeq(); d < rec.Seq+1 {
		t.Fatalf("durable up to %d after a synced Publish, want at least %d", d, rec.Seq+1)
	}
	waitFor(t, 5*time.Second, "both on the peer", func() bool { return hasFiles(t, b.db, 32) })
}
