package index

import (
	"testing"

	"github.com/cockroachdb/pebble/vfs"
)

// TestNames: an inode's names are the entries that show it: a second
// entry is a second link; deleting one name, or replacing it with
// another file, leaves the others; an index made before link keys gets
// them at Open.
func TestNames(t *testing.T) {
	fs := vfs.NewMem()
	db := openAt(t, fs, "db", Options{})
	mustCommit(t, db, fileInode(10, 1), fileDirent(RootID, "a", 10))
	mustCommit(t, db, fileDirent(RootID, "b", 10))
	count := func(want int) {
		t.Helper()
		names, err := db.Names(10)
		if err != nil || len(names) != want {
			t.Fatalf("Names(10) = %+v, %v; want %d", names, err, want)
		}
	}
	count(2)
	a, _, _ := db.StoredDirent(RootID, "a")
	mustCommit(t, db, Op{Dirent: &Dirent{Parent: RootID, Name: "a", Deleted: true, Child: 10,
		BaseChild: 10, BaseVersion: a.Version, BaseOrigin: a.Origin}})
	count(1)
	b, _, _ := db.StoredDirent(RootID, "b")
	mustCommit(t, db, fileInode(11, 1), Op{Dirent: &Dirent{Parent: RootID, Name: "b", Child: 11, Type: TypeFile,
		BaseChild: 10, BaseVersion: b.Version, BaseOrigin: b.Origin}})
	count(0)
	mustCommit(t, db, fileDirent(RootID, "c", 10))
	count(1)

	// An index without link keys (made before them) gets them at Open.
	if err := db.pdb.DeleteRange([]byte{prefixLinks}, []byte{prefixLinks + 1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.pdb.Delete(keyLinksIndexed, nil); err != nil {
		t.Fatal(err)
	}
	count(0)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openAt(t, fs, "db", Options{})
	count(1)
}

// TestSubdirs: a directory's subdirectory count follows mkdir, rmdir,
// renames and a snapshot, and is rebuilt at Open for an index without it.
func TestSubdirs(t *testing.T) {
	fs := vfs.NewMem()
	db := openAt(t, fs, "db", Options{})
	dir := func(id uint64) Op { return Op{Inode: &Inode{ID: id, Type: TypeDir, Mode: 0o755}} }
	dirent := func(parent uint64, name string, child uint64) Op {
		return Op{Dirent: &Dirent{Parent: parent, Name: name, Child: child, Type: TypeDir}}
	}
	want := func(db *DB, id, n uint64) {
		t.Helper()
		if got, err := db.Subdirs(id); err != nil || got != n {
			t.Fatalf("Subdirs(%d) = %d, %v; want %d", id, got, err, n)
		}
	}
	mustCommit(t, db, dir(10), dirent(RootID, "a", 10), dir(11), dirent(RootID, "b", 11), fileInode(12, 1), fileDirent(RootID, "f", 12))
	want(db, RootID, 2)
	mustCommit(t, db, dir(13), dirent(10, "c", 13))
	want(db, 10, 1)
	b, _, _ := db.StoredDirent(RootID, "b")
	mustCommit(t, db, Op{Dirent: &Dirent{Parent: RootID, Name: "b", Deleted: true, Child: 11, Type: TypeDir,
		BaseChild: 11, BaseVersion: b.Version, BaseOrigin: b.Origin}})
	want(db, RootID, 1)
	// A snapshot carries the counts.
	c := openAt(t, fs, "c", Options{})
	if _, err := copySnapshot(t, db, c, 200); err != nil {
		t.Fatal(err)
	}
	want(c, RootID, 1)
	want(c, 10, 1)
	// An index without counts gets them at Open.
	for _, p := range []byte{prefixLinkCount, prefixSubdirs} {
		if err := db.pdb.DeleteRange([]byte{p}, []byte{p + 1}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.pdb.Delete(keyLinksCounted, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openAt(t, fs, "db", Options{})
	want(db, RootID, 1)
	want(db, 10, 1)
	if n, err := db.LinkCount(12); err != nil || n != 1 {
		t.Fatalf("LinkCount(12) = %d, %v; want 1", n, err)
	}
	mustCommit(t, db, fileDirent(10, "g", 12))
	if n, err := db.LinkCount(12); err != nil || n != 2 {
		t.Fatalf("LinkCount(12) after a link = %d, %v; want 2", n, err)
	}
}
