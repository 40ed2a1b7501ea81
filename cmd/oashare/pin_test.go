package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCLIPin: node B pins a 256 MiB file of which node A holds about
// half (one copy of everything, --replicas 1). The pin is cut off at
// half its bytes, as by Ctrl-C; `oashare pin` again fetches only what is
// still missing. Repair passes then keep B's copies, and with A killed
// the file reads back identical on B. The progress is a bar on a
// pseudo-terminal and lines on a pipe; bad paths get one-line errors.
func TestCLIPin(t *testing.T) {
	needFUSE(t)
	bin := cliBinary(t)
	base := t.TempDir()
	a, b, _, _ := joinedPair(t, bin, base, "--replicas", "1", "--repair-after", "1s")
	big := randomBytes(t, 256<<20)
	if err := os.WriteFile(filepath.Join(a.mnt, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	small := randomBytes(t, 16<<20)
	if err := os.Mkdir(filepath.Join(a.mnt, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a.mnt, "dir", "small"), small, 0o644); err != nil {
		t.Fatal(err)
	}
	waitContentCLI(t, filepath.Join(b.mnt, "dir", "small"), small)

	// Bad input first.
	r := runCLI(t, "/", b.env, bin, "pin", filepath.Join(b.mnt, "nothing"))
	wantOneLineError(t, r, "nothing: no such file or directory in the shared folder")
	r = runCLI(t, "/", b.env, bin, "pin", base)
	wantOneLineError(t, r, "is not inside an oashare mount")
	r = runCLI(t, "/", b.env, bin, "pin")
	wantOneLineError(t, r, "requires at least 1 arg(s), only received 0")
	r = runCLI(t, "/", b.env, bin, "unpin", filepath.Join(b.mnt, "big"))
	wantOneLineError(t, r, "/big is not pinned itself")

	// Cut off at half: speak the control protocol as the CLI does, and
	// hang up once half the bytes are here.
	conn, err := net.Dial("unix", filepath.Join(b.data, controlSocketName))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "pin\t[\"big\"]\n")
	dec := json.NewDecoder(bufio.NewReader(conn))
	var cut pinJSON
	for {
		if err := dec.Decode(&cut); err != nil {
			t.Fatalf("pin progress: %v", err)
		}
		if cut.Done || cut.Error != "" {
			t.Fatalf("the pin ended before it could be cut off at half: %+v (too fast a machine for this file size)", cut)
		}
		if cut.Bytes > 0 && cut.BytesDone >= cut.Bytes/2 {
			break
		}
	}
	conn.Close()
	t.Logf("cut off at %d of %d bytes, %d fetched", cut.BytesDone, cut.Bytes, cut.Fetched)

	// Resumed, on a pipe: lines, then the total; what is fetched now is
	// at most what was missing at the cut.
	r = runCLI(t, "/", b.env, bin, "pin", filepath.Join(b.mnt, "big"))
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("pin again: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if !regexp.MustCompile(`^pinning: [01]/1 files, [\d.]+ (B|KiB|MiB) of 256\.0 MiB`).MatchString(lines[0]) {
		t.Errorf("pin on a pipe: first line %q", lines[0])
	}
	m := regexp.MustCompile(`^pinned 1 files \(256\.0 MiB; ([\d.]+) (B|KiB|MiB) fetched now, the rest was here\): all of it is on this node`).FindStringSubmatch(lines[len(lines)-1])
	if m == nil {
		t.Fatalf("pin again: last line %q", lines[len(lines)-1])
	}
	var fetched float64
	fmt.Sscan(m[1], &fetched)
	switch m[2] {
	case "KiB":
		fetched *= 1 << 10
	case "MiB":
		fetched *= 1 << 20
	}
	if missing := float64(cut.Bytes - cut.BytesDone); fetched > missing+(1<<20) {
		t.Errorf("the resumed pin fetched %.0f bytes; only %.0f were missing at the cut", fetched, missing)
	}

	// On a pseudo-terminal: a progress bar.
	script, err := exec.LookPath("script")
	if err != nil {
		t.Skip("script missing (apt-get install bsdutils)")
	}
	cmd := exec.Command(script, "-qfec", bin+" pin "+filepath.Join(b.mnt, "dir"), "/dev/null")
	cmd.Env = b.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pin on a terminal: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("\r")) || !regexp.MustCompile(`pinning \d/1 files +\d+% \|`).Match(out) || !bytes.Contains(out, []byte("pinned 1 files (16.0 MiB;")) {
		t.Errorf("pin on a terminal draws no bar:\n%q", out)
	}

	// Reads of the pinned file come from B's store, not from A, though A
	// is up and ranks first for half of it.
	before, _ := b.status(t)
	if got, err := os.ReadFile(filepath.Join(b.mnt, "big")); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("reading the pinned file on B: %d bytes, %v", len(got), err)
	}
	if after, _ := b.status(t); after.ChunksFetched != before.ChunksFetched {
		t.Errorf("reading the pinned file fetched %d chunks from peers; want none", after.ChunksFetched-before.ChunksFetched)
	}

	// Repair passes keep B's copies: nothing of it is dropped as surplus
	// although A, with one copy wanted, holds what it ranks for. A peer
	// coming back wakes a pass on B: restart A.
	s0, _ := b.status(t)
	t.Logf("before A restarts, B: %+v", s0.Repair)
	a.stop()
	a = startNode(t, bin, a.mnt, a.data, "127.0.0.1:0", "--replicas", "1", "--repair-after", "1s", "--peer", "127.0.0.1:"+b.port())
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, _ := b.status(t)
		if s.Repair.LastPass != "" && s.Repair.LastPass != s0.Repair.LastPass {
			if s.Repair.Dropped != 0 {
				t.Fatalf("repair dropped %d pinned copies on B\n%s", s.Repair.Dropped, b.log())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no repair pass on B within 30s")
		}
		time.Sleep(200 * time.Millisecond)
	}

	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		r = runCLI(t, "/", b.env, bin, "status", b.mnt)
		if regexp.MustCompile(`(?m)^pinned +2 files, 272\.0 MiB, all here`).MatchString(r.stdout) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status does not show the pins: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	}

	// Every other peer gone: B reads both files from its own store.
	a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.done
	for name, want := range map[string][]byte{"big": big, "dir/small": small} {
		f, err := os.Open(filepath.Join(b.mnt, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s on B with A gone: %d bytes, %v; want %d identical bytes", name, len(got), err, len(want))
		}
	}
	r = runCLI(t, "/", b.env, bin, "unpin", filepath.Join(b.mnt, "big"), filepath.Join(b.mnt, "dir"))
	if r.code != 0 || r.stdout != "unpinned 2 paths\n" {
		t.Errorf("unpin: exit %d: %q %s", r.code, r.stdout, r.stderr)
	}
}

// waitContentCLI waits until path reads want.
func waitContentCLI(t *testing.T, path string, want []byte) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := os.ReadFile(path)
		if err == nil && bytes.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d bytes, %v; want %d", path, len(got), err, len(want))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
