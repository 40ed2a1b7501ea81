package index

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/oashare/oashare/index/format"
)

// keyOf returns a fixed key for test node i.
func keyOf(i byte) ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = i
	return ed25519.NewKeyFromSeed(seed)
}

func openSigned(t testing.TB, key ed25519.PrivateKey) *DB {
	t.Helper()
	return openAt(t, vfs.NewMem(), "db", Options{Identity: key})
}

// memberOf returns the Member op that adds the node of key.
func memberOf(key ed25519.PrivateKey, name string) Op {
	m := Member{ID: format.NodeIDOf(key.Public().(ed25519.PublicKey)), Name: name}
	copy(m.Key[:], key.Public().(ed25519.PublicKey))
	return Op{Member: &m}
}

// network returns a founder that created a network and a member it admitted
// (the founder committed its entry; the member knows the network).
func network(t *testing.T) (founder, member *DB) {
	t.Helper()
	founder = openSigned(t, keyOf(1))
	n, err := founder.CreateNetwork("home", "alpha")
	if err != nil {
		t.Fatal(err)
	}
	member = openSigned(t, keyOf(2))
	mustCommit(t, founder, memberOf(keyOf(2), "beta"))
	n.Sponsor, n.SponsorKey = founder.NodeID(), n.FounderKey
	if err := member.JoinNetwork(n); err != nil {
		t.Fatal(err)
	}
	syncRecords(t, founder, member)
	return founder, member
}

// syncRecords sends every record of from that to lacks, as a pull would.
func syncRecords(t testing.TB, from, to *DB) {
	t.Helper()
	// As a pull does: a record whose origin to does not know yet waits
	// for the records that add it, which may come from another origin.
	for {
		progress, waiting := false, error(nil)
		for origin := range from.VersionVector() {
			recs, err := from.LogSince(origin, to.Applied(origin), 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range recs {
				_, applied, err := to.Receive(b)
				if errors.Is(err, ErrUnknownOrigin) {
					waiting = fmt.Errorf("receive %s/%d: %w", origin.Short(), to.Applied(origin)+1, err)
					break
				}
				if err != nil {
					t.Fatalf("receive %s/%d: %v", origin.Short(), to.Applied(origin)+1, err)
				}
				progress = progress || applied
			}
		}
		if waiting == nil {
			return
		}
		if !progress {
			t.Fatal(waiting)
		}
	}
}

func TestNetworkMembers(t *testing.T) {
	founder, member := network(t)
	if founder.NodeID() != format.NodeIDOf(keyOf(1).Public().(ed25519.PublicKey)) {
		t.Fatal("the node ID is not derived from the key")
	}
	for _, db := range []*DB{founder, member} {
		ms := db.Members()
		if len(ms) != 2 {
			t.Fatalf("%s lists %d members, want 2: %+v", db.NodeID().Short(), len(ms), ms)
		}
		names := map[format.NodeID]string{}
		for _, m := range ms {
			names[m.ID] = m.Name
		}
		if names[founder.NodeID()] != "alpha" || names[member.NodeID()] != "beta" {
			t.Fatalf("members %v", names)
		}
		if !db.IsMember(founder.NodeID()) || !db.IsMember(member.NodeID()) || db.IsMember(format.NodeID{9}) {
			t.Fatal("IsMember is wrong")
		}
	}
	// The member's changes reach the founder, signed.
	rec := mustCommit(t, member, fileDirent(RootID, "a", 5))
	if len(rec.Wire) != len(EncodeRecord(rec))+ed25519.SignatureSize {
		t.Fatalf("a record of a network is %d bytes, want its encoding and a signature", len(rec.Wire))
	}
	syncRecords(t, member, founder)
	if _, ok, _ := founder.LookupDirent(RootID, "a"); !ok {
		t.Fatal("the member's change did not reach the founder")
	}
	// Both networks' views of the list survive a restart.
	n, _ := member.Network()
	if n.Founder != founder.NodeID() || n.Name != "home" {
		t.Fatalf("network %+v", n)
	}
}

func TestReceiveRefusesForgeries(t *testing.T) {
	founder, member := network(t)
	rec := mustCommit(t, founder, fileDirent(RootID, "f", 7))
	enc := EncodeRecord(rec)
	sign := func(key ed25519.PrivateKey, enc []byte) []byte {
		return append(append([]byte(nil), enc...), ed25519.Sign(key, signedBytes(enc))...)
	}

	// A relay that alters a byte of the record.
	altered := append([]byte(nil), rec.Wire...)
	altered[len(enc)-1] ^= 1
	// A member that makes a record in the founder's name.
	forged := sign(keyOf(2), enc)
	// An outsider's own record.
	outsider := openSigned(t, keyOf(3))
	out := &Record{Origin: outsider.NodeID(), Seq: 1, HLC: rec.HLC, Ops: []Op{fileDirent(RootID, "x", 9)}}
	out.Ops[0].Dirent.Version, out.Ops[0].Dirent.Origin = rec.HLC, outsider.NodeID()
	outRec := sign(keyOf(3), EncodeRecord(out))
	// A record with no signature at all.
	unsigned := enc

	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"altered", altered, nil},
		{"forged", forged, ErrBadSignature},
		{"outsider", outRec, ErrUnknownOrigin},
		{"unsigned", unsigned, nil},
	} {
		// Received from a node, or relayed by another member than its
		// origin: checked the same.
		for _, from := range []format.NodeID{{}, member.NodeID(), format.NodeIDOf(keyOf(2).Public().(ed25519.PublicKey))} {
			_, applied, err := member.ReceiveFrom(tc.b, from)
			if err == nil || applied {
				t.Fatalf("%s from %s: applied (err %v)", tc.name, from.Short(), err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("%s from %s: err %v, want %v", tc.name, from.Short(), err, tc.want)
			}
		}
	}
	if _, ok, _ := member.LookupDirent(RootID, "f"); ok {
		t.Fatal("a refused record changed the namespace")
	}
	// The real one is accepted.
	if _, applied, err := member.Receive(rec.Wire); err != nil || !applied {
		t.Fatalf("the genuine record: applied %v, err %v", applied, err)
	}
	// A record without an identity cannot be applied directly.
	if _, err := member.Apply(rec); err == nil {
		t.Fatal("Apply took a record on a network DB")
	}
}

func TestRemovedMember(t *testing.T) {
	founder, member := network(t)
	early := mustCommit(t, member, fileDirent(RootID, "early", 5))
	syncRecords(t, member, founder)
	// The member makes a change the founder has not seen when it removes it.
	late := mustCommit(t, member, fileDirent(RootID, "late", 6))
	op, err := founder.Removal(member.NodeID())
	if err != nil {
		t.Fatal(err)
	}
	if op.Member.UntilSeq != early.Seq {
		t.Fatalf("removal keeps records up to %d, want %d", op.Member.UntilSeq, early.Seq)
	}
	mustCommit(t, founder, op)
	if founder.IsMember(member.NodeID()) {
		t.Fatal("a removed node is still a member")
	}
	if _, err := founder.Removal(member.NodeID()); err == nil {
		t.Fatal("a second removal was allowed")
	}
	// Its record made after the removal's cut is refused, whatever its clock.
	if _, _, err := founder.Receive(late.Wire); !errors.Is(err, ErrRevoked) {
		t.Fatalf("a removed member's later record: %v, want ErrRevoked", err)
	}
	// Even from the removed node itself, over a connection that proved
	// its key.
	if _, _, err := founder.ReceiveFrom(late.Wire, member.NodeID()); !errors.Is(err, ErrRevoked) {
		t.Fatalf("a removed member's later record, from it: %v, want ErrRevoked", err)
	}
	// An addition made concurrently (or later) does not undo a removal,
	// in whichever order the two arrive.
	third := openSigned(t, keyOf(4))
	n, _ := founder.Network()
	n.Sponsor, n.SponsorKey = founder.NodeID(), n.FounderKey
	if err := third.JoinNetwork(n); err != nil {
		t.Fatal(err)
	}
	readd := mustCommit(t, member, memberOf(keyOf(2), "beta again")) // unseen by the founder
	syncRecords(t, founder, third)
	if third.IsMember(member.NodeID()) {
		t.Fatal("the removal did not reach the third node")
	}
	if _, _, err := third.Receive(readd.Wire); !errors.Is(err, ErrRevoked) {
		t.Fatalf("re-addition past the cut: %v", err)
	}
	// The removed node learns it and makes no more changes.
	syncRecords(t, founder, member)
	if _, err := member.Commit([]Op{fileDirent(RootID, "after", 8)}, Synced); !errors.Is(err, ErrRevoked) {
		t.Fatalf("a removed node committed: %v", err)
	}
}

func TestMemberOrderIndependent(t *testing.T) {
	// Two nodes receive an addition and a removal of one node in opposite
	// orders and end with the same entry.
	founder, member := network(t)
	x := memberOf(keyOf(5), "x")
	add := mustCommit(t, member, x)
	rm := *x.Member
	rm.Removed = true
	remove := mustCommit(t, founder, Op{Member: &rm})
	a, b := openSigned(t, keyOf(6)), openSigned(t, keyOf(7))
	n, _ := founder.Network()
	n.Sponsor, n.SponsorKey = founder.NodeID(), n.FounderKey
	for _, db := range []*DB{a, b} {
		if err := db.JoinNetwork(n); err != nil {
			t.Fatal(err)
		}
	}
	// The member's entry first, so that its records verify.
	for _, db := range []*DB{a, b} {
		recs, _ := founder.LogSince(founder.NodeID(), 0, 2, 0)
		for _, r := range recs {
			if _, _, err := db.Receive(r); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, step := range [][2]*Record{{add, remove}, {remove, add}} {
		db := a
		if step[0] == remove {
			db = b
		}
		for _, r := range step {
			if r == remove {
				// Records of the founder before the removal.
				syncRecords(t, founder, db)
				continue
			}
			if _, _, err := db.Receive(r.Wire); err != nil {
				t.Fatal(err)
			}
		}
	}
	if a.IsMember(x.Member.ID) || b.IsMember(x.Member.ID) {
		t.Fatal("the removal lost to an addition")
	}
}

func TestUnknownOriginLater(t *testing.T) {
	// A record whose origin's entry has not arrived is refused, and taken
	// once it has.
	founder, member := network(t)
	third := openSigned(t, keyOf(4))
	n, _ := founder.Network()
	n.Sponsor, n.SponsorKey = founder.NodeID(), n.FounderKey
	if err := third.JoinNetwork(n); err != nil {
		t.Fatal(err)
	}
	rec := mustCommit(t, member, fileDirent(RootID, "m", 5))
	if _, _, err := third.Receive(rec.Wire); !errors.Is(err, ErrUnknownOrigin) {
		t.Fatalf("before the entry: %v", err)
	}
	syncRecords(t, founder, third)
	if _, applied, err := third.Receive(rec.Wire); err != nil || !applied {
		t.Fatalf("after the entry: %v %v", applied, err)
	}
}

func TestIdentityChecks(t *testing.T) {
	fs := vfs.NewMem()
	db := openAt(t, fs, "db", Options{Identity: keyOf(1)})
	if _, err := db.CreateNetwork("n", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateNetwork("n", "a"); err == nil {
		t.Fatal("a second network was created")
	}
	db.Close()
	for _, key := range []ed25519.PrivateKey{keyOf(2), nil} {
		if db, err := Open("db", Options{FS: fs, Identity: key, Logger: quietLogger}); !errors.Is(err, ErrWrongIdentity) {
			if err == nil {
				db.Close()
			}
			t.Fatalf("key %v: Open: %v, want ErrWrongIdentity", key != nil, err)
		}
	}
	// A reopened network DB keeps its list.
	db = openAt(t, fs, "db", Options{Identity: keyOf(1)})
	if ms := db.Members(); len(ms) != 1 || ms[0].Name != "a" {
		t.Fatalf("members after reopen: %+v", ms)
	}
	// An index made without a key cannot be opened with one.
	plain := vfs.NewMem()
	openAt(t, plain, "db", Options{}).Close()
	if _, err := Open("db", Options{FS: plain, Identity: keyOf(1), Logger: quietLogger}); !errors.Is(err, ErrWrongIdentity) {
		t.Fatalf("Open a keyless index with a key: %v", err)
	}
	// Member ops are checked: a key that is not the node's.
	bad := memberOf(keyOf(3), "x")
	bad.Member.ID[0] ^= 1
	if _, err := db.Commit([]Op{bad}, Synced); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a member entry with another's key: %v", err)
	}
	if _, err := db.Commit([]Op{memberOf(keyOf(3), "x"), fileDirent(RootID, "a", 5)}, Synced); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a record mixing member and namespace ops: %v", err)
	}
}

func TestInvites(t *testing.T) {
	db := openSigned(t, keyOf(1))
	a := Invite{Token: []byte("0123456789abcde"), ExpiresMs: 1000}
	if err := db.AddInvite(a); err != nil {
		t.Fatal(err)
	}
	a.UsedMs, a.UsedBy = 500, format.NodeID{1}
	if err := db.AddInvite(a); err != nil {
		t.Fatal(err)
	}
	got, err := db.Invites()
	if err != nil || len(got) != 1 || got[0].UsedBy != a.UsedBy || string(got[0].Token) != string(a.Token) {
		t.Fatalf("Invites = %+v, %v", got, err)
	}
	if err := db.DropInvite(a.Token); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.Invites(); len(got) != 0 {
		t.Fatalf("after drop: %+v", got)
	}
}

// TestUsageCounts: a member's usage adds up, is read back from memory and
// from the index after a reopen, and members are counted apart.
func TestUsageCounts(t *testing.T) {
	fs := vfs.NewMem()
	db := openAt(t, fs, "/db", Options{})
	a, b := format.NodeID{1}, format.NodeID{2}
	if n, err := db.Usage(a); n != 0 || err != nil {
		t.Fatalf("usage of a new member: %d, %v", n, err)
	}
	for _, add := range []int64{100, 23} {
		if _, err := db.AddUsage(a, add); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := db.AddUsage(b, 7); n != 7 || err != nil {
		t.Fatalf("AddUsage(b, 7) = %d, %v", n, err)
	}
	check := func(when string) {
		t.Helper()
		if n, err := db.Usage(a); n != 123 || err != nil {
			t.Fatalf("%s: usage of a is %d, %v, want 123", when, n, err)
		}
		if n, err := db.Usage(b); n != 7 || err != nil {
			t.Fatalf("%s: usage of b is %d, %v, want 7", when, n, err)
		}
	}
	check("before reopening")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openAt(t, fs, "/db", Options{})
	check("after reopening")
}
