package fusefs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// statOf returns the inode number and link count of path.
func statOf(t *testing.T, path string) (ino uint64, nlink uint64, err error) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, 0, err
	}
	return st.Ino, uint64(st.Nlink), nil
}

// waitLinks waits until path on a peer is inode ino with nlink names.
func waitLinks(t *testing.T, path string, ino, nlink uint64) {
	t.Helper()
	var gi, gn uint64
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if gi, gn, err = statOf(t, path); err == nil && gi == ino && gn == nlink {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: inode %d with %d links (%v); want inode %d with %d", path, gi, gn, err, ino, nlink)
}

// TestHardLinks: link(2) makes a second name of one file, on every peer:
// the same inode number, nlink counted on each, a write through one name
// read through the other on another peer; deleting one name keeps the
// file under the other, and a descriptor open on a name deleted elsewhere
// keeps reading; rename over a link leaves the other names.
func TestHardLinks(t *testing.T) {
	peers := startCluster(t, 3, 2)
	m0, m1, m2 := peers[0].mnt, peers[1].mnt, peers[2].mnt
	v1, v2 := randBytes(t, 300<<10), randBytes(t, 200<<10)
	if err := os.WriteFile(filepath.Join(m0, "a"), v1, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(m0, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(m0, "a"), filepath.Join(m0, "dir", "b")); err != nil {
		t.Fatal(err)
	}
	ino, n, err := statOf(t, filepath.Join(m0, "a"))
	if err != nil || n != 2 {
		t.Fatalf("after link: nlink %d (%v); want 2", n, err)
	}
	if bi, _, _ := statOf(t, filepath.Join(m0, "dir", "b")); bi != ino {
		t.Fatalf("the link is inode %d, the file %d", bi, ino)
	}
	waitLinks(t, filepath.Join(m1, "dir", "b"), ino, 2)
	waitLinks(t, filepath.Join(m1, "a"), ino, 2)
	// Written through one name on peer 2, read through the other on 3.
	if err := os.WriteFile(filepath.Join(m1, "dir", "b"), v2, 0o644); err != nil {
		t.Fatal(err)
	}
	waitContent(t, filepath.Join(m2, "a"), v2)
	// Open on peer 3 through a, then a deleted on peer 1: the file lives
	// on as dir/b, and the descriptor reads on.
	f, err := os.Open(filepath.Join(m2, "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(filepath.Join(m0, "a")); err != nil {
		t.Fatal(err)
	}
	waitLinks(t, filepath.Join(m2, "dir", "b"), ino, 1)
	waitFor(t, 10*time.Second, "a gone on peer 3", func() bool {
		_, err := os.Stat(filepath.Join(m2, "a"))
		return os.IsNotExist(err)
	})
	if got, err := readAllFrom(f); err != nil || !bytes.Equal(got, v2) {
		t.Fatalf("the open descriptor read %d bytes (%v); want %d", len(got), err, len(v2))
	}
	waitContent(t, filepath.Join(m0, "dir", "b"), v2)
	// A third name, then a rename over the second: the file keeps the
	// third and its content.
	if err := os.Link(filepath.Join(m1, "dir", "b"), filepath.Join(m1, "c")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m1, "other"), []byte("other"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(m1, "other"), filepath.Join(m1, "dir", "b")); err != nil {
		t.Fatal(err)
	}
	waitLinks(t, filepath.Join(m0, "c"), ino, 1)
	waitContent(t, filepath.Join(m0, "c"), v2)
	waitContent(t, filepath.Join(m2, "dir", "b"), []byte("other"))
	// Errors as on a local disk.
	if err := os.Link(filepath.Join(m0, "dir"), filepath.Join(m0, "dirlink")); !errors.Is(err, syscall.EPERM) {
		t.Errorf("link of a directory: %v; want EPERM", err)
	}
	if err := os.Link(filepath.Join(m0, "c"), filepath.Join(m0, "dir", "b")); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("link onto an existing name: %v; want EEXIST", err)
	}
	if err := os.Link(filepath.Join(m0, "nothing"), filepath.Join(m0, "x")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("link of a missing file: %v; want ENOENT", err)
	}
}

// TestHardLinksRace: two peers link and unlink names of one file at the
// same time; every peer ends showing the same names, all of the file.
func TestHardLinksRace(t *testing.T) {
	peers := startCluster(t, 3, 2)
	m0, m1, m2 := peers[0].mnt, peers[1].mnt, peers[2].mnt
	if err := os.WriteFile(filepath.Join(m0, "f"), []byte("shared"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitContent(t, filepath.Join(m1, "f"), []byte("shared"))
	done := make(chan error, 2)
	go func() {
		for _, n := range []string{"l1", "l2", "l3"} {
			if err := os.Link(filepath.Join(m0, "f"), filepath.Join(m0, n)); err != nil {
				done <- err
				return
			}
		}
		done <- os.Remove(filepath.Join(m0, "f"))
	}()
	go func() {
		for _, n := range []string{"k1", "k2"} {
			if err := os.Link(filepath.Join(m1, "f"), filepath.Join(m1, n)); err != nil && !os.IsNotExist(err) {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	names := func(m string) string {
		ents, err := os.ReadDir(m)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(m, e.Name()))
			if err != nil || string(b) != "shared" {
				t.Fatalf("%s on a peer: %q, %v", e.Name(), b, err)
			}
			out = append(out, e.Name())
		}
		sort.Strings(out)
		return strings.Join(out, " ")
	}
	waitFor(t, 10*time.Second, "every peer to show the same names", func() bool {
		a := names(m0)
		return a == names(m1) && a == names(m2) && strings.Contains(a, "l3")
	})
	got := names(m2)
	ino, n, err := statOf(t, filepath.Join(m2, "l1"))
	if err != nil || n != uint64(len(strings.Fields(got))) {
		t.Fatalf("names %q, nlink %d (%v)", got, n, err)
	}
	for _, name := range strings.Fields(got) {
		if i, _, _ := statOf(t, filepath.Join(m2, name)); i != ino {
			t.Fatalf("%s is inode %d, l1 %d", name, i, ino)
		}
	}
}

// TestProgramsHardLinks: cp -al, rsync -H and git clone --local, which
// hard-link, on one peer; the result is right on another.
func TestProgramsHardLinks(t *testing.T) {
	git := lookProgram(t, "git", "git")
	rsync := lookProgram(t, "rsync", "rsync")
	peers := startCluster(t, 3, 2)
	a, b := peers[0].mnt, peers[2].mnt
	src := filepath.Join(a, "src")
	makeTree(t, seededRand(t), src, 30, 20<<10)
	mustRun(t, nil, nil, "cp", "-al", src, filepath.Join(a, "copy"))
	mustRun(t, nil, nil, rsync, "-aH", filepath.Join(a, "copy")+"/", filepath.Join(a, "synced"))
	waitDiffClean(t, 20*time.Second, filepath.Join(b, "src"), filepath.Join(b, "copy"))
	waitDiffClean(t, 20*time.Second, filepath.Join(b, "src"), filepath.Join(b, "synced"))
	env := []string{"GIT_CONFIG_NOSYSTEM=1", "HOME=" + t.TempDir(), "GIT_TERMINAL_PROMPT=0", "LC_ALL=C"}
	repo := filepath.Join(a, "repo")
	mustRun(t, env, nil, git, "init", "-q", "-b", "main", repo)
	mustRun(t, env, nil, git, "-C", repo, "-c", "user.name=t", "-c", "user.email=t@oashare.invalid", "commit", "-q", "--allow-empty", "-m", "one")
	if err := os.WriteFile(filepath.Join(repo, "f"), []byte("content\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, env, nil, git, "-C", repo, "add", "f")
	mustRun(t, env, nil, git, "-C", repo, "-c", "user.name=t", "-c", "user.email=t@oashare.invalid", "commit", "-q", "-m", "two")
	mustRun(t, env, nil, git, "clone", "-q", "--local", repo, filepath.Join(a, "clone"))
	// --local hard-links the objects: some object has two names.
	linked := false
	filepath.Walk(filepath.Join(a, "clone", ".git", "objects"), func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			if _, n, _ := statOf(t, p); n > 1 {
				linked = true
			}
		}
		return nil
	})
	if !linked {
		t.Error("git clone --local made no hard link")
	}
	waitProgram(t, 20*time.Second, "git fsck of the clone on peer 3", func(out string, err error) bool { return err == nil },
		git, "-C", filepath.Join(b, "clone"), "fsck", "--full", "--strict")
	waitContent(t, filepath.Join(b, "clone", "f"), []byte("content\n"))
}

// readAllFrom reads f from its start.
func readAllFrom(f *os.File) ([]byte, error) {
	var buf bytes.Buffer
	_, err := buf.ReadFrom(f)
	return buf.Bytes(), err
}

// TestDirectoryLinkCount: a directory's nlink is 2 plus its
// subdirectories, as on a local disk, on every peer.
func TestDirectoryLinkCount(t *testing.T) {
	peers := startCluster(t, 2, 2)
	m0, m1 := peers[0].mnt, peers[1].mnt
	d := filepath.Join(m0, "d")
	for _, p := range []string{d, filepath.Join(d, "s1"), filepath.Join(d, "s2"), filepath.Join(d, "s2", "deeper")} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(d, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path  string
		nlink uint64
	}{{"d", 4}, {"d/s1", 2}, {"d/s2", 3}} {
		if _, n, err := statOf(t, filepath.Join(m0, c.path)); err != nil || n != c.nlink {
			t.Errorf("%s on the peer that made it: nlink %d (%v); want %d", c.path, n, err, c.nlink)
		}
		ino, _, _ := statOf(t, filepath.Join(m0, c.path))
		waitLinks(t, filepath.Join(m1, c.path), ino, c.nlink)
	}
	if err := os.Remove(filepath.Join(d, "s1")); err != nil {
		t.Fatal(err)
	}
	if _, n, _ := statOf(t, d); n != 3 {
		t.Errorf("after rmdir of a subdirectory: nlink %d; want 3", n)
	}
}

// TestCreateModeZero: open(O_CREAT) with mode 0 makes a file of mode
// 0000, as on a local disk, seen so on another peer.
func TestCreateModeZero(t *testing.T) {
	peers := startCluster(t, 2, 2)
	p := filepath.Join(peers[0].mnt, "zero")
	fd, err := syscall.Open(p, syscall.O_CREAT|syscall.O_WRONLY|syscall.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	for _, m := range []string{peers[0].mnt, peers[1].mnt} {
		waitFor(t, 5*time.Second, "the file on the peer", func() bool {
			_, err := os.Stat(filepath.Join(m, "zero"))
			return err == nil
		})
		st, err := os.Stat(filepath.Join(m, "zero"))
		if err != nil || st.Mode().Perm() != 0 {
			t.Errorf("mode of a file created with mode 0: %v (%v); want ----------", st.Mode(), err)
		}
	}
}

// TestTmpfile: open(O_TMPFILE) makes a file with no name; written, then
// given a name by linkat, it shows under that name on another peer with
// what was written; one never linked shows nowhere.
func TestTmpfile(t *testing.T) {
	peers := startCluster(t, 2, 2)
	m0, m1 := peers[0].mnt, peers[1].mnt
	fd, err := unix.Open(m0, unix.O_TMPFILE|unix.O_RDWR, 0o640)
	if err != nil {
		t.Fatalf("open O_TMPFILE: %v", err)
	}
	want := randBytes(t, 200<<10)
	if _, err := unix.Write(fd, want); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Nlink != 0 || st.Mode&0o777 != 0o640 {
		t.Fatalf("fstat of the unnamed file: nlink %d mode %o (%v); want 0 and 640", st.Nlink, st.Mode&0o777, err)
	}
	if err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, filepath.Join(m0, "named"), unix.AT_SYMLINK_FOLLOW); err != nil {
		t.Fatalf("linkat: %v", err)
	}
	if err := unix.Close(fd); err != nil {
		t.Fatal(err)
	}
	waitContent(t, filepath.Join(m1, "named"), want)
	if _, n, err := statOf(t, filepath.Join(m1, "named")); err != nil || n != 1 {
		t.Fatalf("the linked file on the other peer: nlink %d (%v)", n, err)
	}
	// Never linked: written, closed, gone.
	fd, err = unix.Open(m0, unix.O_TMPFILE|unix.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	unix.Write(fd, []byte("scratch"))
	unix.Close(fd)
	for _, m := range []string{m0, m1} {
		ents, err := os.ReadDir(m)
		if err != nil || len(ents) != 1 {
			t.Fatalf("a peer lists %d entries (%v); want only named", len(ents), err)
		}
	}
}

// ctimeOf returns path's ctime in nanoseconds.
func ctimeOf(t *testing.T, path string) int64 {
	t.Helper()
	st := lstatOf(t, path)
	return st.Ctim.Nano()
}

func lstatOf(t *testing.T, path string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestLinkCtime: as on a local disk, a file's ctime moves when a link is
// made to it, when one of its names is deleted, and when a rename
// replaces one of its names; the others keep showing it.
func TestLinkCtime(t *testing.T) {
	peers := startCluster(t, 2, 2)
	m := peers[0].mnt
	p := func(n string) string { return filepath.Join(m, n) }
	for _, typ := range []string{"file", "fifo"} {
		t.Run(typ, func(t *testing.T) {
			a, b, c, other := p(typ+"-a"), p(typ+"-b"), p(typ+"-c"), p(typ+"-other")
			var err error
			if typ == "file" {
				err = os.WriteFile(a, []byte("x"), 0o644)
			} else {
				err = syscall.Mkfifo(a, 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
			step := func(what string, do func() error) {
				t.Helper()
				before := ctimeOf(t, a)
				time.Sleep(20 * time.Millisecond)
				if err := do(); err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				if after := ctimeOf(t, a); after <= before {
					t.Errorf("%s: ctime %d, was %d; want it moved", what, after, before)
				}
			}
			step("link", func() error { return os.Link(a, b) })
			step("a second link", func() error { return os.Link(a, c) })
			step("unlink of one name", func() error { return os.Remove(b) })
			if err := os.WriteFile(other, []byte("y"), 0o644); err != nil {
				t.Fatal(err)
			}
			step("rename over one name", func() error { return os.Rename(other, c) })
			if _, n, err := statOf(t, a); err != nil || n != 1 {
				t.Fatalf("nlink %d (%v); want 1", n, err)
			}
		})
	}
}
