package fusefs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/oashare/oashare/chunknet/tree"
)

// gcOpts: data no version needs is dropped a second after it was found
// so, and old versions are not kept for restore.
func gcOpts(replicas int) clusterOptions {
	return clusterOptions{replicas: replicas, reclaimAfter: time.Second, keepVersions: -1}
}

// chunkBytes sums the chunk bytes every peer stores.
func chunkBytes(peers []*testPeer) int64 {
	var sum int64
	for _, p := range peers {
		if !p.down {
			_, b := p.db.ChunkStats()
			sum += b
		}
	}
	return sum
}

// gcPasses waits until every live peer has run k more garbage
// collection passes than it had when called.
func gcPasses(t *testing.T, peers []*testPeer, k int) {
	t.Helper()
	start := make([]int, len(peers))
	for i, p := range peers {
		if !p.down {
			start[i] = p.node.GCStat().Passes
		}
	}
	waitFor(t, 60*time.Second, "garbage collection passes", func() bool {
		for i, p := range peers {
			if !p.down && p.node.GCStat().Passes < start[i]+k {
				return false
			}
		}
		return true
	})
}

// checkFull fails unless every item of name's content has its full
// count of copies on the live peers.
func checkFull(t *testing.T, p *testPeer, name string) {
	t.Helper()
	ino := lookupPath(t, p.db, name)
	h, err := p.node.Check(context.Background(), tree.Version{Size: ino.Size, Root: ino.Root, Depth: ino.Depth}, false)
	if err != nil || h.Below != 0 || h.Unavailable != 0 {
		t.Fatalf("copies of %s: %+v, %v; want every item at full count", name, h, err)
	}
}

// A removed file's chunks are deleted on every peer once nothing needs
// them; the files still there keep all their copies.
func TestRemovedFileIsReclaimed(t *testing.T) {
	peers := startClusterOpts(t, 3, gcOpts(2))
	keep, gone := randBytes(t, 1<<20), randBytes(t, 6<<20)
	if err := os.WriteFile(filepath.Join(peers[0].mnt, "keep"), keep, 0o644); err != nil {
		t.Fatal(err)
	}
	waitContent(t, filepath.Join(peers[2].mnt, "keep"), keep)
	withKeep := chunkBytes(peers)
	if err := os.WriteFile(filepath.Join(peers[0].mnt, "gone"), gone, 0o644); err != nil {
		t.Fatal(err)
	}
	waitContent(t, filepath.Join(peers[2].mnt, "gone"), gone)
	if got := chunkBytes(peers); got < withKeep+2*int64(len(gone)) {
		t.Fatalf("stored %d bytes with both files, want at least %d", got, withKeep+2*int64(len(gone)))
	}
	if err := os.Remove(filepath.Join(peers[1].mnt, "gone")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the removed file's bytes dropped on every peer", func() bool {
		return chunkBytes(peers) <= withKeep
	})
	for _, p := range peers {
		got, err := os.ReadFile(filepath.Join(p.mnt, "keep"))
		if err != nil || !bytes.Equal(got, keep) {
			t.Fatalf("keep on %s after the drop: %d bytes, %v", p.mnt, len(got), err)
		}
	}
	checkFull(t, peers[2], "keep")
	var dropped int64
	for _, p := range peers {
		dropped += p.node.GCStat().Dropped
	}
	if dropped == 0 {
		t.Fatal("no peer counts a dropped item")
	}
}

// A file open on a peer keeps its data while it is open, even once
// replaced (an editor's save: a new file renamed over it) with no restore
// window; when it is closed, the data goes.
func TestOpenVersionOutlivesGC(t *testing.T) {
	peers := startClusterOpts(t, 3, gcOpts(2))
	old, cur := randBytes(t, 3<<20), randBytes(t, 1<<20)
	path := filepath.Join(peers[0].mnt, "f")
	if err := os.WriteFile(path, old, 0o644); err != nil {
		t.Fatal(err)
	}
	waitContent(t, filepath.Join(peers[2].mnt, "f"), old)
	before := chunkBytes(peers)
	// Opened on peer 3, nothing read yet: no byte of it is cached.
	f, err := os.Open(filepath.Join(peers[2].mnt, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.WriteFile(path+".new", cur, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the new version on peer 3", func() bool {
		return lookupPath(t, peers[2].db, "f").Size == uint64(len(cur))
	})
	gcPasses(t, peers, 4)
	if got := chunkBytes(peers); got < before {
		t.Fatalf("stored %d bytes while the old version is open, had %d: some of it was dropped", got, before)
	}
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, old) {
		t.Fatalf("the open old version read %d bytes (%v), want its %d bytes", len(got), err, len(old))
	}
	f.Close()
	waitFor(t, 60*time.Second, "the old version's bytes dropped once closed", func() bool {
		return chunkBytes(peers) < 2*int64(len(cur))+256<<10 // the new version's 2 copies and tree nodes (8 KiB per group)
	})
	waitContent(t, filepath.Join(peers[1].mnt, "f"), cur)
	checkFull(t, peers[1], "f")
	// Its data gone, the old version is no longer listed either (its
	// history was pruned), and cannot be restored.
	waitFor(t, 30*time.Second, "the old version pruned from the history", func() bool {
		vs, err := peers[1].fs.Versions("f")
		return err == nil && len(vs) == 1 && vs[0].Size == uint64(len(cur))
	})
	if _, _, err := peers[1].fs.Restore("f", 2, "f.old"); err == nil {
		t.Fatal("restore of a version pruned from the history succeeded")
	}
	if _, err := os.Stat(filepath.Join(peers[1].mnt, "f.old")); !os.IsNotExist(err) {
		t.Fatalf("a refused restore made f.old: %v", err)
	}
}

// A file written slowly, its first groups uploaded long before it is
// closed and published, keeps them: garbage collection waits for a
// member's unpublished uploads.
func TestSlowWriteOutlivesGC(t *testing.T) {
	peers := startClusterOpts(t, 3, gcOpts(2))
	want := randBytes(t, 4<<20)
	f, err := os.Create(filepath.Join(peers[0].mnt, "slow"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(want[:3<<20]); err != nil {
		t.Fatal(err)
	}
	// The first 3 MiB are uploaded as they are written (streaming) and
	// named by no version for several passes.
	gcPasses(t, peers, 4)
	if _, err := f.Write(want[3<<20:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range peers[1:] {
		waitContent(t, filepath.Join(p.mnt, "slow"), want)
	}
	checkFull(t, peers[2], "slow")
}

// A member away holds back every drop (it could hold an old version open
// or an upload still to be published); once it is back, the garbage goes.
func TestAbsentMemberHoldsBackGC(t *testing.T) {
	peers := startClusterOpts(t, 3, gcOpts(2))
	data := randBytes(t, 2<<20)
	if err := os.WriteFile(filepath.Join(peers[0].mnt, "x"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	waitContent(t, filepath.Join(peers[1].mnt, "x"), data)
	peers[2].stop(t)
	before := chunkBytes(peers)
	if err := os.Remove(filepath.Join(peers[0].mnt, "x")); err != nil {
		t.Fatal(err)
	}
	gcPasses(t, peers, 4)
	if got := chunkBytes(peers); got != before {
		t.Fatalf("stored %d bytes with a member away, had %d: dropped without its answer", got, before)
	}
	if held := peers[0].node.GCStat().HeldBack; held == "" {
		t.Fatal("status does not say why nothing was dropped")
	}
	peers[2].restart(t, peers)
	waitFor(t, 60*time.Second, "the garbage dropped once the member is back", func() bool {
		return chunkBytes(peers) == 0
	})
}

// Files rewritten again and again, one after the other, while garbage
// collection runs: every file keeps all its copies, and no peer is
// distrusted for a copy it dropped as garbage (a spot check that read an
// item back after it could be garbage took its absence for a lie).
func TestRewritesKeepLiveCopies(t *testing.T) {
	o := gcOpts(2)
	o.spotCheckEvery = 1 // every put is read back
	peers := startClusterOpts(t, 3, o)
	dir := filepath.Join(peers[0].mnt, "tree")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const files = 16
	want := make([][]byte, files)
	for range 20 {
		for f := range files {
			want[f] = randBytes(t, 2<<20)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprint(f)), want[f], 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 3 {
		gcPasses(t, peers, 8)
		for f := range files {
			waitContent(t, filepath.Join(peers[2].mnt, "tree", fmt.Sprint(f)), want[f])
			de, ok, err := peers[1].db.LookupDirent(lookupPath(t, peers[1].db, "tree").ID, fmt.Sprint(f))
			if err != nil || !ok {
				t.Fatalf("tree/%d: %v, %v", f, ok, err)
			}
			ino, _, _ := peers[1].db.GetInode(de.Child)
			h, err := peers[1].node.Check(context.Background(), tree.Version{Size: ino.Size, Root: ino.Root, Depth: ino.Depth}, false)
			if err != nil || h.Below != 0 || h.Unavailable != 0 {
				t.Fatalf("copies of tree/%d: %+v, %v; want every item at full count", f, h, err)
			}
		}
	}
}

// Versions inside the restore window keep their data through garbage
// collection (overwritten, deleted: nothing is dropped), and come back
// whole on another peer.
func TestRestoreWindowOutlivesGC(t *testing.T) {
	o := gcOpts(2)
	o.keepVersions = time.Hour
	peers := startClusterOpts(t, 3, o)
	v1, v2, gone := randBytes(t, 1<<20), randBytes(t, 1<<20), randBytes(t, 1<<20)
	path := filepath.Join(peers[0].mnt, "doc")
	for _, data := range [][]byte{v1, v2} {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(peers[0].mnt, "gone"), gone, 0o644); err != nil {
		t.Fatal(err)
	}
	waitContent(t, filepath.Join(peers[2].mnt, "gone"), gone)
	if err := os.Remove(filepath.Join(peers[1].mnt, "gone")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(peers[1].mnt, "doc")); err != nil {
		t.Fatal(err)
	}
	gcPasses(t, peers, 4)
	var dropped int64
	for _, p := range peers {
		dropped += p.node.GCStat().Dropped
	}
	if dropped != 0 {
		t.Fatalf("%d items dropped: every version is inside the restore window", dropped)
	}
	// The deleted file's two versions come back, from another peer.
	for i, want := range [][]byte{v1, v2} {
		to := fmt.Sprintf("doc.v%d", i+1)
		if _, _, err := peers[2].fs.Restore("doc", i+1, to); err != nil {
			t.Fatalf("restore of version %d: %v", i+1, err)
		}
		waitContent(t, filepath.Join(peers[1].mnt, to), want)
	}
}

// A member away for longer than ForgetAfter no longer holds drops back;
// once it is back, its own copies of the garbage go too.
func TestForgottenMemberDoesNotHoldBack(t *testing.T) {
	o := gcOpts(2)
	o.forgetAfter = 2 * time.Second
	peers := startClusterOpts(t, 3, o)
	data := randBytes(t, 2<<20)
	if err := os.WriteFile(filepath.Join(peers[0].mnt, "x"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	waitContent(t, filepath.Join(peers[1].mnt, "x"), data)
	peers[2].stop(t)
	if err := os.Remove(filepath.Join(peers[0].mnt, "x")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the garbage dropped on the two peers up", func() bool {
		return chunkBytes(peers) == 0
	})
	peers[2].restart(t, peers)
	waitFor(t, 60*time.Second, "the garbage dropped on the peer back", func() bool {
		return chunkBytes(peers) == 0
	})
}

// A peer whose disk filled up gets copies again once garbage collection
// and reclaim have freed its space.
func TestFullDiskUsedAgainAfterReclaim(t *testing.T) {
	o := gcOpts(2)
	o.retryFor, o.smallDisk = time.Second, []int64{0, 0, 16 << 20}
	peers := startClusterOpts(t, 3, o)
	big := randBytes(t, 40<<20)
	if err := os.WriteFile(filepath.Join(peers[0].mnt, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, full := peers[2].db.DiskFull(); !full {
		t.Fatal("peer 3's 16 MiB disk is not full after 40 MiB written with 2 copies")
	}
	if err := os.Remove(filepath.Join(peers[0].mnt, "big")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "peer 3's disk freed", func() bool {
		_, b := peers[2].db.ChunkStats()
		var st syscall.Statfs_t // the small disk itself, under the peer's dir
		if err := syscall.Statfs(filepath.Join(peers[2].dir, "data"), &st); err != nil {
			t.Fatal(err)
		}
		return b == 0 && int64(st.Bavail)*int64(st.Bsize) > 8<<20
	})
	// New files, until one puts a copy on peer 3 (the others rank it
	// last for a while after it said it was full).
	for i := 0; ; i++ {
		if err := os.WriteFile(filepath.Join(peers[0].mnt, fmt.Sprint("small", i)), randBytes(t, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, b := peers[2].db.ChunkStats(); b > 0 {
			break
		}
		if i == 60 {
			t.Fatal("no copy placed on peer 3 in a minute after its disk was freed")
		}
		time.Sleep(time.Second)
	}
	if _, full := peers[2].db.DiskFull(); full {
		t.Fatal("peer 3 still says its disk is full")
	}
}
