package index

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/vfs"
)

// allocated returns the bytes of disk the files under dir take (du).
func allocated(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && info.Mode().IsRegular() {
			n += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// bigGroups returns n full groups (128 KiB each), all different.
func bigGroups(n int, seed byte) []Group {
	var gs []Group
	for i := range n {
		gs = append(gs, mkGroup(seed+byte(3*i), 256, 512))
	}
	return gs
}

func readsBack(t *testing.T, db *DB, gs []Group) {
	t.Helper()
	for i, g := range gs {
		got, ok, err := db.GetGroup(g.Hash, 0, len(g.Data), nil)
		if err != nil || !ok || !bytes.Equal(got, g.Data) {
			t.Fatalf("group %d: ok %v, err %v, intact %v", i, ok, err, bytes.Equal(got, g.Data))
		}
	}
}

// TestReclaimGivesBackDroppedBytes: the disk space of dropped copies goes
// back to the file system (du falls by about their size); every item kept
// reads back the same, before and after a restart; dropped ones are gone.
func TestReclaimGivesBackDroppedBytes(t *testing.T) {
	dir := t.TempDir()
	db := openAt(t, vfs.Default, dir, Options{Logger: quietLogger})
	var keep, drop []Group
	for round := range 4 { // several batches, interleaved on disk
		gs := bigGroups(14, byte(round*50)) // 7 MiB in all: below compactMin, so punched, not compacted
		if _, err := db.PutGroups(gs, nil); err != nil {
			t.Fatal(err)
		}
		keep, drop = append(keep, gs[:4]...), append(drop, gs[4:]...)
	}
	before := allocated(t, filepath.Join(dir, chunkLogDir))
	var items []Item
	for _, g := range drop {
		items = append(items, Item{Group: true, Hash: g.Hash})
	}
	if n, err := db.DropStored(items); err != nil || n != len(drop) {
		t.Fatalf("DropStored = %d, %v; want %d", n, err, len(drop))
	}
	punched, err := db.Reclaim(context.Background(), 0)
	if err == ErrReclaimUnsupported {
		t.Skipf("the file system of %s cannot punch holes", dir)
	}
	if err != nil {
		t.Fatal(err)
	}
	after := allocated(t, filepath.Join(dir, chunkLogDir))
	dropped := int64(len(drop) * len(drop[0].Data))
	if before-after < dropped*9/10 {
		t.Fatalf("du of the chunk log %d -> %d bytes after dropping %d: want it to fall by at least 90%% of that", before, after, dropped)
	}
	if punched < dropped*9/10 || db.Reclaimed() != punched {
		t.Fatalf("Reclaim punched %d bytes (Reclaimed %d), dropped %d", punched, db.Reclaimed(), dropped)
	}
	readsBack(t, db, keep)
	if _, ok, _ := db.GetGroup(drop[0].Hash, 0, 1, nil); ok {
		t.Fatal("a dropped group is still there")
	}
	// A dropped group put again is stored anew, whole.
	if _, err := db.PutGroups(drop[:1], nil); err != nil {
		t.Fatal(err)
	}
	readsBack(t, db, drop[:1])
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openAt(t, vfs.Default, dir, Options{Logger: quietLogger})
	readsBack(t, db, append(keep, drop[0]))
	if _, err := db.Reclaim(context.Background(), 0); err != nil {
		t.Fatalf("Reclaim after a restart: %v", err)
	}
	readsBack(t, db, append(keep, drop[0]))
}

// TestReclaimRacesReadsAndPuts: reads of kept items and puts of new ones
// run while items are dropped and reclaimed; every read returns its
// item's bytes.
func TestReclaimRacesReadsAndPuts(t *testing.T) {
	dir := t.TempDir()
	db := openAt(t, vfs.Default, dir, Options{Logger: quietLogger})
	keep := bigGroups(8, 1)
	if _, err := db.PutGroups(keep, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				g := keep[(i+r)%len(keep)]
				got, ok, err := db.GetGroup(g.Hash, 0, len(g.Data), nil)
				if err != nil || !ok || !bytes.Equal(got, g.Data) {
					errs <- err
					cancel()
					return
				}
			}
		}()
	}
	for round := range 20 {
		gs := bigGroups(6, byte(100+round))
		if _, err := db.PutGroups(gs, nil); err != nil {
			t.Fatal(err)
		}
		var items []Item
		for _, g := range gs {
			items = append(items, Item{Group: true, Hash: g.Hash})
		}
		if _, err := db.DropStored(items); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Reclaim(ctx, 0); err == ErrReclaimUnsupported {
			cancel()
			wg.Wait()
			t.Skipf("the file system of %s cannot punch holes", dir)
		} else if err != nil && ctx.Err() == nil {
			t.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a read during reclaim returned other bytes (err %v)", err)
	}
	readsBack(t, db, keep)
}

// TestReclaimRemovesDeadSegments: a segment before the current one with
// nothing live left is removed whole, so even the files' sizes (du -b)
// fall; the segments holding live items stay and read back.
func TestReclaimRemovesDeadSegments(t *testing.T) {
	dir := t.TempDir()
	db := openAt(t, vfs.Default, dir, Options{Logger: quietLogger})
	db.chunks.maxSeg = 1 << 20 // a new segment every 8 groups
	old := bigGroups(16, 1)    // two segments' worth
	if _, err := db.PutGroups(old[:8], nil); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PutGroups(old[8:], nil); err != nil {
		t.Fatal(err)
	}
	keep := bigGroups(4, 90)
	if _, err := db.PutGroups(keep, nil); err != nil {
		t.Fatal(err)
	}
	segsBefore, _ := os.ReadDir(filepath.Join(dir, chunkLogDir))
	var items []Item
	for _, g := range old {
		items = append(items, Item{Group: true, Hash: g.Hash})
	}
	if _, err := db.DropStored(items); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Reclaim(context.Background(), 0); err != nil && err != ErrReclaimUnsupported {
		t.Fatal(err)
	}
	segsAfter, _ := os.ReadDir(filepath.Join(dir, chunkLogDir))
	if len(segsAfter) != len(segsBefore)-2 {
		t.Fatalf("%d segment files before, %d after dropping everything in two of them; want two fewer", len(segsBefore), len(segsAfter))
	}
	readsBack(t, db, keep)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openAt(t, vfs.Default, dir, Options{Logger: quietLogger})
	readsBack(t, db, keep)
	if _, err := db.PutGroups(old[:2], nil); err != nil {
		t.Fatal(err)
	}
	readsBack(t, db, old[:2])
}

// segBytes returns the apparent size of the chunk log's files (du -b).
func segBytes(t *testing.T, dir string) int64 {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, chunkLogDir))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		n += info.Size()
	}
	return n
}

// TestCompactionShrinksTheLog: a segment mostly dead, the current one
// included, is compacted: its live items move, the file goes, and the
// log's apparent size (du -b) falls to about what is live; everything
// kept reads back, also after a restart, and puts go on.
func TestCompactionShrinksTheLog(t *testing.T) {
	dir := t.TempDir()
	db := openAt(t, vfs.Default, dir, Options{Logger: quietLogger})
	all := append(bigGroups(40, 0), bigGroups(40, 1)...) // 10 MiB
	for i := 0; i < len(all); i += 10 {
		if _, err := db.PutGroups(all[i:i+10], nil); err != nil {
			t.Fatal(err)
		}
	}
	before := segBytes(t, dir)
	if before < 10<<20 {
		t.Fatalf("log of %d bytes after 10 MiB of groups", before)
	}
	var keep []Group
	var items []Item
	for i, g := range all {
		if i%8 == 0 {
			keep = append(keep, g)
		} else {
			items = append(items, Item{Group: true, Hash: g.Hash})
		}
	}
	if _, err := db.DropStored(items); err != nil {
		t.Fatal(err)
	}
	for range 2 { // compacts, then removes the emptied segment
		if _, err := db.Reclaim(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
	}
	if db.Compacted() != 1 {
		t.Fatalf("%d segments compacted, want 1", db.Compacted())
	}
	live := int64(len(keep)) * int64(len(keep[0].Data))
	if after := segBytes(t, dir); after > live+2<<20 {
		t.Fatalf("log of %d bytes after compaction (was %d), want about the %d live", after, before, live)
	}
	readsBack(t, db, keep)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openAt(t, vfs.Default, dir, Options{Logger: quietLogger})
	readsBack(t, db, keep)
	if _, err := db.PutGroups(all[1:3], nil); err != nil {
		t.Fatal(err)
	}
	readsBack(t, db, all[1:3])
	readsBack(t, db, keep)
}

// TestCompactionOfAnEmptyCurrentSegment: when everything in the current
// segment is dropped, the log moves to a new segment and the old file
// goes, though nothing was left to move.
func TestCompactionOfAnEmptyCurrentSegment(t *testing.T) {
	dir := t.TempDir()
	db := openAt(t, vfs.Default, dir, Options{Logger: quietLogger})
	all := bigGroups(80, 0)[:72] // 9 MiB
	if _, err := db.PutGroups(all, nil); err != nil {
		t.Fatal(err)
	}
	var items []Item
	for _, g := range all {
		items = append(items, Item{Group: true, Hash: g.Hash})
	}
	if _, err := db.DropStored(items); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := db.Reclaim(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
	}
	if after := segBytes(t, dir); after > 2<<20 {
		t.Fatalf("log of %d bytes once everything is dropped", after)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openAt(t, vfs.Default, dir, Options{Logger: quietLogger})
	if _, err := db.PutGroups(all[:2], nil); err != nil {
		t.Fatal(err)
	}
	readsBack(t, db, all[:2])
}
