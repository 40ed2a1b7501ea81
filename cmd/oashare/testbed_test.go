package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// repoRoot is two levels up from this package.
func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func needTestbed(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("testbed test skipped in -short mode")
	}
	if os.Getuid() != 0 {
		t.Skip("the testbed needs root (network namespaces, FUSE); CI runs as root")
	}
	for _, tool := range []string{"ip", "nsenter", "fusermount3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s missing (make deps installs it)", tool)
		}
	}
}

// buildBinary builds oashare into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "oashare")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Join(repoRoot(t), "cmd", "oashare")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type testbed struct {
	t      *testing.T
	script string
	env    []string
}

func (tb *testbed) run(args ...string) string {
	tb.t.Helper()
	cmd := exec.Command(tb.script, args...)
	cmd.Env = tb.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.t.Fatalf("testbed %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// makeTree writes a small photo-library-like tree: nested folders, empty
// and odd-sized files, and a few MiB of random bytes.
func makeTree(t *testing.T, root string) {
	t.Helper()
	files := map[string]int{
		"photos/empty.txt":             0,
		"photos/one":                   1,
		"photos/IMG_0001.jpg":          513,
		"photos/IMG_0002.jpg":          200 << 10,
		"photos/2024/summer/beach.jpg": 1<<20 + 7,
		"photos/2024/summer/video.mp4": 3 << 20,
		"photos/2024/notes.md":         4096,
	}
	for name, size := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, size)
		io.ReadFull(rand.Reader, b)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// sameTree reports the first difference between two trees, or "".
func sameTree(a, b string) string {
	out, err := exec.Command("diff", "-r", a, b).CombinedOutput()
	if err != nil {
		if len(out) > 0 {
			return string(out)
		}
		return err.Error()
	}
	return ""
}

// TestTestbedLAN runs the real binary on four peers in network namespaces
// that find each other by mDNS only: a tree copied into peer 1 appears
// identical on peer 4, and stays readable there after peers 1 and 2 are
// killed with SIGKILL.
func TestTestbedLAN(t *testing.T) {
	needTestbed(t)
	if _, err := os.Stat("/run/netns/oasbr"); err == nil {
		t.Skip("a testbed is already up on this machine (scripts/testbed down removes it); not touching it")
	}
	bin := buildBinary(t)
	dir := filepath.Join(t.TempDir(), "tb")
	tb := &testbed{t: t, script: filepath.Join(repoRoot(t), "scripts", "testbed")}
	// --cache-mb 0: peer 4 keeps no chunk in memory, so every read after
	// the kills really goes to the surviving peers.
	tb.env = append(os.Environ(), "OASHARE_BIN="+bin, "TESTBED_DIR="+dir, "TESTBED_REPLICAS=3", "TESTBED_FLAGS=--cache-mb 0")
	t.Cleanup(func() {
		cmd := exec.Command(tb.script, "down")
		cmd.Env = tb.env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("testbed down: %v\n%s", err, out)
		}
		if out, _ := exec.Command("ip", "netns", "list").Output(); bytes.Contains(out, []byte("oasbr")) {
			t.Errorf("namespaces left behind:\n%s", out)
		}
		if m, _ := os.ReadFile("/proc/mounts"); bytes.Contains(m, []byte(dir)) {
			t.Errorf("mounts left behind under %s", dir)
		}
	})
	tb.run("up", "4")
	tb.run("wait-peers")

	// Every peer sees the three others (found by mDNS: no --peer flags).
	for k := 1; k <= 4; k++ {
		var s statusJSON
		out, err := exec.Command(bin, "status", "--json", "--data", filepath.Join(dir, fmt.Sprintf("p%d", k), "data")).Output()
		if err != nil {
			t.Fatalf("status of peer %d: %v", k, err)
		}
		if err := json.Unmarshal(out, &s); err != nil {
			t.Fatalf("status of peer %d: %v\n%s", k, err, out)
		}
		if len(s.Peers) != 3 {
			t.Fatalf("peer %d sees %d peers, want 3: %s", k, len(s.Peers), out)
		}
	}

	src := t.TempDir()
	makeTree(t, src)
	m1, m4 := tb.run("mnt", "1"), tb.run("mnt", "4")
	if out, err := exec.Command("cp", "-r", filepath.Join(src, "photos"), m1+"/").CombinedOutput(); err != nil {
		t.Fatalf("cp -r: %v\n%s", err, out)
	}
	copied := time.Now()
	deadline := copied.Add(10 * time.Second)
	for {
		d := sameTree(filepath.Join(src, "photos"), filepath.Join(m4, "photos"))
		if d == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer 4 does not show the copied tree:\n%s", d)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("tree identical on peer 4 %v after cp finished on peer 1", time.Since(copied).Round(time.Millisecond))

	tb.run("kill", "1")
	tb.run("kill", "2")
	if d := sameTree(filepath.Join(src, "photos"), filepath.Join(m4, "photos")); d != "" {
		t.Fatalf("after killing peers 1 and 2, peer 4 differs:\n%s", d)
	}
	// A change made while peers 1 and 2 are down (two live peers: two
	// replicas) reaches peer 1 when it comes back: it catches up on what it
	// missed.
	late := make([]byte, 70000)
	io.ReadFull(rand.Reader, late)
	if err := os.WriteFile(filepath.Join(m4, "photos", "while-down.bin"), late, 0o600); err != nil {
		t.Fatalf("write on peer 4 with two peers down: %v", err)
	}
	tb.run("start", "1")
	m1 = tb.run("mnt", "1")
	deadline = time.Now().Add(15 * time.Second)
	for {
		got, err := os.ReadFile(filepath.Join(m1, "photos", "while-down.bin"))
		if err == nil && bytes.Equal(got, late) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted peer 1 did not catch up on the file written while it was down (err %v, %d bytes)", err, len(got))
		}
		time.Sleep(100 * time.Millisecond)
	}
	os.WriteFile(filepath.Join(src, "photos", "while-down.bin"), late, 0o600)
	if d := sameTree(filepath.Join(src, "photos"), filepath.Join(m1, "photos")); d != "" {
		t.Fatalf("restarted peer 1 differs:\n%s", d)
	}
	// sha256sum through the mount, as a user would check.
	out, err := exec.Command("sh", "-c", "cd '"+src+"' && find photos -type f | sort | xargs sha256sum > /tmp/oashare-sums.$$ && cd '"+m4+"' && sha256sum -c --quiet /tmp/oashare-sums.$$; rc=$?; rm -f /tmp/oashare-sums.$$; exit $rc").CombinedOutput()
	if err != nil {
		t.Fatalf("sha256sum -c on peer 4: %v\n%s", err, out)
	}
}
