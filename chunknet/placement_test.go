package chunknet

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/oashare/oashare/index/format"
)

// seededIDs returns n node IDs drawn from rng.
func seededIDs(rng *rand.Rand, n int) []format.NodeID {
	ids := make([]format.NodeID, n)
	for i := range ids {
		for j := range ids[i] {
			ids[i][j] = byte(rng.Uint32())
		}
	}
	return ids
}

func seededHash(rng *rand.Rand) format.Hash {
	var h format.Hash
	for j := range h {
		h[j] = byte(rng.Uint32())
	}
	return h
}

func TestRankIsDeterministicPermutation(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 2, 4, 7, 20} {
		ids := seededIDs(rng, n)
		orig := slices.Clone(ids)
		for range 200 {
			h := seededHash(rng)
			got := Rank(h, ids)
			if !slices.Equal(ids, orig) {
				t.Fatalf("Rank modified its input")
			}
			if len(got) != n {
				t.Fatalf("Rank over %d nodes returned %d", n, len(got))
			}
			seen := make(map[format.NodeID]bool)
			for _, id := range got {
				if seen[id] {
					t.Fatalf("Rank returned %s twice", id.Short())
				}
				seen[id] = true
				if !slices.Contains(ids, id) {
					t.Fatalf("Rank returned %s, not a member", id.Short())
				}
			}
			// Same answer however the member list is ordered: every node
			// that knows the members computes the same placement.
			shuffled := slices.Clone(ids)
			rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			if again := Rank(h, shuffled); !slices.Equal(got, again) {
				t.Fatalf("Rank depends on member order: %v vs %v", got, again)
			}
		}
	}
}

func TestRankerTopMatchesRank(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	// 100 members: more than any fixed-size buffer of replica counts.
	for _, n := range []int{1, 2, 3, 4, 5, 16, 64, 65, 100} {
		ids := seededIDs(rng, n)
		r := newRanker(ids)
		for range 300 {
			h := seededHash(rng)
			want := Rank(h, ids)
			for _, k := range []int{0, 1, 2, 3, n - 1, n, n + 1, n + 5, rng.IntN(n + 3)} {
				if k < 0 {
					continue
				}
				top := r.top(h, k)
				got := make([]format.NodeID, len(top))
				for i, x := range top {
					got[i] = ids[x]
				}
				w := want[:min(k, n)]
				if !slices.Equal(got, w) {
					t.Fatalf("%d nodes, k=%d: top = %v, Rank prefix = %v", n, k, got, w)
				}
			}
		}
	}
}

func TestPlacementBalance(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	ids := seededIDs(rng, 4)
	r := newRanker(ids)
	const chunks = 40000
	first := make([]int, len(ids))
	for range chunks {
		first[r.top(seededHash(rng), 1)[0]]++
	}
	for i, c := range first {
		share := float64(c) / chunks
		if share < 0.23 || share > 0.27 {
			t.Errorf("node %d is first choice for %.2f%% of chunks, want 25%% ± 2%% (counts %v)", i, 100*share, first)
		}
	}
}

func TestPlacementMinimalDisruption(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	ids := seededIDs(rng, 5)
	before, after := newRanker(ids[:4]), newRanker(ids)
	newcomer := 4
	const chunks = 20000
	moved := 0
	for range chunks {
		h := seededHash(rng)
		old := slices.Clone(before.top(h, 3))
		cur := slices.Clone(after.top(h, 3))
		if !slices.Contains(cur, newcomer) {
			slices.Sort(old)
			slices.Sort(cur)
			if !slices.Equal(old, cur) {
				t.Fatalf("chunk %s: top-3 changed from %v to %v without the new node entering it", h.Short(), old, cur)
			}
			continue
		}
		moved++
		// The new node displaced exactly one holder: the old third choice.
		for _, x := range old[:2] {
			if !slices.Contains(cur, x) {
				t.Fatalf("chunk %s: old holder %d lost its place to the new node although it outranked the old third", h.Short(), x)
			}
		}
		if slices.Contains(cur, old[2]) {
			t.Fatalf("chunk %s: the new node entered the top-3 %v but the old third %d stayed", h.Short(), cur, old[2])
		}
	}
	// A fifth node should win a place in the top 3 of 3/5 of the chunks.
	if share := float64(moved) / chunks; share < 0.57 || share > 0.63 {
		t.Errorf("the new node entered the top 3 of %.1f%% of chunks, want 60%% ± 3%%", 100*share)
	}
}

func BenchmarkRankerTop(b *testing.B) {
	rng := rand.New(rand.NewPCG(9, 10))
	r := newRanker(seededIDs(rng, 4))
	hashes := make([]format.Hash, 1024)
	for i := range hashes {
		hashes[i] = seededHash(rng)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r.top(hashes[i%len(hashes)], 3)
		i++
	}
}

// Within a stripe, chunks go to one node wherever it holds them; across
// stripes, every holder gets a share.
func TestStripedChoice(t *testing.T) {
	ids := make([]format.NodeID, 3)
	for i := range ids {
		ids[i] = randNodeID(t)
	}
	r := newRanker(ids)
	counts := make([]int, len(ids))
	for stripe := 0; stripe < 300; stripe++ {
		pick := -1
		for c := 0; c < 20; c++ {
			h := format.Sum([]byte{byte(stripe), byte(stripe >> 8), byte(c)})
			// Every node holds every chunk (3 holders of 3): the stripe
			// alone decides.
			p := r.striped(h, 3, stripe)
			if pick >= 0 && p != pick {
				t.Fatalf("stripe %d: chunk %d went to node %d, chunk 0 to node %d", stripe, c, p, pick)
			}
			pick = p
		}
		counts[pick]++
	}
	for i, c := range counts {
		if c < 60 {
			t.Errorf("node %d got %d of 300 stripes; want a fair share", i, c)
		}
	}
	// With 1 holder of 3, the only holder is chosen.
	h := format.Sum([]byte("one"))
	if got, want := r.striped(h, 1, 7), r.top(h, 1)[0]; got != want {
		t.Errorf("striped with one holder = %d, want the holder %d", got, want)
	}
}
