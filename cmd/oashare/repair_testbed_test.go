package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// startRepairTestbed brings up n peers (replicas 3, --repair-after 5s, no
// chunk cache so that reads go to the peers) and returns the testbed, the
// binary and its directory.
func startRepairTestbed(t *testing.T, n int) (*testbed, string, string) {
	t.Helper()
	needTestbed(t)
	tb, bin, dir := newTestbed(t, "TESTBED_FLAGS=--cache-mb 0 --repair-after 5s")
	tb.run("up", fmt.Sprint(n))
	tb.run("wait-peers")
	return tb, bin, dir
}

// makeRepairTree is makeTree plus one 64 MiB file.
func makeRepairTree(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	makeTree(t, src)
	big := make([]byte, 64<<20)
	io.ReadFull(rand.Reader, big)
	if err := os.WriteFile(filepath.Join(src, "photos", "big.mov"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	return src
}

// copyRepairTree copies a makeRepairTree onto peer 1 and waits until peer
// 4 shows it; it returns the source and peer 4's mount.
func copyRepairTree(t *testing.T, tb *testbed) (src, m4 string) {
	t.Helper()
	src = makeRepairTree(t)
	m1, m4 := tb.run("mnt", "1"), tb.run("mnt", "4")
	if out, err := exec.Command("cp", "-r", filepath.Join(src, "photos"), m1+"/").CombinedOutput(); err != nil {
		t.Fatalf("cp -r: %v\n%s", err, out)
	}
	waitSame(t, src, m4, 30*time.Second)
	return src, m4
}

// fsck runs 'oashare fsck --json' against peer k and returns its report
// and exit status.
func fsck(t *testing.T, bin, dir string, k int, extra ...string) (fsckJSON, int) {
	t.Helper()
	args := append([]string{"fsck", "--json", "--data", filepath.Join(dir, fmt.Sprintf("p%d", k), "data")}, extra...)
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("fsck on peer %d: %v", k, err)
	}
	var f fsckJSON
	if err := json.Unmarshal(out, &f); err != nil {
		t.Fatalf("fsck on peer %d (exit %d): %v\n%s%s", k, code, err, out, stderr.Bytes())
	}
	return f, code
}

// waitHealthy polls fsck on peer k until it exits 0 (everything at full
// count), for at most d.
func waitHealthy(t *testing.T, bin, dir string, k int, d time.Duration) fsckJSON {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		f, code := fsck(t, bin, dir, k)
		if code == 0 {
			return f
		}
		if time.Now().After(deadline) {
			for p := 1; ; p++ {
				data := filepath.Join(dir, fmt.Sprintf("p%d", p))
				if _, err := os.Stat(data); err != nil {
					break
				}
				st, _ := exec.Command(bin, "status", "--data", filepath.Join(data, "data")).CombinedOutput()
				t.Logf("peer %d status:\n%s", p, st)
				if lg, err := os.ReadFile(filepath.Join(data, "log")); err == nil {
					var keep []string
					for _, l := range strings.Split(string(lg), "\n") {
						if strings.Contains(l, "repair") || strings.Contains(l, "WARN") || strings.Contains(l, "ERROR") || strings.Contains(l, "peer up") || strings.Contains(l, "peer down") {
							keep = append(keep, l)
						}
					}
					t.Logf("peer %d log (repair, peers, warnings; last 40):\n%s", p, strings.Join(keep[max(0, len(keep)-40):], "\n"))
				}
			}
			t.Fatalf("fsck on peer %d still exits %d after %v: %d full, %d below target, %d unavailable", k, code, d, f.Full, f.Below, f.Unavailable)
		}
		time.Sleep(time.Second)
	}
}

func waitSame(t *testing.T, src, mnt string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		diff := sameTree(filepath.Join(src, "photos"), filepath.Join(mnt, "photos"))
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not show the copied tree:\n%s", mnt, diff)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestTestbedRepair: four peers, replicas 3. A tree with a 64 MiB file is
// copied on peer 1, which is then killed: once it has been gone for
// --repair-after, the other three restore its copies (fsck on peer 4 goes
// from "below target" to clean). Then peers 2 and 3 are killed together:
// peer 4 alone still reads everything identical, and fsck says so.
func TestTestbedRepair(t *testing.T) {
	tb, bin, dir := startRepairTestbed(t, 4)
	src, m4 := copyRepairTree(t, tb)
	f := waitHealthy(t, bin, dir, 4, 30*time.Second)
	if f.Files != 8 || f.Full == 0 {
		t.Fatalf("fsck before any loss: %d files, %d items at full count; want 8 files", f.Files, f.Full)
	}

	tb.run("kill", "1")
	killed := time.Now()
	// Right after the kill, peer 1's copies are missing: about 3/4 of the
	// items are below target until repair.
	deadline := killed.Add(15 * time.Second)
	for {
		g, code := fsck(t, bin, dir, 4)
		if code == 1 && g.Below > 0 && g.Unavailable == 0 {
			t.Logf("after the kill: %d items at full count, %d below target", g.Full, g.Below)
			break
		}
		if code == 0 && time.Since(killed) > 5*time.Second {
			break // repaired already (a slow fsck)
		}
		if time.Now().After(deadline) {
			t.Fatalf("fsck after killing peer 1 exits %d: %+v", code, g)
		}
		time.Sleep(500 * time.Millisecond)
	}
	waitHealthy(t, bin, dir, 4, 2*time.Minute)
	t.Logf("every copy restored %v after the kill", time.Since(killed).Round(time.Second))

	tb.run("kill", "2")
	tb.run("kill", "3")
	if diff := sameTree(filepath.Join(src, "photos"), filepath.Join(m4, "photos")); diff != "" {
		t.Fatalf("after killing peers 1, 2 and 3, peer 4 differs:\n%s", diff)
	}
	if g, code := fsck(t, bin, dir, 4); code != 0 || g.Unavailable != 0 {
		t.Fatalf("fsck on peer 4 alone exits %d: %+v", code, g)
	}
}

// TestTestbedRepairAfterJoin: peer 1 writes alone (the others stopped),
// the three others come back, and once fsck is clean, peer 1 and peer 2
// are killed: peers 3 and 4 still read everything identical.
func TestTestbedRepairAfterJoin(t *testing.T) {
	tb, bin, dir := startRepairTestbed(t, 4)
	for _, k := range []string{"2", "3", "4"} {
		tb.run("stop", k)
	}
	src := makeRepairTree(t)
	m1 := tb.run("mnt", "1")
	if out, err := exec.Command("cp", "-r", filepath.Join(src, "photos"), m1+"/").CombinedOutput(); err != nil {
		t.Fatalf("cp -r on peer 1 alone: %v\n%s", err, out)
	}
	if _, code := fsck(t, bin, dir, 1); code != 0 {
		t.Fatalf("fsck on peer 1 alone exits %d; alone, one copy is full count", code)
	}
	for _, k := range []string{"2", "3", "4"} {
		tb.run("start", k)
	}
	tb.run("wait-peers")
	waitHealthy(t, bin, dir, 1, 2*time.Minute)
	m3, m4 := tb.run("mnt", "3"), tb.run("mnt", "4")
	waitSame(t, src, m4, 30*time.Second)
	tb.run("kill", "1")
	tb.run("kill", "2")
	for _, m := range []string{m3, m4} {
		if diff := sameTree(filepath.Join(src, "photos"), filepath.Join(m, "photos")); diff != "" {
			t.Fatalf("after killing the writer and peer 2, %s differs:\n%s", m, diff)
		}
	}
	waitHealthy(t, bin, dir, 3, 2*time.Minute)
}

// TestTestbedLeave: 'oashare leave' on peer 2 shows its progress, moves
// its copies and stops the node; peers 1 and 3 are then killed and peer 4
// alone reads everything. Peer 4, alone, refuses to leave and keeps
// running.
func TestTestbedLeave(t *testing.T) {
	tb, bin, dir := startRepairTestbed(t, 4)
	src, m4 := copyRepairTree(t, tb)
	pid2, err := os.ReadFile(filepath.Join(dir, "p2", "pid"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "leave", tb.run("mnt", "2")).CombinedOutput()
	if err != nil {
		t.Fatalf("leave on peer 2: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("moved ")) || !bytes.Contains(out, []byte("MiB/s")) || !bytes.Contains(out, []byte("left: ")) {
		t.Fatalf("leave printed no progress:\n%s", out)
	}
	t.Logf("leave:\n%s", out)
	if _, err := os.Stat("/proc/" + string(bytes.TrimSpace(pid2))); err == nil {
		time.Sleep(2 * time.Second)
		if _, err := os.Stat("/proc/" + string(bytes.TrimSpace(pid2))); err == nil {
			t.Fatal("peer 2 still runs after leave")
		}
	}
	if m, _ := os.ReadFile("/proc/mounts"); bytes.Contains(m, []byte(filepath.Join(dir, "p2", "mnt"))) {
		t.Fatal("peer 2's mount is still there after leave")
	}
	tb.run("kill", "1")
	tb.run("kill", "3")
	if diff := sameTree(filepath.Join(src, "photos"), filepath.Join(m4, "photos")); diff != "" {
		t.Fatalf("after peer 2 left and peers 1 and 3 were killed, peer 4 differs:\n%s", diff)
	}
	out, err = exec.Command(bin, "leave", "--data", filepath.Join(dir, "p4", "data")).CombinedOutput()
	if err == nil || !bytes.Contains(out, []byte("no other peer is up")) {
		t.Fatalf("leave of the last peer: %v\n%s", err, out)
	}
	if _, code := fsck(t, bin, dir, 4); code != 0 {
		t.Fatalf("after a refused leave, fsck on peer 4 exits %d", code)
	}
}

// TestTestbedChurn: while peer 1 writes file after file and reads back
// the ones already written, peers 2, 3 and 4 are killed and restarted one
// at a time (each down for longer than --repair-after). Nothing read is
// ever wrong, and at the end every file is identical on peer 4 and fsck
// reports everything at full count.
func TestTestbedChurn(t *testing.T) {
	tb, bin, dir := startRepairTestbed(t, 4)
	m1 := tb.run("mnt", "1")
	if err := os.Mkdir(filepath.Join(m1, "churn"), 0o755); err != nil {
		t.Fatal(err)
	}
	type file struct {
		name string
		data []byte
	}
	var (
		mu      sync.Mutex
		written []file
		stop    = make(chan struct{})
		errs    = make(chan error, 2)
		wg      sync.WaitGroup
	)
	wg.Add(2)
	go func() { // the long copy: 300 files of 256 KiB to 550 KiB, paced
		defer wg.Done()
		for i := 0; i < 300; i++ {
			select {
			case <-stop:
				return
			case <-time.After(150 * time.Millisecond):
			}
			data := make([]byte, 256<<10+i*1021)
			io.ReadFull(rand.Reader, data)
			name := filepath.Join(m1, "churn", fmt.Sprintf("f%03d", i))
			if err := os.WriteFile(name, data, 0o644); err != nil {
				errs <- fmt.Errorf("writing %s: %v", name, err)
				return
			}
			mu.Lock()
			written = append(written, file{name, data})
			mu.Unlock()
		}
	}()
	go func() { // reads of what was written
		defer wg.Done()
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			n := len(written)
			var f file
			if n > 0 {
				f = written[k%n]
			}
			mu.Unlock()
			if n == 0 {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			got, err := os.ReadFile(f.name)
			if err != nil {
				errs <- fmt.Errorf("reading %s: %v", f.name, err)
				return
			}
			if !bytes.Equal(got, f.data) {
				errs <- fmt.Errorf("%s read back wrong (%d bytes, want %d)", f.name, len(got), len(f.data))
				return
			}
		}
	}()
	for _, k := range []string{"2", "3", "4"} {
		tb.run("kill", k)
		time.Sleep(12 * time.Second) // noticed (5s), then --repair-after (5s), then repair
		tb.run("start", k)
		time.Sleep(5 * time.Second)
		select {
		case err := <-errs:
			close(stop)
			wg.Wait()
			t.Fatal(err)
		default:
		}
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d files written during the churn", len(written))
	if len(written) < 3 {
		t.Fatalf("only %d files written in a minute of churn", len(written))
	}
	waitHealthy(t, bin, dir, 1, 2*time.Minute)
	m4 := tb.run("mnt", "4")
	for _, f := range written {
		got, err := os.ReadFile(filepath.Join(m4, "churn", filepath.Base(f.name)))
		if err != nil || !bytes.Equal(got, f.data) {
			t.Fatalf("%s on peer 4 after the churn: %d bytes, %v; identical: %v", filepath.Base(f.name), len(got), err, bytes.Equal(got, f.data))
		}
	}
}
