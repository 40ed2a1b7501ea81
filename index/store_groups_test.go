package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/oashare/oashare/index/format"
)

// mkGroup makes a group of n chunks of 512 bytes, the last one last bytes
// long, seeded by seed.
func mkGroup(seed byte, n, last int) Group {
	var data []byte
	for i := range n {
		size := 512
		if i == n-1 {
			size = last
		}
		data = append(data, bytes.Repeat([]byte{seed + byte(i)}, size)...)
	}
	return Group{Hash: format.Sum(append([]byte("group"), data...)), Data: data}
}

func TestGroups(t *testing.T) {
	fs := vfs.NewMem()
	db := openAt(t, fs, "/db", Options{Logger: quietLogger})
	a, b := mkGroup(1, 256, 512), mkGroup(9, 3, 100)
	node := mkChunk("the node of a")
	if n, err := db.PutGroups([]Group{a, b, a}, []Chunk{node}); err != nil || n != 2 {
		t.Fatalf("PutGroups(a, b, a) = %d, %v; want 2, nil", n, err)
	}
	if n, err := db.PutGroups([]Group{b}, []Chunk{node}); err != nil || n != 0 {
		t.Fatalf("PutGroups(b) again = %d, %v; want 0, nil", n, err)
	}
	count, size := db.ChunkStats()
	if wantBytes := int64(len(a.Data) + len(b.Data) + len(node.Data)); count != 256+3+1 || size != wantBytes {
		t.Fatalf("ChunkStats = %d, %d; want %d, %d", count, size, 256+3+1, wantBytes)
	}
	if got, ok, err := db.GetChunk(node.Hash, nil); err != nil || !ok || !bytes.Equal(got, node.Data) {
		t.Fatalf("the chunk stored with the groups: ok=%v err=%v", ok, err)
	}
	check := func(db *DB) {
		t.Helper()
		for _, tc := range []struct {
			g       Group
			off, n  int
			wantOff int
			wantLen int
		}{
			{a, 0, len(a.Data), 0, len(a.Data)},
			{a, 512 * 10, 512 * 3, 512 * 10, 512 * 3},
			{a, 512 * 255, 512 * 8, 512 * 255, 512}, // cut at the end
			{b, 512 * 2, 512, 1024, 100},            // the short last chunk
		} {
			got, ok, err := db.GetGroup(tc.g.Hash, tc.off, tc.n, nil)
			if err != nil || !ok {
				t.Fatalf("GetGroup(%d, %d) = ok %v, %v", tc.off, tc.n, ok, err)
			}
			if !bytes.Equal(got, tc.g.Data[tc.wantOff:tc.wantOff+tc.wantLen]) {
				t.Fatalf("GetGroup(%d, %d): %d bytes, wrong content", tc.off, tc.n, len(got))
			}
		}
		if _, ok, err := db.GetGroup(b.Hash, len(b.Data), 512, nil); ok || err != nil {
			t.Fatalf("GetGroup past the end = ok %v, %v; want not found", ok, err)
		}
		if _, ok, err := db.GetGroup(mkGroup(50, 1, 1).Hash, 0, 512, nil); ok || err != nil {
			t.Fatalf("GetGroup of an unknown group = ok %v, %v; want not found", ok, err)
		}
		if ok, err := db.HasGroup(a.Hash); !ok || err != nil {
			t.Fatalf("HasGroup(a) = %v, %v", ok, err)
		}
		// A group's name is not a chunk's: the two key spaces are apart.
		if ok, err := db.HasChunk(a.Hash); ok || err != nil {
			t.Fatalf("HasChunk(group a) = %v, %v; want false", ok, err)
		}
	}
	check(db)
	db.Close()
	db = openAt(t, fs, "/db", Options{Logger: quietLogger})
	check(db)
	if c, _ := db.ChunkStats(); c != 260 {
		t.Fatalf("chunk count after reopen = %d, want 260", c)
	}
}

func TestGroupsRefused(t *testing.T) {
	db := openMem(t, nil)
	for _, g := range []Group{
		{Hash: format.Sum([]byte("empty"))},
		{Hash: format.Sum([]byte("big")), Data: make([]byte, format.MaxGroupData+1)},
	} {
		if _, err := db.PutGroups([]Group{mkGroup(1, 2, 3), g}, nil); err == nil {
			t.Fatalf("PutGroups of a %d-byte group succeeded", len(g.Data))
		}
	}
	if _, err := db.PutGroups(nil, []Chunk{{Hash: format.Sum(nil), Data: make([]byte, format.MaxChunkData+1)}}); err == nil {
		t.Fatal("PutGroups with an oversized chunk succeeded")
	}
	if c, _ := db.ChunkStats(); c != 0 {
		t.Fatalf("a refused PutGroups stored %d chunks", c)
	}
	if _, _, err := db.GetGroup(format.Sum(nil), -1, 5, nil); err == nil {
		t.Fatal("GetGroup at a negative offset succeeded")
	}
	db.Close()
	if _, err := db.PutGroups([]Group{mkGroup(1, 1, 1)}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("PutGroups after Close = %v, want ErrClosed", err)
	}
}

// TestGroupsConcurrentWithChunks: groups and chunks written at once from
// many goroutines share the group commit and all read back.
func TestGroupsConcurrentWithChunks(t *testing.T) {
	db := openMem(t, nil)
	var wg sync.WaitGroup
	groups := make([]Group, 16)
	chunks := chunkSeq(0, 64, 512)
	for i := range groups {
		groups[i] = mkGroup(byte(i*7), 1+i, 1+i*13)
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := db.PutGroups(groups[i:i+1], nil); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			if _, err := db.PutChunks(chunks[i*4 : i*4+4]); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	checkStored(t, db, groups, chunks)
}

// TestPutRepairsDamagedCopy: putting a group or chunk whose stored copy
// was damaged on disk stores it again, so that a successful put always
// means an intact copy here (a replica's acknowledgement counts as a
// holder); the counters do not count it twice.
func TestPutRepairsDamagedCopy(t *testing.T) {
	fs := vfs.NewMem()
	db := openAt(t, fs, "/db", Options{Logger: quietLogger})
	g := mkGroup(3, 10, 512)
	c := mkChunk("a tree node")
	if _, err := db.PutGroups([]Group{g}, []Chunk{c}); err != nil {
		t.Fatal(err)
	}
	count, size := db.ChunkStats()
	// Flip a byte of each stored copy, as a bad sector would.
	damage := func(key []byte) {
		t.Helper()
		v, ok, err := db.getMeta(key)
		if err != nil || !ok {
			t.Fatalf("no location for %x: %v", key, err)
		}
		seg, off := binary.BigEndian.Uint32(v), binary.BigEndian.Uint64(v[4:])
		f, err := fs.OpenReadWrite("/db/chunks/" + segName(seg))
		if err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		f.ReadAt(b[:], int64(off)+7)
		b[0] ^= 0x55
		if _, err := f.WriteAt(b[:], int64(off)+7); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	damage(groupKey(g.Hash))
	damage(chunkKey(c.Hash))
	if got, ok, _ := db.GetGroup(g.Hash, 0, format.MaxGroupData, nil); ok && bytes.Equal(got, g.Data) {
		t.Fatal("the damage did not reach the stored group")
	}
	if out, _ := db.GetChunks([]format.Hash{c.Hash}); out[0] != nil {
		t.Fatal("a damaged chunk reads back as good")
	}
	if n, err := db.PutGroups([]Group{g}, []Chunk{c}); err != nil || n != 0 {
		t.Fatalf("PutGroups of damaged copies = %d, %v; want 0 new, nil", n, err)
	}
	checkStored(t, db, []Group{g}, []Chunk{c})
	if n, m := db.ChunkStats(); n != count || m != size {
		t.Fatalf("ChunkStats after the repair = %d, %d; want %d, %d", n, m, count, size)
	}
	// Intact copies are not written again.
	before := db.chunks.curSize
	if _, err := db.PutGroups([]Group{g}, []Chunk{c}); err != nil {
		t.Fatal(err)
	}
	if db.chunks.curSize != before {
		t.Fatalf("an intact copy was written again: the log grew from %d to %d", before, db.chunks.curSize)
	}
	db.Close()
	db = openAt(t, fs, "/db", Options{Logger: quietLogger})
	checkStored(t, db, []Group{g}, []Chunk{c})
}
