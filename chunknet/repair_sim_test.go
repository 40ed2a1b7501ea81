package chunknet

import (
	"crypto/rand"
	"encoding/binary"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/oashare/oashare/index/format"
)

// TestRepairSimulation models repair at scale with the real placement
// (ranker) and the real per-item rules (repairView.decide), without
// sockets or disks: simPeers peers hold simGroups groups, 3 copies each.
// It reports the spread of stored bytes per peer, what repair moves when
// one peer dies and when one joins, and the messages a pass costs per
// node, and checks the properties repair promises: every lost copy is
// made again exactly once, by one holder, and a join moves only what the
// joiner now ranks for. OASHARE_SIM_GROUPS sets the number of groups
// (default 200 000; REPAIR.md has the figures for 10 million).
func TestRepairSimulation(t *testing.T) {
	const peers, replicas = 1000, 3
	groups := 200_000
	if s := os.Getenv("OASHARE_SIM_GROUPS"); s != "" {
		g, err := strconv.Atoi(s)
		if err != nil || g < 1000 {
			t.Fatalf("OASHARE_SIM_GROUPS=%q: want a number of groups, at least 1000", s)
		}
		groups = g
	}
	if testing.Short() && groups > 200_000 {
		t.Skip("a large simulation in -short mode")
	}
	ids := make([]format.NodeID, peers+1) // the last one joins later
	for i := range ids {
		rand.Read(ids[i][:])
	}
	members := ids[:peers]
	slices.SortFunc(members, func(a, b format.NodeID) int { return a.Compare(b) })
	joiner := ids[peers]
	// Groups: nine in ten full (128 KiB, large files), the rest of any
	// size (small files, tails).
	hashes := make([]format.Hash, groups)
	sizes := make([]int64, groups)
	for i := range hashes {
		rand.Read(hashes[i][:])
		sizes[i] = format.MaxGroupData
		if binary.BigEndian.Uint32(hashes[i][28:])%10 == 0 {
			sizes[i] = 1 + int64(binary.BigEndian.Uint32(hashes[i][24:])%format.MaxGroupData)
		}
	}
	// Placement: each group's top 3 of the members, and whether the
	// joiner would beat the third (one pass of every score).
	type placed struct {
		top    [replicas]int32 // indexes into members, best first
		joiner bool            // the joiner ranks in the top 3 once it joins
	}
	place := make([]placed, groups)
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := newRanker(members)
			js := nodeSeed(joiner)
			for i := w; i < groups; i += workers {
				top := r.top(hashes[i], replicas)
				for k, j := range top {
					place[i].top[k] = int32(j)
				}
				third := top[replicas-1]
				s3, sj := score(hashes[i], r.seeds[third]), score(hashes[i], js)
				place[i].joiner = sj > s3 || (sj == s3 && joiner.Compare(members[third]) < 0)
			}
		}()
	}
	wg.Wait()

	// Spread of stored bytes.
	held := make([]int64, peers)
	items := make([]int64, peers)
	var total int64
	for i, p := range place {
		for _, j := range p.top {
			held[j] += sizes[i]
			items[j]++
			total += sizes[i]
		}
	}
	mean := float64(total) / peers
	maxHeld, minHeld := slices.Max(held), slices.Min(held)
	t.Logf("%d peers, %d groups (%.1f TiB stored with 3 copies): bytes per peer max/mean %.3f, min/mean %.3f",
		peers, groups, float64(total)/(1<<40), float64(maxHeld)/mean, float64(minHeld)/mean)
	if float64(maxHeld)/mean > 1.5 {
		t.Errorf("the fullest peer holds %.2f times the mean", float64(maxHeld)/mean)
	}

	// One peer dies: the one holding the most. Every survivor holding an
	// item it held decides with a view of the 999 live peers.
	dead := slices.Index(held, maxHeld)
	live := slices.Delete(slices.Clone(members), dead, dead+1)
	views := make(map[format.NodeID]*repairView)
	viewOf := func(self format.NodeID, nodes []format.NodeID) *repairView {
		v := views[self]
		if v == nil {
			v = &repairView{self: self, replicas: replicas, need: replicas, all: newRanker(nodes), waiting: map[format.NodeID]bool{}}
			views[self] = v
		}
		return v
	}
	var copies, moved int64
	actorItems := make(map[format.NodeID]int) // copies per actor
	for i, p := range place {
		if !slices.Contains(p.top[:], int32(dead)) {
			continue
		}
		var holders []format.NodeID
		for _, j := range p.top {
			if int(j) != dead {
				holders = append(holders, members[j])
			}
		}
		actors := 0
		for _, h := range holders {
			d := viewOf(h, live).decide(hashes[i], holders)
			if !d.short || d.wait || d.drop {
				t.Fatalf("group %d after the death of a holder: decision %+v, want short", i, d)
			}
			if d.copy {
				actors++
				actorItems[h]++
			}
		}
		if actors != 1 {
			t.Fatalf("group %d: %d holders would copy it, want exactly 1", i, actors)
		}
		copies++
		moved += sizes[i]
	}
	t.Logf("one peer dies (it held %d groups, %.1f GiB): repair makes %d copies, %.1f GiB (%.3f of what it held), by %d actors",
		items[dead], float64(held[dead])/(1<<30), copies, float64(moved)/(1<<30), float64(moved)/float64(held[dead]), len(actorItems))
	if copies != items[dead] || moved != held[dead] {
		t.Fatalf("repair copies %d groups (%d bytes), the dead peer held %d (%d bytes)", copies, moved, items[dead], held[dead])
	}
	// Messages of a pass, per node: for each batch of repairBatch items
	// it stores, one Has query to each peer it must ask about some of
	// them (askFor: the targets and the nodes ranked above it), measured
	// on a sample of nodes; and for each actor its puts (frames of at
	// most groupBatchBytes to each target).
	const sample = 10
	var hasMsgs, hashesAsked float64
	for s := range sample {
		self := live[s*len(live)/sample]
		self0 := slices.Index(members, self)
		v := viewOf(self, live)
		var mine []format.Hash
		for i, p := range place {
			if slices.Contains(p.top[:], int32(self0)) {
				mine = append(mine, hashes[i])
			}
		}
		for b := 0; b < len(mine); b += repairBatch {
			asked := map[format.NodeID]bool{}
			for _, h := range mine[b:min(b+repairBatch, len(mine))] {
				for _, id := range v.askFor(h) {
					asked[id] = true
					hashesAsked++
				}
			}
			hasMsgs += float64(len(asked))
		}
	}
	var putFrames float64
	for _, k := range actorItems {
		putFrames += math.Ceil(float64(k) * format.MaxGroupData / groupBatchBytes)
	}
	t.Logf("messages per node for a repair pass: %.0f Has queries asking about %.0f hashes (every live peer would be %.0f queries), %.1f put frames (%.1f per actor)",
		hasMsgs/sample, hashesAsked/sample, math.Ceil(float64(items[dead])/repairBatch)*float64(len(live)-1), putFrames/float64(len(live)), putFrames/float64(len(actorItems)))

	// One peer joins: the groups it now ranks in the top 3 for move to it,
	// and their old third holder drops its copy once it holds them.
	all := append(slices.Clone(members), joiner)
	slices.SortFunc(all, func(a, b format.NodeID) int { return a.Compare(b) })
	clear(views)
	var joinCopies, joinBytes, drops int64
	for i, p := range place {
		if !p.joiner {
			continue
		}
		var holders []format.NodeID
		for _, j := range p.top {
			holders = append(holders, members[j])
		}
		actors := 0
		for _, h := range holders {
			if d := viewOf(h, all).decide(hashes[i], holders); d.copy {
				actors++
			}
		}
		if actors != 1 {
			t.Fatalf("group %d on a join: %d holders would copy it, want 1", i, actors)
		}
		joinCopies++
		joinBytes += sizes[i]
		// After the copy: exactly one old holder finds its copy surplus.
		holders = append(holders, joiner)
		dropping := 0
		for _, h := range holders {
			d := viewOf(h, all).decide(hashes[i], holders)
			if d.short || d.copy {
				t.Fatalf("group %d after the joiner's copy: decision %+v", i, d)
			}
			if d.drop {
				dropping++
			}
		}
		if dropping != 1 {
			t.Fatalf("group %d after the joiner's copy: %d holders drop theirs, want 1", i, dropping)
		}
		drops++
	}
	t.Logf("one peer joins: %d groups move to it, %.1f GiB (%.3f of an even share, total/%d), and %d old copies are dropped after",
		joinCopies, float64(joinBytes)/(1<<30), float64(joinBytes)/(float64(total)/(peers+1)), peers+1, drops)
	if share := float64(joinBytes) / (float64(total) / (peers + 1)); share < 0.5 || share > 1.5 {
		t.Errorf("the joiner receives %.2f of an even share", share)
	}
}
