package index

import (
	"bytes"
	"reflect"
	"testing"
)

func TestInodeXattrMethods(t *testing.T) {
	var in Inode
	in.SetXattr("user.b", []byte("2"))
	in.SetXattr("user.a", nil)
	in.SetXattr("user.c", []byte("3"))
	shared := in // shares the slice
	in.SetXattr("user.b", []byte("two"))
	if !in.RemoveXattr("user.c") || in.RemoveXattr("user.c") {
		t.Fatal("RemoveXattr of user.c: want true then false")
	}
	want := []Xattr{{"user.a", []byte{}}, {"user.b", []byte("two")}}
	if !reflect.DeepEqual(in.Xattrs, want) {
		t.Fatalf("Xattrs = %q; want %q", in.Xattrs, want)
	}
	if v, ok := shared.Xattr("user.b"); !ok || string(v) != "2" || len(shared.Xattrs) != 3 {
		t.Fatalf("a copy made before the changes sees them: %q", shared.Xattrs)
	}
	if v, ok := in.Xattr("user.a"); !ok || v == nil || len(v) != 0 {
		t.Fatalf("Xattr(user.a) = %q, %v; want an empty value", v, ok)
	}
	if _, ok := in.Xattr("user.zz"); ok {
		t.Fatal("Xattr of a missing name reports it present")
	}
	if got := in.XattrBytes(); got != len("user.a")+1+len("user.b")+1+3 {
		t.Fatalf("XattrBytes = %d", got)
	}
	in.RemoveXattr("user.a")
	in.RemoveXattr("user.b")
	if in.Xattrs != nil {
		t.Fatalf("no attributes left, Xattrs = %q; want nil (so the inode encodes as format 1)", in.Xattrs)
	}
}

// An inode's attributes are stored (value format 2), read back, and
// replicated by its record; removing them all stores format 1 again.
func TestXattrsStoredAndReplicated(t *testing.T) {
	a, b := openMem(t, nil), openMem(t, nil)
	ino := fileInode(7, 0)
	big := bytes.Repeat([]byte{0x5a}, MaxXattrValue)
	ino.Inode.SetXattr("user.big", big)
	ino.Inode.SetXattr("trusted.t", []byte("t"))
	r1 := mustCommit(t, a, ino, fileDirent(RootID, "f", 7))
	mustApply(t, b, r1)
	for _, db := range []*DB{a, b} {
		got, ok, err := db.GetInode(7)
		if err != nil || !ok {
			t.Fatalf("GetInode = %v, %v", ok, err)
		}
		if v, _ := got.Xattr("user.big"); !bytes.Equal(v, big) || len(got.Xattrs) != 2 {
			t.Fatalf("stored inode has xattrs %d, user.big %d bytes", len(got.Xattrs), len(v))
		}
	}
	if f := storedFormat(t, a, 7); f != formatV2 {
		t.Fatalf("stored inode value has format %d; want 2", f)
	}
	cleared := *r1.Ops[0].Inode
	cleared.Xattrs = nil
	r2 := mustCommit(t, a, withBase(Op{Inode: &cleared}, refOf(r1)))
	mustApply(t, b, r2)
	for _, db := range []*DB{a, b} {
		got, _, _ := db.GetInode(7)
		if got.Xattrs != nil {
			t.Fatalf("xattrs after removing them all: %q", got.Xattrs)
		}
	}
	if f := storedFormat(t, a, 7); f != formatV1 {
		t.Fatalf("stored inode value without xattrs has format %d; want 1", f)
	}
}

func storedFormat(t *testing.T, db *DB, id uint64) byte {
	t.Helper()
	v, closer, err := db.pdb.Get(inodeKey(id))
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	return v[0]
}

// Two peers changing a file's attributes at once (A sets user.a, B sets
// user.b, both on the first version) converge in every order of arrival:
// one version wins whole, as for any concurrent change of an inode's
// metadata, and no conflict copy is made for it (same content).
func TestConcurrentXattrsConverge(t *testing.T) {
	a, b := openMem(t, nil), openMem(t, nil)
	r1 := mustCommit(t, a, fileInode(7, 0), fileDirent(RootID, "f", 7))
	mustApply(t, b, r1)
	ia := *r1.Ops[0].Inode
	ia.SetXattr("user.a", []byte("A"))
	ra := mustCommit(t, a, withBase(Op{Inode: &ia}, refOf(r1)))
	ib := *r1.Ops[0].Inode
	ib.SetXattr("user.b", []byte("B"))
	rb := mustCommit(t, b, withBase(Op{Inode: &ib}, refOf(r1)))
	winner := rb
	if newer(ra.HLC, ra.Origin, rb.HLC, rb.Origin) {
		winner = ra
	}
	var want string
	for i, order := range interleavings([]*Record{r1, ra}, []*Record{rb}) {
		if order[0] != r1 {
			continue
		}
		db := replay(t, order)
		got := view(t, db, 7)
		if want == "" {
			want = got
		} else if got != want {
			t.Fatalf("order %d shows\n%s\nwant\n%s", i, got, want)
		}
		des, _ := db.ReadDir(RootID)
		if len(des) != 1 {
			t.Fatalf("order %d: ReadDir = %+v; want f alone", i, des)
		}
		w, _, _ := db.GetInode(7)
		if !reflect.DeepEqual(w.Xattrs, winner.Ops[0].Inode.Xattrs) {
			t.Fatalf("order %d: xattrs %q; want the newer version's %q", i, w.Xattrs, winner.Ops[0].Inode.Xattrs)
		}
	}
}
