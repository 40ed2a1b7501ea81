package chunknet

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/oashare/oashare/index/format"
)

// TestDrainMovesCopiesBeforeLeaving: a node that drains copies what it
// holds to the others until each of its items is on min(replicas, others)
// of them, reporting progress; after it stops, the others read
// everything. Alone, or when the others report no free space, a drain
// refuses and copies nothing.
func TestDrainMovesCopiesBeforeLeaving(t *testing.T) {
	cfg := Config{Replicas: 3}
	var nodes []*testNode
	for range 4 {
		c := cfg
		c.DataDir = t.TempDir() // a disk with free space to report
		nodes = append(nodes, startNode(t, c))
	}
	connectAll(t, nodes...)
	content := randBytes(t, 30*format.MaxGroupData+123)
	v := writeFile(t, nodes[0].node, content)
	items := itemsOf(t, nodes[0].node, v)
	leaving := nodes[1]
	others := slices.DeleteFunc(slices.Clone(nodes), func(tn *testNode) bool { return tn == leaving })
	if onTop(t, items, others, 3) {
		t.Fatal("the others hold everything 3 times already: nothing to drain")
	}
	var last DrainProgress
	updates := 0
	if err := leaving.node.Drain(t.Context(), false, func(p DrainProgress) { last = p; updates++ }); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if updates < 2 || last.Items == 0 || last.ItemsDone != last.Items || last.BytesDone != last.Bytes || last.Peers != 3 {
		t.Fatalf("progress: %d updates, last %+v; want the plan and a final count equal to it", updates, last)
	}
	check := func(when string) {
		t.Helper()
		for i, h := range heldBy(t, items, others) {
			if len(h) != 3 {
				t.Fatalf("item %d (%s) on %d of the other nodes %s, want 3", i, items[i].Hash.Short(), len(h), when)
			}
		}
	}
	check("after the drain")
	// The others knew it was leaving: their repair keeps the copies the
	// drain made, though the leaving node is still connected.
	for _, tn := range others {
		if _, err := tn.node.RepairPass(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	check("after the others' repair passes")
	leaving.stop()
	nodes[2].stop()
	nodes[3].stop()
	// Only the writer is left: it holds everything.
	got, err := readWhole(t, nodes[0].node, v)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("after the drain and two more losses, the last node reads %d bytes (%v)", len(got), err)
	}
	err = nodes[0].node.Drain(t.Context(), false, func(DrainProgress) {})
	if !errors.Is(err, ErrCannotDrain) {
		t.Fatalf("Drain of the last node = %v, want ErrCannotDrain", err)
	}
}

// TestDrainRefusesWithoutSpace: peers that report no free space get
// nothing, and the drain says so.
func TestDrainRefusesWithoutSpace(t *testing.T) {
	nodes := startCluster(t, 3, Config{Replicas: 2}) // no DataDir: no free space reported
	v := writeFile(t, nodes[0].node, randBytes(t, 5*format.MaxGroupData))
	items := itemsOf(t, nodes[0].node, v)
	var leaving *testNode
	for _, tn := range nodes {
		if len(heldBy(t, items, []*testNode{tn})[0]) > 0 {
			leaving = tn
			break
		}
	}
	before := heldBy(t, items, nodes)
	err := leaving.node.Drain(t.Context(), false, func(DrainProgress) {})
	if !errors.Is(err, ErrCannotDrain) {
		t.Fatalf("Drain with no free space on the others = %v, want ErrCannotDrain", err)
	}
	after := heldBy(t, items, nodes)
	for i := range before {
		if !sameSet(before[i], after[i]) {
			t.Fatalf("a refused drain moved item %d: %v → %v", i, before[i], after[i])
		}
	}
}
