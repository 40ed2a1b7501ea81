package index

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/vfs"
)

// TestChunkLogSegmentsAndReopen fills several small segments, reopens the
// index and checks every chunk, then appends more after the old end.
func TestChunkLogSegmentsAndReopen(t *testing.T) {
	fs := vfs.NewMem()
	db := openAt(t, fs, "/db", Options{Logger: quietLogger})
	db.chunks.maxSeg = 10 * 512 // a new segment every 10 chunks
	first := chunkSeq(0, 35, 512)
	for i := 0; i < len(first); i += 7 {
		if _, err := db.PutChunks(first[i:min(i+7, len(first))]); err != nil {
			t.Fatal(err)
		}
	}
	if db.chunks.cur < 4 {
		t.Fatalf("35 chunks in segments of 10: at segment %d, want at least 4", db.chunks.cur)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	names, _ := fs.List("/db/chunks")
	if len(names) < 4 {
		t.Fatalf("segments on disk: %v", names)
	}

	db = openAt(t, fs, "/db", Options{Logger: quietLogger})
	more := chunkSeq(1000, 5, 300)
	if n, err := db.PutChunks(more); err != nil || n != 5 {
		t.Fatalf("PutChunks after reopen = %d, %v", n, err)
	}
	for _, c := range append(first, more...) {
		got, ok, err := db.GetChunk(c.Hash, nil)
		if err != nil || !ok || !bytes.Equal(got, c.Data) {
			t.Fatalf("chunk %s after reopen: ok=%v err=%v equal=%v", c.Hash.Short(), ok, err, bytes.Equal(got, c.Data))
		}
	}
	if c, b := db.ChunkStats(); c != 40 || b != 35*512+5*300 {
		t.Fatalf("ChunkStats = %d, %d", c, b)
	}
}

// TestChunkLogUnindexedTail: bytes appended to a segment whose index batch
// never committed (a node that died in between) are never returned, and
// later chunks still read back right.
func TestChunkLogUnindexedTail(t *testing.T) {
	fs := vfs.NewMem()
	db := openAt(t, fs, "/db", Options{Logger: quietLogger})
	a := chunkSeq(0, 3, 512)
	if _, err := db.PutChunks(a); err != nil {
		t.Fatal(err)
	}
	// Garbage after the indexed bytes, as if the index batch was lost.
	if _, _, err := db.chunks.append([][]byte{bytes.Repeat([]byte{0xee}, 777)}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = openAt(t, fs, "/db", Options{Logger: quietLogger})
	b := chunkSeq(10, 3, 512)
	if _, err := db.PutChunks(b); err != nil {
		t.Fatal(err)
	}
	for _, c := range append(a, b...) {
		got, ok, err := db.GetChunk(c.Hash, nil)
		if err != nil || !ok || !bytes.Equal(got, c.Data) {
			t.Fatalf("chunk %s: ok=%v err=%v", c.Hash.Short(), ok, err)
		}
	}
}

// TestChunkLogCorruptLocation: a location that points nowhere is an
// error, never bytes.
func TestChunkLogCorruptLocation(t *testing.T) {
	db := openMem(t, vfs.NewMem())
	c := chunkSeq(0, 1, 512)[0]
	if _, err := db.PutChunks([]Chunk{c}); err != nil {
		t.Fatal(err)
	}
	bad := location{seg: 99, off: 0, n: 512}.encode(nil)
	if err := db.pdb.Set(chunkKey(c.Hash), bad, nil); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := db.GetChunk(c.Hash, nil); err == nil || ok {
		t.Fatalf("GetChunk of a chunk in a missing segment: ok=%v err=%v", ok, err)
	}
	if err := db.pdb.Set(chunkKey(c.Hash), []byte{1, 2, 3}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.GetChunk(c.Hash, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetChunk of a malformed location: %v, want ErrCorrupt", err)
	}
}

// TestDiskUsage: on disk, the store takes little more than the chunk
// bytes it holds.
func TestDiskUsage(t *testing.T) {
	db := openAt(t, vfs.Default, t.TempDir(), Options{Logger: quietLogger})
	const n = 20000
	cs := chunkSeq(0, n, 512)
	for i := 0; i < n; i += 256 {
		if _, err := db.PutChunks(cs[i:min(i+256, n)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.pdb.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.pdb.Compact([]byte{prefixChunk}, []byte{prefixChunk + 1}, true); err != nil {
		t.Fatal(err)
	}
	seg, peb := db.DiskUsage()
	if seg != n*512 {
		t.Errorf("segments hold %d bytes, want %d", seg, n*512)
	}
	ratio := float64(seg+peb) / float64(n*512)
	t.Logf("disk bytes per chunk byte: %.3f (segments %d, pebble %d)", ratio, seg, peb)
	if ratio > 1.25 {
		t.Errorf("disk use %.2f× the chunk bytes", ratio)
	}
}
