package index

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/vfs"
	"github.com/oashare/oashare/index/format"
)

// copySnapshot moves a snapshot of from into to, in pages of pageBytes.
func copySnapshot(t testing.TB, from, to *DB, pageBytes int) (int, error) {
	t.Helper()
	s, err := from.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, err := to.LoadSnapshot(s.VV, s.HLC)
	if err != nil {
		return 0, err
	}
	var after []byte
	for {
		items, done, err := s.Page(after, pageBytes)
		if err != nil {
			l.Abort()
			t.Fatal(err)
		}
		if err := l.Add(items); err != nil {
			l.Abort()
			t.Fatal(err)
		}
		if done {
			break
		}
		after = items[len(items)-1].Key
	}
	return l.Finish()
}

// churn makes rounds of random changes on origins and delivers them to
// every node of all.
func churn(t *testing.T, rng *rand.Rand, origins, all []*DB, next []uint64, rounds int) {
	t.Helper()
	for range rounds {
		i := rng.IntN(len(origins))
		rec := mustCommit(t, origins[i], randomOps(rng, origins[i], []uint64{RootID}, &next[i])...)
		for _, db := range all {
			if db == origins[i] {
				continue
			}
			if _, err := db.Apply(rec); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestSnapshotJoin: a node that joins after the history was pruned
// loads a snapshot (in small pages) and shows what the others show; the
// records made after it apply on top; a snapshot behind what the node
// pruned is refused.
func TestSnapshotJoin(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	fs := vfs.NewMem()
	a := openAt(t, fs, "a", Options{})
	b := openAt(t, fs, "b", Options{})
	next := []uint64{1 << 32, 2 << 32}
	churn(t, rng, []*DB{a, b}, []*DB{a, b}, next, 200)
	for _, db := range []*DB{a, b} {
		if _, err := db.Prune(a.VersionVector(), time.Now().Add(time.Hour), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.LogSince(a.self, 0, 0, 0); !errors.Is(err, ErrPruned) {
		t.Fatalf("LogSince(0) = %v; want ErrPruned", err)
	}

	c := openAt(t, fs, "c", Options{})
	if _, err := copySnapshot(t, a, c, 300); err != nil {
		t.Fatal(err)
	}
	if got, want := treeView(t, c), treeView(t, a); got != want {
		t.Fatalf("joiner shows\n%s\nwant\n%s", got, want)
	}
	if !reflect.DeepEqual(c.VersionVector(), a.VersionVector()) {
		t.Fatalf("joiner's vector %v; want %v", c.VersionVector(), a.VersionVector())
	}
	if c.NeedsSnapshot() {
		t.Fatal("still needs a snapshot after loading one")
	}
	// Later records apply on top, from the log.
	churn(t, rng, []*DB{a, b}, []*DB{a, b, c}, next, 50)
	if got, want := treeView(t, c), treeView(t, a); got != want {
		t.Fatalf("joiner after more changes shows\n%s\nwant\n%s", got, want)
	}
	// c prunes too; a snapshot of a fresh node (behind c's floor) is
	// refused and changes nothing.
	if _, err := c.Prune(c.VersionVector(), time.Now().Add(time.Hour), nil); err != nil {
		t.Fatal(err)
	}
	fresh := openAt(t, fs, "fresh", Options{})
	before := treeView(t, c)
	if _, err := copySnapshot(t, fresh, c, 300); !errors.Is(err, ErrSnapshotBehind) {
		t.Fatalf("loading a snapshot behind the floor = %v; want ErrSnapshotBehind", err)
	}
	if treeView(t, c) != before || c.NeedsSnapshot() {
		t.Fatal("a refused snapshot changed the namespace")
	}
}

// TestSnapshotKeepsUnsentChanges: a member that was away made changes
// the others never saw, while they pruned past it; it loads a snapshot
// and its changes are applied again on top (a file it created; a file it
// changed that another deleted and pruned is named again, as a new
// change), then reach the others from its log.
func TestSnapshotKeepsUnsentChanges(t *testing.T) {
	fs := vfs.NewMem()
	a := openAt(t, fs, "a", Options{})
	away := openAt(t, fs, "away", Options{})
	c1 := mustCommit(t, a, fileInode(10, 1), fileDirent(RootID, "shared", 10))
	mustApply(t, away, c1)
	// Away: creates "mine", changes "shared".
	mine := mustCommit(t, away, fileInode(20, 2), fileDirent(RootID, "mine", 20))
	w, _, _ := away.GetInode(10)
	upd := w
	upd.Size, upd.BaseVersion, upd.BaseOrigin = 99, w.Version, w.Origin
	mustCommit(t, away, Op{Inode: &upd})
	// Meanwhile a deletes "shared", makes more, and prunes without it
	// (forgotten member).
	de, _, _ := a.StoredDirent(RootID, "shared")
	mustCommit(t, a, Op{Dirent: &Dirent{Parent: RootID, Name: "shared", Deleted: true, Child: 10,
		ChildVersion: c1.HLC, ChildOrigin: c1.Origin, BaseChild: 10, BaseVersion: de.Version, BaseOrigin: de.Origin}})
	for i := range 20 {
		mustCommit(t, a, fileInode(uint64(100+i), 1), fileDirent(RootID, fmt.Sprint("x", i), uint64(100+i)))
	}
	if _, err := a.Prune(a.VersionVector(), time.Now().Add(time.Hour), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.LogSince(a.self, away.Applied(a.self), 0, 0); !errors.Is(err, ErrPruned) {
		t.Fatalf("LogSince from away's position = %v; want ErrPruned", err)
	}
	n, err := copySnapshot(t, a, away, 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("applied %d records again; want away's 2", n)
	}
	for _, name := range []string{"mine", "shared", "x7"} {
		if _, ok, _ := away.LookupDirent(RootID, name); !ok {
			t.Fatalf("%q missing after the snapshot", name)
		}
	}
	if in, _, _ := away.GetInode(10); in.Size != 99 {
		t.Fatalf("away's change of shared lost: size %d", in.Size)
	}
	// a pulls away's records (its log still has them) and agrees.
	recs, err := away.LogSince(away.self, a.Applied(away.self), 0, 0)
	if err != nil || len(recs) != 3 {
		t.Fatalf("away's log after the snapshot: %d records, %v; want its 2 and the new name of shared", len(recs), err)
	}
	for _, r := range recs {
		if _, _, err := a.Receive(r); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := treeView(t, a), treeView(t, away); got != want {
		t.Fatalf("a shows\n%s\nwant (away)\n%s", got, want)
	}
	if _, ok, _ := a.LookupDirent(RootID, "mine"); !ok || mine == nil {
		t.Fatal("away's new file did not reach a")
	}
	if de, ok, _ := a.LookupDirent(RootID, "shared"); !ok || de.Child != 10 {
		t.Fatal("away's change of shared did not reach a under its name")
	}
}

// TestSnapshotCutShort: a load that does not finish leaves the node
// knowing its namespace is incomplete, across a restart: garbage
// collection and pruning refuse to work from it, and a later load
// completes it.
func TestSnapshotCutShort(t *testing.T) {
	fs := vfs.NewMem()
	a := openAt(t, fs, "a", Options{})
	for i := range 30 {
		mustCommit(t, a, fileInode(uint64(100+i), 1), fileDirent(RootID, fmt.Sprint("x", i), uint64(100+i)))
	}
	b := openAt(t, fs, "b", Options{})
	s, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	l, err := b.LoadSnapshot(s.VV, s.HLC)
	if err != nil {
		t.Fatal(err)
	}
	items, _, err := s.Page(nil, 500)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Add(items); err != nil {
		t.Fatal(err)
	}
	l.Abort()
	s.Close()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openAt(t, fs, "b", Options{})
	if !b.NeedsSnapshot() {
		t.Fatal("a load cut short is not remembered")
	}
	if err := b.RetainedFiles(time.Now(), 0, func(Inode) error { return nil }); !errors.Is(err, ErrSnapshotLoading) {
		t.Fatalf("RetainedFiles on an incomplete namespace = %v; want ErrSnapshotLoading", err)
	}
	if _, err := b.Prune(map[format.NodeID]uint64{}, time.Now(), nil); !errors.Is(err, ErrSnapshotLoading) {
		t.Fatalf("Prune on an incomplete namespace = %v; want ErrSnapshotLoading", err)
	}
	if _, err := copySnapshot(t, a, b, 500); err != nil {
		t.Fatal(err)
	}
	if got, want := treeView(t, b), treeView(t, a); got != want || b.NeedsSnapshot() {
		t.Fatalf("after a full load b shows\n%s\nwant\n%s", got, want)
	}
}

// TestSnapshotRefusesBadItems: items of other prefixes, or that do not
// decode, fail the load.
func TestSnapshotRefusesBadItems(t *testing.T) {
	b := openMem(t, nil)
	for _, it := range []SnapshotItem{
		{Key: []byte("c0123456789012345678901234567890123"), Value: []byte{1}}, // a chunk location
		{Key: []byte("l0123456789012345678901234"), Value: []byte{1}},          // a log record
		{Key: []byte("m/node-id"), Value: make([]byte, 16)},                    // metadata
		{Key: append([]byte{prefixInode}, make([]byte, 8)...), Value: []byte{9, 9}},
		{Key: append([]byte{prefixHead}, make([]byte, 32)...), Value: []byte{1}},
		{Key: []byte{prefixEntryHist, 0, 0, 0, 0, 0, 0, 0, 1, 'a'}, Value: nil},
	} {
		l, err := b.LoadSnapshot(nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Add([]SnapshotItem{it}); err == nil {
			t.Fatalf("item %q accepted", it.Key)
		}
		l.Abort()
	}
}

// TestOwnRecordsBeyondTheVectorRecovered: a crash while a snapshot load
// applied this node's records again leaves its log ahead of its vector;
// Open applies them, so no sequence number is used twice.
func TestOwnRecordsBeyondTheVectorRecovered(t *testing.T) {
	fs := vfs.NewMem()
	db := openAt(t, fs, "a", Options{})
	for i := range 3 {
		mustCommit(t, db, fileInode(uint64(100+i), 1), fileDirent(RootID, fmt.Sprint("x", i), uint64(100+i)))
	}
	// As a load cut short after its vector moved: the vector at 1.
	if err := db.pdb.Set(vvKey(db.self), putU64(1), nil); err != nil {
		t.Fatal(err)
	}
	self := db.self
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openAt(t, fs, "a", Options{})
	if got := db.Applied(self); got != 3 {
		t.Fatalf("after reopening, own records applied up to %d; want 3", got)
	}
	rec := mustCommit(t, db, fileInode(200, 1), fileDirent(RootID, "next", 200))
	if rec.Seq != 4 {
		t.Fatalf("next own record is %d; want 4", rec.Seq)
	}
}
