package index

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/cockroachdb/pebble/vfs"
)

// TestWALZerosAhead: Pebble's log is written over zeros written ahead of
// it (walFS), and a copy of the store taken while it runs, as a crash
// would leave it (the log's zero tail included), opens with every
// committed change, before and after Pebble starts a new log.
func TestWALZerosAhead(t *testing.T) {
	dir := t.TempDir()
	db := openAt(t, vfs.Default, dir, Options{})
	n := 0
	commit := func(k int) {
		for range k {
			n++
			mustCommit(t, db, fileDirent(RootID, fmt.Sprint("f", n), uint64(1000+n)))
		}
	}
	reopenCopy := func(what string) {
		t.Helper()
		img := t.TempDir()
		copyTree(t, dir, img)
		got := openAt(t, vfs.Default, img, Options{})
		if a, b := namespaceDump(t, db), namespaceDump(t, got); a != b {
			t.Fatalf("%s: the copy opens with a different namespace (%d bytes of dump, want %d)", what, len(b), len(a))
		}
		got.Close()
	}

	commit(40)
	name, size := lastWAL(t, dir)
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if size < walZeroAhead || !isZero(data[len(data)-walZeroAhead/2:]) {
		t.Fatalf("log %s is %d bytes, its tail not zeros: nothing written ahead", filepath.Base(name), size)
	}
	reopenCopy("first log")

	if err := db.pdb.Flush(); err != nil { // a new log
		t.Fatal(err)
	}
	commit(40)
	if next, _ := lastWAL(t, dir); next == name {
		t.Fatalf("still writing %s after a flush", filepath.Base(name))
	}
	reopenCopy("after a new log")
}

// lastWAL returns the path and size of the newest Pebble log in dir.
func lastWAL(t *testing.T, dir string) (string, int64) {
	t.Helper()
	logs, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no log in %s: %v", dir, err)
	}
	sort.Strings(logs)
	st, err := os.Stat(logs[len(logs)-1])
	if err != nil {
		t.Fatal(err)
	}
	return logs[len(logs)-1], st.Size()
}

// copyTree copies the regular files under src to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(to)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}
