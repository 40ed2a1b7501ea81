package fusefs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/oashare/oashare/index"
)

// getXattr reads attribute name of path (not following a symlink).
func getXattr(path, name string) ([]byte, error) {
	buf := make([]byte, 128<<10)
	n, err := unix.Lgetxattr(path, name, buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// listXattrs lists the attribute names of path, sorted.
func listXattrs(t *testing.T, path string) []string {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(path, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", path, err)
	}
	var names []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	slices.Sort(names)
	return names
}

// waitXattr waits until path's attribute name reads want (nil: absent).
func waitXattr(t *testing.T, path, name string, want []byte) {
	t.Helper()
	var got []byte
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		got, err = getXattr(path, name)
		if want == nil && errors.Is(err, unix.ENODATA) || want != nil && err == nil && bytes.Equal(got, want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: xattr %s = %d bytes, %v; want %d bytes", path, name, len(got), err, len(want))
}

// TestXattrs: extended attributes set, read, listed and removed on one
// peer, with the errors of a local disk, and replicated to another with
// the file, through a content change, a rename and a hard link.
func TestXattrs(t *testing.T) {
	peers := startClusterCache(t, 2, 2, time.Millisecond)
	a, b := peers[0].mnt, peers[1].mnt
	f := filepath.Join(a, "f")
	if err := os.WriteFile(f, []byte("content"), 0o644); err != nil {
		t.Fatal(err)
	}
	st0 := lstatOf(t, f)
	ctime0, mtime0 := st0.Ctim.Nano(), st0.Mtim.Nano()
	time.Sleep(10 * time.Millisecond)

	if err := unix.Lsetxattr(f, "user.mime_type", []byte("text/plain"), 0); err != nil {
		t.Fatalf("setxattr: %v", err)
	}
	if v, err := getXattr(f, "user.mime_type"); err != nil || string(v) != "text/plain" {
		t.Fatalf("getxattr = %q, %v", v, err)
	}
	if st := lstatOf(t, f); st.Ctim.Nano() == ctime0 || st.Mtim.Nano() != mtime0 {
		t.Errorf("setxattr: ctime %d -> %d (want changed), mtime %d -> %d (want kept)", ctime0, st.Ctim.Nano(), mtime0, st.Mtim.Nano())
	}
	// A value of Linux's largest size, an empty one, trusted.* and
	// security.* as root.
	big := bytes.Repeat([]byte("0123456789abcdef"), index.MaxXattrValue/16)
	for name, v := range map[string][]byte{"user.big": big, "user.empty": {}, "trusted.t": []byte("t"), "security.s": []byte("s")} {
		if err := unix.Lsetxattr(f, name, v, 0); err != nil {
			t.Fatalf("setxattr %s (%d bytes): %v", name, len(v), err)
		}
	}
	want := []string{"security.s", "trusted.t", "user.big", "user.empty", "user.mime_type"}
	if got := listXattrs(t, f); !slices.Equal(got, want) {
		t.Fatalf("listxattr = %q; want %q", got, want)
	}
	// The errors a local disk gives.
	errs := []struct {
		what string
		err  error
		want syscall.Errno
	}{
		{"get a missing name", func() error { _, err := getXattr(f, "user.none"); return err }(), unix.ENODATA},
		{"remove a missing name", unix.Lremovexattr(f, "user.none"), unix.ENODATA},
		{"create an existing name", unix.Lsetxattr(f, "user.mime_type", []byte("x"), unix.XATTR_CREATE), unix.EEXIST},
		{"replace a missing name", unix.Lsetxattr(f, "user.none", []byte("x"), unix.XATTR_REPLACE), unix.ENODATA},
		{"a value over 64 KiB", unix.Lsetxattr(f, "user.huge", make([]byte, index.MaxXattrValue+1), 0), unix.E2BIG},
		{"a name over 255 bytes", unix.Lsetxattr(f, "user."+strings.Repeat("n", 251), []byte("x"), 0), unix.ERANGE},
		{"an unknown namespace", unix.Lsetxattr(f, "other.x", []byte("x"), 0), unix.EOPNOTSUPP},
		{"an SELinux label", unix.Lsetxattr(f, "security.selinux", []byte("x"), 0), unix.EOPNOTSUPP},
		{"reading an SELinux label", func() error { _, err := getXattr(f, "security.selinux"); return err }(), unix.EOPNOTSUPP},
		{"a buffer too small", func() error { _, err := unix.Lgetxattr(f, "user.mime_type", make([]byte, 2)); return err }(), unix.ERANGE},
		{"attributes over the inode's room", unix.Lsetxattr(f, "user.big2", big, 0), unix.ENOSPC},
	}
	for _, e := range errs {
		if !errors.Is(e.err, e.want) {
			t.Errorf("%s: %v; want %v", e.what, e.err, e.want)
		}
	}
	if err := unix.Lsetxattr(f, "user.mime_type", []byte("text/markdown"), unix.XATTR_REPLACE); err != nil {
		t.Fatalf("setxattr XATTR_REPLACE: %v", err)
	}
	if err := unix.Lremovexattr(f, "user.empty"); err != nil {
		t.Fatalf("removexattr: %v", err)
	}
	// The size asked with an empty buffer.
	if n, err := unix.Lgetxattr(f, "user.big", nil); err != nil || n != len(big) {
		t.Errorf("getxattr size = %d, %v; want %d", n, err, len(big))
	}

	// A symlink takes no user.* (the kernel says so), a directory does.
	if err := os.Symlink("f", filepath.Join(a, "link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(filepath.Join(a, "link"), "user.x", []byte("x"), 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("user.* on a symlink: %v; want EPERM", err)
	}
	if err := unix.Lsetxattr(filepath.Join(a, "link"), "trusted.x", []byte("x"), 0); err != nil {
		t.Errorf("trusted.* on a symlink as root: %v", err)
	}
	d := filepath.Join(a, "d")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(d, "user.dir", []byte("yes"), 0); err != nil {
		t.Fatalf("setxattr on a directory: %v", err)
	}
	if err := unix.Lsetxattr(a, "user.root", []byte("top"), 0); err != nil {
		t.Fatalf("setxattr on the share's root: %v", err)
	}

	// Replicated: peer 2 reads every attribute.
	bf := filepath.Join(b, "f")
	waitXattr(t, bf, "user.mime_type", []byte("text/markdown"))
	waitXattr(t, bf, "user.big", big)
	waitXattr(t, bf, "user.empty", nil)
	waitXattr(t, filepath.Join(b, "d"), "user.dir", []byte("yes"))
	waitXattr(t, filepath.Join(b, "link"), "trusted.x", []byte("x"))
	waitXattr(t, b, "user.root", []byte("top"))

	// They live with the inode: through a write of new content (on the
	// other peer), a rename and a hard link.
	if err := os.WriteFile(bf, []byte("new content"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitContent(t, f, []byte("new content"))
	if err := os.Rename(f, filepath.Join(a, "g")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(a, "g"), filepath.Join(a, "h")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(filepath.Join(a, "h"), "user.linked", []byte("both"), 0); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(a, "g"), filepath.Join(b, "g"), filepath.Join(b, "h")} {
		waitXattr(t, p, "user.mime_type", []byte("text/markdown"))
		waitXattr(t, p, "user.linked", []byte("both"))
	}
	// Removed on peer 2, gone on peer 1.
	if err := unix.Lremovexattr(filepath.Join(b, "g"), "user.big"); err != nil {
		t.Fatal(err)
	}
	waitXattr(t, filepath.Join(a, "h"), "user.big", nil)
}

// TestXattrsWhileWriting: attributes set on a file still open for
// writing (cp --preserve=xattr does it before close) are kept when its
// content is published.
func TestXattrsWhileWriting(t *testing.T) {
	peers := startClusterCache(t, 2, 2, time.Millisecond)
	a, b := peers[0].mnt, peers[1].mnt
	fh, err := os.Create(filepath.Join(a, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close() // on failure: the mount must not stay busy
	data := bytes.Repeat([]byte("x"), 300<<10)
	if _, err := fh.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fsetxattr(int(fh.Fd()), "user.during", []byte("write"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := fh.Write([]byte("tail")); err != nil {
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	waitContent(t, filepath.Join(b, "f"), append(data, "tail"...))
	waitXattr(t, filepath.Join(b, "f"), "user.during", []byte("write"))
	waitXattr(t, filepath.Join(a, "f"), "user.during", []byte("write"))
}

// TestProgramsXattrs: setfattr and getfattr, cp --preserve=xattr and
// rsync -X on one peer; another peer reads the attributes.
func TestProgramsXattrs(t *testing.T) {
	setfattr := lookProgram(t, "setfattr", "attr")
	getfattr := lookProgram(t, "getfattr", "attr")
	rsync := lookProgram(t, "rsync", "rsync")
	peers := startCluster(t, 3, 2)
	a, b := peers[0].mnt, peers[2].mnt
	src := filepath.Join(a, "src")
	makeTree(t, seededRand(t), src, 10, 8<<10)
	var files []string
	filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err == nil {
			files = append(files, p)
		}
		return nil
	})
	for i, p := range files {
		mustRun(t, nil, nil, setfattr, "-n", "user.index", "-v", strings.Repeat("v", i+1), p)
	}
	mustRun(t, nil, nil, "cp", "-r", "--preserve=xattr", src, filepath.Join(a, "copy"))
	mustRun(t, nil, nil, rsync, "-aX", src+"/", filepath.Join(a, "synced"))
	dump := func(root string) string {
		out := mustRun(t, nil, nil, getfattr, "-R", "-d", "-m", "^user\\.", "--absolute-names", root)
		return strings.ReplaceAll(out, root, "ROOT")
	}
	want := dump(src)
	if strings.Count(want, "user.index=") != len(files) {
		t.Fatalf("getfattr on peer 1 shows %d attributes; want %d:\n%s", strings.Count(want, "user.index="), len(files), want)
	}
	for _, dir := range []string{"src", "copy", "synced"} {
		root := filepath.Join(b, dir)
		waitFor(t, 20*time.Second, "attributes of "+dir+" on peer 3", func() bool { return dump(root) == want })
	}
}

// TestNoXattrs: a mount with extended attributes off refuses them, as a
// file system without them does.
func TestNoXattrs(t *testing.T) {
	peers := startClusterOpts(t, 1, clusterOptions{replicas: 1, noXattrs: true})
	f := filepath.Join(peers[0].mnt, "f")
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(f, "user.a", []byte("1"), 0); !errors.Is(err, unix.EOPNOTSUPP) {
		t.Errorf("setxattr with xattrs off: %v; want ENOTSUP", err)
	}
	if _, err := getXattr(f, "user.a"); !errors.Is(err, unix.EOPNOTSUPP) {
		t.Errorf("getxattr with xattrs off: %v; want ENOTSUP", err)
	}
}
