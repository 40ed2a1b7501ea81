package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// waitContent waits until path reads want (nil: until it does not exist).
func waitContent(t *testing.T, path string, want []byte) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, err := os.ReadFile(path)
		if (want == nil && os.IsNotExist(err)) || (want != nil && err == nil && bytes.Equal(got, want)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: after 15s it reads %d bytes (err %v), want %d", path, len(got), err, len(want))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCLIVersions: the earlier contents of a file are listed and brought
// back, in place, as a new file, and after the file was deleted on another
// peer; every peer reads what was restored. Bad requests get one line.
func TestCLIVersions(t *testing.T) {
	needFUSE(t)
	bin := cliBinary(t)
	a, b, _, _ := joinedPair(t, bin, t.TempDir())
	doc, docB := filepath.Join(a.mnt, "doc"), filepath.Join(b.mnt, "doc")
	contents := [][]byte{randomBytes(t, 5000), randomBytes(t, 70<<10), []byte("v3\n")}
	for _, c := range contents {
		if err := os.WriteFile(doc, c, 0o644); err != nil {
			t.Fatal(err)
		}
		waitContent(t, docB, c)
	}
	list := func(path string) versionsJSON {
		t.Helper()
		r := runCLI(t, "/", a.env, bin, "versions", path, "--json")
		if r.code != 0 {
			t.Fatalf("versions %s: exit %d: %s", path, r.code, r.stderr)
		}
		var vj versionsJSON
		if err := json.Unmarshal([]byte(r.stdout), &vj); err != nil {
			t.Fatalf("versions --json: %v: %s", err, r.stdout)
		}
		return vj
	}
	// Status shows what the other peer holds and has free.
	if s, _ := a.status(t); len(s.Peers) != 1 || s.Peers[0].Held == nil || *s.Peers[0].Held < uint64(len(contents[1])) ||
		*s.Peers[0].DiskFree == 0 || s.DiskFree == 0 {
		t.Fatalf("status of a: peers %+v, disk free %d", s.Peers, s.DiskFree)
	}
	vj := list(doc)
	if len(vj.Versions) != 3 {
		t.Fatalf("versions of a file written 3 times: %+v", vj.Versions)
	}
	for i, v := range vj.Versions {
		if v.N != i+1 || v.Size != uint64(len(contents[i])) || v.Current != (i == 2) || v.Node != a.nodeID[:8] {
			t.Fatalf("version %d: %+v (want size %d, current %v, node %s)", i+1, v, len(contents[i]), i == 2, a.nodeID[:8])
		}
	}
	// The table a person reads.
	r := runCLI(t, "/", a.env, bin, "versions", doc)
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); r.code != 0 || len(lines) != 4 ||
		!strings.HasPrefix(lines[0], "VERSION") || !strings.Contains(lines[3], "current") {
		t.Fatalf("versions: exit %d:\n%s", r.code, r.stdout)
	}

	// Deleted on the other peer: still listed by its path, none current,
	// and brought back from there.
	if err := os.Remove(docB); err != nil {
		t.Fatal(err)
	}
	waitContent(t, doc, nil)
	vj = list(doc)
	if len(vj.Versions) != 3 || vj.Versions[2].Current {
		t.Fatalf("versions of a deleted file: %+v", vj.Versions)
	}
	r = runCLI(t, "/", a.env, bin, "restore", doc, "--version", "2")
	if r.code != 0 || !strings.Contains(r.stdout, "restored version 2") {
		t.Fatalf("restore --version 2: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	waitContent(t, doc, contents[1])
	waitContent(t, docB, contents[1])

	// As a new file.
	r = runCLI(t, "/", a.env, bin, "restore", doc, "--version", "1", "--to", filepath.Join(a.mnt, "doc.v1"))
	if r.code != 0 {
		t.Fatalf("restore --to: exit %d: %s", r.code, r.stderr)
	}
	waitContent(t, filepath.Join(b.mnt, "doc.v1"), contents[0])
	waitContent(t, doc, contents[1])

	// In place, by default the newest content that is not the current
	// one (v3); the content it replaces stays listed.
	r = runCLI(t, "/", a.env, bin, "restore", doc)
	if r.code != 0 || !strings.Contains(r.stdout, "restored version 3") {
		t.Fatalf("restore: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	waitContent(t, doc, contents[2])
	waitContent(t, docB, contents[2])
	vj = list(docB)
	if n := len(vj.Versions); n != 5 || !vj.Versions[n-1].Current || vj.Versions[n-1].Size != uint64(len(contents[2])) {
		t.Fatalf("versions after two restores: %+v", vj.Versions)
	}

	for _, tc := range []struct {
		args   []string
		phrase string
	}{
		{[]string{"versions", filepath.Join(a.mnt, "never")}, "no such file, now or before"},
		{[]string{"restore", doc, "--version", "99"}, "has versions 1 to 5"},
		{[]string{"restore", doc, "--version", "-1"}, "numbered from 1"},
		{[]string{"restore", doc, "--to", filepath.Join(a.mnt, "doc.v1")}, "exists already"},
		{[]string{"restore", "/", "--data", a.data}, "not inside the mount"},
	} {
		r := runCLI(t, "/", a.env, append([]string{bin}, tc.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.phrase) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Fatalf("%v: exit %d, stderr %q; want one line with %q", tc.args, r.code, r.stderr, tc.phrase)
		}
	}
}
