package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
)

// TestCLIVersion: `oashare version` names the version, the commit, the
// Go version and the protocol version; --version says it on one line.
func TestCLIVersion(t *testing.T) {
	bin := cliBinary(t)
	s := t.TempDir()
	env := cliEnv(filepath.Join(s, "xdg"))
	r := runCLI(t, s, env, bin, "version")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("version: exit %d: %s", r.code, r.stderr)
	}
	for _, re := range []string{
		`(?m)^oashare \S+$`,
		`(?m)^commit: +([0-9a-f]{40}( \(with uncommitted changes\))?|unknown \(built outside a git checkout, or with -buildvcs=false\))$`,
		`(?m)^go: +` + regexp.QuoteMeta(runtime.Version()) + ` ` + runtime.GOOS + `/` + runtime.GOARCH + `$`,
		fmt.Sprintf(`(?m)^protocol: +%d \(peers speaking another version are refused\)$`, wire.Version),
	} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("version: no line matching %s in:\n%s", re, r.stdout)
		}
	}
	r = runCLI(t, s, env, bin, "--version")
	want := regexp.MustCompile(fmt.Sprintf(`^oashare \S+( \([0-9a-f]{12}\))?, protocol %d, %s\n$`, wire.Version, regexp.QuoteMeta(runtime.Version())))
	if r.code != 0 || !want.MatchString(r.stdout) {
		t.Errorf("--version: exit %d, %q; want one line matching %s", r.code, r.stdout, want)
	}
	// The Makefile's build stamps the version given.
	stamped := filepath.Join(s, "oashare")
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version=v9.8.7-test -X main.commit=0123456789abcdef0123456789abcdef01234567", "-o", stamped, ".")
	cmd.Dir = filepath.Join(repoRoot(t), "cmd", "oashare")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if r := runCLI(t, s, env, stamped, "--version"); !strings.HasPrefix(r.stdout, "oashare v9.8.7-test (0123456789ab), protocol ") {
		t.Errorf("--version of a stamped build: %q", r.stdout)
	}
	if r := runCLI(t, s, env, stamped, "version"); !strings.Contains(r.stdout, "\ncommit:    0123456789abcdef0123456789abcdef01234567") {
		t.Errorf("version of a stamped build:\n%s", r.stdout)
	}
	// make install PREFIX=DIR: the binary in DIR/bin, saying its version.
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make missing")
	}
	prefix := filepath.Join(s, "prefix")
	mk := exec.Command("make", "-s", "install", "PREFIX="+prefix, "VERSION=v1.2.3-test")
	mk.Dir = repoRoot(t)
	out, err := mk.CombinedOutput()
	if err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "installed "+prefix+"/bin/oashare (oashare v1.2.3-test") {
		t.Errorf("make install says %q", out)
	}
	if r := runCLI(t, s, env, filepath.Join(prefix, "bin", "oashare"), "--version"); !strings.HasPrefix(r.stdout, "oashare v1.2.3-test") {
		t.Errorf("the installed binary says %q", r.stdout)
	}
}

// TestCLIUmount: umount stops the node cleanly: it refuses a folder
// inside the mount, says when the folder is busy and keeps the node
// running, then unmounts and the node exits 0 with what was written
// still there on the next mount.
func TestCLIUmount(t *testing.T) {
	needFUSE(t)
	bin := cliBinary(t)
	base := t.TempDir()
	mnt := freeMountDir(t, base, "mnt")
	data := filepath.Join(base, "data")
	n := startNode(t, bin, mnt, data, "127.0.0.1:0")
	if err := os.Mkdir(filepath.Join(mnt, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "dir", "f"), []byte("kept\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	r := runCLI(t, "/", n.env, bin, "umount", filepath.Join(mnt, "dir"))
	wantOneLineError(t, r, "is inside the mount "+mnt+", not its mount point")

	busy, err := os.Open(filepath.Join(mnt, "dir", "f"))
	if err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, "/", n.env, bin, "umount", mnt)
	busy.Close()
	wantOneLineError(t, r, mnt+" is busy: a program has a file or directory open in it")
	select {
	case <-n.done:
		t.Fatalf("the node stopped after a refused umount:\n%s", n.log())
	case <-time.After(200 * time.Millisecond):
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "dir", "f")); err != nil || string(b) != "kept\n" {
		t.Fatalf("after a refused umount the mount reads %q, %v", b, err)
	}

	// The kernel may take a moment to let go of the file just closed.
	var out string
	deadline := time.Now().Add(10 * time.Second)
	for {
		r = runCLI(t, "/", n.env, bin, "umount", mnt)
		if r.code == 0 || time.Now().After(deadline) || !strings.Contains(r.stderr, "is busy") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	out = r.stdout
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("umount: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	if out != fmt.Sprintf("unmounted %s; no file version was left unpublished; the node is stopped\n", mnt) {
		t.Errorf("umount printed %q", out)
	}
	if c := countMounts(t, mnt); c != 0 {
		t.Fatalf("%s still mounted %d times after umount", mnt, c)
	}
	select {
	case <-n.done:
		if n.waitErr != nil {
			t.Fatalf("node exited with %v after umount:\n%s", n.waitErr, n.log())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("node still running 15s after umount:\n%s", n.log())
	}
	if !strings.Contains(n.log(), "stopping: the folder was unmounted") {
		t.Errorf("the node's log does not say why it stopped:\n%s", n.log())
	}
	// Mounted again with the log in a file: stderr says where it goes,
	// the file has it.
	logPath := filepath.Join(base, "node.log")
	n2 := startNode(t, bin, mnt, data, "127.0.0.1:0", "--log-file", logPath)
	if !strings.Contains(n2.log(), "oashare: logging to "+logPath+"\n") {
		t.Errorf("stderr of a node with --log-file:\n%s", n2.log())
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(logPath)
		if regexp.MustCompile(`msg=ready .*log=` + regexp.QuoteMeta(logPath) + ` `).Match(b) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log file has no ready line naming it:\n%s\nstderr:\n%s", b, n2.log())
		}
	}
	if st, err := os.Stat(logPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("log file mode: %v, %v; want 0600", st.Mode(), err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "dir", "f")); err != nil || string(b) != "kept\n" {
		t.Fatalf("after umount and mount again: %q, %v", b, err)
	}

	// A node killed leaves its mount behind; umount clears it.
	n2.cmd.Process.Signal(syscall.SIGKILL)
	<-n2.done
	r = runCLI(t, "/", n2.env, bin, "umount", mnt)
	if r.code != 0 || r.stdout != fmt.Sprintf("unmounted %s (no node was serving it any more)\n", mnt) {
		t.Fatalf("umount of a dead node's mount: exit %d: %q %s", r.code, r.stdout, r.stderr)
	}
	if c := countMounts(t, mnt); c != 0 {
		t.Fatalf("%s still mounted after umount of a dead node's mount", mnt)
	}
}

// TestCLIUmountPending: with a file version that cannot be published
// (the only other peer's disk is full), umount shows what it waits for
// and keeps the node running when interrupted; --force stops it, and the
// version is still pending, kept, when the node mounts again.
func TestCLIUmountPending(t *testing.T) {
	needFUSE(t)
	if os.Getuid() != 0 {
		t.Skip("needs root for a small tmpfs as a full disk")
	}
	bin := cliBinary(t)
	base := t.TempDir()
	full := filepath.Join(base, "dataB")
	if err := os.Mkdir(full, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", full, "tmpfs", 0, "size=24m"); err != nil {
		t.Fatalf("a small disk: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(full, syscall.MNT_DETACH) })
	a, b, _, _ := joinedPair(t, bin, base, "--replicas", "2")
	if err := os.WriteFile(filepath.Join(a.mnt, "big"), randomBytes(t, 40<<20), 0o644); err == nil {
		t.Fatal("writing 40 MiB where the other peer has 24 MiB succeeded; want EIO at close")
	}
	if s, _ := a.status(t); s.Pending != 1 {
		t.Fatalf("%d versions pending after the failed close; want 1", s.Pending)
	}

	// Interrupted while it waits: the node keeps running.
	cmd := exec.Command(bin, "umount", a.mnt)
	cmd.Env = a.env
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "publishing 1 file versions written here (their copies need peers with room; Ctrl-C keeps the node running, --force stops it anyway)") {
		t.Fatalf("umount with a pending version printed %q, %v", line, err)
	}
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	time.Sleep(300 * time.Millisecond)
	select {
	case <-a.done:
		t.Fatalf("the node stopped after an interrupted umount:\n%s", a.log())
	default:
	}
	if countMounts(t, a.mnt) != 1 {
		t.Fatal("the mount went away after an interrupted umount")
	}

	r := runCLI(t, "/", a.env, bin, "umount", "--force", a.mnt)
	if r.code != 0 || r.stdout != fmt.Sprintf("unmounted %s; the node is stopped (anything left pending is published when it mounts again)\n", a.mnt) {
		t.Fatalf("umount --force: exit %d: %q %s", r.code, r.stdout, r.stderr)
	}
	select {
	case <-a.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("node still running 15s after umount --force:\n%s", a.log())
	}
	// B's status shows A down, with when it was last seen.
	downRow := regexp.MustCompile(`(?m)^` + a.nodeID[:8] + ` +\S+ +127\.0\.0\.1:\d+ +down, last seen \d+s ago +- +-$`)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		r := runCLI(t, "/", b.env, bin, "status", b.mnt)
		if downRow.MatchString(r.stdout) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B's status does not show A down:\n%s%s", r.stdout, r.stderr)
		}
	}
	a2 := startNode(t, bin, a.mnt, a.data, "127.0.0.1:0", "--replicas", "2", "--peer", "127.0.0.1:"+b.port())
	if s, _ := a2.status(t); s.Pending != 1 {
		t.Errorf("after umount --force and a new mount: %d versions pending; want 1 (kept)", s.Pending)
	}
}
