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
	"sync"
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

// newTestbed prepares a testbed of the binary built from this tree, with
// replicas 3 and env (TESTBED_... settings) added, in a temporary
// directory, and takes it down when the test ends, checking that no
// namespace or mount is left. It skips if a testbed is up already. The
// caller runs "up".
func newTestbed(t *testing.T, env ...string) (tb *testbed, bin, dir string) {
	t.Helper()
	if _, err := os.Stat("/run/netns/oasbr"); err == nil {
		t.Skip("a testbed is already up on this machine (scripts/testbed down removes it); not touching it")
	}
	bin = buildBinary(t)
	dir = filepath.Join(t.TempDir(), "tb")
	tb = &testbed{t: t, script: filepath.Join(repoRoot(t), "scripts", "testbed")}
	tb.env = append(append(os.Environ(), "OASHARE_BIN="+bin, "TESTBED_DIR="+dir, "TESTBED_REPLICAS=3"), env...)
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
	return tb, bin, dir
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
	// --cache-mb 0: peer 4 keeps no chunk in memory, so every read after
	// the kills really goes to the surviving peers.
	tb, bin, dir := newTestbed(t, "TESTBED_FLAGS=--cache-mb 0")
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

// TestTestbedMembers: on a LAN of four peers found by mDNS, peers 2 and 3
// join peer 1's network with join codes and peer 4 starts without one.
// Peers 1-3 see each other and share files; peer 4 sees no peer and no
// file, and no member lists it. A capture on the bridge while a file full
// of a marker is copied on peer 1 and read on peer 3 holds neither the
// marker nor the file's name. A member removed with `oashare remove` is
// dropped by every peer.
func TestTestbedMembers(t *testing.T) {
	needTestbed(t)
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("tcpdump missing (make deps installs it)")
	}
	tb, bin, dir := newTestbed(t, "TESTBED_OUTSIDERS=4")
	tb.run("up", "4")
	tb.run("wait-peers")
	data := func(k int) string { return filepath.Join(dir, fmt.Sprintf("p%d", k), "data") }
	status := func(k int) statusJSON {
		t.Helper()
		out, err := exec.Command(bin, "status", "--json", "--data", data(k)).Output()
		var s statusJSON
		if err == nil {
			err = json.Unmarshal(out, &s)
		}
		if err != nil {
			t.Fatalf("status of peer %d: %v\n%s", k, err, out)
		}
		return s
	}
	members := func(k int) map[string]bool {
		t.Helper()
		out, err := exec.Command(bin, "members", "--json", "--data", data(k)).Output()
		var ms []memberJSON
		if err == nil {
			err = json.Unmarshal(out, &ms)
		}
		if err != nil {
			t.Fatalf("members of peer %d: %v\n%s", k, err, out)
		}
		ids := map[string]bool{}
		for _, m := range ms {
			ids[m.ID] = !m.Removed
		}
		return ids
	}
	ids := map[int]string{}
	for k := 1; k <= 4; k++ {
		ids[k] = status(k).NodeID
	}

	// A capture of everything on the bridge, from before the copy.
	pcap := filepath.Join(t.TempDir(), "bridge.pcap")
	// Every port of the bridge: frames forwarded between two peers do not
	// all show on br0 itself.
	capture := exec.Command("nsenter", "--net=/run/netns/oasbr", "tcpdump", "-i", "any", "-U", "-s", "0", "-w", pcap)
	var capOut lockedBuffer // written by the copy goroutine of exec, read here
	capture.Stdout, capture.Stderr = &capOut, &capOut
	if err := capture.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stopCapture := func() {
		if !stopped {
			stopped = true
			capture.Process.Signal(os.Interrupt)
			capture.Wait()
		}
	}
	t.Cleanup(stopCapture)
	for i := 0; !strings.Contains(capOut.String(), "listening on") && i < 100; i++ {
		time.Sleep(50 * time.Millisecond)
	}

	marker := make([]byte, 16)
	io.ReadFull(rand.Reader, marker)
	mark := fmt.Sprintf("OASHARE-MARKER-%x", marker)
	name := fmt.Sprintf("secret-name-%x.txt", marker[:6])
	// Every line differs (random bytes after the marker), so no chunk
	// repeats and the whole file crosses the bridge.
	var content []byte
	for len(content) < 300<<10 {
		noise := make([]byte, 16)
		io.ReadFull(rand.Reader, noise)
		content = append(content, fmt.Sprintf("%s %x\n", mark, noise)...)
	}
	m1, m3, m4 := tb.run("mnt", "1"), tb.run("mnt", "3"), tb.run("mnt", "4")
	if err := os.WriteFile(filepath.Join(m1, name), content, 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, err := os.ReadFile(filepath.Join(m3, name))
		if err == nil && bytes.Equal(got, content) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer 3 does not read the file written on peer 1: %v (%d bytes)", err, len(got))
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // the last packets reach the capture
	stopCapture()
	raw, err := os.ReadFile(pcap)
	if err != nil {
		t.Fatalf("reading the capture: %v\n%s", err, capOut.String())
	}
	// The copy went over the bridge (3 replicas: peers 2 and 3 got it),
	// encrypted: more bytes than the file, none of them readable.
	if len(raw) < 2*len(content) {
		t.Fatalf("the capture holds %d bytes for a %d-byte file copied to two peers: it missed the traffic\n%s", len(raw), len(content), capOut.String())
	}
	// mDNS announces node IDs (as TLS shows each node's key), and an
	// opaque tag for the network; never its name.
	for _, secret := range []string{mark, name, "secret-name", status(1).Network} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Fatalf("the capture on the bridge contains %q", secret)
		}
	}

	// Members see each other; the outsider sees nobody and nothing.
	for k := 1; k <= 3; k++ {
		if s := status(k); len(s.Peers) != 2 || s.Members != 3 {
			t.Fatalf("peer %d: %d peers, %d members; want 2 and 3", k, len(s.Peers), s.Members)
		}
		ms := members(k)
		if len(ms) != 3 || ms[ids[4]] {
			t.Fatalf("peer %d lists members %v", k, ms)
		}
	}
	if s := status(4); len(s.Peers) != 0 || s.Members != 1 {
		t.Fatalf("the outsider has %d peers and %d members", len(s.Peers), s.Members)
	}
	if names, err := os.ReadDir(m4); err != nil || len(names) != 0 {
		t.Fatalf("the outsider's mount lists %d entries (%v)", len(names), err)
	}

	// Removal: peer 3 is dropped by peers 1 and 2 within seconds.
	if out, err := exec.Command(bin, "remove", ids[3], "--data", data(1)).CombinedOutput(); err != nil {
		t.Fatalf("remove: %v\n%s", err, out)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		s1, s2, s3 := status(1), status(2), status(3)
		if len(s1.Peers) == 1 && len(s2.Peers) == 1 && len(s3.Peers) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after the removal: peers 1, 2, 3 have %d, %d, %d peers; want 1, 1, 0", len(s1.Peers), len(s2.Peers), len(s3.Peers))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The file is still whole on the members left.
	if got, err := os.ReadFile(filepath.Join(tb.run("mnt", "2"), name)); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("peer 2 after the removal: %v (%d bytes)", err, len(got))
	}
}

// lockedBuffer is a bytes.Buffer that a running command writes while the
// test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
