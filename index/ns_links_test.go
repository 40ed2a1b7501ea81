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
