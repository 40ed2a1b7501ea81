package chunknet

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// The tests of this file run members-only nodes whatever CHUNKNET_TLS says.

// secureCluster starts n members of one network and connects them.
func secureCluster(t *testing.T, n int, cfg Config) []*testNode {
	t.Helper()
	nodes := make([]*testNode, n)
	for i := range nodes {
		c := cfg
		c.Identity = newKey(t)
		nodes[i] = startNode(t, c)
	}
	connectAll(t, nodes...)
	return nodes
}

// readAll reads what a node sends on conn until it closes it, failing the
// test if it stays open for 5 s.
func readAll(t *testing.T, conn net.Conn) []byte {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var buf bytes.Buffer
	_, err := io.Copy(&buf, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the node kept the connection open: %v", err)
	}
	return buf.Bytes()
}

// TestOutsiderLearnsNothing: a host that is not a member gets nothing of
// the network: not over plain TCP, not over TLS with a key of its own, not
// by listening where a member dials; and it changes nothing.
func TestOutsiderLearnsNothing(t *testing.T) {
	nodes := secureCluster(t, 2, Config{Replicas: 2})
	a, b := nodes[0], nodes[1]
	if _, err := a.node.Publish(fileOps(0), Synced); err != nil {
		t.Fatal(err)
	}
	netw, _ := a.db.Network()
	secrets := [][]byte{netw.ID[:], []byte(hex.EncodeToString(netw.ID[:])), []byte("test"), []byte(wire.Magic)}
	leaks := func(got []byte) string {
		for _, s := range secrets {
			if len(s) > 0 && bytes.Contains(got, s) {
				return string(s)
			}
		}
		return ""
	}

	t.Run("plain TCP hello", func(t *testing.T) {
		conn := dialRaw(t, a.node.Addr())
		conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		wire.WriteHello(conn, wire.Hello{Node: randNodeID(t), Network: hex.EncodeToString(netw.ID[:])})
		if got := readAll(t, conn); leaks(got) != "" {
			t.Fatalf("the node answered a plain hello with %q", leaks(got))
		}
	})
	t.Run("TLS with a stranger's key", func(t *testing.T) {
		tc := rawTLS(t, dialRaw(t, a.node.Addr()), newKey(t))
		tc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		wire.WriteHello(tc, wire.Hello{Node: randNodeID(t), Network: hex.EncodeToString(netw.ID[:])})
		tc.Write(wire.AppendPull(nil, 1, nil))
		if got := readAll(t, tc); len(got) != 0 {
			t.Fatalf("a stranger got %d bytes after TLS: %q", len(got), got)
		}
	})
	t.Run("TLS with a stranger's key asking for records", func(t *testing.T) {
		tc := rawTLS(t, dialRaw(t, a.node.Addr()), newKey(t))
		tc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		tc.Write(wire.AppendPull(nil, 1, nil))
		tc.Write(wire.AppendPush(nil, 2, [][]byte{[]byte("x")}))
		if got := readAll(t, tc); len(got) != 0 {
			t.Fatalf("a stranger got %d bytes: %q", len(got), got)
		}
	})
	t.Run("TLS without a certificate", func(t *testing.T) {
		conn := dialRaw(t, a.node.Addr())
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{alpn}})
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		err := tc.HandshakeContext(ctx)
		if err == nil {
			// TLS 1.3 clients learn of the refusal on their first read.
			tc.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = tc.Read(make([]byte, 1))
		}
		if err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a client without a certificate: %v", err)
		}
	})
	t.Run("a member dials an outsider", func(t *testing.T) {
		// A node of another network: the member refuses it after TLS,
		// before its hello; neither lists the other.
		key, dir := newKey(t), t.TempDir()
		db, err := index.Open(dir, index.Options{Identity: key, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.CreateNetwork("other", "x"); err != nil {
			t.Fatal(err)
		}
		db.Close()
		other := startNodeIn(t, dir, Config{Identity: key})
		a.node.AddPeerAddr(other.node.Addr())
		time.Sleep(500 * time.Millisecond)
		if len(other.node.Peers()) != 0 || hasPeer(a.node, other.node.ID()) {
			t.Fatal("nodes of two networks connected")
		}
	})
	// Nothing changed, and the members still talk.
	if got := a.node.Peers(); len(got) != 1 || got[0].ID != b.node.ID() {
		t.Fatalf("a's peers: %v", got)
	}
	if _, err := a.node.Publish(fileOps(1), Synced); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "b to see a's files", func() bool { return hasFiles(t, b.db, 2) })
}

// memberPeer connects to target as a member with key (already admitted),
// hello naming hello (its own ID unless the test lies).
func memberPeer(t *testing.T, target *testNode, key ed25519.PrivateKey, hello format.NodeID) (*rawPeer, error) {
	t.Helper()
	tc := rawTLS(t, dialRaw(t, target.node.Addr()), key)
	if _, err := rawHandshakeAs(t, tc, wire.Hello{Node: hello, Network: target.node.cfg.Network}); err != nil {
		return &rawPeer{conn: tc, rd: wire.NewReader(tc, wire.MaxPayload)}, err
	}
	rc := rawRecords(t, tc)
	return &rawPeer{conn: rc, rd: wire.NewReader(rc, wire.MaxPayload)}, nil
}

func TestImpostorHelloRefused(t *testing.T) {
	nodes := secureCluster(t, 2, Config{})
	key := rawMember(t)
	rp, err := memberPeer(t, nodes[0], key, nodes[1].node.ID())
	var refused *wire.RefusedError
	if !errors.As(err, &refused) || refused.Code != wire.VerdictImpostor {
		t.Fatalf("a member naming another in its hello: %v, want VerdictImpostor", err)
	}
	expectClosed(t, rp.conn)
}

// signed returns rec as origin key signs it.
func signed(key ed25519.PrivateKey, rec *index.Record) []byte {
	enc := index.EncodeRecord(rec)
	return append(enc, ed25519.Sign(key, append([]byte("oashare record v1"), enc...))...)
}

// ownRecord is record seq of the node of key, stamped hlc.
func ownRecord(key ed25519.PrivateKey, seq, hlc uint64) *index.Record {
	origin := keyID(key)
	ops := fileOps(int(seq) + int(origin[0])<<20 + int(origin[1])<<28)
	ops[0].Inode.Version, ops[0].Inode.Origin = hlc, origin
	ops[1].Dirent.Version, ops[1].Dirent.Origin = hlc, origin
	return &index.Record{Origin: origin, Seq: seq, HLC: hlc, Ops: ops}
}

// TestHostileMemberRecords: a member (valid identity) that pushes records
// in another member's name, a record stamped with the largest clock,
// 5 000 records of made-up origins signed by their own keys, or an
// unsigned record, changes nothing; its genuine record is applied, and the
// node keeps serving its peers.
func TestHostileMemberRecords(t *testing.T) {
	nodes := secureCluster(t, 2, Config{Replicas: 2})
	target, peer := nodes[0], nodes[1]
	key := rawMember(t)
	rp, err := memberPeer(t, target, key, keyID(key))
	if err != nil {
		t.Fatal(err)
	}
	now := uint64(time.Now().UnixMilli()) << 16
	push := func(id uint64, recs ...[]byte) []byte {
		t.Helper()
		rp.send(t, wire.AppendPush(nil, id, recs))
		f := rp.nextWithin(t, time.Minute)
		st, err := wire.DecodeStatuses(f.Payload)
		if f.Type != wire.TypePushResult || err != nil {
			t.Fatalf("answer to push %d: %v %v", id, f.Type, err)
		}
		return st
	}
	before := target.db.VersionVector()

	// In the peer's name, signed with the hostile member's key.
	forged := ownRecord(key, target.db.Applied(peer.node.ID())+1, now)
	forged.Origin = peer.node.ID()
	forged.Ops[0].Inode.Origin, forged.Ops[1].Dirent.Origin = forged.Origin, forged.Origin
	if st := push(1, signed(key, forged)); st[0] != pushInvalid {
		t.Fatalf("a record in another member's name: status %d", st[0])
	}
	// The largest clock, its own record.
	if st := push(2, signed(key, ownRecord(key, 1, math.MaxUint64))); st[0] != pushInvalid {
		t.Fatalf("a record at clock 2^64-1: status %d", st[0])
	}
	if target.db.HLCNow() == math.MaxUint64 {
		t.Fatal("the clock was poisoned")
	}
	// Unsigned.
	if st := push(3, index.EncodeRecord(ownRecord(key, 1, now))); st[0] != pushInvalid {
		t.Fatalf("an unsigned record: status %d", st[0])
	}
	// 5 000 made-up origins in one push, each record signed by its own
	// origin.
	var batch [][]byte
	for range 5000 {
		k := newKey(t)
		batch = append(batch, signed(k, ownRecord(k, 1, now)))
	}
	for i, s := range push(10, batch...) {
		if s == pushApplied {
			t.Fatalf("record %d of a made-up origin was applied", i)
		}
	}
	after := target.db.VersionVector()
	for o, seq := range after {
		if before[o] != seq && o != target.node.ID() {
			t.Fatalf("origin %s moved from %d to %d", o.Short(), before[o], seq)
		}
	}
	if len(after) > len(before)+1 {
		t.Fatalf("the version vector grew from %d to %d origins", len(before), len(after))
	}
	// A genuine record of the member is applied.
	if st := push(100, signed(key, ownRecord(key, 1, now))); st[0] != pushApplied || target.db.Applied(keyID(key)) != 1 {
		t.Fatalf("the member's genuine record: status %d, applied %d", st[0], target.db.Applied(keyID(key)))
	}
	// The target still commits and replicates.
	if _, err := target.node.Publish(fileOps(7), Synced); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the peer to see the target's change", func() bool {
		_, ok, _ := peer.db.LookupDirent(index.RootID, "7")
		return ok
	})
}

// joinDir makes dir the data directory of a node of key that joined with
// code through addrs, and returns the network.
func joinDir(t *testing.T, dir string, key ed25519.PrivateKey, code JoinCode, addrs ...string) (index.Network, error) {
	t.Helper()
	ch := make(chan string, len(addrs))
	for _, a := range addrs {
		ch <- a
	}
	close(ch)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	netw, err := Join(ctx, JoinConfig{Identity: key, Code: code, Name: "joiner", Addrs: ch, Logger: quietLogger()})
	if err != nil {
		return netw, err
	}
	db, err := index.Open(dir, index.Options{Identity: key, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	return netw, db.JoinNetwork(netw)
}

func TestJoinWithCode(t *testing.T) {
	a := secureCluster(t, 1, Config{})[0]
	publishFiles(t, a.node, 0, 2)
	code, _, err := a.node.Invite(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := code.String()
	if len(s) != len("oa1-")+4*8+3 || !strings.HasPrefix(s, "oa1-") {
		t.Fatalf("code %q", s)
	}
	parsed, err := ParseJoinCode(strings.ToLower(strings.ReplaceAll(s, "-", " ")))
	if err != nil || parsed != code {
		t.Fatalf("ParseJoinCode(%q) = %v, %v", s, parsed, err)
	}

	// The joiner joins, connects as a member and sees the share.
	key, dir := newKey(t), t.TempDir()
	netw, err := joinDir(t, dir, key, code, a.node.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if anet, _ := a.db.Network(); netw.ID != anet.ID || netw.Sponsor != a.node.ID() {
		t.Fatalf("joined network %x sponsored by %s", netw.ID, netw.Sponsor.Short())
	}
	b := startNodeIn(t, dir, Config{Identity: key})
	connectAll(t, a, b)
	waitFor(t, 5*time.Second, "the joiner to see the share", func() bool { return hasFiles(t, b.db, 2) })
	listed := false
	for _, m := range a.db.Members() {
		listed = listed || (m.ID == b.node.ID() && m.Name == "joiner" && !m.Removed)
	}
	if !listed {
		t.Fatalf("the inviter does not list the joiner: %+v", a.db.Members())
	}

	refusedWith := func(err error, phrase string) {
		t.Helper()
		if !errors.Is(err, ErrJoinRefused) || !strings.Contains(err.Error(), phrase) {
			t.Fatalf("join: %v; want a refusal saying %q", err, phrase)
		}
	}
	// A used code grants nothing.
	_, err = joinDir(t, t.TempDir(), newKey(t), code, a.node.Addr())
	refusedWith(err, "used already")
	// An expired one neither.
	old, _, err := a.node.Invite(-time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, err = joinDir(t, t.TempDir(), newKey(t), old, a.node.Addr())
	refusedWith(err, "expired")
	// A tampered token.
	fresh, _, _ := a.node.Invite(time.Hour)
	tampered := fresh
	tampered.Token[0] ^= 1
	_, err = joinDir(t, t.TempDir(), newKey(t), tampered, a.node.Addr())
	refusedWith(err, "not issued by this node")
	// A typo is caught before any connection.
	typo := []byte(JoinCode{Inviter: [8]byte{1, 2, 3}, Token: [10]byte{4, 5, 6}}.String())
	if typo[10] == 'A' {
		typo[10] = 'B'
	} else {
		typo[10] = 'A'
	}
	if _, err := ParseJoinCode(string(typo)); err == nil || !strings.Contains(err.Error(), "mistyped") {
		t.Fatalf("a mistyped code: %v", err)
	}
	// A proof captured on one TLS session is worth nothing on another.
	thief := newKey(t)
	cert, _ := selfCert(thief)
	conn1 := dialRaw(t, a.node.Addr())
	tc1, _, _, err := secureClient(t.Context(), conn1, cert, func(format.NodeID) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	exp1, _ := exportJoin(tc1)
	proof := joinProof(fresh.Token[:], exp1, keyID(thief))
	tc1.Close()
	conn2 := dialRaw(t, a.node.Addr())
	tc2, _, _, err := secureClient(t.Context(), conn2, cert, func(format.NodeID) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	tc2.Write(wire.AppendJoin(nil, 1, proof, "thief"))
	f, err := wire.NewReader(tc2, 4096).Next()
	if err != nil || f.Type != wire.TypeError {
		t.Fatalf("a replayed proof: %v %v", f.Type, err)
	}
	if _, msg, _ := wire.DecodeError(f.Payload); !strings.Contains(msg, "not issued") {
		t.Fatalf("a replayed proof: %q", msg)
	}
	if a.db.IsMember(keyID(thief)) {
		t.Fatal("a replayed proof admitted its sender")
	}
	// The code itself still works once, for whoever holds it.
	if _, err := joinDir(t, t.TempDir(), newKey(t), fresh, a.node.Addr()); err != nil {
		t.Fatalf("the code after a replay: %v", err)
	}
	// A node that did not issue the code is skipped: with no other
	// address, the join ends saying so.
	other, _, _ := b.node.Invite(time.Hour)
	other.Inviter = code.Inviter // a's ID, but only b's address
	_, err = joinDir(t, t.TempDir(), newKey(t), other, b.node.Addr())
	if err == nil || errors.Is(err, ErrJoinRefused) || !strings.Contains(err.Error(), code.InviterPrefix()) {
		t.Fatalf("a join at a node that did not issue the code: %v", err)
	}
}

// TestRemovedMemberIsCut: once a member is removed, every peer drops its
// connections and refuses new ones within seconds, and the copies it held
// are made again on the members left.
func TestRemovedMemberIsCut(t *testing.T) {
	nodes := secureCluster(t, 3, Config{Replicas: 2, TopUpEvery: 200 * time.Millisecond})
	a, b, c := nodes[0], nodes[1], nodes[2]
	chunks := randChunks(t, 64, 512)
	if err := upload(t, a.node, chunks); err != nil {
		t.Fatal(err)
	}
	onC := 0
	for _, ch := range chunks {
		for _, id := range holders(t, ch.Hash, nodes) {
			if id == c.node.ID() {
				onC++
			}
		}
	}
	if onC == 0 {
		t.Fatal("no chunk has a copy on the member to remove: the test proves nothing")
	}
	if err := b.node.RemoveMember(c.node.ID()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "every peer to drop the removed member", func() bool {
		return !hasPeer(a.node, c.node.ID()) && !hasPeer(b.node, c.node.ID()) && len(c.node.Peers()) == 0
	})
	// It stays out: its redials are refused.
	time.Sleep(time.Second)
	if hasPeer(a.node, c.node.ID()) || hasPeer(b.node, c.node.ID()) || len(c.node.Peers()) != 0 {
		t.Fatal("the removed member reconnected")
	}
	tc := rawTLS(t, dialRaw(t, a.node.Addr()), c.node.cfg.Identity)
	tc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	wire.WriteHello(tc, wire.Hello{Node: c.node.ID(), Network: a.node.cfg.Network})
	if got := readAll(t, tc); len(got) != 0 {
		t.Fatalf("the removed member's own connection got %d bytes", len(got))
	}
	// Every chunk is back at two copies, on a and b.
	live := []*testNode{a, b}
	waitFor(t, 10*time.Second, "the copies the removed member held to be made again", func() bool {
		for _, ch := range chunks {
			if len(holders(t, ch.Hash, live)) < 2 {
				return false
			}
		}
		return true
	})
	if err := a.node.RemoveMember(c.node.ID()); err == nil {
		t.Fatal("a second removal was accepted")
	}
}
