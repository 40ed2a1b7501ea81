package main

import (
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// On one local directory (writer and reader the same) every change is
// seen by the first read, and every figure is printed.
func TestVisdelayLocal(t *testing.T) {
	dir := t.TempDir()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	err = run(dir, dir, 20, 100, true, time.Millisecond, time.Second)
	os.Stdout = stdout
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r)
	out := string(b)
	for _, m := range []string{"now,100.0,%\n", "\np50,", "\np99,", "\nmax,", "\nop_p50,", "\nop_p99,"} {
		if !strings.Contains(out, m) {
			t.Errorf("output lacks %q:\n%s", m, out)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left %d files behind", len(entries))
	}
}
