package chunknet

import (
	"crypto/ed25519"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/oashare/oashare/index"
)

// deleteFiles publishes the delete of files from..to-1 made by fileOps.
func deleteFiles(t *testing.T, n *Node, db *index.DB, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		name := fmt.Sprint(i)
		de, ok, err := db.StoredDirent(index.RootID, name)
		if err != nil || !ok {
			t.Fatalf("file %d: %v %v", i, ok, err)
		}
		in, _, _ := db.GetInode(de.Child)
		gone := index.Dirent{Parent: index.RootID, Name: name, Child: de.Child, Deleted: true,
			ChildVersion: in.Version, ChildOrigin: in.Origin,
			BaseChild: de.Child, BaseVersion: de.Version, BaseOrigin: de.Origin}
		if _, err := n.Publish([]index.Op{{Dirent: &gone}}, Synced); err != nil {
			t.Fatal(err)
		}
	}
}

// names lists what the root shows.
func names(t *testing.T, db *index.DB) []string {
	t.Helper()
	ents, err := db.ReadDir(index.RootID)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(ents))
	for i, e := range ents {
		out[i] = e.Name
	}
	return out
}

// pruned reports whether db's log of origin starts after record 1.
func pruned(t *testing.T, tn *testNode, origin *testNode) bool {
	t.Helper()
	f, err := tn.db.Floors()
	if err != nil {
		t.Fatal(err)
	}
	return f[origin.node.ID()] > 0
}

// TestJoinFromSnapshot: members create and delete files; garbage
// collection prunes the history every member has seen (the deleted
// files' names and inodes, and the records); a node that joins then gets
// the namespace as a snapshot, shows what the others show, and follows
// the records made after it.
func TestJoinFromSnapshot(t *testing.T) {
	cfg := Config{ReclaimAfter: 2 * time.Second, KeepVersions: -1}
	nodes := startCluster(t, 2, cfg)
	a, b := nodes[0], nodes[1]
	publishFiles(t, a.node, 0, 100)
	deleteFiles(t, a.node, a.db, 0, 60)
	waitFor(t, 5*time.Second, "b to apply a's records", func() bool {
		return b.db.Applied(a.node.ID()) == a.db.Applied(a.node.ID())
	})
	waitFor(t, 20*time.Second, "a and b to prune a's log", func() bool { return pruned(t, a, a) && pruned(t, b, a) })
	waitFor(t, 10*time.Second, "the deleted files' inodes to be pruned", func() bool {
		_, aok, _ := a.db.GetInode(100)
		_, bok, _ := b.db.GetInode(100)
		return !aok && !bok
	})

	c := startNode(t, cfg)
	connectAll(t, a, b, c)
	waitFor(t, 30*time.Second, "the joiner to load a snapshot", func() bool { return c.node.SnapshotsLoaded() == 1 })
	if got, want := names(t, c.db), names(t, a.db); !reflect.DeepEqual(got, want) || len(got) != 40 {
		t.Fatalf("the joiner shows %d names %v; want %d %v", len(got), got, len(want), want)
	}
	publishFiles(t, b.node, 100, 110)
	waitFor(t, 5*time.Second, "the joiner to follow later records", func() bool { return len(names(t, c.db)) == 50 })
	if _, ok, _ := c.db.GetInode(100); ok {
		t.Fatal("the joiner holds an inode the snapshot's maker pruned")
	}
}

// TestForgottenMemberCatchesUp: a member away longer than ForgetAfter
// no longer holds pruning back; when it returns with a change made
// while away, it loads a snapshot, its change is applied again on top
// and reaches the others.
func TestForgottenMemberCatchesUp(t *testing.T) {
	cfg := Config{ReclaimAfter: 2 * time.Second, KeepVersions: -1, ForgetAfter: 2 * time.Second}
	nodes := startCluster(t, 3, cfg)
	a, b, away := nodes[0], nodes[1], nodes[2]
	publishFiles(t, a.node, 0, 20)
	waitFor(t, 5*time.Second, "every node to apply a's records", func() bool {
		return away.db.Applied(a.node.ID()) == a.db.Applied(a.node.ID()) && b.db.Applied(a.node.ID()) == a.db.Applied(a.node.ID())
	})
	dir := away.dir
	away.stop()
	// While it is away: its own change, in its own index.
	db, err := index.Open(dir, index.Options{Logger: quietLogger(), Identity: testKeyIf(t, dir)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Commit(fileOps(500), index.Synced); err != nil {
		t.Fatal(err)
	}
	db.Close()
	// The others go on and prune past it.
	deleteFiles(t, a.node, a.db, 0, 10)
	publishFiles(t, a.node, 20, 30)
	waitFor(t, 30*time.Second, "a and b to prune past the absent member", func() bool {
		fa, _ := a.db.Floors()
		fb, _ := b.db.Floors()
		return fa[a.node.ID()] > 20 && fb[a.node.ID()] > 20
	})
	back := startNodeIn(t, dir, cfg)
	connectAll(t, a, b, back)
	waitFor(t, 30*time.Second, "the returning member to load a snapshot", func() bool { return back.node.SnapshotsLoaded() == 1 })
	waitFor(t, 10*time.Second, "its change made while away to reach a", func() bool {
		_, ok, _ := a.db.LookupDirent(index.RootID, "500")
		return ok
	})
	waitFor(t, 5*time.Second, "every node to show the same names", func() bool {
		return reflect.DeepEqual(names(t, back.db), names(t, a.db)) && reflect.DeepEqual(names(t, b.db), names(t, a.db))
	})
	if got := len(names(t, a.db)); got != 21 {
		t.Fatalf("a shows %d names; want 20 left of a's and the returning member's one", got)
	}
}

// testKeyIf is the key the node in dir runs with: its test key on a
// network (CHUNKNET_TLS=1), none otherwise.
func testKeyIf(t *testing.T, dir string) ed25519.PrivateKey {
	if !secureTests {
		return nil
	}
	return testKey(t, dir)
}
