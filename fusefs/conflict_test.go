package fusefs

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oashare/oashare/index"
)

// partition cuts the links between p and q (both stop dialing the other
// and drop the connection) and waits until neither sees the other.
func partition(t *testing.T, p, q *testPeer) {
	t.Helper()
	p.node.ForgetAddr(q.node.Addr())
	q.node.ForgetAddr(p.node.Addr())
	waitFor(t, 10*time.Second, "peers apart", func() bool {
		return len(p.node.Peers()) == 0 && len(q.node.Peers()) == 0
	})
	time.Sleep(200 * time.Millisecond)
	if len(p.node.Peers()) != 0 || len(q.node.Peers()) != 0 {
		t.Fatal("peers reconnected after ForgetAddr")
	}
}

// rejoin lets p and q find each other again after partition.
func rejoin(p, q *testPeer) {
	p.node.AddPeerAddr(q.node.Addr())
	q.node.AddPeerAddr(p.node.Addr())
}

// waitConflictEntry waits until both peers list exactly name and one
// entry conflict copy of it, the same on both, and returns the copy's name.
func waitConflictEntry(t *testing.T, a, b *testPeer, name string) string {
	t.Helper()
	var copyName string
	waitFor(t, 15*time.Second, "one conflict entry for "+name+" on both peers", func() bool {
		na, nb := names(a.mnt), names(b.mnt)
		if len(na) != 2 || na[0] != name || !strings.HasPrefix(na[1], name+".conflict-") {
			return false
		}
		copyName = na[1]
		return slices.Equal(na, nb)
	})
	return copyName
}

// names lists dir, without error.
func names(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// Two peers cut apart write the same file; once together again both show
// the file with one content and one conflict copy with the other, the same
// on both, and unlinking the copy on one removes it on both.
func TestClusterConcurrentWritesKeepConflictCopy(t *testing.T) {
	peers := startCluster(t, 2, 2)
	a, b := peers[0], peers[1]
	fa, fb := filepath.Join(a.mnt, "f"), filepath.Join(b.mnt, "f")
	if err := os.WriteFile(fa, []byte("v0"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitContent(t, fb, []byte("v0"))

	partition(t, a, b)
	if err := os.WriteFile(fa, []byte("from-a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fb, []byte("from-b"), 0o644); err != nil {
		t.Fatal(err)
	}
	rejoin(a, b)

	de, ok, err := a.db.LookupDirent(index.RootID, "f")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	var copyName string
	waitFor(t, 15*time.Second, "one conflict copy on both peers", func() bool {
		hs, err := a.db.Heads(de.Child)
		if err != nil || len(hs) != 2 {
			return false
		}
		copyName = index.ConflictName("f", hs[1].Ref())
		want := []string{"f", copyName}
		return slices.Equal(names(a.mnt), want) && slices.Equal(names(b.mnt), want)
	})
	if !strings.HasPrefix(copyName, "f.conflict-") {
		t.Fatalf("conflict copy named %q", copyName)
	}
	winner := splitContents(t, peers, "f", copyName)
	if err := os.WriteFile(filepath.Join(b.mnt, copyName), []byte("x"), 0o644); err == nil {
		t.Fatal("writing a conflict copy succeeded; want EROFS")
	}

	if err := os.Remove(filepath.Join(b.mnt, copyName)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "conflict copy gone on both peers", func() bool {
		return slices.Equal(names(a.mnt), []string{"f"}) && slices.Equal(names(b.mnt), []string{"f"})
	})
	for _, p := range peers {
		waitContent(t, filepath.Join(p.mnt, "f"), winner)
		if hs, err := p.db.Heads(de.Child); err != nil || len(hs) != 1 {
			t.Fatalf("heads after resolve: %d, %v", len(hs), err)
		}
	}
}

// A peer deletes a file while another, cut off, updates it: the update
// keeps the file on both once they meet again.
func TestClusterDeleteRacingUpdateKeepsUpdate(t *testing.T) {
	peers := startCluster(t, 2, 2)
	a, b := peers[0], peers[1]
	fa, fb := filepath.Join(a.mnt, "f"), filepath.Join(b.mnt, "f")
	if err := os.WriteFile(fa, []byte("v0"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitContent(t, fb, []byte("v0"))
	partition(t, a, b)
	if err := os.Remove(fa); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fb, []byte("updated"), 0o644); err != nil {
		t.Fatal(err)
	}
	rejoin(a, b)
	waitContent(t, fa, []byte("updated"))
	waitContent(t, fb, []byte("updated"))
	// A delete that has seen the update wins.
	if err := os.Remove(fa); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "file gone on both peers", func() bool {
		return len(names(a.mnt)) == 0 && len(names(b.mnt)) == 0
	})
}

// Two peers cut apart each create "same", with different content; once
// together again both show "same" and exactly one entry conflict copy
// holding the other content, the same on both, and unlinking the copy on
// one removes it on both and leaves "same" intact.
func TestClusterConcurrentCreatesKeepConflictEntry(t *testing.T) {
	peers := startCluster(t, 2, 2)
	a, b := peers[0], peers[1]
	partition(t, a, b)
	if err := os.WriteFile(filepath.Join(a.mnt, "same"), []byte("from-a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.mnt, "same"), []byte("from-b"), 0o644); err != nil {
		t.Fatal(err)
	}
	rejoin(a, b)

	copyName := waitConflictEntry(t, a, b, "same")
	winner := splitContents(t, peers, "same", copyName)

	if err := os.Remove(filepath.Join(a.mnt, copyName)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "conflict entry gone on both peers", func() bool {
		return slices.Equal(names(a.mnt), []string{"same"}) && slices.Equal(names(b.mnt), []string{"same"})
	})
	for _, p := range peers {
		waitContent(t, filepath.Join(p.mnt, "same"), winner)
	}
}

// Renaming an entry conflict copy away keeps both contents, under two
// names, on both peers.
func TestClusterRenameConflictEntryAway(t *testing.T) {
	peers := startCluster(t, 2, 2)
	a, b := peers[0], peers[1]
	partition(t, a, b)
	if err := os.Mkdir(filepath.Join(a.mnt, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a.mnt, "d", "x"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(b.mnt, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.mnt, "d", "y"), []byte("b"), 0o644); err != nil {
		t.Fatal(err)
	}
	rejoin(a, b)
	copyName := waitConflictEntry(t, a, b, "d")
	if err := os.Rename(filepath.Join(b.mnt, copyName), filepath.Join(b.mnt, "e")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "d and e on both peers, with both directories' files", func() bool {
		for _, p := range peers {
			if !slices.Equal(names(p.mnt), []string{"d", "e"}) {
				return false
			}
			kids := append(names(filepath.Join(p.mnt, "d")), names(filepath.Join(p.mnt, "e"))...)
			slices.Sort(kids)
			if !slices.Equal(kids, []string{"x", "y"}) {
				return false
			}
		}
		return true
	})
}

// A directory removed on one peer while the other, cut apart, creates a file
// in it: once together the directory and the new file are there on both
// (creating an entry changes the directory, and a delete racing a change
// keeps the change).
func TestClusterRmdirRacingCreateKeepsCreate(t *testing.T) {
	peers := startCluster(t, 2, 2)
	a, b := peers[0], peers[1]
	if err := os.Mkdir(filepath.Join(a.mnt, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "d on peer 2", func() bool {
		_, err := os.Stat(filepath.Join(b.mnt, "d"))
		return err == nil
	})
	partition(t, a, b)
	if err := os.Remove(filepath.Join(a.mnt, "d")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.mnt, "d", "new"), []byte("made while apart"), 0o644); err != nil {
		t.Fatal(err)
	}
	rejoin(a, b)
	waitContent(t, filepath.Join(a.mnt, "d", "new"), []byte("made while apart"))
	waitContent(t, filepath.Join(b.mnt, "d", "new"), []byte("made while apart"))
}

// Creating, removing and renaming entries update the directory's mtime and
// ctime, as POSIX says, on every peer.
func TestDirectoryTimes(t *testing.T) {
	peers := startCluster(t, 2, 2)
	a, b := peers[0].mnt, peers[1].mnt
	if err := os.Mkdir(filepath.Join(a, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := time.Unix(1_000_000_000, 0)
	if err := os.Chtimes(filepath.Join(a, "d"), old, old); err != nil {
		t.Fatal(err)
	}
	step := func(what string, do func() error) {
		t.Helper()
		if err := os.Chtimes(filepath.Join(a, "d"), old, old); err != nil {
			t.Fatal(err)
		}
		if err := do(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for _, m := range []string{a, b} {
			waitFor(t, 5*time.Second, what+" changes d's mtime", func() bool {
				st, err := os.Stat(filepath.Join(m, "d"))
				return err == nil && st.ModTime().After(old.Add(time.Hour))
			})
		}
	}
	step("create", func() error { return os.WriteFile(filepath.Join(a, "d", "f"), nil, 0o644) })
	step("rename", func() error { return os.Rename(filepath.Join(a, "d", "f"), filepath.Join(a, "d", "g")) })
	step("remove", func() error { return os.Remove(filepath.Join(a, "d", "g")) })
}

// splitContents waits until name and its conflict copy read the same on
// every peer, checks that between them they hold "from-a" and "from-b",
// and returns the content under name (the winner's).
func splitContents(t *testing.T, peers []*testPeer, name, copyName string) []byte {
	t.Helper()
	var contents [][]byte
	waitFor(t, 10*time.Second, "same contents on both peers", func() bool {
		contents = contents[:0]
		for _, p := range peers {
			for _, n := range []string{name, copyName} {
				c, err := os.ReadFile(filepath.Join(p.mnt, n))
				if err != nil {
					return false
				}
				contents = append(contents, c)
			}
		}
		return bytes.Equal(contents[0], contents[2]) && bytes.Equal(contents[1], contents[3])
	})
	got := []string{string(contents[0]), string(contents[1])}
	slices.Sort(got)
	if !slices.Equal(got, []string{"from-a", "from-b"}) {
		t.Fatalf("%s and its copy hold %q; want from-a and from-b", name, got)
	}
	return contents[0]
}
