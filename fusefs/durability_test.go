package fusefs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/faultfs"
)

// pendings returns how many file versions wait in p's pending journal.
func pendings(t *testing.T, p *testPeer) int {
	t.Helper()
	ps, err := p.db.Pendings()
	if err != nil {
		t.Fatal(err)
	}
	return len(ps)
}

// dropKernelCaches makes the kernel forget every inode it can (the mounts'
// nodes among them), as memory pressure would.
func dropKernelCaches(t *testing.T) {
	t.Helper()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
		t.Fatalf("drop caches: %v", err)
	}
}

// TestFailedCloseKeepsBytes: a close that fails because a replica refuses
// the upload (its disk is full) returns EIO, and from then on:
//   - this peer reads exactly the bytes written, never zeros: at once,
//     after the kernel forgot the file, and after a restart of the peer;
//   - nothing is published meanwhile (another peer never sees zeros), and
//     a later close or fsync of the file fails too, while the copies are
//     not made;
//   - the version is in the pending journal, and once the replica takes
//     copies again, it is published and every peer reads the bytes.
func TestFailedCloseKeepsBytes(t *testing.T) {
	full := faultfs.New(nil)
	peers := startClusterOpts(t, 3, clusterOptions{replicas: 3, retryFor: time.Second, topUpEvery: 300 * time.Millisecond,
		disks: []vfs.FS{nil, nil, full}})
	a, b := peers[0], peers[1]
	want := randBytes(t, 3<<20+123)
	name := "report.bin"
	full.Fail.Store(true)
	err := os.WriteFile(filepath.Join(a.mnt, name), want, 0o644)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("write with a replica refusing: %v, want EIO at close", err)
	}
	readA := func(when string) {
		t.Helper()
		got, err := os.ReadFile(filepath.Join(a.mnt, name))
		if err != nil {
			t.Fatalf("%s: read on the writer: %v", when, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: the writer reads %d bytes that differ from the %d written (first difference at %d)",
				when, len(got), len(want), firstDiff(got, want))
		}
	}
	readA("after the failed close")
	if n := pendings(t, a); n != 1 {
		t.Fatalf("%d versions in the pending journal, want 1", n)
	}
	if g, _, _ := a.db.UnderTarget(); g == 0 {
		t.Fatal("no group listed below the replica target")
	}
	// Another descriptor's close, a touch, an fsync: nothing short of the
	// copies publishes the version, and none publishes zeros.
	f, err := os.OpenFile(filepath.Join(a.mnt, name), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Errorf("fsync while the copies are missing: %v, want EIO", err)
	}
	if err := f.Close(); !errors.Is(err, syscall.EIO) {
		t.Errorf("close of another descriptor while the copies are missing: %v, want EIO", err)
	}
	now := time.Now()
	if err := os.Chtimes(filepath.Join(a.mnt, name), now, now); err != nil {
		t.Errorf("touch: %v", err)
	}
	readA("after another close, fsync and touch")
	time.Sleep(300 * time.Millisecond) // what would have been published has reached b
	if st, err := os.Stat(filepath.Join(b.mnt, name)); err != nil || st.Size() != 0 {
		t.Fatalf("another peer sees %v, %v; want the empty file the create published", st, err)
	}

	dropKernelCaches(t)
	readA("after the kernel forgot the file")

	a.restart(t, peers)
	waitFor(t, 10*time.Second, "the restarted peer to reconnect", func() bool { return len(a.node.Peers()) == 2 })
	readA("after a restart")
	if n := pendings(t, a); n != 1 {
		t.Fatalf("after a restart: %d versions in the pending journal, want 1", n)
	}

	full.Fail.Store(false) // room again
	for _, p := range peers {
		waitContent(t, filepath.Join(p.mnt, name), want)
	}
	waitFor(t, 10*time.Second, "the pending journal to empty", func() bool { return pendings(t, a) == 0 })
	waitFor(t, 10*time.Second, "every group to reach its replicas", func() bool {
		g, c, _ := a.db.UnderTarget()
		return g == 0 && c == 0
	})
}

// TestStoreFailureIsEIO: when not even the writer can store the chunks
// (its disk fails too), the bytes are lost, and every read of the file
// on that peer says so (EIO) rather than return zeros, until the file is
// truncated to start afresh.
func TestStoreFailureIsEIO(t *testing.T) {
	mine := faultfs.New(nil)
	peers := startClusterOpts(t, 2, clusterOptions{replicas: 2, retryFor: 200 * time.Millisecond, disks: []vfs.FS{mine}})
	a := peers[0]
	p := filepath.Join(a.mnt, "lost")
	mine.Fail.Store(true)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(t, 4<<20)
	_, werr := f.Write(data)
	cerr := f.Close()
	if werr == nil && cerr == nil {
		t.Fatal("writing with no disk that takes the bytes succeeded")
	}
	mine.Fail.Store(false)
	if got, err := os.ReadFile(p); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of bytes stored nowhere: %d bytes, %v; want EIO", len(got), err)
	}
	if err := os.WriteFile(p, []byte("again"), 0o644); err != nil {
		t.Fatalf("rewriting the file from scratch: %v", err)
	}
	waitContent(t, filepath.Join(peers[1].mnt, "lost"), []byte("again"))
}

// mmapAfterCloseEnv makes the test binary, started again, write through a
// shared mapping of the named file after closing the descriptor that made
// it, then unmap it, with no msync and no fsync (see TestMain).
const mmapAfterCloseEnv = "OASHARE_TEST_MMAP_AFTER_CLOSE"

func mmapAfterClose(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, 8192, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	copy(m[6000:], "written after close")
	return syscall.Munmap(m)
}

// TestMmapWriteAfterClose: bytes written through a shared mapping after
// the descriptor is closed reach the other peers once the kernel writes
// them back (at munmap), and survive a restart of the writer.
func TestMmapWriteAfterClose(t *testing.T) {
	peers := startCluster(t, 2, 2)
	a, b := peers[0], peers[1]
	want := bytes.Repeat([]byte("."), 8192)
	copy(want[6000:], "written after close")
	p := filepath.Join(a.mnt, "mapped")
	if err := os.WriteFile(p, bytes.Repeat([]byte("."), 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), mmapAfterCloseEnv+"="+p)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mmap helper: %v: %s", err, out)
	}
	waitContent(t, filepath.Join(b.mnt, "mapped"), want)
	a.restart(t, peers)
	waitContent(t, filepath.Join(a.mnt, "mapped"), want)
}

// TestTopUpWhenPeersAppear: what a peer writes while it is alone (one
// copy, which min(replicas, live nodes) accepts) is listed below the
// replica target and copied to the peers that appear later, until every
// group has its replicas; the list then empties.
func TestTopUpWhenPeersAppear(t *testing.T) {
	o := clusterOptions{replicas: 3, topUpEvery: 300 * time.Millisecond}
	alone := startClusterOpts(t, 1, o)[0]
	want := randBytes(t, 2<<20+1)
	if err := os.WriteFile(filepath.Join(alone.mnt, "solo"), want, 0o644); err != nil {
		t.Fatalf("write while alone: %v", err)
	}
	groups, _, err := alone.db.UnderTarget()
	if err != nil || groups < 16 {
		t.Fatalf("%d groups listed below the target after writing 2 MiB alone (%v), want 17", groups, err)
	}
	more := startClusterOpts(t, 2, o)
	all := append([]*testPeer{alone}, more...)
	for _, p := range all {
		connectTo(p, all)
	}
	waitFor(t, 20*time.Second, "every group written alone to reach 3 nodes", func() bool {
		g, c, _ := alone.db.UnderTarget()
		return g == 0 && c == 0
	})
	// Every group of the file is held by all three nodes now.
	ino := lookupPath(t, alone.db, "solo")
	held := 0
	for _, p := range all {
		ok, err := hasAllGroups(t, p, ino)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			held++
		}
	}
	if held != 3 {
		t.Fatalf("the file's groups are whole on %d nodes, want 3", held)
	}
	alone.stop(t)
	for _, p := range more {
		waitContent(t, filepath.Join(p.mnt, "solo"), want)
	}
}

// lookupPath returns the inode of name in the root directory.
func lookupPath(t *testing.T, db *index.DB, name string) index.Inode {
	t.Helper()
	de, ok, err := db.LookupDirent(index.RootID, name)
	if err != nil || !ok {
		t.Fatalf("lookup %s: %v, %v", name, ok, err)
	}
	ino, ok, err := db.GetInode(de.Child)
	if err != nil || !ok {
		t.Fatalf("inode of %s: %v, %v", name, ok, err)
	}
	return ino
}

// hasAllGroups reports whether p's store holds every group of ino's
// content that stores something.
func hasAllGroups(t *testing.T, p *testPeer, ino index.Inode) (bool, error) {
	t.Helper()
	all := true
	err := tree.Stored(t.Context(), p.node, versionOf(&ino), func(_ uint64, s tree.Span) error {
		ok, err := p.db.HasGroup(s.Group)
		all = all && ok
		return err
	})
	return all, err
}

// TestFsyncIsABarrier: once fsync of a file or of its directory returns
// on one peer, every other live peer shows the change to a program that
// opens the file right then: new files, overwrites of files other peers
// have read (and cached), renames and deletes, 50 times in a row each.
func TestFsyncIsABarrier(t *testing.T) {
	peers := startCluster(t, 4, 3)
	a := peers[0]
	others := peers[1:]
	for i := range 50 {
		name := "barrier-" + strconv.Itoa(i%7)
		want := randBytes(t, 1+i*997%70000)
		f, err := os.OpenFile(filepath.Join(a.mnt, name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.Write(want)
		if err == nil {
			err = f.Sync()
		}
		f.Close() // after the fsync: close publishes nothing more
		if err != nil {
			t.Fatalf("write and fsync: %v", err)
		}
		for _, p := range others {
			got, err := os.ReadFile(filepath.Join(p.mnt, name))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("round %d: right after fsync, peer %s reads %d bytes (%v), want the %d synced",
					i, p.node.ID().Short(), len(got), err, len(want))
			}
		}
	}
	// Names: a rename and a delete, made visible by fsync of the directory.
	dir, err := os.Open(a.mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	for i := range 50 {
		from, to := "barrier-"+strconv.Itoa(i%7), "moved-"+strconv.Itoa(i)
		if err := os.Rename(filepath.Join(a.mnt, from), filepath.Join(a.mnt, to)); err != nil {
			t.Fatal(err)
		}
		if err := dir.Sync(); err != nil {
			t.Fatalf("fsync of the directory: %v", err)
		}
		for _, p := range others {
			if _, err := os.Stat(filepath.Join(p.mnt, to)); err != nil {
				t.Fatalf("round %d: right after fsync of the directory, peer %s: %v", i, p.node.ID().Short(), err)
			}
			if _, err := os.Stat(filepath.Join(p.mnt, from)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("round %d: right after fsync of the directory, peer %s still sees %s (%v)", i, p.node.ID().Short(), from, err)
			}
		}
		if err := os.Rename(filepath.Join(a.mnt, to), filepath.Join(a.mnt, from)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTruncatingSaveIsOneVersion: a file saved with open(O_TRUNC), write,
// close changes, on every other peer, from its old bytes to its new ones
// at once: never empty in between (the kernel hands O_TRUNC to the open,
// which publishes nothing before the close, and the RELEASE of one save
// that arrives with the next save's open does not publish that open's
// truncation).
func TestTruncatingSaveIsOneVersion(t *testing.T) {
	peers := startCluster(t, 2, 2)
	a, b := peers[0], peers[1]
	const size = 4096
	if err := os.WriteFile(filepath.Join(a.mnt, "saved"), bytes.Repeat([]byte{'0'}, size), 0o644); err != nil {
		t.Fatal(err)
	}
	waitContent(t, filepath.Join(b.mnt, "saved"), bytes.Repeat([]byte{'0'}, size))
	// Saves back to back: the RELEASE of one save then comes with the
	// next save's open.
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for i := range 300 {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := os.WriteFile(filepath.Join(a.mnt, "saved"), bytes.Repeat([]byte{byte('a' + i%26)}, size), 0o644); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	reads := 0
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if reads < 50 {
				t.Fatalf("only %d reads while the writer saved", reads)
			}
			// What the reader may have missed between two polls, the
			// history has: every version published is kept.
			vs, err := a.fs.Versions("saved")
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range vs {
				if v.Size != size {
					t.Fatalf("version %d of %d published %d bytes of a file only ever saved whole", v.N, len(vs), v.Size)
				}
			}
			return
		default:
		}
		got, err := os.ReadFile(filepath.Join(b.mnt, "saved"))
		if err == nil && (len(got) != size || !bytes.Equal(got, bytes.Repeat(got[:1], size))) {
			err = fmt.Errorf("read %d: another peer saw %d bytes (%q...) of a file only ever saved whole", reads, len(got), got[:min(len(got), 8)])
		}
		if err != nil {
			close(stop) // the mounts go at cleanup: nothing may be writing then
			<-done
			t.Fatal(err)
		}
		reads++
	}
}

// TestChangesReachKernelCache: with the kernel trusting names and
// attributes for 5 s, every change made on one peer still reaches a
// program on another at once, for as long as it polls: the invalidations
// of applied records reach the kernel's inode whichever go-fuse node
// stands for it, even after the kernel looked the name up again (every
// 5 s here), and truncate then write shrinks and grows the size it
// caches. A lost invalidation would show as a change unseen until the
// kernel's cache times out.
func TestChangesReachKernelCache(t *testing.T) {
	peers := startClusterCache(t, 2, 2, 5*time.Second)
	a, b := peers[0], peers[1]
	start := time.Now()
	for i := 0; time.Since(start) < 12*time.Second; i++ {
		want := bytes.Repeat([]byte{byte('a' + i%26)}, 4096)
		f, err := os.OpenFile(filepath.Join(a.mnt, "polled"), os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		err = f.Truncate(0)
		if err == nil {
			_, err = f.Write(want)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Second)
		for {
			got, err := os.ReadFile(filepath.Join(b.mnt, "polled"))
			if err == nil && bytes.Equal(got, want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("change %d (%v in) not seen on the other peer after 2s: it reads %d bytes (%v)",
					i, time.Since(start).Round(time.Second), len(got), err)
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDiskFullIsENOSPC: when no peer has room for a file's bytes, fsync
// and close say ENOSPC (not EIO, and they do not hang), and what was
// stored before still reads back.
func TestDiskFullIsENOSPC(t *testing.T) {
	peers := startClusterOpts(t, 2, clusterOptions{replicas: 2, retryFor: time.Second, smallDisk: []int64{24 << 20, 24 << 20}})
	a, b := peers[0].mnt, peers[1].mnt
	small := randBytes(t, 100<<10)
	if err := os.WriteFile(filepath.Join(a, "small"), small, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(a, "big"))
	if err != nil {
		t.Fatal(err)
	}
	var werr error
	for i := 0; i < 40 && werr == nil; i++ {
		_, werr = f.Write(randBytes(t, 1<<20)) // all different: nothing dedups
	}
	if werr == nil {
		werr = f.Sync()
	}
	cerr := f.Close()
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("writing 40 MiB where 24 MiB fit: %v, want ENOSPC", werr)
	}
	if cerr != nil && !errors.Is(cerr, syscall.ENOSPC) {
		t.Fatalf("close after a full disk: %v, want ENOSPC or nothing", cerr)
	}
	for _, m := range []string{a, b} {
		got, err := os.ReadFile(filepath.Join(m, "small"))
		if err != nil || !bytes.Equal(got, small) {
			t.Fatalf("%s: the file written before reads %d bytes (%v)", m, len(got), err)
		}
	}
}

// TestDiskFullOnOnePeer: a peer whose disk is full gets no more copies,
// and writes go to the others, whichever peer writes (the full one too):
// close and fsync succeed and every peer reads the files back.
func TestDiskFullOnOnePeer(t *testing.T) {
	peers := startClusterOpts(t, 3, clusterOptions{replicas: 2, retryFor: time.Second, smallDisk: []int64{0, 0, 16 << 20}})
	files := map[string][]byte{}
	for _, w := range []int{0, 2} { // a peer with room, then the full one
		name := fmt.Sprintf("from%d", w+1)
		content := randBytes(t, 40<<20)
		f, err := os.Create(filepath.Join(peers[w].mnt, name))
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.Write(content)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatalf("writing 40 MiB on peer %d with one disk full: %v", w+1, err)
		}
		files[name] = content
	}
	for name, content := range files {
		for i, p := range peers {
			got, err := os.ReadFile(filepath.Join(p.mnt, name))
			if err != nil || !bytes.Equal(got, content) {
				t.Fatalf("peer %d reads %s: %d bytes (%v), identical %v", i+1, name, len(got), err, bytes.Equal(got, content))
			}
		}
	}
	// The full peer says so; the others do not, and know it is full.
	for i, p := range peers {
		if _, full := p.db.DiskFull(); full != (i == 2) {
			t.Fatalf("peer %d: disk full %v", i+1, full)
		}
	}
	// Peer 1 may have forgotten it since: a put small enough for what
	// was left on peer 3 succeeded, which clears the mark (diskfull.go).
	// It never takes another peer for full.
	for _, id := range peers[0].node.FullPeers() {
		if id != peers[2].node.ID() {
			t.Fatalf("peer 1 knows %s as full, which has room", id.Short())
		}
	}
}
