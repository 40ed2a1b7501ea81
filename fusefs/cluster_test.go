package fusefs

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/vfs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/oashare/oashare/chunknet"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// testPeer is one node of an in-process cluster: its own Pebble index,
// its own TCP listener on loopback and its own FUSE mount.
type testPeer struct {
	db     *index.DB
	node   *chunknet.Node
	server *fuse.Server
	fs     *FS
	mnt    string

	dir  string // its data directory (the index is in dir/data)
	opts clusterOptions
	disk vfs.FS // the index's file system (nil: the disk)
	down bool   // stopped (stop), not restarted yet

	// With clusterOptions.members: the node's key, and the member that
	// admits it to the network (nil: it creates the network).
	key     ed25519.PrivateKey
	sponsor *testPeer
}

func canMount(t testing.TB) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root to mount FUSE (CI runs as root)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse: load the fuse module")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("fusermount3 missing: apt-get install fuse3")
	}
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// startCluster starts n peers that know each other as static peers and
// waits until every one sees all the others.
func startCluster(t testing.TB, n, replicas int) []*testPeer {
	t.Helper()
	return startClusterOpts(t, n, clusterOptions{replicas: replicas})
}

// startClusterCache is startCluster with the kernel cache timeout of every
// mount set (0 = the default).
func startClusterCache(t testing.TB, n, replicas int, cacheTimeout time.Duration) []*testPeer {
	t.Helper()
	return startClusterOpts(t, n, clusterOptions{replicas: replicas, cacheTimeout: cacheTimeout})
}

// clusterOptions configure the peers of a test cluster.
type clusterOptions struct {
	replicas     int
	cacheTimeout time.Duration // kernel cache timeout of the mounts; 0 = default
	retryFor     time.Duration // chunknet.Config.RetryFor; 0 = default
	topUpEvery   time.Duration // chunknet.Config.TopUpEvery; 0 = default
	// disks[i], if set, is the file system of peer i's index (a
	// faultfs.FS, say); the others use the disk.
	disks []vfs.FS
	// smallDisk[i] > 0 puts peer i's data dir on a tmpfs of that many
	// bytes: a disk that fills up.
	smallDisk []int64
	// reclaimAfter and keepVersions: chunknet.Config's; 0 = default.
	reclaimAfter time.Duration
	keepVersions time.Duration
	// spotCheckEvery: chunknet.Config.SpotCheckEvery; 0 = default.
	spotCheckEvery int
	// forgetAfter: chunknet.Config.ForgetAfter; 0 = default.
	forgetAfter time.Duration
	// noXattrs: Options.NoXattrs.
	noXattrs bool
	// members makes the peers members of one network, as oashare mount
	// and --join do: each with a key, records signed, TLS between them
	// and records sealed. Without it they speak plain TCP.
	members bool
	// cacheBytes: chunknet.Config.CacheBytes; 0 = default.
	cacheBytes int
}

// startClusterOpts starts n peers configured by o, connects them and
// waits until every one sees all the others.
func startClusterOpts(t testing.TB, n int, o clusterOptions) []*testPeer {
	t.Helper()
	canMount(t)
	peers := make([]*testPeer, n)
	for i := range peers {
		p := &testPeer{dir: t.TempDir(), opts: o}
		if i < len(o.disks) {
			p.disk = o.disks[i]
		}
		if o.members && i > 0 {
			p.sponsor = peers[0]
		}
		os.Mkdir(filepath.Join(p.dir, "mnt"), 0o755)
		if i < len(o.smallDisk) && o.smallDisk[i] > 0 {
			data := filepath.Join(p.dir, "data")
			os.Mkdir(data, 0o700)
			if err := syscall.Mount("tmpfs", data, "tmpfs", 0, fmt.Sprintf("size=%d", o.smallDisk[i])); err != nil {
				t.Fatalf("a small disk for peer %d: %v", i+1, err)
			}
			t.Cleanup(func() { syscall.Unmount(data, 0) }) // after the stop below (cleanups run last first)
		}
		p.start(t, i+1)
		peers[i] = p
		t.Cleanup(func() { p.stop(t) })
	}
	for _, p := range peers {
		connectTo(p, peers)
	}
	waitFor(t, 10*time.Second, "all peers connected", func() bool {
		for _, p := range peers {
			if len(p.node.Peers()) != n-1 {
				return false
			}
		}
		return true
	})
	return peers
}

// connectTo makes p dial every other peer of peers.
func connectTo(p *testPeer, peers []*testPeer) {
	for _, q := range peers {
		if q != p && !q.down {
			p.node.AddPeerAddr(q.node.Addr())
		}
	}
}

// start opens the peer's index, starts its node and mounts it.
func (p *testPeer) start(t testing.TB, num int) {
	t.Helper()
	log := testLogger(t)
	if p.opts.members && p.key == nil {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		p.key = key
	}
	db, err := index.Open(filepath.Join(p.dir, "data"), index.Options{FS: p.disk, Logger: log, Identity: p.key})
	if err != nil {
		t.Fatal(err)
	}
	if p.key != nil {
		p.join(t, db)
	}
	node, err := chunknet.New(chunknet.Config{DB: db, Identity: p.key, CacheBytes: p.opts.cacheBytes, Network: "test", Listen: "127.0.0.1:0", Replicas: p.opts.replicas,
		Logger: log.With("node", num), DataDir: p.dir, RetryFor: p.opts.retryFor, TopUpEvery: p.opts.topUpEvery,
		ReclaimAfter: p.opts.reclaimAfter, KeepVersions: p.opts.keepVersions, ReclaimEvery: p.opts.reclaimAfter, ReclaimGrace: p.opts.reclaimAfter,
		SpotCheckEvery: p.opts.spotCheckEvery, ForgetAfter: p.opts.forgetAfter})
	if err != nil {
		t.Fatal(err)
	}
	p.mnt = filepath.Join(p.dir, "mnt")
	srv, fsys, err := MountFS(p.mnt, Options{Node: node, Logger: log, FsName: "oashare-test", AllowOther: true, CacheTimeout: p.opts.cacheTimeout, NoXattrs: p.opts.noXattrs})
	if err != nil {
		t.Fatal(err)
	}
	p.db, p.node, p.server, p.fs, p.down = db, node, srv, fsys, false
}

// join makes db a member of the network of p's sponsor, as a join code
// does (its member entry published by the sponsor, the network described
// to it), or creates the network for a peer without a sponsor. A restart
// finds db a member already.
func (p *testPeer) join(t testing.TB, db *index.DB) {
	t.Helper()
	if _, ok := db.Network(); ok {
		return
	}
	if p.sponsor == nil {
		if _, err := db.CreateNetwork("test", "p1"); err != nil {
			t.Fatal(err)
		}
		return
	}
	m := db.SelfMember("peer")
	if _, err := p.sponsor.node.Publish([]index.Op{{Member: &m}}, chunknet.Synced); err != nil {
		t.Fatal(err)
	}
	netw, _ := p.sponsor.db.Network()
	netw.Sponsor = p.sponsor.db.NodeID()
	copy(netw.SponsorKey[:], p.sponsor.key.Public().(ed25519.PublicKey))
	if err := db.JoinNetwork(netw); err != nil {
		t.Fatal(err)
	}
}

// stop unmounts the peer and closes its node and index, as a clean stop
// of oashare does.
func (p *testPeer) stop(t testing.TB) {
	if p.down {
		return
	}
	p.down = true
	if err := p.server.Unmount(); err != nil {
		t.Errorf("unmount %s: %v", p.mnt, err)
	}
	p.node.Close()
	p.db.Close()
}

// restart stops the peer and starts it again on the same data directory
// (a new node address), reconnected to the others of peers.
func (p *testPeer) restart(t testing.TB, peers []*testPeer) {
	t.Helper()
	p.stop(t)
	p.start(t, 0)
	connectTo(p, peers)
	for _, q := range peers {
		if q != p && !q.down {
			q.node.AddPeerAddr(p.node.Addr())
		}
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// waitContent waits until path holds exactly want (the namespace change
// travels asynchronously), then checks it once more in full.
func waitContent(t *testing.T, path string, want []byte) {
	t.Helper()
	var got []byte
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err = os.ReadFile(path)
		if err == nil && bytes.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	t.Fatalf("%s: got %d bytes, want %d (first difference at %d)", path, len(got), len(want), firstDiff(got, want))
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestClusterWriteReadAcrossPeers(t *testing.T) {
	peers := startCluster(t, 4, 3)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	cases := map[string][]byte{
		"empty":     {},
		"one":       {42},
		"511":       randBytes(t, 511),
		"512":       randBytes(t, 512),
		"513":       randBytes(t, 513),
		"bytes-256": all,
		"random-8M": randBytes(t, 8<<20),
	}
	for name, data := range cases {
		if err := os.WriteFile(filepath.Join(peers[0].mnt, name), data, 0o644); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
	}
	for i, p := range peers[1:] {
		for name, data := range cases {
			t.Run(fmt.Sprintf("peer%d/%s", i+2, name), func(t *testing.T) {
				waitContent(t, filepath.Join(p.mnt, name), data)
				st, err := os.Stat(filepath.Join(p.mnt, name))
				if err != nil {
					t.Fatal(err)
				}
				if st.Size() != int64(len(data)) || st.Mode().Perm() != 0o644 {
					t.Errorf("stat: size %d mode %v, want %d 0644", st.Size(), st.Mode(), len(data))
				}
			})
		}
	}
}

func TestClusterReplicasAndPlacement(t *testing.T) {
	peers := startCluster(t, 4, 3)
	data := randBytes(t, 100*512)
	if err := os.WriteFile(filepath.Join(peers[0].mnt, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	// The data chunks form one group, named by the tree's one node, which
	// must be on exactly 3 distinct nodes, and the node with it.
	var node []byte
	for off := 0; off < len(data); off += 512 {
		h := format.Sum(data[off : off+512])
		node = append(node, h[:]...)
	}
	group := format.Sum(node)
	holders, err := peers[1].node.GroupHolders(t.Context(), []format.Hash{group})
	if err != nil {
		t.Fatal(err)
	}
	nodeHolders, err := peers[1].node.Holders(t.Context(), []format.Hash{group})
	if err != nil {
		t.Fatal(err)
	}
	if len(holders[0]) != 3 || len(nodeHolders[0]) != 3 {
		t.Errorf("the group on %d nodes, its tree node on %d, want 3 and 3", len(holders[0]), len(nodeHolders[0]))
	}
	var total int64
	for _, p := range peers {
		c, _ := p.db.ChunkStats()
		total += c
	}
	// 100 data chunks + 1 tree node, each on 3 nodes.
	if total != 3*101 {
		t.Errorf("chunks stored across the cluster: %d, want %d", total, 3*101)
	}
}

func TestClusterNamespaceOps(t *testing.T) {
	peers := startCluster(t, 3, 2)
	a, b := peers[0].mnt, peers[2].mnt
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(a, "d1", "d2"), 0o755))
	must(os.WriteFile(filepath.Join(a, "d1", "d2", "x"), []byte("hello"), 0o600))
	waitContent(t, filepath.Join(b, "d1", "d2", "x"), []byte("hello"))
	must(os.Rename(filepath.Join(a, "d1", "d2", "x"), filepath.Join(a, "d1", "y")))
	waitContent(t, filepath.Join(b, "d1", "y"), []byte("hello"))
	must(os.Symlink("y", filepath.Join(a, "d1", "link")))
	waitFor(t, 5*time.Second, "symlink on peer 3", func() bool {
		target, err := os.Readlink(filepath.Join(b, "d1", "link"))
		return err == nil && target == "y"
	})
	// Overwrite in the middle and append, through one descriptor.
	f, err := os.OpenFile(filepath.Join(a, "d1", "y"), os.O_RDWR, 0)
	must(err)
	_, err = f.WriteAt([]byte("J"), 1)
	must(err)
	_, err = f.WriteAt([]byte("!!"), 5)
	must(err)
	must(f.Close())
	waitContent(t, filepath.Join(b, "d1", "y"), []byte("hJllo!!"))
	must(os.Truncate(filepath.Join(a, "d1", "y"), 2))
	waitContent(t, filepath.Join(b, "d1", "y"), []byte("hJ"))
	must(os.Link(filepath.Join(a, "d1", "y"), filepath.Join(a, "d1", "hard")))
	waitContent(t, filepath.Join(b, "d1", "hard"), []byte("hJ"))
	if err := os.Link(filepath.Join(a, "d1", "d2"), filepath.Join(a, "d1", "dirlink")); !errors.Is(err, syscall.EPERM) {
		t.Errorf("link(2) of a directory: %v, want EPERM", err)
	}
	if err := os.Remove(filepath.Join(a, "d1")); err == nil {
		t.Fatal("rmdir of a non-empty directory succeeded")
	}
	must(os.Remove(filepath.Join(a, "d1", "y")))
	must(os.Remove(filepath.Join(a, "d1", "hard")))
	must(os.Remove(filepath.Join(a, "d1", "link")))
	must(os.Remove(filepath.Join(a, "d1", "d2")))
	must(os.Remove(filepath.Join(a, "d1")))
	waitFor(t, 5*time.Second, "d1 gone on peer 3", func() bool {
		_, err := os.Stat(filepath.Join(b, "d1"))
		return os.IsNotExist(err)
	})
}

// mkTestDir makes a fresh directory for one test case inside a mount.
func mkTestDir(mnt, name string) (string, error) {
	dir := filepath.Join(mnt, name)
	return dir, os.Mkdir(dir, 0o755)
}

// TestClusterMetadata: ownership, mode bits, times and special files made
// on one peer show on another, and the kernel checks permissions against
// them for other users.
func TestClusterMetadata(t *testing.T) {
	peers := startCluster(t, 2, 2)
	a, b := peers[0].mnt, peers[1].mnt
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(syscall.Mkfifo(filepath.Join(a, "fifo"), 0o640))
	must(syscall.Mknod(filepath.Join(a, "tty"), syscall.S_IFCHR|0o600, int(mkdev(4, 1))))
	must(os.WriteFile(filepath.Join(a, "f"), []byte("x"), 0o644))
	must(os.Chown(filepath.Join(a, "f"), 1000, 1001))
	must(os.Chmod(filepath.Join(a, "f"), 0o4755|os.ModeSetuid))
	at, mt := time.Unix(1_600_000_000, 123), time.Unix(1_700_000_000, 456)
	must(os.Chtimes(filepath.Join(a, "f"), at, mt))

	stat := func(name string) *syscall.Stat_t {
		var st syscall.Stat_t
		var err error
		waitFor(t, 5*time.Second, name+" on peer 2", func() bool {
			err = syscall.Lstat(filepath.Join(b, name), &st)
			return err == nil
		})
		return &st
	}
	if st := stat("fifo"); st.Mode != syscall.S_IFIFO|0o640 {
		t.Errorf("fifo mode %#o", st.Mode)
	}
	if st := stat("tty"); st.Mode != syscall.S_IFCHR|0o600 || st.Rdev != mkdev(4, 1) {
		t.Errorf("char device mode %#o rdev %#x", st.Mode, st.Rdev)
	}
	waitFor(t, 5*time.Second, "f's metadata on peer 2", func() bool {
		st := stat("f")
		return st.Uid == 1000 && st.Gid == 1001 && st.Mode == syscall.S_IFREG|syscall.S_ISUID|0o755 &&
			st.Mtim.Nano() == mt.UnixNano() && st.Atim.Nano() == at.UnixNano()
	})

	// Another user: refused in a root-owned 0755 directory, allowed in a
	// 0777 one, and the new file is theirs on the other peer. (The test's
	// temporary directories are 0700: open the way to the mount.)
	for d := filepath.Dir(b); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		must(os.Chmod(d, 0o755))
	}
	must(os.Mkdir(filepath.Join(a, "closed"), 0o755))
	must(os.Mkdir(filepath.Join(a, "open"), 0o777))
	must(os.Chmod(filepath.Join(a, "open"), 0o777))
	asNobody := func(path string) error {
		cmd := exec.Command("touch", path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	waitFor(t, 5*time.Second, "directories on peer 2, open with mode 0777", func() bool {
		_, e1 := os.Stat(filepath.Join(b, "closed"))
		st, e2 := os.Stat(filepath.Join(b, "open"))
		return e1 == nil && e2 == nil && st.Mode().Perm() == 0o777
	})
	if err := asNobody(filepath.Join(b, "closed", "x")); err == nil {
		t.Error("nobody created a file in a root-owned 0755 directory")
	}
	if err := asNobody(filepath.Join(b, "open", "x")); err != nil {
		t.Fatalf("nobody in a 0777 directory: %v", err)
	}
	waitFor(t, 5*time.Second, "nobody's file on peer 1", func() bool {
		var st syscall.Stat_t
		return syscall.Stat(filepath.Join(a, "open", "x"), &st) == nil && st.Uid == 65534 && st.Gid == 65534
	})

	// An unprivileged write to a setuid/setgid file clears those bits (the
	// kernel asks), and every peer sees it.
	suid := filepath.Join(a, "open", "suid")
	must(os.WriteFile(suid, []byte("x"), 0o777))
	must(os.Chmod(suid, 0o777|os.ModeSetuid|os.ModeSetgid))
	waitFor(t, 5*time.Second, "the setuid file on peer 2", func() bool {
		st, err := os.Stat(filepath.Join(b, "open", "suid"))
		return err == nil && st.Mode()&os.ModeSetuid != 0
	})
	cmd := exec.Command("sh", "-c", "echo more >> \"$0\"", filepath.Join(b, "open", "suid"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nobody appending to a 0777 setuid file: %v: %s", err, out)
	}
	waitFor(t, 5*time.Second, "setuid and setgid cleared on both peers", func() bool {
		for _, m := range []string{a, b} {
			st, err := os.Stat(filepath.Join(m, "open", "suid"))
			if err != nil || st.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 {
				return false
			}
		}
		return true
	})
}

func mkdev(major, minor uint32) uint64 {
	return uint64(major)<<8 | uint64(minor)
}

// TestClusterSparseLargeFile: a file grown past 4 GiB by truncate, with a
// few bytes written near its end, is read right on another peer and costs
// only the chunks written (holes are not stored).
func TestClusterSparseLargeFile(t *testing.T) {
	peers := startCluster(t, 2, 2)
	path := filepath.Join(peers[0].mnt, "sparse")
	const size = 5 << 30
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("middle"), 1<<32); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("tail"), size-4); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(peers[1].mnt, "sparse")
	// The truncate is published before the writes (at close): wait for
	// the version that has both, not just for the size.
	waitFor(t, 10*time.Second, "the sparse file on peer 2", func() bool {
		g, err := os.Open(other)
		if err != nil {
			return false
		}
		defer g.Close()
		tail := make([]byte, 4)
		_, err = g.ReadAt(tail, size-4)
		return err == nil && string(tail) == "tail"
	})
	g, err := os.Open(other)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for _, c := range []struct {
		off  int64
		want string
	}{{0, "\x00\x00\x00\x00"}, {1 << 32, "middle"}, {1<<32 - 2, "\x00\x00mi"}, {3 << 30, "\x00\x00"}, {size - 4, "tail"}} {
		got := make([]byte, len(c.want))
		if _, err := g.ReadAt(got, c.off); err != nil {
			t.Fatalf("read at %d: %v", c.off, err)
		}
		if string(got) != c.want {
			t.Errorf("at %d: %q, want %q", c.off, got, c.want)
		}
	}
	var stored int64
	for _, p := range peers {
		_, b := p.db.ChunkStats()
		stored += b
	}
	// Two data chunks and the tree nodes (8 KiB each) on their two paths,
	// on 2 peers: about 80 KB, where a dense file would take 10 GB.
	if stored > 256<<10 {
		t.Errorf("a 5 GiB sparse file stores %d bytes across the cluster", stored)
	}
}

// TestClusterInvalidation: with kernel caches trusted for an hour, a peer
// still sees remote creates, rewrites and deletes promptly: the changes
// arrive as kernel notifications, not by waiting for timeouts.
func TestClusterInvalidation(t *testing.T) {
	peers := startClusterCache(t, 2, 2, time.Hour)
	a, b := peers[0].mnt, peers[1].mnt
	name := filepath.Join(b, "later")
	if _, err := os.Stat(name); !os.IsNotExist(err) {
		t.Fatalf("stat before create: %v", err) // the kernel now caches "no such file"
	}
	if err := os.WriteFile(filepath.Join(a, "later"), []byte("version one"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitContent(t, name, []byte("version one")) // b's size and pages are cached now
	if err := os.WriteFile(filepath.Join(a, "later"), []byte("version two, longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitContent(t, name, []byte("version two, longer"))
	if err := os.Remove(filepath.Join(a, "later")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the delete on peer 2", func() bool {
		_, err := os.Stat(name)
		return os.IsNotExist(err)
	})
}

// TestClusterStatfs: statfs of a mount shows the share, not whole disks:
// its size is the live nodes' free space plus what they hold of the
// share, divided by the copies kept (three nodes with one copy each,
// their data on the same disk: three times that disk's free space), its
// use grows with what is written, and df -i counts the share's files.
func TestClusterStatfs(t *testing.T) {
	peers := startCluster(t, 3, 1)
	statfs := func(path string) syscall.Statfs_t {
		t.Helper()
		var st syscall.Statfs_t
		if err := syscall.Statfs(path, &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	disk, mnt := statfs(filepath.Dir(peers[0].mnt)), statfs(peers[0].mnt)
	free := 3 * float64(disk.Bavail) * float64(disk.Bsize)
	if got := float64(mnt.Bavail) * float64(mnt.Bsize); got < 0.98*free || got > 1.02*free {
		t.Errorf("statfs free %.0f bytes, want about %.0f (3 × the disk's free space)", got, free)
	}
	if mnt.Blocks < mnt.Bavail || float64(mnt.Blocks-mnt.Bavail)*float64(mnt.Bsize) > 1<<20 {
		t.Errorf("an empty share uses %d of %d blocks", mnt.Blocks-mnt.Bavail, mnt.Blocks)
	}
	usedFiles := mnt.Files - mnt.Ffree
	const files, size = 10, 1 << 20
	for i := range files {
		if err := os.WriteFile(filepath.Join(peers[0].mnt, fmt.Sprintf("f%d", i)), randBytes(t, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The figures are kept a second, and a peer that does not answer in
	// time is left out of one: they come right within seconds.
	want := float64(files * size)
	var used float64
	deadline := time.Now().Add(10 * time.Second)
	for {
		mnt = statfs(peers[0].mnt)
		used = float64(mnt.Blocks-mnt.Bfree) * float64(mnt.Bsize)
		if mnt.Files-mnt.Ffree == usedFiles+files && used >= 0.99*want && used <= 1.1*want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: df -i shows %d files used after creating %d (%d before); statfs used %.0f bytes after writing %.0f",
				mnt.Files-mnt.Ffree, files, usedFiles, used, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tarAttrs sets on the open file f what tar x sets before closing a file:
// its mtime (atime left alone), owner and mode.
func tarAttrs(tb testing.TB, f *os.File, mtime time.Time, uid, gid int, mode os.FileMode) {
	tb.Helper()
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, f.Name(), ts, 0); err != nil {
		tb.Fatal(err)
	}
	if err := f.Chown(uid, gid); err != nil {
		tb.Fatal(err)
	}
	if err := f.Chmod(mode); err != nil {
		tb.Fatal(err)
	}
}

// Owner, mode and times set on a file still open for writing (as tar x
// does) are published with its content at close, as one new version; this
// peer shows them at once, and the other peer sees all of it.
func TestClusterAttrsFoldedIntoClose(t *testing.T) {
	peers := startCluster(t, 2, 2)
	a, b := peers[0].mnt, peers[1].mnt
	self := peers[0].db.NodeID()
	want := randBytes(t, 3000)
	mt := time.Unix(1_700_000_000, 789)

	f, err := os.OpenFile(filepath.Join(a, "t"), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	created := peers[0].db.VersionVector()[self]
	if _, err := f.Write(want); err != nil {
		t.Fatal(err)
	}
	tarAttrs(t, f, mt, 1000, 1001, 0o640)
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 1000 || st.Gid != 1001 || st.Mode != syscall.S_IFREG|0o640 || st.Mtim.Nano() != mt.UnixNano() || st.Size != int64(len(want)) {
		t.Errorf("before close, this peer shows uid %d gid %d mode %#o mtime %d size %d", st.Uid, st.Gid, st.Mode, st.Mtim.Nano(), st.Size)
	}
	if got := peers[0].db.VersionVector()[self]; got != created {
		t.Errorf("%d records published between create and close, want none before close", got-created)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// An empty file: the same, with no write at all.
	e, err := os.OpenFile(filepath.Join(a, "empty"), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Chmod(0o604); err != nil {
		t.Fatal(err)
	}
	if err := e.Chown(1002, 1003); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "empty's attributes on peer 2", func() bool {
		var st syscall.Stat_t
		err := syscall.Stat(filepath.Join(b, "empty"), &st)
		return err == nil && st.Uid == 1002 && st.Gid == 1003 && st.Mode == syscall.S_IFREG|0o604 && st.Size == 0
	})
	if got := peers[0].db.VersionVector()[self]; got != created+3 {
		t.Errorf("%d records published after the first create, want 3: close of t, create of empty, close of empty", got-created)
	}
	waitContent(t, filepath.Join(b, "t"), want)
	waitFor(t, 5*time.Second, "t's attributes on peer 2", func() bool {
		err := syscall.Stat(filepath.Join(b, "t"), &st)
		return err == nil && st.Uid == 1000 && st.Gid == 1001 && st.Mode == syscall.S_IFREG|0o640 && st.Mtim.Nano() == mt.UnixNano()
	})
}

// A descriptor opened for writing but not written publishes nothing at
// close, and attributes set through it apply to the content current at
// close: a peer's write made in between stays the file, with no conflict
// copy.
func TestClusterUnwrittenDescriptorKeepsPeersWrite(t *testing.T) {
	peers := startCluster(t, 2, 2)
	a, b := peers[0].mnt, peers[1].mnt
	for _, withAttrs := range []bool{false, true} {
		name := fmt.Sprintf("f-%v", withAttrs)
		f, err := os.OpenFile(filepath.Join(a, name), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() }) // before the unmount, if the test fails
		waitFor(t, 5*time.Second, name+" on peer 2", func() bool {
			_, err := os.Stat(filepath.Join(b, name))
			return err == nil
		})
		want := randBytes(t, 5000)
		if err := os.WriteFile(filepath.Join(b, name), want, 0o644); err != nil {
			t.Fatal(err)
		}
		waitContent(t, filepath.Join(a, name), want)
		if withAttrs {
			if err := f.Chmod(0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{a, b} {
			waitContent(t, filepath.Join(m, name), want)
			if withAttrs {
				waitFor(t, 5*time.Second, name+"'s mode 0600", func() bool {
					st, err := os.Stat(filepath.Join(m, name))
					return err == nil && st.Mode().Perm() == 0o600
				})
			}
		}
	}
	time.Sleep(300 * time.Millisecond) // let any stray version arrive
	for _, m := range []string{a, b} {
		ents, err := os.ReadDir(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if strings.Contains(e.Name(), ".conflict-") {
				t.Errorf("%s: conflict copy %s appeared", m, e.Name())
			}
		}
	}
}

// TestMountReadAhead: the mount's kernel read-ahead is raised from the
// kernel's 128 KiB default for FUSE to what one read carries.
func TestMountReadAhead(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root may set a mount's read-ahead")
	}
	peers := startCluster(t, 1, 1)
	var st syscall.Stat_t
	if err := syscall.Stat(peers[0].mnt, &st); err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != fmt.Sprint(readAheadKiB) {
		t.Fatalf("%s = %s, want %d", path, got, readAheadKiB)
	}
}

// TestVersionDurability: close returns with the file's new version in the
// local index and its sync under way: it becomes durable within moments,
// and reaches the peers once it is; fsync returns only with it durable.
func TestVersionDurability(t *testing.T) {
	peers := startCluster(t, 2, 2)
	a, b := peers[0], peers[1]
	self := a.node.ID()
	p := filepath.Join(a.mnt, "f")
	if err := os.WriteFile(p, []byte("closed"), 0o644); err != nil {
		t.Fatal(err)
	}
	seq := a.db.VersionVector()[self]
	waitFor(t, 5*time.Second, "the version of the close durable", func() bool { return a.db.DurableSeq() >= seq })
	waitFor(t, 5*time.Second, "the closed file on the peer", func() bool {
		got, err := os.ReadFile(filepath.Join(b.mnt, "f"))
		return err == nil && string(got) == "closed"
	})

	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("synced")); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if d, s := a.db.DurableSeq(), a.db.VersionVector()[self]; d < s || s <= seq {
		t.Fatalf("fsync returned with this node's records durable up to %d of %d (%d before the write)", d, s, seq)
	}
}
