package tree

import (
	"errors"
	"fmt"

	"github.com/oashare/oashare/index/format"
)

// The sizes of the layout (format.ChunkSize, format.Fanout,
// format.MaxNodeSize) are defined in index/format, for every package.
const (
	// MaxDepth is the deepest tree accepted; deeper versions are corrupt.
	MaxDepth = 8
	// MaxFileSize is the largest file: 1 EiB (2^60 bytes, depth 7). Every
	// offset and length of it, and of a range read or written in it,
	// fits an int64 with room to spare, and a version of any size below
	// it is built and read in O(depth) per changed or read region
	// (holes and unchanged subtrees are taken whole). Larger sizes are
	// EFBIG for programs, as sizes above 16 TiB are on ext4.
	MaxFileSize = 1 << 60

	hashSize   = format.HashSize
	fanoutBits = 8 // format.Fanout == 1 << fanoutBits
)

// Compile-time checks: fanoutBits matches Fanout.
var _ [format.Fanout - 1<<fanoutBits]struct{}
var _ [1<<fanoutBits - format.Fanout]struct{}

// ErrCorrupt reports a version or a chunk that does not fit the tree
// layout: an impossible Version, a node of the wrong length or child count,
// or a data chunk of the wrong length. Errors wrap it with the detail.
var ErrCorrupt = errors.New("tree: corrupt file tree")

// ErrTooLarge reports a file that would exceed MaxFileSize.
var ErrTooLarge = errors.New("tree: file larger than the largest supported (1 EiB)")

// Version names one content of a file: its size and the root of its chunk
// tree (see the package documentation for the layout).
type Version struct {
	Size  uint64
	Root  format.Hash
	Depth uint8
}

// Validate checks that v is a possible version: Size ≤ MaxFileSize, Depth ≤
// MaxDepth and equal to DepthFor(LeafCount(Size)), and Root zero exactly
// when Size is 0. Its errors wrap ErrCorrupt.
func (v Version) Validate() error {
	if v.Size > MaxFileSize {
		return fmt.Errorf("%w: size %d exceeds %d", ErrCorrupt, v.Size, uint64(MaxFileSize))
	}
	if v.Depth > MaxDepth {
		return fmt.Errorf("%w: depth %d exceeds %d", ErrCorrupt, v.Depth, MaxDepth)
	}
	if want := DepthFor(LeafCount(v.Size)); v.Depth != want {
		return fmt.Errorf("%w: size %d needs depth %d, version has %d", ErrCorrupt, v.Size, want, v.Depth)
	}
	if v.Size == 0 && !v.Root.IsZero() {
		return fmt.Errorf("%w: empty file with non-zero root %s", ErrCorrupt, v.Root.Short())
	}
	// A zero root with a size is a file that is one hole.
	return nil
}

// LeafCount returns the number of data chunks of a file of size bytes.
func LeafCount(size uint64) uint64 {
	n := size / format.ChunkSize
	if size%format.ChunkSize != 0 {
		n++
	}
	return n
}

// LeafSize returns the number of bytes of data chunk i of a file of size
// bytes: ChunkSize, less for the last chunk, 0 past the end.
func LeafSize(size uint64, i uint64) int {
	n := LeafCount(size)
	switch {
	case i >= n:
		return 0
	case i < n-1:
		return format.ChunkSize
	default:
		return int(size - i*format.ChunkSize)
	}
}

// DepthFor returns the tree depth for leaves data chunks: the smallest d
// with Fanout^d ≥ leaves, 0 for 0 or 1 leaf.
func DepthFor(leaves uint64) uint8 {
	var d uint8
	for span := uint64(1); span < leaves; span <<= fanoutBits {
		d++
		if d == MaxDepth {
			break // Fanout^MaxDepth overflows uint64 and exceeds every count
		}
	}
	return d
}

// levelCounts returns count(k) for k = 0..depth: the number of entries of
// each level (count(0) = leaves).
func levelCounts(leaves uint64, depth uint8) []uint64 {
	c := make([]uint64, depth+1)
	c[0] = leaves
	for k := 1; k <= int(depth); k++ {
		c[k] = (c[k-1] + format.Fanout - 1) >> fanoutBits
	}
	return c
}

// childCount returns how many children node j of level k ≥ 1 must have,
// given below = count(k-1).
func childCount(j, below uint64) uint64 {
	first := j << fanoutBits
	if first >= below {
		return 0
	}
	return min(format.Fanout, below-first)
}

// checkNode checks the bytes of node j of level depth against the number
// of children it must have and returns that number.
func checkNode(h format.Hash, depth uint8, j uint64, b []byte, below uint64) (int, error) {
	want := childCount(j, below)
	if len(b)%hashSize != 0 {
		return 0, fmt.Errorf("%w: node %s (depth %d, index %d) has %d bytes, not a multiple of %d",
			ErrCorrupt, h.Short(), depth, j, len(b), hashSize)
	}
	if got := uint64(len(b) / hashSize); got != want {
		return 0, fmt.Errorf("%w: node %s (depth %d, index %d) has %d children, want %d",
			ErrCorrupt, h.Short(), depth, j, got, want)
	}
	return int(want), nil
}

// hashAt returns child c of node bytes b.
func hashAt(b []byte, c int) format.Hash {
	return format.Hash(b[c*hashSize : (c+1)*hashSize])
}
