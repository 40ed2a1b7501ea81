package index

import (
	"reflect"
	"testing"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/oashare/oashare/index/format"
)

// TestPendingJournal: a pending version survives a crash (PutPending is
// synced), decodes to what was put, and goes away in the same batch as
// the record that publishes it, even a lazily committed one, which a
// crash takes back together with the deletion.
func TestPendingJournal(t *testing.T) {
	fs := vfs.NewStrictMem()
	db := openAt(t, fs, "/db", Options{Logger: quietLogger})
	p := Pending{ID: 42, Size: 1000, Root: format.Sum([]byte("new")), Depth: 1, OrigSize: 3, OrigRoot: format.Sum([]byte("old")),
		Base: VersionRef{Version: 77, Origin: format.NodeID{1, 2}}, MtimeNs: -5, ContentChanged: true,
		AttrChange: AttrChange{SetMode: true, Mode: 0o640, SetGID: true, Gid: 1000, SetMtime: true, AtimeNs: 9, CtimeNs: 11}}
	q := Pending{ID: 7, Size: 5, Root: format.Sum([]byte("x")), AttrChange: AttrChange{SetUID: true, Uid: 3, SetAtime: true}}
	for _, x := range []Pending{p, q} {
		if err := db.PutPending(x); err != nil {
			t.Fatal(err)
		}
	}
	crash := func() {
		fs.SetIgnoreSyncs(true)
		db.Close()
		fs.ResetToSyncedState()
		fs.SetIgnoreSyncs(false)
		db = openAt(t, fs, "/db", Options{Logger: quietLogger})
	}
	crash()
	got, err := db.Pendings()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []Pending{q, p}) {
		t.Fatalf("after a crash: %+v\nwant %+v", got, []Pending{q, p})
	}
	// Published lazily, then a crash before any sync: both come back.
	mustInode := fileInode(42, 1000)
	if _, err := db.Commit([]Op{mustInode}, Unsynced, 42); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.Pendings(); len(got) != 1 || got[0].ID != 7 {
		t.Fatalf("after the publishing commit: %+v", got)
	}
	crash()
	if got, _ := db.Pendings(); len(got) != 2 {
		t.Fatalf("a crash took back the record but not the deletion: %+v", got)
	}
	if _, ok, _ := db.GetInode(42); ok {
		t.Fatal("the unsynced record survived the crash")
	}
	// Published and synced: gone for good.
	if _, err := db.Commit([]Op{mustInode}, Unsynced, 42); err != nil {
		t.Fatal(err)
	}
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	crash()
	if got, _ := db.Pendings(); len(got) != 1 || got[0].ID != 7 {
		t.Fatalf("after a synced publish and a crash: %+v", got)
	}
	if err := db.DeletePending(7); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.Pendings(); len(got) != 0 {
		t.Fatalf("after DeletePending: %+v", got)
	}
	// A damaged entry is an error, not a guess.
	if _, err := decodePending(1, append(encodePending(&p), 0)); err == nil {
		t.Error("trailing bytes accepted")
	}
	bad := encodePending(&p)
	bad[1] = 0x80
	if _, err := decodePending(1, bad); err == nil {
		t.Error("unknown flags accepted")
	}
}

// TestUnderTarget: items below the target are listed with their count
// of copies, updated, and taken off once at target; the counts agree with
// the list across a reopen.
func TestUnderTarget(t *testing.T) {
	fs := vfs.NewMem()
	db := openAt(t, fs, "/db", Options{Logger: quietLogger})
	g1, g2 := Item{Group: true, Hash: format.Sum([]byte("g1"))}, Item{Group: true, Hash: format.Sum([]byte("g2"))}
	c1 := Item{Hash: format.Sum([]byte("c1"))}
	if err := db.SetCopies([]Item{g1, g2, c1}, []int{1, 3, 2}, 3); err != nil {
		t.Fatal(err)
	}
	check := func(wantG, wantC int64, want map[Item]int) {
		t.Helper()
		g, c, err := db.UnderTarget()
		if err != nil || g != wantG || c != wantC {
			t.Fatalf("UnderTarget = %d groups, %d chunks, %v; want %d, %d", g, c, err, wantG, wantC)
		}
		got := map[Item]int{}
		db.ListUnder(nil, 0, func(u Under) bool { got[u.Item] = u.Copies; return true })
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("ListUnder = %v, want %v", got, want)
		}
		for it, n := range want {
			if k, ok, err := db.CopiesOf(it); err != nil || !ok || k != n {
				t.Fatalf("CopiesOf(%s) = %d, %v, %v; want %d", it, k, ok, err, n)
			}
		}
	}
	check(1, 1, map[Item]int{g1: 1, c1: 2})
	if err := db.SetCopies([]Item{g1, c1, g2}, []int{2, 3, 3}, 3); err != nil {
		t.Fatal(err)
	}
	check(1, 0, map[Item]int{g1: 2})
	if _, ok, _ := db.CopiesOf(c1); ok {
		t.Fatal("an item at target is still listed")
	}
	db.Close()
	db = openAt(t, fs, "/db", Options{Logger: quietLogger})
	check(1, 0, map[Item]int{g1: 2})
	// Paging: after an item, a limit.
	if err := db.SetCopies([]Item{g2, c1}, []int{0, 1}, 3); err != nil {
		t.Fatal(err)
	}
	var all []Item
	db.ListUnder(nil, 0, func(u Under) bool { all = append(all, u.Item); return true })
	var page []Item
	db.ListUnder(&all[0], 1, func(u Under) bool { page = append(page, u.Item); return true })
	if len(all) != 3 || len(page) != 1 || page[0] != all[1] {
		t.Fatalf("list %v, page after the first %v", all, page)
	}
}

// FuzzDecodePending: a pending entry read back from a damaged disk is an
// error or a value that survives a round trip, never a panic. (Varints, as
// in records, may come longer than needed.)
func FuzzDecodePending(f *testing.F) {
	f.Add(encodePending(&Pending{ID: 1, Size: 5, Root: format.Sum([]byte("x")), AttrChange: AttrChange{SetUID: true, Uid: 3}}))
	f.Add([]byte{formatV1})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodePending(9, b)
		if err != nil {
			return
		}
		enc := encodePending(&p)
		if len(enc) > len(b) {
			t.Fatalf("re-encoding grew from %d to %d bytes", len(b), len(enc))
		}
		if q, err := decodePending(9, enc); err != nil || q != p {
			t.Fatalf("round trip: %+v, %v; want %+v", q, err, p)
		}
	})
}
