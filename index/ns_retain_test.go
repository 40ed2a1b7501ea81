package index

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/oashare/oashare/index/format"
)

// retained lists "id:size" of every version RetainedFiles keeps.
func retained(t *testing.T, db *DB, now time.Time, keep time.Duration) []string {
	t.Helper()
	var out []string
	err := db.RetainedFiles(now, keep, func(in Inode) error {
		out = append(out, fmt.Sprintf("%d:%d", in.ID, in.Size))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// updateFile commits a new version of file id of the given size on the
// current one (base = winner).
func updateFile(t *testing.T, db *DB, id, size uint64) {
	t.Helper()
	in, _, err := db.GetInode(id)
	if err != nil {
		t.Fatal(err)
	}
	op := fileInode(id, size)
	op.Inode.BaseVersion, op.Inode.BaseOrigin = in.Version, in.Origin
	mustCommit(t, db, op)
}

func TestRetainedFiles(t *testing.T) {
	db := openMem(t, nil)
	// f: three versions, the last one current.
	mustCommit(t, db, fileInode(1, 1), fileDirent(RootID, "f", 1))
	updateFile(t, db, 1, 2)
	updateFile(t, db, 1, 3)
	// d: deleted.
	mustCommit(t, db, fileInode(2, 10), fileDirent(RootID, "d", 2))
	de, _, _ := db.StoredDirent(RootID, "d")
	mustCommit(t, db, Op{Dirent: &Dirent{Parent: RootID, Name: "d", Child: 2, Type: TypeFile, Deleted: true,
		BaseVersion: de.Version, BaseOrigin: de.Origin, BaseChild: 2}})
	// g: replaced by another file under the same name (a save by rename).
	mustCommit(t, db, fileInode(3, 20), fileDirent(RootID, "g", 3))
	de, _, _ = db.StoredDirent(RootID, "g")
	repl := fileDirent(RootID, "g", 4)
	repl.Dirent.BaseVersion, repl.Dirent.BaseOrigin, repl.Dirent.BaseChild = de.Version, de.Origin, 3
	mustCommit(t, db, fileInode(4, 21), repl)
	// c: two versions made on the same one (a conflict): both heads.
	mustCommit(t, db, fileInode(5, 30), fileDirent(RootID, "c", 5))
	base, _, _ := db.GetInode(5)
	for _, size := range []uint64{31, 32} {
		op := fileInode(5, size)
		op.Inode.BaseVersion, op.Inode.BaseOrigin = base.Version, base.Origin
		mustCommit(t, db, op)
	}
	// o: an inode no entry names: nothing says it is gone.
	mustCommit(t, db, fileInode(6, 40))
	// e: empty, nothing to keep.
	mustCommit(t, db, fileInode(7, 0), fileDirent(RootID, "e", 7))

	now := time.Now()
	inside := []string{"1:1", "1:2", "1:3", "2:10", "3:20", "4:21", "5:30", "5:31", "5:32", "6:40"}
	if got := retained(t, db, now, 24*time.Hour); !slices.Equal(got, inside) {
		t.Fatalf("inside the window: %v, want %v", got, inside)
	}
	after := []string{"1:3", "4:21", "5:31", "5:32", "6:40"}
	if got := retained(t, db, now.Add(25*time.Hour), 24*time.Hour); !slices.Equal(got, after) {
		t.Fatalf("after the window: %v, want %v", got, after)
	}
	if got := retained(t, db, now.Add(time.Second), 0); !slices.Equal(got, after) {
		t.Fatalf("no window: %v, want %v", got, after)
	}
}

// Garbage is dropped only after it was found unneeded, and never once it
// was put again.
func TestGarbageCandidates(t *testing.T) {
	db := openMem(t, nil)
	chunks := make([]Chunk, 4)
	for i := range chunks {
		data := []byte(fmt.Sprintf("chunk %d", i))
		chunks[i] = Chunk{Hash: format.Sum(data), Data: data}
	}
	if _, err := db.PutChunks(chunks); err != nil {
		t.Fatal(err)
	}
	needed := func(it Item) bool { return it.Hash == chunks[0].Hash }
	m, err := db.MarkGarbage(needed)
	if err != nil || m.Checked != 4 || m.Candidates != 3 || m.New != 3 {
		t.Fatalf("first mark: %+v, %v; want 4 checked, 3 new candidates", m, err)
	}
	// Put again: needed after all (an upload that stores it anew).
	if _, err := db.PutChunks(chunks[1:2]); err != nil {
		t.Fatal(err)
	}
	if db.IsGarbage(Item{Hash: chunks[1].Hash}) {
		t.Fatal("an item put again is still garbage")
	}
	if !db.IsGarbage(Item{Hash: chunks[2].Hash}) || db.IsGarbage(Item{Hash: chunks[0].Hash}) {
		t.Fatal("garbage and needed items mixed up")
	}
	// A second mark keeps the first time an item was found unneeded.
	time.Sleep(10 * time.Millisecond)
	t0 := time.Now()
	time.Sleep(10 * time.Millisecond)
	m, err = db.MarkGarbage(needed)
	if err != nil || m.Candidates != 3 || m.New != 1 {
		t.Fatalf("second mark: %+v, %v; want 3 candidates, 1 new", m, err)
	}
	// Only those found unneeded at t0 or before go.
	n, err := db.DropGarbage(func(_ Item, since time.Time) bool { return !since.After(t0) }, 100)
	if err != nil || n != 2 {
		t.Fatalf("dropped %d, %v; want 2", n, err)
	}
	for i, want := range []bool{true, true, false, false} {
		if ok, _ := db.HasChunk(chunks[i].Hash); ok != want {
			t.Errorf("chunk %d stored: %v, want %v", i, ok, want)
		}
	}
	if c, d := db.GarbageStats(); c != 1 || d != 2 {
		t.Fatalf("GarbageStats = %d candidates, %d dropped; want 1, 2", c, d)
	}
}

// BenchmarkRetainedFiles: what one garbage collection pass spends reading
// the namespace, for a namespace of 100 000 files with two versions each
// (one op is one whole scan).
//
//	go test -run XXX -bench RetainedFiles -benchtime 5x ./index
func BenchmarkRetainedFiles(b *testing.B) {
	db := openAt(b, vfs.Default, b.TempDir(), Options{Logger: quietLogger})
	const files, perRecord = 100_000, 250
	for f := 0; f < files; f += perRecord {
		var ops []Op
		for k := f; k < f+perRecord; k++ {
			ops = append(ops, fileInode(uint64(k+2), 1), fileDirent(RootID, fmt.Sprint("f", k), uint64(k+2)))
		}
		mustCommit(b, db, ops...)
	}
	for f := 0; f < files; f += perRecord {
		var ops []Op
		for k := f; k < f+perRecord; k++ {
			in, _, err := db.GetInode(uint64(k + 2))
			if err != nil {
				b.Fatal(err)
			}
			op := fileInode(uint64(k+2), 2)
			op.Inode.BaseVersion, op.Inode.BaseOrigin = in.Version, in.Origin
			ops = append(ops, op)
		}
		mustCommit(b, db, ops...)
	}
	b.ResetTimer()
	for range b.N {
		n := 0
		if err := db.RetainedFiles(time.Now(), 24*time.Hour, func(Inode) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		if n != 2*files {
			b.Fatalf("%d versions retained, want %d", n, 2*files)
		}
	}
}

// A group and its depth-1 node (a chunk of the same name) dropped in one
// request leave the counters exact, and count once as garbage.
func TestDropGroupWithItsNodeCountsOnce(t *testing.T) {
	db := openMem(t, nil)
	g := mkGroup(7, 256, 512)
	if _, err := db.PutGroups([]Group{g}, []Chunk{{Hash: g.Hash, Data: make([]byte, 8192)}}); err != nil {
		t.Fatal(err)
	}
	m, err := db.MarkGarbage(func(Item) bool { return false })
	if err != nil || m.Candidates != 2 || m.Bytes != int64(len(g.Data))+8192 {
		t.Fatalf("mark: %+v, %v; want 2 candidates of %d bytes", m, err, len(g.Data)+8192)
	}
	n, err := db.DropGarbage(func(Item, time.Time) bool { return true }, 10)
	if err != nil || n != 2 {
		t.Fatalf("dropped %d, %v; want the group and its node", n, err)
	}
	if c, b := db.ChunkStats(); c != 0 || b != 0 {
		t.Fatalf("ChunkStats after dropping everything = %d chunks, %d bytes; want 0, 0", c, b)
	}
}
