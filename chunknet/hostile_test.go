package chunknet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// rawFrame builds a frame header by hand, length field included, so that
// it can lie about the payload.
func rawFrame(length uint32, typ byte, id uint64, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, length)
	b = append(b, typ)
	b = binary.BigEndian.AppendUint64(b, id)
	return append(b, payload...)
}

// frameOf builds an honest frame around any payload, valid or not.
func frameOf(typ wire.Type, id uint64, payload []byte) []byte {
	return rawFrame(uint32(9+len(payload)), byte(typ), id, payload)
}

// servesPeers checks that target still serves its regular peer: an upload
// from peer lands on target, and peer fetches a chunk only target holds.
func servesPeers(t *testing.T, target, peer *testNode) {
	t.Helper()
	if !hasPeer(target.node, peer.node.ID()) || !hasPeer(peer.node, target.node.ID()) {
		t.Fatal("the regular peers lost each other")
	}
	up := randChunks(t, 3, 512)
	if err := upload(t, peer.node, up); err != nil {
		t.Fatalf("upload from the regular peer: %v", err)
	}
	for _, c := range up {
		if ok, _ := target.db.HasChunk(c.Hash); !ok {
			t.Fatal("an upload from the regular peer did not reach the node")
		}
	}
	only := randChunks(t, 1, 512)[0]
	putRaw(t, target, only)
	got, err := peer.node.Fetch(ctxTimeout(t, 10*time.Second), []format.Hash{only.Hash})
	if err != nil || !bytes.Equal(got[0], only.Data) {
		t.Fatalf("fetch from the node by the regular peer: %v", err)
	}
}

func TestHostileFramesCloseOnlyThatConnection(t *testing.T) {
	nodes := startCluster(t, 2, Config{Replicas: 2})
	target, peer := nodes[0], nodes[1]

	one := randChunks(t, 1, 512)
	putPayload := wire.AppendPutChunks(nil, 0, []wire.Chunk{{Hash: one[0].Hash, Data: one[0].Data}})[wire.HeaderSize:]
	pullPayload := wire.AppendPull(nil, 0, []wire.VVEntry{{Node: target.node.ID(), Seq: 1}})[wire.HeaderSize:]
	gdata := one[0].Data
	gnode := one[0].Hash[:]
	group := wire.Group{Hash: format.Sum(gnode), Node: gnode, Data: gdata}
	putGroupsPayload := wire.AppendPutGroups(nil, 0, []wire.Group{group})[wire.HeaderSize:]
	getGroupsPayload := wire.AppendGetGroups(nil, 0, []wire.GroupRange{{Hash: group.Hash, N: 1}})[wire.HeaderSize:]
	cases := []struct {
		name  string
		frame []byte
	}{
		{"length 4 GiB-1", rawFrame(0xFFFFFFFF, byte(wire.TypeGetChunks), 2, nil)},
		{"length just above MaxPayload", rawFrame(9+wire.MaxPayload+1, byte(wire.TypePutChunks), 2, nil)},
		{"length below the header", rawFrame(3, byte(wire.TypePing), 2, nil)},
		{"unknown type", frameOf(wire.Type(200), 2, nil)},
		{"type 0", frameOf(wire.Type(0), 2, nil)},
		{"ping with a payload", frameOf(wire.TypePing, 2, []byte("abc"))},
		{"PutChunks with truncated payload", frameOf(wire.TypePutChunks, 2, putPayload[:len(putPayload)-100])},
		{"PutChunks with trailing bytes", frameOf(wire.TypePutChunks, 2, append(bytes.Clone(putPayload), 0))},
		{"PutChunks count beyond payload", frameOf(wire.TypePutChunks, 2, binary.BigEndian.AppendUint32(nil, 4000))},
		{"GetChunks with a partial hash", frameOf(wire.TypeGetChunks, 2, append(binary.BigEndian.AppendUint32(nil, 1), make([]byte, 31)...))},
		{"Pull with truncated payload", frameOf(wire.TypePull, 2, pullPayload[:len(pullPayload)-1])},
		{"PutGroups with truncated payload", frameOf(wire.TypePutGroups, 2, putGroupsPayload[:len(putGroupsPayload)-10])},
		{"PutGroups with trailing bytes", frameOf(wire.TypePutGroups, 2, append(bytes.Clone(putGroupsPayload), 0))},
		{"PutGroups count beyond payload", frameOf(wire.TypePutGroups, 2, binary.BigEndian.AppendUint32(nil, 1000))},
		{"GetGroups with a truncated range", frameOf(wire.TypeGetGroups, 2, getGroupsPayload[:len(getGroupsPayload)-2])},
		{"HasGroups with a partial hash", frameOf(wire.TypeHasGroups, 2, append(binary.BigEndian.AppendUint32(nil, 1), make([]byte, 31)...))},
		{"GroupResult as a request", wire.AppendGroupResult(nil, 2, []wire.GetItem{{Status: wire.StatusNotFound}})},
		{"Push of a count beyond payload", frameOf(wire.TypePush, 2, binary.BigEndian.AppendUint32(nil, 9))},
		{"PutResult as a request", wire.AppendPutResult(nil, 2, []byte{0})},
		{"Pong as a request", wire.AppendPong(nil, 2)},
		{"Error as a request", wire.AppendError(nil, 2, wire.CodeInternal, "x")},
		{"GetResult as a request", wire.AppendGetResult(nil, 2, []wire.GetItem{{Status: wire.StatusNotFound}})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rp := connectRaw(t, target.node.Addr())
			// The connection works until the bad frame.
			rp.send(t, wire.AppendPing(nil, 1))
			if f := rp.next(t); f.Type != wire.TypePong || f.ReqID != 1 {
				t.Fatalf("answer to a ping: %v #%d", f.Type, f.ReqID)
			}
			rp.send(t, tc.frame)
			expectClosed(t, rp.conn)
			servesPeers(t, target, peer)
		})
	}
	if ok, _ := target.db.HasChunk(one[0].Hash); ok {
		t.Error("a malformed PutChunks stored its chunk")
	}
	if ok, _ := target.db.HasGroup(group.Hash); ok {
		t.Error("a malformed PutGroups stored its group")
	}
	if got := target.node.Peers(); len(got) != 1 || got[0].ID != peer.node.ID() {
		t.Errorf("peers after the hostile connections: %v, want only the regular peer", got)
	}
}

func TestHandshakeRefusals(t *testing.T) {
	plainOnly(t, "raw hellos of made-up nodes")
	nodes := startCluster(t, 2, Config{Replicas: 2})
	target, peer := nodes[0], nodes[1]

	t.Run("wrong network", func(t *testing.T) {
		conn := dialRaw(t, target.node.Addr())
		hello, err := rawHandshake(t, conn, "another-network")
		if hello.Node != target.node.ID() {
			t.Errorf("hello names node %s, want %s", hello.Node.Short(), target.node.ID().Short())
		}
		var refused *wire.RefusedError
		if !errors.Is(err, wire.ErrRefused) || !errors.As(err, &refused) || refused.Code != wire.VerdictWrongNetwork {
			t.Fatalf("verdict: %v, want a refusal for the wrong network", err)
		}
		expectClosed(t, conn)
	})
	t.Run("other protocol version", func(t *testing.T) {
		conn := dialRaw(t, target.node.Addr())
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if err := wire.WriteHello(conn, wire.Hello{Version: wire.Version + 1, Node: randNodeID(t), Network: testNetwork}); err != nil {
			t.Fatal(err)
		}
		if _, err := wire.ReadHello(conn); err != nil {
			t.Fatal(err)
		}
		var refused *wire.RefusedError
		if err := wire.ReadVerdict(conn); !errors.As(err, &refused) || refused.Code != wire.VerdictVersion {
			t.Fatalf("verdict: %v, want a refusal for the version", err)
		}
		expectClosed(t, conn)
	})
	t.Run("not an oashare client", func(t *testing.T) {
		conn := dialRaw(t, target.node.Addr())
		conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, conn)
	})
	t.Run("our own node ID", func(t *testing.T) {
		conn := dialRaw(t, target.node.Addr())
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if err := wire.WriteHello(conn, wire.Hello{Node: target.node.ID(), Network: testNetwork}); err != nil {
			t.Fatal(err)
		}
		if _, err := wire.ReadHello(conn); err != nil {
			t.Fatal(err)
		}
		wire.WriteVerdict(conn, wire.VerdictAccept)
		var refused *wire.RefusedError
		if err := wire.ReadVerdict(conn); !errors.As(err, &refused) || refused.Code != wire.VerdictSameNode {
			t.Fatalf("verdict: %v, want a refusal for the same node", err)
		}
		expectClosed(t, conn)
	})
	t.Run("node of another network", func(t *testing.T) {
		fn := &faultNet{}
		stranger := startNode(t, Config{Network: "another-network", Transport: fn})
		stranger.node.AddPeerAddr(target.node.Addr())
		// Refused, it waits and tries again: two dials prove the first
		// attempt ended.
		waitFor(t, 5*time.Second, "the stranger to be refused and redial", func() bool {
			return fn.dials.Load() >= 2
		})
		if got := stranger.node.Peers(); len(got) != 0 {
			t.Errorf("the stranger has peers %v", got)
		}
	})
	if got := target.node.Peers(); len(got) != 1 || got[0].ID != peer.node.ID() {
		t.Errorf("peers after the refused connections: %v, want only the regular peer", got)
	}
	servesPeers(t, target, peer)
}

// Frames that arrive a byte at a time (TCP may cut them anywhere) are
// served like whole ones.
func TestFragmentedFramesAreServed(t *testing.T) {
	target := startNode(t, Config{})
	c := randChunks(t, 1, 512)[0]
	putRaw(t, target, c)
	rp := connectRaw(t, target.node.Addr())
	frame := wire.AppendGetChunks(nil, 7, []format.Hash{c.Hash})
	frame = wire.AppendPing(frame, 8)
	for i := range frame {
		rp.send(t, frame[i:i+1])
	}
	// Requests are answered in any order: match them by ID.
	got := make(map[uint64]wire.Frame)
	for range 2 {
		f := rp.next(t)
		f.Payload = bytes.Clone(f.Payload) // the reader reuses its buffer
		got[f.ReqID] = f
	}
	if f := got[8]; f.Type != wire.TypePong {
		t.Fatalf("answer to the ping: %v", f.Type)
	}
	f := got[7]
	if f.Type != wire.TypeGetResult {
		t.Fatalf("answer to GetChunks: %v", f.Type)
	}
	items, err := wire.DecodeGetResult(f.Payload)
	if err != nil || len(items) != 1 || items[0].Status != wire.StatusOK || !bytes.Equal(items[0].Data, c.Data) {
		t.Fatalf("GetResult %+v, %v", items, err)
	}
}

// A peer cannot store bytes under a name that is not their hash; the
// honest chunks of the same request are stored.
func TestPutChunksRefusesWrongHash(t *testing.T) {
	target := startNode(t, Config{})
	rp := connectRaw(t, target.node.Addr())
	chunks := randChunks(t, 3, 512)
	lie := corrupted(chunks[1])
	rp.send(t, wire.AppendPutChunks(nil, 5, []wire.Chunk{
		{Hash: chunks[0].Hash, Data: chunks[0].Data},
		{Hash: lie.Hash, Data: lie.Data},
		{Hash: chunks[2].Hash, Data: chunks[2].Data},
	}))
	f := rp.next(t)
	if f.Type != wire.TypePutResult || f.ReqID != 5 {
		t.Fatalf("got %v #%d, want PutResult #5", f.Type, f.ReqID)
	}
	st, err := wire.DecodeStatuses(f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{wire.StatusOK, wire.StatusBadHash, wire.StatusOK}; !bytes.Equal(st, want) {
		t.Fatalf("statuses %v, want %v", st, want)
	}
	for i, c := range chunks {
		ok, err := target.db.HasChunk(c.Hash)
		if err != nil {
			t.Fatal(err)
		}
		if ok != (i != 1) {
			t.Errorf("chunk %d stored: %v", i, ok)
		}
	}
}

// stampedRecord is a record of origin with one new file, every version
// stamped with clock hlc.
func stampedRecord(origin format.NodeID, seq, hlc uint64) []byte {
	ops := fileOps(int(seq) + int(origin[0])<<20 + int(origin[1])<<28)
	ops[0].Inode.Version, ops[0].Inode.Origin = hlc, origin
	ops[1].Dirent.Version, ops[1].Dirent.Origin = hlc, origin
	return index.EncodeRecord(&index.Record{Origin: origin, Seq: seq, HLC: hlc, Ops: ops})
}

// TestHostileRecords: a peer that pushes a record stamped with the largest
// clock, or records from 5 000 made-up origins, changes nothing that
// matters: the far-future record is refused, the origins beyond the bound
// are refused, the node's own changes still commit and reach its peers,
// and pulls still work (the version vector fits a frame).
func TestHostileRecords(t *testing.T) {
	plainOnly(t, "unsigned records of made-up origins")
	nodes := startCluster(t, 2, Config{Replicas: 2})
	target, peer := nodes[0], nodes[1]
	liar := format.NodeID{0xee, 1}
	rp := connectRawAs(t, target.node.Addr(), liar)
	now := uint64(time.Now().UnixMilli()) << 16

	rp.send(t, wire.AppendPush(nil, 1, [][]byte{stampedRecord(liar, 1, math.MaxUint64)}))
	if f := rp.next(t); f.Type != wire.TypePushResult {
		t.Fatalf("answer to the push: %v", f.Type)
	}
	if target.db.Applied(liar) != 0 || target.db.HLCNow() == math.MaxUint64 {
		t.Fatal("the far-future record was applied")
	}

	// 5 000 origins in one push.
	var recs [][]byte
	for k := range 5000 {
		var o format.NodeID
		binary.BigEndian.PutUint32(o[:], uint32(k+1))
		o[15] = 0x77
		recs = append(recs, stampedRecord(o, 1, now))
	}
	rp.send(t, wire.AppendPush(nil, 10, recs))
	if f := rp.nextWithin(t, time.Minute); f.Type != wire.TypePushResult {
		t.Fatalf("answer to the push of 5 000 origins: %v", f.Type)
	}
	if n := len(target.db.VersionVector()); n > index.MaxOrigins {
		t.Fatalf("the version vector holds %d origins, more than %d", n, index.MaxOrigins)
	}
	// The node still makes changes, and its peer pulls them.
	if _, err := target.node.Publish(fileOps(7), Synced); err != nil {
		t.Fatalf("a local change after the hostile pushes: %v", err)
	}
	waitFor(t, 10*time.Second, "the peer to get the change", func() bool {
		return peer.db.Applied(target.node.ID()) >= 1
	})
	servesPeers(t, target, peer)
}

// TestConnectionFlood: 2 000 connections from one host are refused over
// the cap at once; the node keeps serving its peer, and its heap does not
// grow with them.
func TestConnectionFlood(t *testing.T) {
	nodes := startCluster(t, 2, Config{Replicas: 2, MaxInboundPerHost: 16})
	target, peer := nodes[0], nodes[1]
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var conns []net.Conn
	for range 2000 {
		c, err := net.DialTimeout("tcp", target.node.Addr(), 5*time.Second)
		if err != nil {
			continue // the listen backlog may refuse some
		}
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	// Over the cap, connections are closed at once: a read ends.
	open := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		var b [1]byte
		if _, err := c.Read(b[:]); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				open++
			}
		}
	}
	if open > 16 {
		t.Fatalf("%d of %d connections from one host stayed open, want at most 16", open, len(conns))
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 64<<20 {
		t.Errorf("the heap grew by %d MiB with 2 000 connections", grew>>20)
	}
	servesPeers(t, target, peer)
}

// TestSlowFrameIsCut: a peer that declares the largest payload and sends
// it a byte at a time holds at most what it sent, and loses its connection
// once ReadIdle passes; the node serves its peer meanwhile.
func TestSlowFrameIsCut(t *testing.T) {
	cfg := Config{Replicas: 2, ReadIdle: time.Second, PingInterval: 100 * time.Millisecond}
	nodes := startCluster(t, 2, cfg)
	target, peer := nodes[0], nodes[1]
	rp := connectRaw(t, target.node.Addr())
	rp.send(t, rawFrame(9+wire.MaxPayload, byte(wire.TypePush), 1, []byte{0, 0}))
	start := time.Now()
	expectClosed(t, rp.conn)
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("the slow frame's connection was closed after %v, want about ReadIdle (1s)", d)
	}
	servesPeers(t, target, peer)
}
