package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
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
}
