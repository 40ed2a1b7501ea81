package index

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/oashare/oashare/index/format"
)

func mkChunk(s string) Chunk {
	return Chunk{Hash: format.Sum([]byte(s)), Data: []byte(s)}
}

func TestChunks(t *testing.T) {
	db := openMem(t, nil)
	a, b, c := mkChunk("alpha"), mkChunk("bravo!"), mkChunk("charlie")

	if n, err := db.PutChunks([]Chunk{a, b, a}); err != nil || n != 2 {
		t.Fatalf("PutChunks(a, b, a) = %d, %v; want 2, nil", n, err)
	}
	if n, err := db.PutChunks([]Chunk{b, c}); err != nil || n != 1 {
		t.Fatalf("PutChunks(b, c) = %d, %v; want 1, nil", n, err)
	}
	if n, err := db.PutChunks([]Chunk{a, b, c}); err != nil || n != 0 {
		t.Fatalf("PutChunks(a, b, c) again = %d, %v; want 0, nil", n, err)
	}
	if n, err := db.PutChunks(nil); err != nil || n != 0 {
		t.Fatalf("PutChunks(nil) = %d, %v", n, err)
	}
	count, size := db.ChunkStats()
	if want := int64(len("alpha") + len("bravo!") + len("charlie")); count != 3 || size != want {
		t.Fatalf("ChunkStats = %d, %d; want 3, %d", count, size, want)
	}

	buf := make([]byte, 0, 64)
	for _, ch := range []Chunk{a, b, c} {
		got, ok, err := db.GetChunk(ch.Hash, buf)
		if err != nil || !ok || !bytes.Equal(got, ch.Data) {
			t.Fatalf("GetChunk(%s) = %q, %v, %v; want %q", ch.Hash.Short(), got, ok, err, ch.Data)
		}
		if &got[0] != &buf[:1][0] {
			t.Errorf("GetChunk did not reuse buf")
		}
		if has, err := db.HasChunk(ch.Hash); err != nil || !has {
			t.Fatalf("HasChunk(%s) = %v, %v", ch.Hash.Short(), has, err)
		}
	}
	missing := format.Sum([]byte("missing"))
	if got, ok, err := db.GetChunk(missing, buf); err != nil || ok || len(got) != 0 {
		t.Fatalf("GetChunk(missing) = %q, %v, %v", got, ok, err)
	}
	if has, err := db.HasChunk(missing); err != nil || has {
		t.Fatalf("HasChunk(missing) = %v, %v", has, err)
	}

	// An oversized chunk fails the whole call: nothing is written.
	d := mkChunk("delta")
	big := Chunk{Hash: format.Sum(make([]byte, format.MaxChunkData+1)), Data: make([]byte, format.MaxChunkData+1)}
	if n, err := db.PutChunks([]Chunk{d, big}); err == nil || n != 0 {
		t.Fatalf("PutChunks(oversized) = %d, %v; want error", n, err)
	}
	if has, _ := db.HasChunk(d.Hash); has {
		t.Fatal("chunk of a rejected batch was stored")
	}
	if n, _ := db.ChunkStats(); n != 3 {
		t.Fatalf("count after rejected batch = %d", n)
	}
	// Chunks already in sstables, down to the bottom level, are found too.
	if err := db.pdb.Compact([]byte{prefixChunk}, []byte{prefixChunk + 1}, true); err != nil {
		t.Fatal(err)
	}
	if n, err := db.PutChunks([]Chunk{a, d, b, c, d}); err != nil || n != 1 {
		t.Fatalf("PutChunks after compaction = %d, %v; want 1, nil", n, err)
	}
	if n, _ := db.ChunkStats(); n != 4 {
		t.Fatalf("count after compaction = %d; want 4", n)
	}
	// Exactly MaxChunkData is fine.
	edge := Chunk{Hash: format.Sum(make([]byte, format.MaxChunkData)), Data: make([]byte, format.MaxChunkData)}
	if n, err := db.PutChunks([]Chunk{edge}); err != nil || n != 1 {
		t.Fatalf("PutChunks(MaxChunkData) = %d, %v", n, err)
	}
}

func TestReopenKeepsIdentityAndCounters(t *testing.T) {
	fs := vfs.NewMem()
	db := openAt(t, fs, "node", Options{})
	id := db.NodeID()
	if id.IsZero() {
		t.Fatal("NodeID is zero")
	}
	if _, err := db.PutChunks([]Chunk{mkChunk("one"), mkChunk("two")}); err != nil {
		t.Fatal(err)
	}
	rec := mustCommit(t, db, fileInode(7, 3))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.HasChunk(format.Hash{}); err != ErrClosed {
		t.Fatalf("HasChunk after Close: %v; want ErrClosed", err)
	}

	db2 := openAt(t, fs, "node", Options{})
	if db2.NodeID() != id {
		t.Fatalf("NodeID after reopen = %s; want %s", db2.NodeID(), id)
	}
	if n, b := db2.ChunkStats(); n != 2 || b != 6 {
		t.Fatalf("ChunkStats after reopen = %d, %d; want 2, 6", n, b)
	}
	if vv := db2.VersionVector(); vv[id] != 1 || len(vv) != 1 {
		t.Fatalf("VersionVector after reopen = %v", vv)
	}
	if got := db2.HLCNow(); got != rec.HLC {
		t.Fatalf("HLCNow after reopen = %d; want %d", got, rec.HLC)
	}
	// Another directory on the same FS is another node.
	other := openAt(t, fs, "other", Options{})
	if other.NodeID() == id {
		t.Fatal("two data directories share a NodeID")
	}
}

// TestReopenDisk runs on the real file system: identity, chunks, namespace
// and clock survive a restart, and the clock never goes backwards even if
// the wall clock does.
func TestReopenDisk(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, Options{Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	id := db.NodeID()
	ch := mkChunk("on disk")
	if _, err := db.PutChunks([]Chunk{ch}); err != nil {
		t.Fatal(err)
	}
	rec := mustCommit(t, db, fileInode(42, 9), fileDirent(RootID, "f", 42))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db, err = Open(dir, Options{Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db.NodeID() != id {
		t.Fatal("NodeID changed across reopen")
	}
	if got, ok, err := db.GetChunk(ch.Hash, nil); err != nil || !ok || !bytes.Equal(got, ch.Data) {
		t.Fatalf("GetChunk after reopen = %q, %v, %v", got, ok, err)
	}
	if n, b := db.ChunkStats(); n != 1 || b != int64(len(ch.Data)) {
		t.Fatalf("ChunkStats after reopen = %d, %d", n, b)
	}
	if de, ok, err := db.LookupDirent(RootID, "f"); err != nil || !ok || de.Child != 42 {
		t.Fatalf("LookupDirent after reopen = %+v, %v, %v", de, ok, err)
	}
	db.wallMs = func() int64 { return 1 } // the wall clock jumped back
	rec2 := mustCommit(t, db, fileInode(42, 10))
	if rec2.HLC <= rec.HLC || rec2.Seq != 2 {
		t.Fatalf("after reopen: HLC %d (was %d), Seq %d; want larger HLC, Seq 2", rec2.HLC, rec.HLC, rec2.Seq)
	}
}

// chunkSeq makes n distinct chunks of size bytes, numbered from start.
func chunkSeq(start, n, size int) []Chunk {
	out := make([]Chunk, n)
	for i := range out {
		data := make([]byte, size)
		binary.BigEndian.PutUint64(data, uint64(start+i))
		out[i] = Chunk{Hash: format.Sum(data), Data: data}
	}
	return out
}

func BenchmarkPutChunks(b *testing.B) {
	const batch, size = 256, 512
	for _, fsName := range []string{"mem", "disk"} {
		b.Run(fsName, func(b *testing.B) {
			var db *DB
			if fsName == "mem" {
				db = openMem(b, nil)
			} else {
				db = openAt(b, vfs.Default, b.TempDir(), Options{})
			}
			b.SetBytes(batch * size)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer() // making and hashing chunks is not the store's cost
				chunks := chunkSeq(i*batch, batch, size)
				b.StartTimer()
				if n, err := db.PutChunks(chunks); err != nil || n != batch {
					b.Fatalf("PutChunks = %d, %v", n, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/chunk")
		})
	}
}

func BenchmarkGetChunk(b *testing.B) {
	const n, size = 16384, 512
	db := openMem(b, nil)
	chunks := chunkSeq(0, n, size)
	for i := 0; i < n; i += 256 {
		if _, err := db.PutChunks(chunks[i : i+256]); err != nil {
			b.Fatal(err)
		}
	}
	buf := make([]byte, 0, format.MaxChunkData)
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		data, ok, err := db.GetChunk(chunks[(i*7919)%n].Hash, buf)
		if err != nil || !ok || len(data) != size {
			b.Fatalf("GetChunk = %d bytes, %v, %v", len(data), ok, err)
		}
	}
}

func ExampleDB_PutChunks() {
	db, err := Open("example", Options{FS: vfs.NewMem(), Logger: quietLogger})
	if err != nil {
		panic(err)
	}
	defer db.Close()
	data := []byte("hello, oashare")
	c := Chunk{Hash: format.Sum(data), Data: data}
	n1, _ := db.PutChunks([]Chunk{c})
	n2, _ := db.PutChunks([]Chunk{c}) // already stored
	got, ok, _ := db.GetChunk(c.Hash, nil)
	count, bytes := db.ChunkStats()
	fmt.Println(n1, n2, ok, string(got), count, bytes)
	// Output: 1 0 true hello, oashare 1 14
}

// TestPutChunksGroupCommit stores overlapping chunk sets from many
// goroutines at once: every chunk is counted once, the added counts of all
// calls sum to the chunks stored, and every chunk reads back.
func TestPutChunksGroupCommit(t *testing.T) {
	db := openMem(t, vfs.NewMem())
	const workers, per = 16, 300
	var wg sync.WaitGroup
	added := make([]int, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Worker w stores chunks [w*100, w*100+per): neighbours overlap.
			n, err := db.PutChunks(chunkSeq(w*100, per, 512))
			if err != nil {
				t.Error(err)
			}
			added[w] = n
		}()
	}
	wg.Wait()
	unique := (workers-1)*100 + per
	sum := 0
	for _, n := range added {
		sum += n
	}
	if sum != unique {
		t.Errorf("added counts sum to %d, want %d", sum, unique)
	}
	if c, b := db.ChunkStats(); c != int64(unique) || b != int64(unique*512) {
		t.Errorf("ChunkStats = %d chunks, %d bytes; want %d, %d", c, b, unique, unique*512)
	}
	for _, c := range chunkSeq(0, unique, 512) {
		got, ok, err := db.GetChunk(c.Hash, nil)
		if err != nil || !ok || !bytes.Equal(got, c.Data) {
			t.Fatalf("chunk %s: ok=%v err=%v", c.Hash.Short(), ok, err)
		}
	}
}
