package tree

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/oashare/oashare/index/format"
)

// Fetcher gets chunks: Fetch by their own names (tree nodes), FetchSpans
// by their place in a group (data chunks). Both return verified bytes, in
// order, or an error if any cannot be had. hashes may repeat (identical
// chunks or nodes). The caller does not modify the returned slices.
type Fetcher interface {
	Fetch(ctx context.Context, hashes []format.Hash) ([][]byte, error)
	// FetchSpans returns one entry per leaf of every span, in order:
	// the bytes of that data chunk, nil for a hole (zero hash).
	FetchSpans(ctx context.Context, spans []Span) ([][]byte, error)
}

// Span is a run of consecutive leaves of one group: where a reader finds
// their bytes. A group stores its non-hole chunks back to back, so the
// chunk Leaves[i] (when not a hole) is stored chunk First + (the number of
// non-hole leaves before it in Leaves) of the group.
type Span struct {
	Group  format.Hash   // the depth-1 node's hash; for a depth-0 file, its chunk's
	First  int           // stored index in Group of the first non-hole leaf of Leaves
	Leaves []format.Hash // leaf hashes, zero for a hole
}

// Stored returns how many of s.Leaves are stored (not holes).
func (s Span) Stored() int {
	n := 0
	for _, h := range s.Leaves {
		if !h.IsZero() {
			n++
		}
	}
	return n
}

// maxNodesPerFetch bounds the nodes Nodes asks for in one Fetch (2 MiB).
const maxNodesPerFetch = 256

// fetch calls f for every non-zero hash and checks it kept its side of
// the contract. The zero hash names a hole (all zeros, never stored): its
// entry in the result is nil.
func fetch(ctx context.Context, f Fetcher, hashes []format.Hash) ([][]byte, error) {
	want := make([]format.Hash, 0, len(hashes))
	for _, h := range hashes {
		if !h.IsZero() {
			want = append(want, h)
		}
	}
	out := make([][]byte, len(hashes))
	if len(want) == 0 {
		return out, nil
	}
	data, err := f.Fetch(ctx, want)
	if err != nil {
		return nil, err
	}
	if len(data) != len(want) {
		return nil, fmt.Errorf("tree: fetcher returned %d chunks for %d hashes", len(data), len(want))
	}
	k := 0
	for i, h := range hashes {
		if !h.IsZero() {
			out[i] = data[k]
			k++
		}
	}
	return out, nil
}

// fetchSpans calls f.FetchSpans for the spans that have a stored chunk
// and checks it kept its side of the contract; it returns one entry per
// leaf of all spans (leaves in all), nil for holes.
func fetchSpans(ctx context.Context, f Fetcher, spans []Span, leaves int) ([][]byte, error) {
	want := make([]Span, 0, len(spans))
	n := 0
	for _, s := range spans {
		if s.Stored() > 0 {
			want = append(want, s)
			n += len(s.Leaves)
		}
	}
	out := make([][]byte, 0, leaves)
	if len(want) == 0 {
		return out[:leaves], nil
	}
	data, err := f.FetchSpans(ctx, want)
	if err != nil {
		return nil, err
	}
	if len(data) != n {
		return nil, fmt.Errorf("tree: fetcher returned %d chunks for %d leaves", len(data), n)
	}
	for _, s := range spans {
		if s.Stored() == 0 {
			out = append(out, make([][]byte, len(s.Leaves))...)
			continue
		}
		for i, h := range s.Leaves {
			d := data[i]
			if h.IsZero() {
				d = nil
			} else if d == nil {
				return nil, fmt.Errorf("tree: fetcher returned no bytes for chunk %s", h.Short())
			}
			out = append(out, d)
		}
		data = data[len(s.Leaves):]
	}
	return out, nil
}

// children returns the child count of node j of level k and the child
// hashes' bytes: a hole node (zero hash) has all-zero children.
func children(h format.Hash, k uint8, j uint64, b []byte, below uint64) (int, []byte, error) {
	if h.IsZero() {
		n := childCount(j, below)
		return int(n), make([]byte, int(n)*hashSize), nil
	}
	nc, err := checkNode(h, k, j, b, below)
	return nc, b, err
}

// Leaves returns the leaf hashes of chunks [first, first+n) of v. It
// fetches the needed nodes level by level, one Fetch per level for the
// whole range, and checks each node's length and child count against the
// layout (ErrCorrupt otherwise). n may be 0; a range past the last chunk is
// an error.
func Leaves(ctx context.Context, f Fetcher, v Version, first, n uint64) ([]format.Hash, error) {
	spans, err := Spans(ctx, f, v, first, n)
	if err != nil {
		return nil, err
	}
	out := make([]format.Hash, 0, n)
	for _, s := range spans {
		out = append(out, s.Leaves...)
	}
	return out, nil
}

// Groups returns the names of groups [first, first+n) of v (group j holds
// chunks [j*Fanout, (j+1)*Fanout)): its depth-1 node hashes, zero for a
// group of holes. It fetches the nodes above depth 1 only, one Fetch per
// level. v must have depth 1 or more (a one-chunk file has no depth-1
// node).
func Groups(ctx context.Context, f Fetcher, v Version, first, n uint64) ([]format.Hash, error) {
	if err := v.Validate(); err != nil {
		return nil, err
	}
	if v.Depth == 0 {
		return nil, errors.New("tree: a depth-0 version has no groups")
	}
	counts := levelCounts(LeafCount(v.Size), v.Depth)
	if first > counts[1] || n > counts[1]-first {
		return nil, fmt.Errorf("tree: groups [%d, %d+%d) out of range: file has %d", first, first, n, counts[1])
	}
	if n == 0 {
		return []format.Hash{}, nil
	}
	return descend(ctx, f, v, counts, 1, first, first+n-1, nil)
}

// descend walks v from its root down to level bottom, one Fetch per
// level for the whole range, checking every node against the layout
// (counts, see levelCounts), and returns the entries [first, last] of
// level bottom. If at is not nil, it is called for each node of level
// bottom+1 the range touches, in order, with the node's hash, its entries
// and the range [from, to) of them taken (taken, a part of the result).
func descend(ctx context.Context, f Fetcher, v Version, counts []uint64, bottom uint8, first, last uint64,
	at func(h format.Hash, entries []byte, from uint64, taken []format.Hash)) ([]format.Hash, error) {
	hashes := []format.Hash{v.Root} // the level-k entries covering the range
	for k := v.Depth; k > bottom; k-- {
		data, err := fetch(ctx, f, hashes)
		if err != nil {
			return nil, err
		}
		shift := fanoutBits * uint(k-1-bottom)
		lo, hi := first>>shift, last>>shift+1 // wanted entries of level k-1
		node := lo >> fanoutBits              // index of hashes[0] in level k
		next := make([]format.Hash, 0, hi-lo)
		for i, b := range data {
			j := node + uint64(i)
			nc, b, err := children(hashes[i], k, j, b, counts[k-1])
			if err != nil {
				return nil, err
			}
			base := j << fanoutBits
			from, to := max(lo, base)-base, min(hi, base+uint64(nc))-base
			start := len(next)
			for c := from; c < to; c++ {
				next = append(next, hashAt(b, int(c)))
			}
			if at != nil && k == bottom+1 {
				at(hashes[i], b, from, next[start:len(next):len(next)])
			}
		}
		if uint64(len(next)) != hi-lo {
			// Unreachable when every node passed checkNode.
			return nil, fmt.Errorf("%w: depth %d gave %d entries, want %d", ErrCorrupt, k-1, len(next), hi-lo)
		}
		hashes = next
	}
	return hashes, nil
}

// Spans returns the leaves of chunks [first, first+n) of v as Leaves does,
// cut by group: one Span per depth-1 node the range touches (one in all
// for a depth-0 version), in order.
func Spans(ctx context.Context, f Fetcher, v Version, first, n uint64) ([]Span, error) {
	if err := v.Validate(); err != nil {
		return nil, err
	}
	leaves := LeafCount(v.Size)
	if first > leaves || n > leaves-first {
		return nil, fmt.Errorf("tree: chunks [%d, %d+%d) out of range: file has %d", first, first, n, leaves)
	}
	if n == 0 {
		return []Span{}, nil
	}
	if v.Depth == 0 {
		return []Span{{Group: v.Root, Leaves: []format.Hash{v.Root}}}, nil
	}
	var spans []Span
	_, err := descend(ctx, f, v, levelCounts(leaves, v.Depth), 0, first, first+n-1,
		func(g format.Hash, entries []byte, from uint64, taken []format.Hash) {
			stored := 0 // the group's stored chunks before the range: holes are not stored
			for c := uint64(0); c < from; c++ {
				if !hashAt(entries, int(c)).IsZero() {
					stored++
				}
			}
			spans = append(spans, Span{Group: g, First: stored, Leaves: taken})
		})
	if err != nil {
		return nil, err
	}
	return spans, nil
}

// ReadAt reads into p the bytes of v from offset off, like io.ReaderAt: it
// fetches the leaves covering [off, off+len(p)) ∩ [0, Size) (see Spans),
// then the data chunks in one FetchSpans, checks each has exactly LeafSize bytes
// (ErrCorrupt otherwise) and copies. It returns n < len(p) and io.EOF when
// the range passes Size.
func ReadAt(ctx context.Context, f Fetcher, v Version, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("tree: ReadAt at negative offset")
	}
	if err := v.Validate(); err != nil {
		return 0, err
	}
	start := uint64(off)
	if start >= v.Size {
		if len(p) == 0 && start == v.Size {
			return 0, nil
		}
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	end := v.Size
	if uint64(len(p)) < v.Size-start {
		end = start + uint64(len(p))
	}
	first, last := start/format.ChunkSize, (end-1)/format.ChunkSize
	spans, err := Spans(ctx, f, v, first, last-first+1)
	if err != nil {
		return 0, err
	}
	hashes := make([]format.Hash, 0, last-first+1)
	for _, s := range spans {
		hashes = append(hashes, s.Leaves...)
	}
	data, err := fetchSpans(ctx, f, spans, len(hashes))
	if err != nil {
		return 0, err
	}
	n := 0
	for i, b := range data {
		ci := first + uint64(i)
		want := LeafSize(v.Size, ci)
		if hashes[i].IsZero() {
			b = zeros[:want] // a hole
		}
		if len(b) != want {
			return 0, fmt.Errorf("%w: data chunk %s (index %d) has %d bytes, want %d",
				ErrCorrupt, hashes[i].Short(), ci, len(b), want)
		}
		if i == 0 {
			b = b[start-ci*format.ChunkSize:]
		}
		n += copy(p[n:end-start], b)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Entries looks up the entries of one version's tree by level and index:
// entry j of level 0 is leaf j, the single entry of level Depth is the
// root. It keeps the last node it fetched at each level, so a walk along
// a level costs one Fetch per node it crosses, and every node is checked
// as Leaves checks them. An entry under a hole is the zero hash, found
// without fetching anything. An Entries is not safe for concurrent use.
type Entries struct {
	f      Fetcher
	v      Version
	counts []uint64
	// last[k] is the node of level k fetched last (k ≥ 1): its index
	// and entries; ok says whether there is one.
	last []lastNode
}

type lastNode struct {
	ok      bool
	j       uint64
	entries []byte
}

// NewEntries returns the Entries of v.
func NewEntries(f Fetcher, v Version) (*Entries, error) {
	if err := v.Validate(); err != nil {
		return nil, err
	}
	return &Entries{f: f, v: v, counts: levelCounts(LeafCount(v.Size), v.Depth), last: make([]lastNode, int(v.Depth)+1)}, nil
}

// At returns entry j of level k.
func (e *Entries) At(ctx context.Context, k uint8, j uint64) (format.Hash, error) {
	if k > e.v.Depth || j >= e.counts[k] {
		return format.Hash{}, fmt.Errorf("tree: entry %d of level %d out of range (depth %d, %d entries)",
			j, k, e.v.Depth, e.counts[min(k, e.v.Depth)])
	}
	if k == e.v.Depth {
		return e.v.Root, nil
	}
	pj := j >> fanoutBits
	up := &e.last[k+1]
	if !up.ok || up.j != pj {
		ph, err := e.At(ctx, k+1, pj)
		if err != nil {
			return format.Hash{}, err
		}
		if ph.IsZero() {
			return format.Hash{}, nil // under a hole
		}
		data, err := fetch(ctx, e.f, []format.Hash{ph})
		if err != nil {
			return format.Hash{}, err
		}
		if _, err := checkNode(ph, k+1, pj, data[0], e.counts[k]); err != nil {
			return format.Hash{}, err
		}
		*up = lastNode{ok: true, j: pj, entries: data[0]}
	}
	return hashAt(up.entries, int(j-pj<<fanoutBits)), nil
}

// Nodes calls fn for every tree node hash of v: all depths ≥ 1, root first,
// level by level, left to right. It fetches every node above depth 1 (in
// batches) to learn the hashes below, and checks each as Leaves does. A
// depth-0 version has no node. An error from fn stops the walk and is
// returned.
func Nodes(ctx context.Context, f Fetcher, v Version, fn func(depth uint8, h format.Hash) error) error {
	if err := v.Validate(); err != nil {
		return err
	}
	if v.Depth == 0 {
		return nil
	}
	if v.Root.IsZero() {
		return nil // one hole
	}
	counts := levelCounts(LeafCount(v.Size), v.Depth)
	// The entries of level k that are not holes, and their indexes: a
	// hole's subtree is all holes, never stored, and is not walked (a
	// huge sparse file costs what it stores).
	hashes, at := []format.Hash{v.Root}, []uint64{0}
	for k := v.Depth; k >= 1; k-- {
		for _, h := range hashes {
			if err := fn(k, h); err != nil {
				return err
			}
		}
		if k == 1 {
			break // depth-1 nodes hold leaf hashes: nothing more to list
		}
		var err error
		if hashes, at, err = expand(ctx, f, k, counts[k-1], hashes, at, nil); err != nil {
			return err
		}
	}
	return nil
}

// expand fetches the nodes hashes (none a hole) of level k, at indexes at,
// in batches, checks each against the layout (below entries in level k-1)
// and returns their entries that are not holes, in order, with their
// indexes in level k-1. If each is not nil it is called with every node's
// index, hash and entries.
func expand(ctx context.Context, f Fetcher, k uint8, below uint64, hashes []format.Hash, at []uint64,
	each func(j uint64, h format.Hash, entries []byte)) ([]format.Hash, []uint64, error) {
	var next []format.Hash
	var nextAt []uint64
	for i := 0; i < len(hashes); i += maxNodesPerFetch {
		batch := hashes[i:min(i+maxNodesPerFetch, len(hashes))]
		data, err := fetch(ctx, f, batch)
		if err != nil {
			return nil, nil, err
		}
		for bi, b := range data {
			j := at[i+bi]
			nc, err := checkNode(batch[bi], k, j, b, below)
			if err != nil {
				return nil, nil, err
			}
			if each != nil {
				each(j, batch[bi], b)
			}
			for c := range nc {
				if h := hashAt(b, c); !h.IsZero() {
					next = append(next, h)
					nextAt = append(nextAt, j<<fanoutBits+uint64(c))
				}
			}
		}
	}
	return next, nextAt, nil
}

// Stored calls fn, in file order, for every group of v that stores
// something (is not all holes): one Span of all its leaves (holes as zero
// hashes) with the index of its first leaf. Hole subtrees are not walked,
// so a sparse file costs what it stores, whatever its size. A depth-0
// version has one group, its chunk, unless it is a hole.
func Stored(ctx context.Context, f Fetcher, v Version, fn func(first uint64, s Span) error) error {
	if err := v.Validate(); err != nil {
		return err
	}
	if v.Root.IsZero() {
		return nil
	}
	if v.Depth == 0 {
		return fn(0, Span{Group: v.Root, Leaves: []format.Hash{v.Root}})
	}
	counts := levelCounts(LeafCount(v.Size), v.Depth)
	hashes, at := []format.Hash{v.Root}, []uint64{0}
	for k := v.Depth; k >= 2; k-- {
		var err error
		if hashes, at, err = expand(ctx, f, k, counts[k-1], hashes, at, nil); err != nil {
			return err
		}
	}
	var ferr error
	_, _, err := expand(ctx, f, 1, counts[0], hashes, at, func(j uint64, h format.Hash, entries []byte) {
		if ferr != nil {
			return
		}
		leaves := make([]format.Hash, len(entries)/hashSize)
		for c := range leaves {
			leaves[c] = hashAt(entries, c)
		}
		ferr = fn(j<<fanoutBits, Span{Group: h, Leaves: leaves})
	})
	if err == nil {
		err = ferr
	}
	return err
}

// zeros backs the bytes of holes.
var zeros [format.ChunkSize]byte
