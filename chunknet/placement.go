package chunknet

import (
	"encoding/binary"
	"sort"

	"github.com/oashare/oashare/index/format"
)

// Placement is rendezvous (highest random weight) hashing: every node gets a
// score for every chunk, and a chunk lives on the nodes with the highest
// scores. Any node that knows the member list computes the same answer, a
// joining or leaving node moves only the chunks it wins or held, and no
// table of chunk locations has to be stored or exchanged.
//
// This file is the only place that decides where a chunk lives.

// mix64 is the splitmix64 finalizer: a fast, well-distributed 64-bit mix.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func nodeSeed(id format.NodeID) uint64 {
	return mix64(binary.BigEndian.Uint64(id[:8]) ^ mix64(binary.BigEndian.Uint64(id[8:])))
}

func score(h format.Hash, seed uint64) uint64 {
	// A chunk hash is already uniform; its first 8 bytes are enough entropy.
	return mix64(binary.BigEndian.Uint64(h[:8]) ^ seed)
}

// Rank returns nodes ordered from the best to the worst holder of h. Ties
// (equal scores, practically impossible) break by node ID so the order is
// the same everywhere. nodes is not modified.
func Rank(h format.Hash, nodes []format.NodeID) []format.NodeID {
	type scored struct {
		id format.NodeID
		s  uint64
	}
	ss := make([]scored, len(nodes))
	for i, id := range nodes {
		ss[i] = scored{id, score(h, nodeSeed(id))}
	}
	sort.Slice(ss, func(i, j int) bool {
		if ss[i].s != ss[j].s {
			return ss[i].s > ss[j].s
		}
		return ss[i].id.Compare(ss[j].id) < 0
	})
	out := make([]format.NodeID, len(ss))
	for i := range ss {
		out[i] = ss[i].id
	}
	return out
}

// ranker scores chunks against a fixed member list with the per-node seeds
// computed once; it is what the hot paths use.
type ranker struct {
	ids    []format.NodeID
	seeds  []uint64
	buf    []int
	scores []uint64 // scores of buf's nodes; sized to the largest k asked
}

func newRanker(ids []format.NodeID) *ranker {
	r := &ranker{ids: ids, seeds: make([]uint64, len(ids))}
	for i, id := range ids {
		r.seeds[i] = nodeSeed(id)
	}
	return r
}

// top returns the indexes (into r.ids) of the k best holders of h, best
// first. The returned slice is reused by the next call.
func (r *ranker) top(h format.Hash, k int) []int {
	if k > len(r.ids) {
		k = len(r.ids)
	}
	r.buf = r.buf[:0]
	if k <= 0 {
		return r.buf
	}
	// Insertion into a small sorted prefix: k is usually the replica count
	// (tiny), but may be the whole member list, however long.
	if len(r.scores) < k {
		r.scores = make([]uint64, k)
	}
	scores := r.scores
	for i, seed := range r.seeds {
		s := score(h, seed)
		pos := len(r.buf)
		if pos == k {
			if !r.better(s, i, scores[k-1], r.buf[k-1]) {
				continue
			}
			pos = k - 1
		} else {
			r.buf = append(r.buf, 0)
		}
		for pos > 0 && r.better(s, i, scores[pos-1], r.buf[pos-1]) {
			scores[pos] = scores[pos-1]
			r.buf[pos] = r.buf[pos-1]
			pos--
		}
		scores[pos] = s
		r.buf[pos] = i
	}
	return r.buf
}

func (r *ranker) better(s uint64, i int, t uint64, j int) bool {
	if s != t {
		return s > t
	}
	return r.ids[i].Compare(r.ids[j]) < 0
}

// striped returns the index (into r.ids) of the node, among the k best
// holders of h, that stripe prefers: the one with the highest rendezvous
// score for the stripe's number. Consecutive chunks of one stripe whose
// holders overlap thus go to the same node.
func (r *ranker) striped(h format.Hash, k int, stripe int) int {
	top := r.top(h, k)
	best, bestScore := top[0], uint64(0)
	key := mix64(uint64(stripe) + 0x9e3779b97f4a7c15)
	for _, i := range top {
		if s := mix64(key ^ r.seeds[i]); s > bestScore {
			best, bestScore = i, s
		}
	}
	return best
}
