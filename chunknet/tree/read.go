package tree

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/oashare/oashare/index"
)

// Fetcher returns the verified bytes of each hash in order, or an error if
// any cannot be had. hashes may repeat (identical chunks or nodes). The
// caller does not modify the returned slices.
type Fetcher interface {
	Fetch(ctx context.Context, hashes []index.Hash) ([][]byte, error)
}

// maxNodesPerFetch bounds the nodes Nodes asks for in one Fetch (2 MiB).
const maxNodesPerFetch = 256

// fetch calls f for every non-zero hash and checks it kept its side of
// the contract. The zero hash names a hole (all zeros, never stored): its
// entry in the result is nil.
func fetch(ctx context.Context, f Fetcher, hashes []index.Hash) ([][]byte, error) {
	want := make([]index.Hash, 0, len(hashes))
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

// children returns the child count of node j of level k and the child
// hashes' bytes: a hole node (zero hash) has all-zero children.
func children(h index.Hash, k uint8, j uint64, b []byte, below uint64) (int, []byte, error) {
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
func Leaves(ctx context.Context, f Fetcher, v Version, first, n uint64) ([]index.Hash, error) {
	if err := v.Validate(); err != nil {
		return nil, err
	}
	leaves := LeafCount(v.Size)
	if first > leaves || n > leaves-first {
		return nil, fmt.Errorf("tree: chunks [%d, %d+%d) out of range: file has %d", first, first, n, leaves)
	}
	if n == 0 {
		return []index.Hash{}, nil
	}
	if v.Depth == 0 {
		return []index.Hash{v.Root}, nil
	}
	counts := levelCounts(leaves, v.Depth)
	last := first + n - 1
	hashes := []index.Hash{v.Root} // the level-k entries covering the range
	for k := v.Depth; k >= 1; k-- {
		data, err := fetch(ctx, f, hashes)
		if err != nil {
			return nil, err
		}
		shift := fanoutBits * uint(k-1)
		lo, hi := first>>shift, last>>shift+1 // wanted entries of level k-1
		node := lo >> fanoutBits              // index of hashes[0] in level k
		next := make([]index.Hash, 0, hi-lo)
		for i, b := range data {
			j := node + uint64(i)
			nc, b, err := children(hashes[i], k, j, b, counts[k-1])
			if err != nil {
				return nil, err
			}
			base := j << fanoutBits
			from := max(lo, base) - base
			to := min(hi, base+uint64(nc)) - base
			for c := from; c < to; c++ {
				next = append(next, hashAt(b, int(c)))
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

// ReadAt reads into p the bytes of v from offset off, like io.ReaderAt: it
// fetches the leaves covering [off, off+len(p)) ∩ [0, Size) (see Leaves),
// then the data chunks in one Fetch, checks each has exactly LeafSize bytes
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
	first, last := start/ChunkSize, (end-1)/ChunkSize
	hashes, err := Leaves(ctx, f, v, first, last-first+1)
	if err != nil {
		return 0, err
	}
	data, err := fetch(ctx, f, hashes)
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
			b = b[start-ci*ChunkSize:]
		}
		n += copy(p[n:end-start], b)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Nodes calls fn for every tree node hash of v: all depths ≥ 1, root first,
// level by level, left to right. It fetches every node above depth 1 (in
// batches) to learn the hashes below, and checks each as Leaves does. A
// depth-0 version has no node. An error from fn stops the walk and is
// returned.
func Nodes(ctx context.Context, f Fetcher, v Version, fn func(depth uint8, h index.Hash) error) error {
	if err := v.Validate(); err != nil {
		return err
	}
	if v.Depth == 0 {
		return nil
	}
	counts := levelCounts(LeafCount(v.Size), v.Depth)
	hashes := []index.Hash{v.Root} // all entries of level k
	for k := v.Depth; k >= 1; k-- {
		for _, h := range hashes {
			if h.IsZero() {
				continue // a hole: not stored
			}
			if err := fn(k, h); err != nil {
				return err
			}
		}
		if k == 1 {
			break // depth-1 nodes hold leaf hashes: nothing more to list
		}
		next := make([]index.Hash, 0, counts[k-1])
		for i := 0; i < len(hashes); i += maxNodesPerFetch {
			batch := hashes[i:min(i+maxNodesPerFetch, len(hashes))]
			data, err := fetch(ctx, f, batch)
			if err != nil {
				return err
			}
			for bi, b := range data {
				nc, b, err := children(batch[bi], k, uint64(i+bi), b, counts[k-1])
				if err != nil {
					return err
				}
				for c := range nc {
					next = append(next, hashAt(b, c))
				}
			}
		}
		hashes = next
	}
	return nil
}

// zeros backs the bytes of holes.
var zeros [ChunkSize]byte
