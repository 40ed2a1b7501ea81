package tree

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/oashare/oashare/index/format"
	"github.com/oashare/oashare/index/format/multisha"
)

// Sink receives every chunk a Builder makes, grouped: the data chunks
// under one depth-1 node form a group, stored together and named by that
// node's hash (a one-chunk file's group is that chunk, named by its hash).
// data and node are valid only during the call (the sink copies what it
// keeps). Calls may return before anything is durable (the sink pipelines
// uploads) and may block to apply back-pressure. Errors stop the Builder.
type Sink interface {
	// PutLeaf receives the next data chunk of the group being built.
	PutLeaf(ctx context.Context, h format.Hash, data []byte) error
	// EndGroup closes the group: the chunks PutLeaf received since the
	// previous EndGroup, in order, are the stored chunks of group g (holes
	// are not stored). node is g's depth-1 node, to be stored with the
	// group, or nil when g is the single chunk of a depth-0 file. If PutLeaf
	// received nothing since the previous EndGroup, every chunk of g came
	// from AddLeaf: g is an existing group, stored already.
	EndGroup(ctx context.Context, g format.Hash, node []byte) error
	// Put receives a tree node of depth 2 or more.
	Put(ctx context.Context, h format.Hash, data []byte) error
}

var (
	errFinished = errors.New("tree: builder already finished")
	errClosed   = errors.New("tree: builder already has its short last chunk")
)

// Builder makes a Version from a stream of bytes and/or existing leaf
// hashes, in order. It holds one partial chunk and at most one partial node
// per level; every full chunk and node goes to the Sink at once. The first
// error (from the Sink or a misuse) sticks: every later call returns it.
// A Builder is not safe for concurrent use.
type Builder struct {
	ctx  context.Context
	sink Sink

	chunk  [format.ChunkSize]byte
	nchunk int // bytes buffered in chunk

	size   uint64
	levels []level // levels[k]: pending hashes of level k (0 = leaves)
	// Whether the pending group (the pending hashes of level 0) has
	// chunks from Write and chunks from AddLeaf; holes count as neither.
	fresh, reused bool
	closed        bool          // a chunk shorter than ChunkSize was added by AddLeaf
	hashes        []format.Hash // Write's sums of the chunks it puts
	done          bool          // Finish was called
	err           error
}

// level holds the not yet packed hashes of one tree level.
type level struct {
	buf   []byte // < MaxNodeSize bytes between calls
	count uint64 // hashes ever added to this level
}

// NewBuilder returns a Builder that puts chunks to sink with ctx.
func NewBuilder(ctx context.Context, sink Sink) *Builder {
	return &Builder{ctx: ctx, sink: sink}
}

// Size returns the number of bytes added so far.
func (b *Builder) Size() uint64 { return b.size }

func (b *Builder) usable() error {
	switch {
	case b.err != nil:
		return b.err
	case b.done:
		return errFinished
	case b.closed:
		return errClosed
	}
	return b.ctx.Err()
}

// Write appends p to the file. Each full chunk is hashed and put at once;
// the rest stays buffered until more bytes come or Finish.
func (b *Builder) Write(p []byte) (int, error) {
	if err := b.usable(); err != nil {
		return 0, err
	}
	if uint64(len(p)) > MaxFileSize-b.size {
		return 0, fmt.Errorf("%w: %d bytes", ErrTooLarge, b.size+uint64(len(p)))
	}
	n := 0
	if b.nchunk > 0 {
		c := copy(b.chunk[b.nchunk:], p)
		if b.nchunk+c < format.ChunkSize {
			b.nchunk += c
			b.size += uint64(c)
			return c, nil
		}
		if err := b.putLeaf(b.chunk[:]); err != nil {
			return 0, err
		}
		b.nchunk = 0
		b.size += uint64(c)
		n, p = c, p[c:]
	}
	for len(p) >= format.ChunkSize {
		// The full chunks up to the next hole are hashed together:
		// several at once take much less time each than one at a time.
		k := 0
		for k < format.Fanout && (k+1)*format.ChunkSize <= len(p) && !isHole(p[k*format.ChunkSize:(k+1)*format.ChunkSize]) {
			k++
		}
		if k == 0 { // a hole
			if err := b.addHash(0, format.Hash{}); err != nil {
				return n, err
			}
			b.size += format.ChunkSize
			n, p = n+format.ChunkSize, p[format.ChunkSize:]
			continue
		}
		if b.hashes == nil {
			b.hashes = make([]format.Hash, 0, format.Fanout)
		}
		b.hashes = multisha.Chunks(b.hashes[:0], p[:k*format.ChunkSize], format.ChunkSize)
		for _, h := range b.hashes {
			if err := b.putData(p[:format.ChunkSize], h); err != nil {
				return n, err
			}
			b.size += format.ChunkSize
			n, p = n+format.ChunkSize, p[format.ChunkSize:]
		}
	}
	b.nchunk = copy(b.chunk[:], p)
	b.size += uint64(b.nchunk)
	return n + b.nchunk, nil
}

// AddLeaf appends an existing data chunk of size bytes, named h, without
// putting it again; the zero hash appends a hole (zeros, not stored). It
// is allowed only at a chunk boundary (no partial chunk buffered by
// Write); size must be 1..ChunkSize, and a chunk shorter than ChunkSize
// must be the last one: any later Write or AddLeaf fails. Chunks are
// stored by group, so the chunks of one group (the Fanout leaves under
// one depth-1 node) must be all new (Write, or holes) or all existing
// (AddLeaf, or holes) and then exactly those of an existing group, whose
// node is therefore the same: a group that mixes the two fails.
func (b *Builder) AddLeaf(h format.Hash, size int) error {
	if err := b.usable(); err != nil {
		return err
	}
	switch {
	case b.nchunk != 0:
		return fmt.Errorf("tree: AddLeaf at offset %d, not a chunk boundary", b.size)
	case size < 1 || size > format.ChunkSize:
		return fmt.Errorf("tree: AddLeaf of %d bytes, want 1..%d", size, format.ChunkSize)
	case uint64(size) > MaxFileSize-b.size:
		return fmt.Errorf("%w: %d bytes", ErrTooLarge, b.size+uint64(size))
	}
	if !h.IsZero() {
		if b.fresh {
			return b.mixed()
		}
		b.reused = true
	}
	if err := b.addHash(0, h); err != nil {
		return err
	}
	b.size += uint64(size)
	b.closed = size < format.ChunkSize
	return nil
}

// AddGroup appends an existing group whole: the leaves leaves (1 ..
// Fanout, 2 or more for the first group) under depth-1 node h, size bytes
// in all, without fetching or putting anything; the zero hash appends a
// group of holes. It is AddNode at level 1: reusing groups whole instead
// of leaf by leaf is what makes a small change to a large file cost its
// changed groups only. A file of one leaf has no depth-1 node: use
// AddLeaf.
func (b *Builder) AddGroup(h format.Hash, leaves int, size uint64) error {
	if leaves < 1 {
		return fmt.Errorf("tree: AddGroup of %d leaves", leaves)
	}
	return b.AddNode(1, h, uint64(leaves), size)
}

// AddNode appends an existing subtree whole: the node h of the given
// level (1 .. MaxDepth-1), covering leaves leaves (1 .. Fanout^level) and
// size bytes, without fetching or putting anything; the zero hash appends
// that many holes. It is allowed only where such a node starts: every
// leaf so far in whole nodes of that level. A node covering fewer than
// Fanout^level leaves, or whose last leaf is short, must be the file's
// last; the file's first node must cover more than Fanout^(level-1)
// leaves (or it would not be a node of that level). The node of the new
// version at this place is h, so everything under it is stored already.
// Holes and unchanged parts of a huge file thus cost O(depth) each,
// whatever their size.
func (b *Builder) AddNode(level uint8, h format.Hash, leaves, size uint64) error {
	if err := b.usable(); err != nil {
		return err
	}
	if level < 1 || level >= MaxDepth {
		return fmt.Errorf("tree: AddNode at level %d, want 1..%d", level, MaxDepth-1)
	}
	span := uint64(1) << (fanoutBits * uint(level))
	var done uint64 // leaves so far
	if len(b.levels) > 0 {
		done = b.levels[0].count
	}
	switch {
	case b.nchunk != 0 || done%span != 0:
		return fmt.Errorf("tree: AddNode of level %d at offset %d, not a node boundary", level, b.size)
	case leaves < 1 || leaves > span || done == 0 && leaves <= span>>fanoutBits:
		return fmt.Errorf("tree: AddNode of level %d with %d leaves, want 1..%d (more than %d for a file's first node)",
			level, leaves, span, span>>fanoutBits)
	case size > MaxFileSize-b.size || leaves > MaxFileSize/format.ChunkSize:
		return fmt.Errorf("%w: %d bytes", ErrTooLarge, b.size+size)
	case size <= (leaves-1)*format.ChunkSize || size > leaves*format.ChunkSize:
		return fmt.Errorf("tree: AddNode of %d bytes for %d leaves", size, leaves)
	}
	for len(b.levels) < int(level) {
		b.levels = append(b.levels, newLevel())
	}
	// The entries the node stands for at each level below it.
	for k := range int(level) {
		unit := uint64(1) << (fanoutBits * uint(k))
		b.levels[k].count += (leaves + unit - 1) / unit
	}
	b.fresh, b.reused = false, false
	b.size += size
	b.closed = leaves < span || size < leaves*format.ChunkSize
	return b.addHash(int(level), h)
}

// AddHoles appends size bytes of holes (zeros, never stored) at a chunk
// boundary, in O(depth) whatever the size: runs of holes go in as hole
// nodes of the highest level that fits (AddNode). A run whose last chunk
// is short must end the file.
func (b *Builder) AddHoles(size uint64) error {
	if err := b.usable(); err != nil {
		return err
	}
	switch {
	case b.nchunk != 0:
		return fmt.Errorf("tree: AddHoles at offset %d, not a chunk boundary", b.size)
	case size > MaxFileSize-b.size:
		return fmt.Errorf("%w: %d bytes", ErrTooLarge, b.size+size)
	}
	for size > 0 {
		var done uint64 // leaves so far
		if len(b.levels) > 0 {
			done = b.levels[0].count
		}
		// The highest level whose whole node fits here.
		k := uint8(0)
		for k+1 < MaxDepth {
			span := uint64(1) << (fanoutBits * uint(k+1))
			if done%span != 0 || size/format.ChunkSize < span {
				break
			}
			k++
		}
		if k == 0 {
			n := min(size, format.ChunkSize)
			if err := b.addHash(0, format.Hash{}); err != nil {
				return err
			}
			b.size += n
			b.closed = n < format.ChunkSize
			size -= n
			continue
		}
		span := uint64(1) << (fanoutBits * uint(k))
		if err := b.AddNode(k, format.Hash{}, span, span*format.ChunkSize); err != nil {
			return err
		}
		size -= span * format.ChunkSize
	}
	return nil
}

func newLevel() level { return level{buf: make([]byte, 0, format.MaxNodeSize)} }

func (b *Builder) mixed() error {
	b.err = fmt.Errorf("tree: the group of chunk %d mixes new and existing chunks", b.levels[0].count)
	return b.err
}

// Finish puts the last partial chunk and every pending node and returns the
// Version. The Builder is done after it, whatever the result.
func (b *Builder) Finish() (Version, error) {
	if b.err != nil {
		return Version{}, b.err
	}
	if b.done {
		return Version{}, errFinished
	}
	b.done = true
	if err := b.ctx.Err(); err != nil {
		b.err = err
		return Version{}, err
	}
	if b.nchunk > 0 {
		if err := b.putLeaf(b.chunk[:b.nchunk]); err != nil {
			return Version{}, err
		}
		b.nchunk = 0
	}
	for k := 0; k < len(b.levels); k++ {
		lv := &b.levels[k]
		if lv.count == 1 {
			// The single entry of the top level is the root. It is
			// still buffered: a level is emitted only when full.
			root := hashAt(lv.buf, 0)
			if k == 0 && !root.IsZero() {
				// A one-chunk file: the chunk is its own group.
				if err := b.endGroup(root, nil); err != nil {
					return Version{}, err
				}
			}
			return Version{Size: b.size, Root: root, Depth: uint8(k)}, nil
		}
		if len(lv.buf) > 0 {
			if err := b.emit(k); err != nil {
				return Version{}, err
			}
		}
	}
	// No leaf at all: the empty file.
	return Version{}, nil
}

// putLeaf hashes and puts one data chunk and adds it to level 0. A chunk
// of zeros is a hole: it is named by the zero hash and not put.
func (b *Builder) putLeaf(data []byte) error {
	if isHole(data) {
		return b.addHash(0, format.Hash{})
	}
	return b.putData(data, format.Sum(data))
}

// isHole reports whether a chunk is all zeros.
func isHole(data []byte) bool { return bytes.Equal(data, zeros[:len(data)]) }

// putData puts data chunk h, not a hole, and adds it to level 0.
func (b *Builder) putData(data []byte, h format.Hash) error {
	if b.reused {
		return b.mixed()
	}
	b.fresh = true
	if err := b.sink.PutLeaf(b.ctx, h, data); err != nil {
		b.err = err
		return err
	}
	return b.addHash(0, h)
}

// endGroup hands the pending group to the sink as group g.
func (b *Builder) endGroup(g format.Hash, node []byte) error {
	b.fresh, b.reused = false, false
	if err := b.sink.EndGroup(b.ctx, g, node); err != nil {
		b.err = err
		return err
	}
	return nil
}

// addHash appends h to level k, emitting the node when it is full.
func (b *Builder) addHash(k int, h format.Hash) error {
	if k == len(b.levels) {
		if k >= MaxDepth {
			b.err = fmt.Errorf("tree: file exceeds depth %d", MaxDepth)
			return b.err
		}
		b.levels = append(b.levels, newLevel())
	}
	lv := &b.levels[k]
	lv.buf = append(lv.buf, h[:]...)
	lv.count++
	if len(lv.buf) == format.MaxNodeSize {
		return b.emit(k)
	}
	return nil
}

// emit puts the pending hashes of level k as one node of level k+1.
func (b *Builder) emit(k int) error {
	lv := &b.levels[k]
	var h format.Hash // a node of holes is a hole
	switch {
	case allZero(lv.buf):
		b.fresh, b.reused = false, false
	case k == 0:
		h = format.Sum(lv.buf)
		if err := b.endGroup(h, lv.buf); err != nil {
			return err
		}
	default:
		h = format.Sum(lv.buf)
		if err := b.sink.Put(b.ctx, h, lv.buf); err != nil {
			b.err = err
			return err
		}
	}
	lv.buf = lv.buf[:0]
	return b.addHash(k+1, h)
}

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
