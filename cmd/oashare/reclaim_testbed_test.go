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
	"regexp"
	"strings"
	"testing"
	"time"
)

// duB returns the apparent size of the files under dir (du -sb).
func duB(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // a file removed while walking
			}
			return err
		}
		if info.Mode().IsRegular() {
			n += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestTestbedReclaim: on 3 peers with --reclaim-after 5s --keep-versions 0,
// a 64 MiB file written, overwritten twice and deleted leaves every data
// dir, within a minute, within a few MiB of its size before (du -sb: the
// files' sizes, not only their blocks).
func TestTestbedReclaim(t *testing.T) {
	needTestbed(t)
	tb, bin, dir := newTestbed(t, "TESTBED_FLAGS=--reclaim-after 5s --keep-versions 0")
	tb.run("up", "3")
	tb.run("wait-peers")
	data := func(k int) string { return filepath.Join(dir, fmt.Sprintf("p%d", k), "data") }
	start := make([]int64, 4)
	for k := 1; k <= 3; k++ {
		start[k] = duB(t, data(k))
	}
	m1, m3 := tb.run("mnt", "1"), tb.run("mnt", "3")
	big := make([]byte, 64<<20)
	for round := range 3 { // written, then overwritten twice
		io.ReadFull(rand.Reader, big)
		if err := os.WriteFile(filepath.Join(m1, "big"), big, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: data dirs %d, %d, %d bytes", round, duB(t, data(1)), duB(t, data(2)), duB(t, data(3)))
	}
	for wait := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		got, err := os.ReadFile(filepath.Join(m3, "big"))
		if err == nil && bytes.Equal(got, big) {
			break
		}
		if time.Since(wait) > 30*time.Second {
			t.Fatalf("peer 3 does not show the last version of big: %d bytes, %v", len(got), err)
		}
	}
	if err := os.Remove(filepath.Join(m3, "big")); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	const slack = 8 << 20
	deadline := removed.Add(time.Minute)
	for {
		back := true
		var now [4]int64
		for k := 1; k <= 3; k++ {
			now[k] = duB(t, data(k))
			back = back && now[k] <= start[k]+slack
		}
		if back {
			t.Logf("data dirs back to %d, %d, %d bytes (from %d, %d, %d) %v after the rm",
				now[1], now[2], now[3], start[1], start[2], start[3], time.Since(removed).Round(time.Second))
			break
		}
		if time.Now().After(deadline) {
			out, _ := exec.Command(bin, "status", "--data", data(1)).CombinedOutput()
			t.Logf("status of peer 1:\n%s", out)
			t.Fatalf("a minute after the rm, data dirs are %d, %d, %d bytes; started at %d, %d, %d",
				now[1], now[2], now[3], start[1], start[2], start[3])
		}
		time.Sleep(time.Second)
	}
	checkTestbedStatusAndDown(t, tb, 3)
}

// checkTestbedStatusAndDown: `scripts/testbed status` is a table with a
// row per peer, columns aligned, and `down` says what it removed.
func checkTestbedStatusAndDown(t *testing.T, tb *testbed, n int) {
	t.Helper()
	st := tb.run("status")
	lines := strings.Split(st, "\n")
	if len(lines) != n+1 || !regexp.MustCompile(`^PEER +STATE +PID +ADDRESS +MOUNT +NODE +LIVE PEERS +STORED +PENDING +BELOW TARGET$`).MatchString(lines[0]) {
		t.Fatalf("testbed status is not a table of %d peers:\n%s", n, st)
	}
	row := regexp.MustCompile(fmt.Sprintf(`^\d +running +\d+ +\S+:\d+ +\S+ +[0-9a-f]{8} +%d +\d+ bytes +0 +\d+ groups$`, n-1))
	for _, l := range lines[1:] {
		if !row.MatchString(l) || strings.Index(l, "running") != strings.Index(lines[0], "STATE") {
			t.Errorf("testbed status row %q does not line up with\n%q", l, lines[0])
		}
	}
	down := tb.run("down")
	for _, want := range []string{fmt.Sprintf("stopped %d nodes (PIDs ", n), fmt.Sprintf("deleted %d network namespaces", n+1), "removed "} {
		if !strings.Contains(down, want) {
			t.Errorf("testbed down says %q; want it to say %q", down, want)
		}
	}
}

// peerStatus reads peer k's status as JSON.
func peerStatus(t *testing.T, bin, dir string, k int) statusJSON {
	t.Helper()
	out, err := exec.Command(bin, "status", "--json", "--data", filepath.Join(dir, fmt.Sprintf("p%d", k), "data")).Output()
	if err != nil {
		t.Fatalf("status of peer %d: %v", k, err)
	}
	var s statusJSON
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("status of peer %d: %v\n%s", k, err, out)
	}
	return s
}

// TestTestbedChurnThenSnapshot: with peer 4 down, peer 1 creates 3 000
// files and deletes all but 100; once peer 4 has been away longer than
// --forget-after (1m), the others prune that history, names and inodes
// included. Peer 4 comes back, loads the namespace as a snapshot, and
// shows exactly the files the others show.
func TestTestbedChurnThenSnapshot(t *testing.T) {
	needTestbed(t)
	tb, bin, dir := newTestbed(t, "TESTBED_FLAGS=--reclaim-after 2s --keep-versions 0 --forget-after 1m")
	tb.run("up", "4")
	tb.run("wait-peers")
	m1 := tb.run("mnt", "1")
	if err := os.WriteFile(filepath.Join(m1, "before"), []byte("seen by all"), 0o644); err != nil {
		t.Fatal(err)
	}
	m4 := tb.run("mnt", "4")
	for wait := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(m4, "before")); err == nil {
			break
		}
		if time.Since(wait) > 20*time.Second {
			t.Fatal("peer 4 does not see the first file")
		}
	}
	tb.run("kill", "4")
	away := time.Now()
	const cycles, kept = 3000, 100
	for i := range cycles {
		p := filepath.Join(m1, fmt.Sprintf("f%05d", i))
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if i >= kept {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("%d files created, %d deleted on peer 1 in %v", cycles, cycles-kept, time.Since(away).Round(time.Second))
	deadline := time.Now().Add(3 * time.Minute)
	for {
		s := peerStatus(t, bin, dir, 1)
		if s.GC.PrunedNames >= cycles-kept && s.GC.PrunedInodes >= cycles-kept {
			t.Logf("peer 1 pruned %d records, %d names, %d inodes %v after peer 4 left",
				s.GC.PrunedRecords, s.GC.PrunedNames, s.GC.PrunedInodes, time.Since(away).Round(time.Second))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer 1 has not pruned the deleted files: %+v", s.GC)
		}
		time.Sleep(2 * time.Second)
	}
	tb.run("start", "4")
	for wait := time.Now(); ; time.Sleep(500 * time.Millisecond) {
		s := peerStatus(t, bin, dir, 4)
		if s.GC.Snapshots >= 1 {
			break
		}
		if time.Since(wait) > time.Minute {
			t.Fatalf("peer 4 has loaded no snapshot: %+v", s.GC)
		}
	}
	m4 = tb.run("mnt", "4")
	list := func(m string) []string {
		ents, err := os.ReadDir(m)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	for wait := time.Now(); ; time.Sleep(500 * time.Millisecond) {
		got, want := list(m4), list(m1)
		if len(want) == kept+1 && fmt.Sprint(got) == fmt.Sprint(want) {
			break
		}
		if time.Since(wait) > 30*time.Second {
			t.Fatalf("peer 4 shows %d names, peer 1 %d (want %d)", len(got), len(want), kept+1)
		}
	}
	if b, err := os.ReadFile(filepath.Join(m4, "f00042")); err != nil || string(b) != "x" {
		t.Fatalf("a kept file on peer 4: %q, %v", b, err)
	}
}
