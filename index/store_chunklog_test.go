package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/oashare/oashare/index/format"
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

// TestChunkLogTornTail: bytes after the last whole batch of a segment (a
// write torn by a crash) are never returned; the node appends in a new
// segment after them, and every chunk before and after reads back, across
// more reopens.
func TestChunkLogTornTail(t *testing.T) {
	fs := vfs.NewMem()
	db := openAt(t, fs, "/db", Options{Logger: quietLogger})
	a := chunkSeq(0, 3, 512)
	if _, err := db.PutChunks(a); err != nil {
		t.Fatal(err)
	}
	torn := db.chunks.cur
	db.Close()
	// Half a batch: a header that claims more bytes than follow.
	f, err := fs.OpenReadWrite("/db/chunks/" + segName(torn))
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	if _, err := f.WriteAt(append([]byte(batchMagic), bytes.Repeat([]byte{0xee}, 777)...), st.Size()); err != nil {
		t.Fatal(err)
	}
	f.Close()
	db = openAt(t, fs, "/db", Options{Logger: quietLogger})
	if db.chunks.cur != torn+1 {
		t.Fatalf("appending to segment %d after a torn batch in %d, want a new segment", db.chunks.cur, torn)
	}
	b := chunkSeq(10, 3, 512)
	if _, err := db.PutChunks(b); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		for _, c := range append(a, b...) {
			got, ok, err := db.GetChunk(c.Hash, nil)
			if err != nil || !ok || !bytes.Equal(got, c.Data) {
				t.Fatalf("chunk %s: ok=%v err=%v", c.Hash.Short(), ok, err)
			}
		}
		if c, _ := db.ChunkStats(); c != 6 {
			t.Fatalf("%d chunks counted, want 6", c)
		}
		db.Close()
		db = openAt(t, fs, "/db", Options{Logger: quietLogger})
	}
}

// TestChunkLogCrashRecovery: a write is durable once PutGroups or
// PutChunks returns, though its index entries are committed unsynced: a
// crash that loses every unsynced write (pebble's strict MemFS) loses no
// chunk or group, and the counters count them again.
func TestChunkLogCrashRecovery(t *testing.T) {
	fs := vfs.NewStrictMem()
	db := openAt(t, fs, "/db", Options{Logger: quietLogger})
	groups := []Group{mkGroup(1, 256, 512), mkGroup(40, 5, 17)}
	chunks := chunkSeq(0, 20, 512)
	if _, err := db.PutGroups(groups, chunks[:1]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PutChunks(chunks[1:]); err != nil {
		t.Fatal(err)
	}
	wantCount, wantBytes := db.ChunkStats()
	fs.SetIgnoreSyncs(true)
	db.Close()
	fs.ResetToSyncedState()
	fs.SetIgnoreSyncs(false)

	db = openAt(t, fs, "/db", Options{Logger: quietLogger})
	checkStored(t, db, groups, chunks) // nothing lost in the crash
	if c, b := db.ChunkStats(); c != wantCount || b != wantBytes {
		t.Fatalf("ChunkStats after the crash = %d, %d; want %d, %d", c, b, wantCount, wantBytes)
	}
	// Writing again does not store what was recovered twice.
	if n, err := db.PutChunks(chunks); err != nil || n != 0 {
		t.Fatalf("PutChunks of recovered chunks = %d, %v; want 0 new", n, err)
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

// TestDiskUsage: on disk, the store takes little more than the bytes it
// holds, stored as files store them: groups of 256 chunks, each with its
// 8 KiB depth-1 node stored by name.
func TestDiskUsage(t *testing.T) {
	db := openAt(t, vfs.Default, t.TempDir(), Options{Logger: quietLogger})
	const n = 80 // 10 MiB of groups
	var held int64
	for i := range n {
		g := mkGroup(byte(i), 256, 512)
		node := Chunk{Data: bytes.Repeat([]byte{byte(i), 1}, 4096)}
		node.Hash = format.Sum(node.Data)
		if _, err := db.PutGroups([]Group{g}, []Chunk{node}); err != nil {
			t.Fatal(err)
		}
		held += int64(len(g.Data) + len(node.Data))
	}
	if err := db.pdb.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.pdb.Compact([]byte{prefixChunk}, []byte{prefixGroup + 1}, true); err != nil {
		t.Fatal(err)
	}
	if _, b := db.ChunkStats(); b != held {
		t.Fatalf("ChunkStats bytes %d, want %d", b, held)
	}
	seg, peb := db.DiskUsage()
	want := held + n*(batchHeaderSize+2*batchItemSize)
	if zeros := seg - want; zeros < 0 || zeros > zeroAhead {
		t.Errorf("segments hold %d bytes, want %d (the bytes and one batch header each) plus at most %d zeros written ahead",
			seg, want, zeroAhead)
	}
	if db.chunks.zeroedTo != seg || db.chunks.curSize != want {
		t.Errorf("segment file ends at %d, batches at %d; want %d, %d", db.chunks.zeroedTo, db.chunks.curSize, seg, want)
	}
	ratio := float64(want+peb) / float64(held)
	t.Logf("disk bytes per byte held: %.4f without the zeros ahead, %.4f with (segments %d, pebble %d)",
		ratio, float64(seg+peb)/float64(held), seg, peb)
	if ratio > 1.02 {
		t.Errorf("disk use %.3f× the bytes held", ratio)
	}
}

// TestChunkLogOnDisk: on a real file system the log is written with
// pwritev from the callers' buffers, also for batches of more items than
// one pwritev takes; every item reads back, before and after a reopen
// that scans the batches again.
func TestChunkLogOnDisk(t *testing.T) {
	dir := t.TempDir()
	db := openAt(t, vfs.Default, dir, Options{Logger: quietLogger})
	cs := chunkSeq(0, 3*maxIovecs+5, 100)
	gs := []Group{mkGroup(3, 256, 512), mkGroup(7, 1, 1)}
	if _, err := db.PutGroups(gs, cs); err != nil {
		t.Fatal(err)
	}
	check := func() { t.Helper(); checkStored(t, db, gs, cs) }
	check()
	// Lose every index entry, as if the commit had been lost: the reopen
	// scans the whole batch again, which must check (CRC, lengths) as
	// written, and indexes and counts everything again.
	forgetIndex(t, db, cs, gs)
	db.Close()
	db = openAt(t, vfs.Default, dir, Options{Logger: quietLogger})
	check()
	if c, _ := db.ChunkStats(); c != int64(len(cs))+256+1 {
		t.Fatalf("%d chunks counted after the rescan, want %d", c, len(cs)+257)
	}
}

// TestChunkLogDirect: large batches go to the disk with O_DIRECT, at
// aligned offsets and padded, small ones through the page cache, mixed in
// one segment; everything reads back, and a rescan of the whole segment
// (every index entry lost) steps over the padding and finds every batch.
func TestChunkLogDirect(t *testing.T) {
	dir := t.TempDir()
	db := openAt(t, vfs.Default, dir, Options{Logger: quietLogger})
	if db.chunks.direct == nil {
		t.Skipf("%s does not take O_DIRECT (tmpfs?): nothing to test", dir)
	}
	var groups []Group
	var small []Chunk
	for i := range 12 {
		if i%3 == 0 {
			c := chunkSeq(i*10, 3, 100+i)
			small = append(small, c...)
			if _, err := db.PutChunks(c); err != nil {
				t.Fatal(err)
			}
			continue
		}
		gs := []Group{mkGroup(byte(i), 256, 512), mkGroup(byte(i+50), 256, 512), mkGroup(byte(i+100), 256, 300+i)}
		groups = append(groups, gs...)
		before := db.chunks.curSize
		if _, err := db.PutGroups(gs, nil); err != nil {
			t.Fatal(err)
		}
		loc, _, _ := db.pdb.Get(groupKey(gs[0].Hash))
		_, off, _, _ := decodeGroupLoc(append([]byte(nil), loc...))
		if start := off - uint64(batchHeaderSize+3*batchItemSize); start%directAlign != 0 || int64(start) < before {
			t.Fatalf("a direct batch starts at %d (segment end was %d), not aligned after the end", start, before)
		}
		if db.chunks.curSize%directAlign != 0 {
			t.Fatalf("segment end %d after a direct batch is not aligned", db.chunks.curSize)
		}
	}
	check := func() { t.Helper(); checkStored(t, db, groups, small) }
	check()
	wantCount, wantBytes := db.ChunkStats()
	forgetIndex(t, db, small, groups)
	db.Close()
	db = openAt(t, vfs.Default, dir, Options{Logger: quietLogger})
	check()
	if c, n := db.ChunkStats(); c != wantCount || n != wantBytes {
		t.Fatalf("after the rescan: %d chunks, %d bytes; want %d, %d", c, n, wantCount, wantBytes)
	}
	if db.chunks.cur != 1 {
		t.Fatalf("the rescan found a bad batch: appending to segment %d", db.chunks.cur)
	}
}

// TestOpenRefusesDamagedLogState: a chunk log state that does not decode
// fails Open with ErrCorrupt instead of being ignored.
func TestOpenRefusesDamagedLogState(t *testing.T) {
	fs := vfs.NewMem()
	db := openAt(t, fs, "/db", Options{Logger: quietLogger})
	if err := db.pdb.Set(keyChunkLog, []byte{1, 2, 3}, nil); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if db, err := Open("/db", Options{FS: fs, Logger: quietLogger}); !errors.Is(err, ErrCorrupt) {
		if err == nil {
			db.Close()
		}
		t.Fatalf("Open with a damaged chunk log state: %v, want ErrCorrupt", err)
	}
}

// TestChunkLogRawSegmentsOfOlderStores: a store written before the log had
// batches (raw chunk bytes in its segments, locations committed synced, no
// "m/chunk-log" key) opens as it was: its chunks read back, its segments
// are never scanned, and new batches go to a new segment.
func TestChunkLogRawSegmentsOfOlderStores(t *testing.T) {
	fs := vfs.NewMem()
	db := openAt(t, fs, "/db", Options{Logger: quietLogger})
	old := chunkSeq(0, 4, 512)
	// Make segment 1 what an older store left: raw bytes, no batch header.
	f, err := fs.OpenReadWrite("/db/chunks/" + segName(1))
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range old {
		if _, err := f.WriteAt(c.Data, int64(i*512)); err != nil {
			t.Fatal(err)
		}
		loc := location{seg: 1, off: uint64(i * 512), n: 512}
		if err := db.pdb.Set(chunkKey(c.Hash), loc.encode(nil), nil); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	if err := db.pdb.Delete(keyChunkLog, nil); err != nil {
		t.Fatal(err)
	}
	db.Close()

	for range 2 {
		db = openAt(t, fs, "/db", Options{Logger: quietLogger})
		if db.logFirst != 2 || db.chunks.cur < 2 {
			t.Fatalf("batches start at segment %d, appending to %d; want 2 and beyond", db.logFirst, db.chunks.cur)
		}
		out, err := db.GetChunks(hashesOf(old))
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range out {
			if !bytes.Equal(d, old[i].Data) {
				t.Fatalf("old chunk %d lost", i)
			}
		}
		if _, err := db.PutChunks(chunkSeq(100, 2, 512)); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
}

// TestChunkLogZerosAhead: small batches overwrite zeros written ahead of
// them instead of growing the segment; a reopen appends after the last
// batch, over the zeros, in the same segment; a rescan of the segment
// (every index entry lost) ends cleanly at the zeros; and a batch torn
// inside the zeros still ends the segment.
func TestChunkLogZerosAhead(t *testing.T) {
	dir := t.TempDir()
	db := openAt(t, vfs.Default, dir, Options{Logger: quietLogger})
	a := chunkSeq(0, 30, 300)
	for i := 0; i < len(a); i += 3 {
		before := db.chunks.zeroedTo
		if _, err := db.PutChunks(a[i : i+3]); err != nil {
			t.Fatal(err)
		}
		if i > 0 && db.chunks.zeroedTo != before {
			t.Fatalf("batch %d grew the segment file from %d to %d: it did not land in the zeros ahead", i/3, before, db.chunks.zeroedTo)
		}
	}
	end, size := db.chunks.curSize, db.chunks.zeroedTo
	if size < end+zeroAhead/2 {
		t.Fatalf("segment file ends at %d, batches at %d: no zeros written ahead", size, end)
	}
	seg := db.chunks.cur
	db.Close()

	db = openAt(t, vfs.Default, dir, Options{Logger: quietLogger})
	if db.chunks.cur != seg || db.chunks.curSize != end || db.chunks.zeroedTo != size {
		t.Fatalf("after reopen: appending to segment %d at %d (file %d), want %d at %d (file %d)",
			db.chunks.cur, db.chunks.curSize, db.chunks.zeroedTo, seg, end, size)
	}
	b := chunkSeq(100, 3, 200)
	if _, err := db.PutChunks(b); err != nil {
		t.Fatal(err)
	}
	all := append(a, b...)
	checkStored(t, db, nil, all)

	// Lose every index entry: the rescan finds every batch and stops at
	// the zeros, cleanly.
	forgetIndex(t, db, all, nil)
	end = db.chunks.curSize
	db.Close()
	db = openAt(t, vfs.Default, dir, Options{Logger: quietLogger})
	checkStored(t, db, nil, all)
	if c, _ := db.ChunkStats(); c != int64(len(all)) {
		t.Fatalf("%d chunks counted after the rescan, want %d", c, len(all))
	}
	if db.chunks.cur != seg || db.chunks.curSize != end {
		t.Fatalf("after the rescan: appending to segment %d at %d, want %d at %d", db.chunks.cur, db.chunks.curSize, seg, end)
	}
	db.Close()

	// A batch torn inside the zeros: its header is there, its bytes not.
	f, err := vfs.Default.OpenReadWrite(vfs.Default.PathJoin(dir, chunkLogDir, segName(seg)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(append([]byte(batchMagic), 0, 0, 0, 1, 0, 0, 1, 0), end); err != nil {
		t.Fatal(err)
	}
	f.Close()
	db = openAt(t, vfs.Default, dir, Options{Logger: quietLogger})
	if db.chunks.cur != seg+1 {
		t.Fatalf("appending to segment %d after a batch torn in segment %d, want a new segment", db.chunks.cur, seg)
	}
	checkStored(t, db, nil, all)
}

// forgetIndex deletes the index entries of chunks and groups and resets
// the chunk log state and counters, as if every commit since the log's
// first batch had been lost: the next Open scans the whole log again.
func forgetIndex(t *testing.T, db *DB, chunks []Chunk, groups []Group) {
	t.Helper()
	b := db.pdb.NewBatch()
	for _, c := range chunks {
		b.Delete(chunkKey(c.Hash), nil)
	}
	for _, g := range groups {
		b.Delete(groupKey(g.Hash), nil)
	}
	b.Set(keyChunkLog, logState{first: 1, seg: 1}.encode(), nil)
	b.Set(keyChunkCount, putU64(0), nil)
	b.Set(keyChunkBytes, putU64(0), nil)
	if err := b.Commit(nil); err != nil {
		t.Fatal(err)
	}
}

// checkStored fails unless every group and chunk reads back as stored.
func checkStored(t *testing.T, db *DB, groups []Group, chunks []Chunk) {
	t.Helper()
	for _, g := range groups {
		if got, ok, err := db.GetGroup(g.Hash, 0, format.MaxGroupData, nil); err != nil || !ok || !bytes.Equal(got, g.Data) {
			t.Fatalf("group %s: ok=%v err=%v", g.Hash.Short(), ok, err)
		}
	}
	out, err := db.GetChunks(hashesOf(chunks))
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range out {
		if !bytes.Equal(d, chunks[i].Data) {
			t.Fatalf("chunk %d (%s) wrong", i, chunks[i].Hash.Short())
		}
	}
}

// BenchmarkSmallWritesDisk: the synced writes of small files on a real
// disk, one after another. "group": PutGroups of one 4 KiB group (a chunk
// log batch and its fdatasync); "record": a synced Commit of a file's
// inode (a Pebble log record and its fdatasync). One op is one write.
func BenchmarkSmallWritesDisk(b *testing.B) {
	b.Run("group", func(b *testing.B) {
		db := openAt(b, vfs.Default, b.TempDir(), Options{Logger: quietLogger})
		data := make([]byte, 4096)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			binary.BigEndian.PutUint64(data, uint64(i))
			g := Group{Hash: format.Sum(data), Data: data}
			if _, err := db.PutGroups([]Group{g}, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("record", func(b *testing.B) {
		db := openAt(b, vfs.Default, b.TempDir(), Options{Logger: quietLogger})
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			mustCommit(b, db, fileInode(uint64(1000+i), 4096))
		}
	})
}

// TestBatchCRCCopies: the CRC batchCRC computes while it copies is the one
// it computes alone, and the copy is head and datas back to back, for
// datas shorter and longer than the pieces it copies and of odd lengths.
func TestBatchCRCCopies(t *testing.T) {
	head := make([]byte, batchHeaderSize+3*batchItemSize)
	for i := range head {
		head[i] = byte(3 * i)
	}
	var datas [][]byte
	for _, n := range []int{1, crcPiece - 1, crcPiece, 3*crcPiece + 17, 0, 300} {
		d := make([]byte, n)
		for i := range d {
			d[i] = byte(i*7 + n)
		}
		datas = append(datas, d)
	}
	want := append([]byte(nil), head...)
	for _, d := range datas {
		want = append(want, d...)
	}
	dst := make([]byte, len(want)+10)
	alone := batchCRC(head, datas, nil)
	if got := batchCRC(head, datas, dst); got != alone {
		t.Fatalf("CRC while copying %08x, alone %08x", got, alone)
	}
	if !bytes.Equal(dst[:len(want)], want) {
		t.Fatal("batchCRC's copy is not head and datas back to back")
	}
	if wantCRC := crc32.Update(crc32.Checksum(want[:12], crcTable), crcTable, want[batchHeaderSize:]); alone != wantCRC {
		t.Fatalf("batchCRC %08x, CRC-32C of the batch's bytes %08x", alone, wantCRC)
	}
}

// BenchmarkBatchCRC is the CPU side of a direct batch of 2 MiB (16 groups
// of 128 KiB): its CRC and its copy into the aligned buffer, done together
// a few KiB at a time (fused, what append does) or as two passes over the
// whole batch (separate).
func BenchmarkBatchCRC(b *testing.B) {
	head := make([]byte, batchHeaderSize+16*batchItemSize)
	datas := make([][]byte, 16)
	total := len(head)
	for i := range datas {
		datas[i] = make([]byte, format.MaxGroupData)
		for j := range datas[i] {
			datas[i][j] = byte(i + j*7)
		}
		total += len(datas[i])
	}
	dst := make([]byte, total)
	b.Run("fused", func(b *testing.B) {
		b.SetBytes(int64(total))
		for b.Loop() {
			batchCRC(head, datas, dst)
		}
	})
	b.Run("separate", func(b *testing.B) {
		b.SetBytes(int64(total))
		for b.Loop() {
			batchCRC(head, datas, nil)
			n := copy(dst, head)
			for _, d := range datas {
				n += copy(dst[n:], d)
			}
		}
	})
}
