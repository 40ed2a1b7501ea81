package index

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/oashare/oashare/index/format"
)

// interleavings returns every merge of the logs, keeping the order of each.
func interleavings(logs ...[]*Record) [][]*Record {
	total := 0
	for _, l := range logs {
		total += len(l)
	}
	var out [][]*Record
	var rec func(pos []int, acc []*Record)
	rec = func(pos []int, acc []*Record) {
		if len(acc) == total {
			out = append(out, append([]*Record(nil), acc...))
			return
		}
		for i, l := range logs {
			if pos[i] < len(l) {
				pos[i]++
				rec(pos, append(acc, l[pos[i]-1]))
				pos[i]--
			}
		}
	}
	rec(make([]int, len(logs)), nil)
	return out
}

// replay applies recs, in order, to a fresh DB.
func replay(t *testing.T, recs []*Record) *DB {
	t.Helper()
	db := openMem(t, nil)
	for _, r := range recs {
		mustApply(t, db, r)
	}
	return db
}

// view is everything a reader sees of directory RootID and the inodes
// named in it (conflict copies included), plus the heads of ids.
func view(t *testing.T, db *DB, ids ...uint64) string {
	t.Helper()
	des, err := db.ReadDir(RootID)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, de := range des {
		got, ok, err := db.LookupDirent(RootID, de.Name)
		if err != nil || !ok || !reflect.DeepEqual(got, de) {
			t.Fatalf("LookupDirent(%q) = %+v, %v, %v; ReadDir has %+v", de.Name, got, ok, err, de)
		}
		in, ok, err := db.GetInode(de.Child)
		if err != nil || !ok {
			t.Fatalf("GetInode(%d) of %q = %v, %v", de.Child, de.Name, ok, err)
		}
		fmt.Fprintf(&b, "%+v -> %+v\n", de, in)
	}
	for _, id := range ids {
		hs, err := db.Heads(id)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "heads %d: %+v\n", id, hs)
	}
	return b.String()
}

func withBase(op Op, base VersionRef, sup ...VersionRef) Op {
	in := *op.Inode
	in.BaseVersion, in.BaseOrigin = base.Version, base.Origin
	in.Supersedes = sup
	return Op{Inode: &in}
}

func refOf(r *Record) VersionRef { return r.Ops[0].Inode.Ref() }

// concurrentWrites makes: A creates file "f" (inode 7); B receives it; A
// and B both write it on that version (B after seeing A's write, so B's
// stamp wins, but B's write is based on the first version); A receives B's
// write and writes again on the winner. It returns the logs of A and B.
func concurrentWrites(t *testing.T) (logA, logB []*Record) {
	a, b := openMem(t, nil), openMem(t, nil)
	r1 := mustCommit(t, a, fileInode(7, 0), fileDirent(RootID, "f", 7))
	mustApply(t, b, r1)
	ra2 := mustCommit(t, a, withBase(fileInode(7, 100), refOf(r1)))
	mustApply(t, b, ra2)
	rb2 := mustCommit(t, b, withBase(fileInode(7, 200), refOf(r1)))
	mustApply(t, a, rb2)
	ra3 := mustCommit(t, a, withBase(fileInode(7, 300), refOf(rb2)))
	return []*Record{r1, ra2, ra3}, []*Record{rb2}
}

func TestConcurrentWritesConverge(t *testing.T) {
	logA, logB := concurrentWrites(t)
	ra2, rb2, ra3 := logA[1], logB[0], logA[2]
	if !newer(rb2.HLC, rb2.Origin, ra2.HLC, ra2.Origin) {
		t.Fatal("setup: B's write should be newer than A's")
	}
	orders := interleavings(logA, logB)
	if len(orders) != 4 {
		t.Fatalf("%d interleavings; want 4", len(orders))
	}
	loser := ra2.Ops[0].Inode
	wantName := fmt.Sprintf("f.conflict-%s-%d", loser.Origin.Short(), loser.Version)
	var want, wantDump string
	for i, order := range orders {
		db := replay(t, order)
		got := view(t, db, 7)
		dump := namespaceDump(t, db)
		if i == 0 {
			want, wantDump = got, dump
		} else {
			if got != want {
				t.Fatalf("order %d shows\n%s\nwant\n%s", i, got, want)
			}
			if dump != wantDump {
				t.Fatalf("order %d stores a different state", i)
			}
		}
		des, err := db.ReadDir(RootID)
		if err != nil {
			t.Fatal(err)
		}
		if len(des) != 2 || des[0].Name != "f" || des[1].Name != wantName {
			t.Fatalf("order %d: ReadDir = %+v; want f and %s", i, des, wantName)
		}
		if !IsConflictID(des[1].Child) || des[1].Type != TypeFile {
			t.Fatalf("conflict entry %+v", des[1])
		}
		w, _, _ := db.GetInode(7)
		if w.Size != 300 || w.Ref() != refOf(ra3) {
			t.Fatalf("order %d: winner %+v; want A's last write", i, w)
		}
		c, ok, err := db.GetInode(des[1].Child)
		if err != nil || !ok {
			t.Fatalf("GetInode(conflict) = %v, %v", ok, err)
		}
		wantC := *loser
		wantC.ID = des[1].Child
		if !reflect.DeepEqual(c, wantC) {
			t.Fatalf("conflict inode %+v; want %+v", c, wantC)
		}
		hs, _ := db.Heads(7)
		if len(hs) != 2 || hs[0].Ref() != refOf(ra3) || hs[1].Ref() != refOf(ra2) {
			t.Fatalf("heads %+v", hs)
		}
		if id, ref, ok, err := db.ConflictOf(des[1].Child); err != nil || !ok || id != 7 || ref != loser.Ref() {
			t.Fatalf("ConflictOf = %d, %+v, %v, %v", id, ref, ok, err)
		}
	}
}

// A write based on the winner that arrives before the winner itself makes
// the winner's base look like a head only until the winner arrives.
func TestWriteBeforeItsBase(t *testing.T) {
	a, b := openMem(t, nil), openMem(t, nil)
	r1 := mustCommit(t, a, fileInode(7, 0), fileDirent(RootID, "f", 7))
	mustApply(t, b, r1)
	rb := mustCommit(t, b, withBase(fileInode(7, 1), refOf(r1)))
	mustApply(t, a, rb)
	ra := mustCommit(t, a, withBase(fileInode(7, 2), refOf(rb)))

	c := openMem(t, nil)
	mustApply(t, c, r1)
	mustApply(t, c, ra) // based on rb, which c has not seen
	if hs, _ := c.Heads(7); len(hs) != 2 {
		t.Fatalf("before the base arrives: heads %+v; want r1 and ra", hs)
	}
	mustApply(t, c, rb)
	hs, _ := c.Heads(7)
	if len(hs) != 1 || hs[0].Ref() != refOf(ra) {
		t.Fatalf("heads %+v; want only ra", hs)
	}
	des, _ := c.ReadDir(RootID)
	if len(des) != 1 {
		t.Fatalf("ReadDir %+v; want only f", des)
	}
	if view(t, c, 7) != view(t, a, 7) {
		t.Fatalf("diverged:\n%s\n%s", view(t, c, 7), view(t, a, 7))
	}
}

// Unlinking a conflict copy commits the winner's content superseding the
// losing head: the copy is gone everywhere, the winner's content stays.
func TestResolveConflict(t *testing.T) {
	logA, logB := concurrentWrites(t)
	c, d := replay(t, append(append([]*Record(nil), logA...), logB...)), replay(t, append(append([]*Record(nil), logB...), logA...))
	des, _ := c.ReadDir(RootID)
	if len(des) != 2 {
		t.Fatalf("ReadDir %+v", des)
	}
	id, ref, ok, err := c.ConflictOf(des[1].Child)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	w, _, _ := c.GetInode(id)
	res := w
	res.BaseVersion, res.BaseOrigin = w.Version, w.Origin
	res.Supersedes = []VersionRef{ref}
	rec := mustCommit(t, c, Op{Inode: &res})
	mustApply(t, d, rec)
	for _, db := range []*DB{c, d} {
		des, _ := db.ReadDir(RootID)
		if len(des) != 1 || des[0].Name != "f" {
			t.Fatalf("ReadDir after resolve %+v", des)
		}
		if _, ok, _ := db.LookupDirent(RootID, ConflictName("f", ref)); ok {
			t.Fatal("conflict copy still found by LookupDirent")
		}
		got, _, _ := db.GetInode(id)
		if got.Size != w.Size || got.Root != w.Root || got.Ref() != refOf(rec) {
			t.Fatalf("winner after resolve %+v; was %+v", got, w)
		}
		if hs, _ := db.Heads(id); len(hs) != 1 {
			t.Fatalf("heads after resolve %+v", hs)
		}
	}
	if view(t, c, 7) != view(t, d, 7) {
		t.Fatal("diverged after resolve")
	}
}

// tombstone deletes entry version base (of child) in RootID, having seen
// version saw of the child.
func tombstone(name string, child uint64, saw, base VersionRef, moved bool) Op {
	return Op{Dirent: &Dirent{Parent: RootID, Name: name, Child: child, Type: TypeFile, Deleted: true,
		Moved: moved, ChildVersion: saw.Version, ChildOrigin: saw.Origin,
		BaseChild: child, BaseVersion: base.Version, BaseOrigin: base.Origin}}
}

// entryRef returns the stamp of the first dirent op of r.
func entryRef(r *Record) VersionRef {
	for _, op := range r.Ops {
		if op.Dirent != nil {
			return op.Dirent.Ref()
		}
	}
	panic("record has no dirent op")
}

func TestDeleteRacingUpdate(t *testing.T) {
	a, b := openMem(t, nil), openMem(t, nil)
	r1 := mustCommit(t, a, fileInode(7, 0), fileDirent(RootID, "f", 7))
	mustApply(t, b, r1)
	del := mustCommit(t, a, tombstone("f", 7, refOf(r1), entryRef(r1), false))
	upd := mustCommit(t, b, withBase(fileInode(7, 9), refOf(r1)))
	var want string
	for i, order := range interleavings([]*Record{r1, del}, []*Record{upd}) {
		db := replay(t, order)
		de, ok, err := db.LookupDirent(RootID, "f")
		if err != nil || !ok || de.Child != 7 || de.Deleted {
			t.Fatalf("order %d: LookupDirent = %+v, %v, %v; want the updated file", i, de, ok, err)
		}
		if in, _, _ := db.GetInode(7); in.Size != 9 {
			t.Fatalf("order %d: inode %+v; want the update", i, in)
		}
		got := view(t, db, 7)
		if i == 0 {
			want = got
		} else if got != want {
			t.Fatalf("order %d shows\n%s\nwant\n%s", i, got, want)
		}
	}
	// A delete that saw the update hides the file for good.
	mustApply(t, a, upd)
	mustApply(t, b, del)
	del2 := mustCommit(t, a, tombstone("f", 7, refOf(upd), entryRef(del), false))
	mustApply(t, b, del2)
	for _, db := range []*DB{a, b} {
		if _, ok, _ := db.LookupDirent(RootID, "f"); ok {
			t.Fatal("deleted after seeing the update, still visible")
		}
		if des, _ := db.ReadDir(RootID); len(des) != 0 {
			t.Fatalf("ReadDir %+v", des)
		}
	}
}

func TestRenameTombstoneNeverResurrects(t *testing.T) {
	a, b := openMem(t, nil), openMem(t, nil)
	r1 := mustCommit(t, a, fileInode(7, 0), fileDirent(RootID, "f", 7))
	mustApply(t, b, r1)
	mv := mustCommit(t, a, tombstone("f", 7, refOf(r1), entryRef(r1), true), fileDirent(RootID, "g", 7))
	upd := mustCommit(t, b, withBase(fileInode(7, 9), refOf(r1)))
	for i, order := range interleavings([]*Record{r1, mv}, []*Record{upd}) {
		db := replay(t, order)
		des, _ := db.ReadDir(RootID)
		if len(des) != 1 || des[0].Name != "g" {
			t.Fatalf("order %d: ReadDir %+v; want only g", i, des)
		}
		if _, ok, _ := db.LookupDirent(RootID, "f"); ok {
			t.Fatalf("order %d: the old name came back", i)
		}
	}
}

func TestConflictName(t *testing.T) {
	h := VersionRef{Version: 42, Origin: format.NodeID{0xab, 0xcd, 0xef, 0x01, 0x99}}
	if got := ConflictName("notes.txt", h); got != "notes.txt.conflict-abcdef01-42" {
		t.Fatalf("ConflictName = %q", got)
	}
	long := ConflictName(strings.Repeat("x", MaxNameLen), h)
	if len(long) != MaxNameLen || !strings.HasSuffix(long, ".conflict-abcdef01-42") {
		t.Fatalf("long name %q (%d bytes)", long, len(long))
	}
	if id := conflictID(7, h); !IsConflictID(id) || id == conflictID(7, VersionRef{43, h.Origin}) {
		t.Fatalf("conflictID %x", id)
	}
	db := openMem(t, nil)
	for range 1000 {
		if IsConflictID(db.NewID()) {
			t.Fatal("NewID set the conflict bit")
		}
	}
}
