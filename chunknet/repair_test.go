package chunknet

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// itemsOf lists the stored items of version v: its groups and its tree
// nodes above depth 1 (a group's node is stored with it).
func itemsOf(t *testing.T, n *Node, v tree.Version) []index.Item {
	t.Helper()
	items, err := n.VersionItems(t.Context(), v)
	if err != nil {
		t.Fatal(err)
	}
	return items
}

// heldBy returns, for each item, the nodes among nodes that store it.
func heldBy(t *testing.T, items []index.Item, nodes []*testNode) [][]format.NodeID {
	t.Helper()
	out := make([][]format.NodeID, len(items))
	for i, it := range items {
		for _, tn := range nodes {
			var ok bool
			var err error
			if it.Group {
				ok, err = tn.db.HasGroup(it.Hash)
			} else {
				ok, err = tn.db.HasChunk(it.Hash)
			}
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				out[i] = append(out[i], tn.node.ID())
			}
		}
	}
	return out
}

// onTop reports whether every item is held by exactly its k best-ranked
// nodes among nodes, and nowhere else among them.
func onTop(t *testing.T, items []index.Item, nodes []*testNode, k int) bool {
	t.Helper()
	return misplaced(t, items, nodes, k) == ""
}

// misplaced describes the first item not held by exactly its k
// best-ranked nodes among nodes, or is "".
func misplaced(t *testing.T, items []index.Item, nodes []*testNode, k int) string {
	t.Helper()
	ids := nodeIDs(nodes)
	bad, first := 0, ""
	for i, h := range heldBy(t, items, nodes) {
		if want := Rank(items[i].Hash, ids)[:min(k, len(ids))]; !sameSet(h, want) {
			if bad == 0 {
				first = fmt.Sprintf("%s on %v, want %v", items[i], h, want)
			}
			bad++
		}
	}
	if bad == 0 {
		return ""
	}
	return fmt.Sprintf("%d items misplaced, first %s", bad, first)
}

// waitOnTop waits up to d until onTop holds, or fails with each node's
// repair counters.
func waitOnTop(t *testing.T, items []index.Item, nodes []*testNode, k int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !onTop(t, items, nodes, k) {
		if time.Now().After(deadline) {
			for _, tn := range nodes {
				t.Logf("node %s: %+v", tn.node.ID().Short(), tn.node.RepairStats())
			}
			t.Fatalf("after %v: %s", d, misplaced(t, items, nodes, k))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func copiedBy(nodes []*testNode) (copies, dropped int64) {
	for _, tn := range nodes {
		st := tn.node.RepairStats()
		copies += st.Copied
		dropped += st.Dropped
	}
	return copies, dropped
}

// TestRepairAfterHolderLeaves: when a holder is gone for RepairAfter, the
// survivors restore every lost copy on the next-ranked nodes, each exactly
// once, and not before; a second loss of two holders at once then loses
// nothing. When the first holder comes back, the copies that repair made
// and no longer needed are dropped, and placement is what it was.
func TestRepairAfterHolderLeaves(t *testing.T) {
	cfg := Config{Replicas: 3, RepairAfter: 2 * time.Second, RepairRate: -1}
	nodes := startCluster(t, 5, cfg)
	content := randBytes(t, 24*format.MaxGroupData+1000)
	v := writeFile(t, nodes[0].node, content)
	items := itemsOf(t, nodes[0].node, v)
	if len(items) < 26 {
		t.Fatalf("%d items for 25 groups, want the groups and the root", len(items))
	}
	if !onTop(t, items, nodes, 3) {
		t.Fatal("after the write, the items are not on their 3 best-ranked nodes")
	}

	// The node holding the most items leaves.
	before := heldBy(t, items, nodes)
	gone := nodes[0]
	for _, tn := range nodes[1:] {
		if count(before, tn.node.ID()) > count(before, gone.node.ID()) {
			gone = tn
		}
	}
	lost := count(before, gone.node.ID())
	survivors := slices.DeleteFunc(slices.Clone(nodes), func(tn *testNode) bool { return tn == gone })
	dir := gone.dir
	gone.stop()
	waitFor(t, 10*time.Second, "the survivors to see the node leave", func() bool {
		for _, tn := range survivors {
			if hasPeer(tn.node, gone.node.ID()) {
				return false
			}
		}
		return true
	})
	time.Sleep(cfg.RepairAfter / 2)
	if c, _ := copiedBy(survivors); c != 0 {
		t.Fatalf("%d copies made before the holder had been gone for RepairAfter", c)
	}
	waitFor(t, 30*time.Second, "repair to put every item on its 3 best live nodes", func() bool {
		return onTop(t, items, survivors, 3)
	})
	time.Sleep(2 * time.Second) // a pass or two more: nothing else moves
	if c, d := copiedBy(survivors); c != int64(lost) || d != 0 {
		t.Fatalf("repair made %d copies and dropped %d, want exactly the %d lost and none dropped", c, d, lost)
	}

	// Two of the four survivors go at once: at least one copy of each
	// item is left, and repair restores min(3, 2) = 2.
	last := survivors[2:]
	survivors[0].stop()
	survivors[1].stop()
	waitFor(t, 30*time.Second, "repair to put every item on both survivors", func() bool {
		return onTop(t, items, last, 3)
	})
	for _, tn := range last {
		got, err := readWhole(t, tn.node, v)
		if err != nil || !bytes.Equal(got, content) {
			t.Fatalf("node %s reads %d bytes (%v) after the losses; identical: %v", tn.node.ID().Short(), len(got), err, bytes.Equal(got, content))
		}
	}

	// The first holder comes back with its copies: the surplus made by
	// repair goes, and every item is on its 3 best of the 3 live nodes.
	back := startNodeIn(t, dir, cfg)
	if back.node.ID() != gone.node.ID() {
		t.Fatal("the restarted node has another ID")
	}
	live := append(slices.Clone(last), back)
	connectAll(t, live...)
	waitFor(t, 30*time.Second, "every item on its 3 best live nodes", func() bool {
		return onTop(t, items, live, 3)
	})
	got, err := readWhole(t, back.node, v)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("the returning node reads %d bytes (%v); identical: %v", len(got), err, bytes.Equal(got, content))
	}
}

func count(holders [][]format.NodeID, id format.NodeID) int {
	n := 0
	for _, h := range holders {
		if slices.Contains(h, id) {
			n++
		}
	}
	return n
}

// TestRebalanceOnJoin: a node that joins receives the items it now ranks
// among the best 3 for; the nodes that held them drop their copies only
// once it holds them, and reads work throughout; the dropped copies' disk
// space goes back to the file system.
func TestRebalanceOnJoin(t *testing.T) {
	// Every put is read back soon after: a copy dropped as surplus by a
	// rebalance must not make its holder look like a liar.
	cfg := Config{Replicas: 3, RepairAfter: 2 * time.Second, RepairRate: -1, SpotCheckEvery: 1, SpotCheckDelay: 3 * time.Second,
		ReclaimEvery: 200 * time.Millisecond, ReclaimGrace: 50 * time.Millisecond}
	nodes := startCluster(t, 3, cfg)
	// 240 groups: what one old holder sends a joiner is more than one
	// frame holds.
	content := randBytes(t, 240*format.MaxGroupData+5)
	v := writeFile(t, nodes[0].node, content)
	items := itemsOf(t, nodes[0].node, v)
	joined := []*testNode{startNode(t, cfg), startNode(t, cfg)}
	all := append(slices.Clone(nodes), joined...)
	connectAll(t, all...)
	stop := make(chan struct{})
	readErr := make(chan error, 1)
	go func() { // reads during the rebalance
		defer close(readErr)
		for {
			select {
			case <-stop:
				return
			default:
			}
			time.Sleep(20 * time.Millisecond) // a reader, not a CPU hog
			got := make([]byte, len(content))
			if _, err := tree.ReadAt(t.Context(), joined[1].node, v, got, 0); err != nil && !bytes.Equal(got, content) {
				readErr <- err
				return
			}
			if !bytes.Equal(got, content) {
				readErr <- errBytes
				return
			}
		}
	}()
	waitOnTop(t, items, all, 3, time.Minute)
	close(stop)
	if err := <-readErr; err != nil {
		t.Fatalf("a read during the rebalance: %v", err)
	}
	if c, d := copiedBy(all); c == 0 || d == 0 {
		t.Fatalf("repair made %d copies and dropped %d: the joiners' copies must be moved by it, the old ones dropped", c, d)
	}
	time.Sleep(4 * time.Second) // the last spot checks
	for _, tn := range all {
		if d := tn.node.Distrusted(); len(d) > 0 {
			t.Fatalf("node %s distrusts %v after a rebalance: a dropped surplus copy was taken for a lie", tn.node.ID().Short(), d)
		}
	}
	// Every node that dropped copies gives their space back: its chunk
	// log then takes about what it holds.
	waitFor(t, 30*time.Second, "the dropped copies' disk space given back", func() bool {
		dropped := false
		for _, tn := range all {
			if tn.node.RepairStats().Dropped == 0 {
				continue
			}
			dropped = true
			disk, _ := tn.node.DB().DiskUsage()
			_, held := tn.node.DB().ChunkStats()
			if tn.node.DB().Reclaimed() == 0 || disk > held+held/10+1<<20 {
				return false
			}
		}
		return dropped
	})
}

var errBytes = errorString("wrong bytes")

type errorString string

func (e errorString) Error() string { return string(e) }

// TestRepairLeavesUploadsInFlight: a repair pass that runs while a file is
// being written finds its items on some of their targets only, the others
// being on their way. It leaves them to their writer instead of copying
// them a second time; once they are older than UploadGrace, a pass copies
// what is still missing (a writer that stopped half way).
func TestRepairLeavesUploadsInFlight(t *testing.T) {
	const grace = 3 * time.Second
	// No spot checks: node 3's copies are taken away behind the back of
	// the nodes that put them, and a spot check would rightly call that
	// a lie and stop trusting node 3 with copies.
	cfg := Config{Replicas: 3, RepairRate: -1, UploadGrace: grace, SpotCheckEvery: -1}
	nodes := startCluster(t, 3, cfg)
	v := writeFile(t, nodes[0].node, randBytes(t, 20*format.MaxGroupData))
	written := time.Now()
	items := itemsOf(t, nodes[0].node, v)
	if !onTop(t, items, nodes, 3) {
		t.Fatalf("after the write: %s", misplaced(t, items, nodes, 3))
	}
	// Node 3's copies not there yet: as if its puts were still in flight.
	if _, err := nodes[2].db.DropStored(items); err != nil {
		t.Fatal(err)
	}
	for _, tn := range nodes[:2] {
		if _, err := tn.node.RepairPass(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if time.Since(written) >= grace {
		t.Skipf("the passes ran %v after the write, past UploadGrace: too slow a machine to tell", time.Since(written))
	}
	if c, _ := copiedBy(nodes); c != 0 {
		t.Fatalf("repair made %d copies of items written %v ago, still being placed by their writer", c, time.Since(written).Round(time.Millisecond))
	}
	// Older than UploadGrace, the copies still missing are made by the
	// looks the first passes left for later, once each.
	waitOnTop(t, items, nodes, 3, 30*time.Second)
	if c, _ := copiedBy(nodes); c > int64(len(items)) {
		t.Fatalf("repair made %d copies of %d items: some twice", c, len(items))
	}
}
