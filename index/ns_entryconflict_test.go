package index

import (
	"fmt"
	"testing"
	"time"
)

func dirInode(id uint64) Op { return Op{Inode: &Inode{ID: id, Type: TypeDir, Mode: 0o755}} }

// entry is a dirent op in parent that replaces entry version base (zero:
// the name looked free).
func entry(parent uint64, name string, child uint64, typ EntryType, base *Dirent) Op {
	de := &Dirent{Parent: parent, Name: name, Child: child, Type: typ}
	if base != nil {
		de.BaseChild, de.BaseVersion, de.BaseOrigin = base.Child, base.Version, base.Origin
	}
	return Op{Dirent: de}
}

// gone is a tombstone of the shown entry base (Moved for a rename),
// having seen child version saw.
func gone(base Dirent, saw VersionRef, moved bool) Op {
	return Op{Dirent: &Dirent{Parent: base.Parent, Name: base.Name, Child: base.Child, Type: base.Type,
		Deleted: true, Moved: moved, ChildVersion: saw.Version, ChildOrigin: saw.Origin,
		BaseChild: base.Child, BaseVersion: base.Version, BaseOrigin: base.Origin}}
}

func direntOf(r *Record, name string) *Dirent {
	for _, op := range r.Ops {
		if op.Dirent != nil && op.Dirent.Name == name {
			return op.Dirent
		}
	}
	panic("no dirent " + name)
}

// allOrders replays the logs in every interleaving (each log in order),
// checks that every replica shows and stores the same, calls check on each
// and returns the replica of the first order.
func allOrders(t *testing.T, check func(order int, db *DB), logs ...[]*Record) *DB {
	t.Helper()
	var first *DB
	var want, wantDump string
	for i, order := range interleavings(logs...) {
		db := replay(t, order)
		got, dump := view(t, db), namespaceDump(t, db)
		if i == 0 {
			first, want, wantDump = db, got, dump
		} else if got != want {
			t.Fatalf("order %d shows\n%s\nwant\n%s", i, got, want)
		} else if dump != wantDump {
			t.Fatalf("order %d stores a different state", i)
		}
		check(i, db)
	}
	return first
}

// listing renders ReadDir(parent) as "name>child" pairs.
func listing(t *testing.T, db *DB, parent uint64) string {
	t.Helper()
	des, err := db.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	s := ""
	for _, de := range des {
		s += fmt.Sprintf("%s>%d ", de.Name, de.Child)
	}
	return s
}

// winLose orders the dirents named name of ra and rb: the newer first.
func winLose(ra, rb *Record, name string) (w, l *Dirent) {
	w, l = direntOf(ra, name), direntOf(rb, name)
	if newer(l.Version, l.Origin, w.Version, w.Origin) {
		w, l = l, w
	}
	return w, l
}

// concurrentCreates: A creates "same" -> 7, B, unaware, "same" -> 8.
func concurrentCreates(t *testing.T) (ra, rb *Record) {
	a, b := openMem(t, nil), openMem(t, nil)
	ra = mustCommit(t, a, fileInode(7, 1), entry(RootID, "same", 7, TypeFile, nil))
	rb = mustCommit(t, b, fileInode(8, 2), entry(RootID, "same", 8, TypeFile, nil))
	return ra, rb
}

func TestConcurrentCreateSameName(t *testing.T) {
	ra, rb := concurrentCreates(t)
	w, l := winLose(ra, rb, "same")
	want := fmt.Sprintf("same>%d %s>%d ", w.Child, ConflictName("same", l.Ref()), l.Child)
	allOrders(t, func(i int, db *DB) {
		if got := listing(t, db, RootID); got != want {
			t.Fatalf("order %d: ReadDir %s; want %s", i, got, want)
		}
		ce, ok, err := db.ConflictEntry(RootID, ConflictName("same", l.Ref()))
		if err != nil || !ok || ce.Name != "same" || ce.Ref() != l.Ref() || ce.Child != l.Child {
			t.Fatalf("ConflictEntry = %+v, %v, %v", ce, ok, err)
		}
		if _, ok, _ := db.ConflictEntry(RootID, "same"); ok {
			t.Fatal("ConflictEntry of the winner's name")
		}
	}, []*Record{ra}, []*Record{rb})
}

func TestConcurrentMkdirSameName(t *testing.T) {
	a, b := openMem(t, nil), openMem(t, nil)
	ra1 := mustCommit(t, a, dirInode(7), entry(RootID, "d", 7, TypeDir, nil))
	ra2 := mustCommit(t, a, fileInode(9, 1), entry(7, "x", 9, TypeFile, nil))
	rb1 := mustCommit(t, b, dirInode(8), entry(RootID, "d", 8, TypeDir, nil))
	rb2 := mustCommit(t, b, fileInode(10, 1), entry(8, "y", 10, TypeFile, nil))
	w, l := winLose(ra1, rb1, "d")
	want := fmt.Sprintf("d>%d %s>%d ", w.Child, ConflictName("d", l.Ref()), l.Child)
	allOrders(t, func(i int, db *DB) {
		if got := listing(t, db, RootID); got != want {
			t.Fatalf("order %d: ReadDir %s; want %s", i, got, want)
		}
		de, ok, _ := db.LookupDirent(RootID, ConflictName("d", l.Ref()))
		if !ok || de.Type != TypeDir || de.Child != l.Child {
			t.Fatalf("LookupDirent(copy) = %+v, %v", de, ok)
		}
		if got := listing(t, db, 7) + listing(t, db, 8); got != "x>9 y>10 " {
			t.Fatalf("order %d: contents %s; want both directories' entries", i, got)
		}
	}, []*Record{ra1, ra2}, []*Record{rb1, rb2})
}

func TestRenameOntoRacingCreate(t *testing.T) {
	a, b := openMem(t, nil), openMem(t, nil)
	r1 := mustCommit(t, a, fileInode(7, 1), entry(RootID, "src", 7, TypeFile, nil))
	mustApply(t, b, r1)
	src, _, _ := a.LookupDirent(RootID, "src")
	mv := mustCommit(t, a, gone(src, refOf(r1), true), entry(RootID, "dst", 7, TypeFile, nil))
	rc := mustCommit(t, b, fileInode(8, 2), entry(RootID, "dst", 8, TypeFile, nil))
	w, l := winLose(mv, rc, "dst")
	want := fmt.Sprintf("dst>%d %s>%d ", w.Child, ConflictName("dst", l.Ref()), l.Child)
	allOrders(t, func(i int, db *DB) {
		if got := listing(t, db, RootID); got != want {
			t.Fatalf("order %d: ReadDir %s; want %s", i, got, want)
		}
	}, []*Record{r1, mv}, []*Record{rc})
}

// A delete racing a create of the same name keeps the create, under the
// name itself.
func TestDeleteRacingCreateKeepsCreate(t *testing.T) {
	a, b := openMem(t, nil), openMem(t, nil)
	r1 := mustCommit(t, a, fileInode(7, 1), entry(RootID, "f", 7, TypeFile, nil))
	f, _, _ := a.LookupDirent(RootID, "f")
	rc := mustCommit(t, b, fileInode(8, 2), entry(RootID, "f", 8, TypeFile, nil))
	// The delete comes later in wall time than the create (clocks tick in
	// milliseconds: within the same one, node IDs would decide).
	for uint64(time.Now().UnixMilli())<<16 <= rc.HLC {
		time.Sleep(100 * time.Microsecond)
	}
	del := mustCommit(t, a, gone(f, refOf(r1), false))
	if !newer(del.HLC, del.Origin, rc.HLC, rc.Origin) {
		t.Fatal("setup: the delete should be the newest")
	}
	allOrders(t, func(i int, db *DB) {
		if got := listing(t, db, RootID); got != "f>8 " {
			t.Fatalf("order %d: ReadDir %s; want f>8", i, got)
		}
	}, []*Record{r1, del}, []*Record{rc})
}

// converged returns two replicas that have both creates of "same".
func converged(t *testing.T) (c, d *DB, w, l *Dirent) {
	ra, rb := concurrentCreates(t)
	w, l = winLose(ra, rb, "same")
	return replay(t, []*Record{ra, rb}), replay(t, []*Record{rb, ra}), w, l
}

func TestResolveEntryConflictByUnlink(t *testing.T) {
	c, d, w, l := converged(t)
	ce, ok, err := c.ConflictEntry(RootID, ConflictName("same", l.Ref()))
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	child, _, _ := c.GetInode(ce.Child)
	rec := mustCommit(t, c, gone(ce, child.Ref(), false))
	mustApply(t, d, rec)
	want := fmt.Sprintf("same>%d ", w.Child)
	for _, db := range []*DB{c, d} {
		if got := listing(t, db, RootID); got != want {
			t.Fatalf("ReadDir %s; want %s", got, want)
		}
		if _, ok, _ := db.LookupDirent(RootID, ConflictName("same", l.Ref())); ok {
			t.Fatal("resolved copy still found by LookupDirent")
		}
	}
	if view(t, c) != view(t, d) {
		t.Fatal("diverged after resolve")
	}
}

func TestResolveEntryConflictByRename(t *testing.T) {
	c, d, w, l := converged(t)
	ce, ok, err := c.ConflictEntry(RootID, ConflictName("same", l.Ref()))
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	child, _, _ := c.GetInode(ce.Child)
	rec := mustCommit(t, c, gone(ce, child.Ref(), true), entry(RootID, "other", ce.Child, TypeFile, nil))
	mustApply(t, d, rec)
	want := fmt.Sprintf("other>%d same>%d ", l.Child, w.Child)
	for _, db := range []*DB{c, d} {
		if got := listing(t, db, RootID); got != want {
			t.Fatalf("ReadDir %s; want %s", got, want)
		}
	}
	if view(t, c) != view(t, d) {
		t.Fatal("diverged after rename")
	}
}

// A create made after a delete, naming the tombstone, is no conflict.
func TestCreateAfterDeleteIsNoConflict(t *testing.T) {
	a := openMem(t, nil)
	r1 := mustCommit(t, a, fileInode(7, 1), entry(RootID, "f", 7, TypeFile, nil))
	f, _, _ := a.LookupDirent(RootID, "f")
	del := mustCommit(t, a, gone(f, refOf(r1), false))
	tomb, ok, err := a.StoredDirent(RootID, "f")
	if err != nil || !ok || !tomb.Deleted {
		t.Fatalf("StoredDirent = %+v, %v, %v", tomb, ok, err)
	}
	r2 := mustCommit(t, a, fileInode(8, 2), entry(RootID, "f", 8, TypeFile, &tomb))
	for _, db := range []*DB{a, replay(t, []*Record{r1, del, r2})} {
		if got := listing(t, db, RootID); got != "f>8 " {
			t.Fatalf("ReadDir %s; want f>8", got)
		}
		if c, _ := has(db.pdb, conflictedKey(RootID, "f")); c {
			t.Fatal("the name is marked conflicted")
		}
	}
}
