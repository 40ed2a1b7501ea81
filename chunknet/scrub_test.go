package chunknet

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/index/format"
)

// flipStored flips one byte of needle where it lies in tn's chunk log
// segments, as bit rot would, and reports whether it found it.
func flipStored(t *testing.T, tn *testNode, needle []byte) bool {
	t.Helper()
	found := false
	filepath.WalkDir(tn.dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || found || d.IsDir() || !strings.HasSuffix(p, ".seg") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(b, needle)
		if i < 0 {
			return nil
		}
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt([]byte{b[i+len(needle)/2] ^ 0x40}, int64(i+len(needle)/2)); err != nil {
			t.Fatal(err)
		}
		found = true
		return nil
	})
	return found
}

// TestScrubReplacesDamagedCopy: a byte flipped in a stored segment file is
// never returned by a read, and scrub finds the damaged group and
// replaces it with a good copy from another holder.
func TestScrubReplacesDamagedCopy(t *testing.T) {
	scrubbing := startNode(t, Config{Replicas: 3, ScrubEvery: 2 * time.Second})
	others := []*testNode{startNode(t, Config{Replicas: 3, ScrubEvery: -1}), startNode(t, Config{Replicas: 3, ScrubEvery: -1})}
	nodes := append([]*testNode{scrubbing}, others...)
	connectAll(t, nodes...)
	content := randBytes(t, 10*format.MaxGroupData+300)
	v := writeFile(t, others[0].node, content)
	// Rot in the middle of the fourth group on the scrubbing node.
	off := 3*format.MaxGroupData + 1000
	if !flipStored(t, scrubbing, content[off:off+64]) {
		t.Fatal("the bytes to damage are not in the scrubbing node's segments")
	}
	got, err := readWhole(t, scrubbing.node, v)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("a read on the damaged node returned %d bytes (%v), identical: %v", len(got), err, bytes.Equal(got, content))
	}
	waitFor(t, 20*time.Second, "scrub to find and replace the damaged group", func() bool {
		st := scrubbing.node.ScrubStats()
		return st.Damaged >= 1 && st.Replaced >= 1
	})
	st := scrubbing.node.ScrubStats()
	if st.Damaged != 1 || st.Replaced != 1 {
		t.Fatalf("scrub found %d damaged and replaced %d, want 1 and 1", st.Damaged, st.Replaced)
	}
	// The copy here is good again: every stored group checks out.
	err = tree.Stored(t.Context(), scrubbing.node, v, func(_ uint64, s tree.Span) error {
		data, ok, err := scrubbing.db.GetGroup(s.Group, 0, format.MaxGroupData, nil)
		if err != nil || !ok {
			t.Fatalf("group %s missing here after scrub (%v)", s.Group.Short(), err)
		}
		node, _, _ := scrubbing.db.GetChunk(s.Group, nil)
		if !verifyGroup(s.Group, node, data) {
			t.Fatalf("group %s still damaged here after scrub", s.Group.Short())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A whole pass started after the replacement finds nothing more.
	passes := st.Passes
	waitFor(t, 20*time.Second, "two more scrub passes", func() bool { return scrubbing.node.ScrubStats().Passes >= passes+2 })
	if st := scrubbing.node.ScrubStats(); st.Damaged != 1 {
		t.Fatalf("after the replacement, scrub counts %d damaged items, want still 1", st.Damaged)
	}
}
