package index

import (
	"bytes"
	"testing"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/oashare/oashare/index/format"
)

// fileChunks makes the chunks of a file of n full 512-byte chunks,
// followed by a short last chunk of last bytes if last > 0; tag makes the
// file's bytes its own.
func fileChunks(tag byte, n, last int) []Chunk {
	var out []Chunk
	for i := 0; i < n+1; i++ {
		size := 512
		if i == n {
			if last == 0 {
				break
			}
			size = last
		}
		data := make([]byte, size)
		data[0], data[1], data[2] = tag, byte(i), byte(i>>8)
		out = append(out, Chunk{Hash: format.Sum(data), Data: data})
	}
	return out
}

func putGroups(t *testing.T, db *DB, chunks []Chunk, group int) {
	t.Helper()
	for i := 0; i < len(chunks); i += group {
		if _, err := db.PutChunks(chunks[i:min(i+group, len(chunks))]); err != nil {
			t.Fatal(err)
		}
	}
}

func hashesOf(chunks []Chunk) []format.Hash {
	out := make([]format.Hash, len(chunks))
	for i, c := range chunks {
		out[i] = c.Hash
	}
	return out
}

// checkGet reads hashes with getChunks and compares with want (nil: not
// returned); it returns the number of Pebble lookups made.
func checkGet(t *testing.T, db *DB, hashes []format.Hash, want [][]byte) int {
	t.Helper()
	got, lookups, err := db.getChunks(hashes)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(hashes) {
		t.Fatalf("GetChunks returned %d chunks for %d hashes", len(got), len(hashes))
	}
	for i := range hashes {
		if !bytes.Equal(got[i], want[i]) || (got[i] == nil) != (want[i] == nil) {
			t.Fatalf("chunk %d of %d: got %d bytes, want %d", i, len(hashes), len(got[i]), len(want[i]))
		}
		if got[i] != nil && format.Sum(got[i]) != hashes[i] {
			t.Fatalf("chunk %d: returned bytes do not hash to the requested hash", i)
		}
	}
	return lookups
}

func datas(chunks []Chunk) [][]byte {
	out := make([][]byte, len(chunks))
	for i, c := range chunks {
		out[i] = c.Data
	}
	return out
}

// A file stored in one piece is read with one Pebble lookup, its short
// last chunk with one more.
func TestGetChunksPredictionHit(t *testing.T) {
	db := openMem(t, nil)
	f := fileChunks(1, 1000, 0)
	putGroups(t, db, f, 256)
	if n := checkGet(t, db, hashesOf(f), datas(f)); n != 1 {
		t.Errorf("reading a contiguous file took %d lookups; want 1", n)
	}
	// From the middle, and a single chunk.
	if n := checkGet(t, db, hashesOf(f[500:700]), datas(f[500:700])); n != 1 {
		t.Errorf("reading part of a file took %d lookups; want 1", n)
	}
	checkGet(t, db, hashesOf(f[999:]), datas(f[999:]))
	checkGet(t, db, nil, nil)

	g := fileChunks(2, 300, 77) // short last chunk
	putGroups(t, db, g, 256)
	if n := checkGet(t, db, hashesOf(g), datas(g)); n != 2 {
		t.Errorf("reading a file with a short last chunk took %d lookups; want 2", n)
	}
}

// Files whose chunks were stored interleaved, in runs longer than the gaps
// a scan skips, are read correctly with a lookup at each switch.
func TestGetChunksInterleavedWrites(t *testing.T) {
	for _, c := range []struct {
		run, min, max int
	}{
		{run: 10, min: 11, max: 12},
		{run: 20, min: 5, max: 6},
	} {
		db := openMem(t, nil)
		a, b := fileChunks(1, 100, 300), fileChunks(2, 100, 0)
		for i := 0; i < len(a); i += c.run {
			putGroups(t, db, a[i:min(i+c.run, len(a))], c.run)
			putGroups(t, db, b[i:min(i+c.run, len(b))], c.run)
		}
		if n := checkGet(t, db, hashesOf(a), datas(a)); n < c.min || n > c.max {
			t.Errorf("runs of %d: reading an interleaved file took %d lookups; want %d to %d", c.run, n, c.min, c.max)
		}
		checkGet(t, db, hashesOf(b), datas(b))
		// Reading both in alternation, and backwards.
		var hs []format.Hash
		var want [][]byte
		for i := 0; i < 100; i++ {
			hs = append(hs, a[i].Hash, b[99-i].Hash)
			want = append(want, a[i].Data, b[99-i].Data)
		}
		checkGet(t, db, hs, want)
	}
}

// An asker that gets every third chunk of a file from this node (the rest
// from other replicas) is served with one lookup.
func TestGetChunksSparse(t *testing.T) {
	db := openMem(t, nil)
	f := fileChunks(1, 3000, 0)
	putGroups(t, db, f, 256)
	var part []Chunk
	for i := 0; i < len(f); i += 3 {
		part = append(part, f[i])
	}
	if n := checkGet(t, db, hashesOf(part), datas(part)); n != 1 {
		t.Errorf("reading every third chunk took %d lookups; want 1", n)
	}
}

// Chunks not stored come back nil; repeated hashes are all served.
func TestGetChunksMissingAndRepeated(t *testing.T) {
	db := openMem(t, nil)
	f := fileChunks(1, 50, 0)
	putGroups(t, db, f, 256)
	other := fileChunks(9, 3, 0) // never stored
	hs := hashesOf(f)
	want := datas(f)
	hs = append(hs[:20:20], append([]format.Hash{other[0].Hash, other[1].Hash}, hs[20:]...)...)
	want = append(want[:20:20], append([][]byte{nil, nil}, want[20:]...)...)
	hs = append(hs, other[2].Hash, f[3].Hash, f[3].Hash, f[4].Hash)
	want = append(want, nil, f[3].Data, f[3].Data, f[4].Data)
	checkGet(t, db, hs, want)
	checkGet(t, db, hashesOf(other), [][]byte{nil, nil, nil})
}

// Bytes that do not hash to the requested hash are never returned, on
// the guessed path or the looked-up one.
func TestGetChunksCorruptBytes(t *testing.T) {
	fs := vfs.NewMem()
	db := openMem(t, fs)
	f := fileChunks(1, 40, 0)
	putGroups(t, db, f, 256)
	seg, err := fs.OpenReadWrite(fs.PathJoin("db", chunkLogDir, segName(1)))
	if err != nil {
		t.Fatal(err)
	}
	// Damage chunk 0 (the one looked up) and chunk 10 (a guessed one).
	for _, i := range []int{0, 10} {
		loc, ok, err := db.locate(f[i].Hash)
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		if _, err := seg.WriteAt([]byte{0xff}, int64(loc.off+100)); err != nil {
			t.Fatal(err)
		}
	}
	seg.Close()
	want := datas(f)
	want[0], want[10] = nil, nil
	checkGet(t, db, hashesOf(f), want)
}

func TestGetChunksClosed(t *testing.T) {
	db := openMem(t, nil)
	db.Close()
	if _, err := db.GetChunks([]format.Hash{{}}); err != ErrClosed {
		t.Fatalf("GetChunks after Close: %v; want ErrClosed", err)
	}
}
