package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/oashare/oashare/chunknet"
	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/index/format"
)

// maxDirtyChunks bounds the changed chunks a file keeps in memory before
// they are uploaded into an intermediate (unpublished) version: 64 MiB.
const maxDirtyChunks = (64 << 20) / format.ChunkSize

// content is the local, not yet published state of one file's bytes. It
// knows nothing of FUSE: it is a base version plus changes, in one of two
// shapes:
//
//   - streaming: the file was empty and is being written from offset 0
//     sequentially (cp, a download, a compiler's output). Every full chunk
//     goes straight into a tree.Builder whose Sink is an Uploader, so the
//     upload runs while the program writes and memory stays bounded
//     whatever the size.
//   - dirty: any other write. Changed chunks are kept whole in a map and
//     merged with the base when committed.
//
// A write that breaks the streaming pattern (or a read, or a truncate)
// turns the stream into the base version and continues in the dirty shape.
//
// Failures. An upload whose chunks reach too few replicas keeps them on
// this node (chunknet lists them as under target): the version is complete
// and readable here, but short, and may not be published until its
// copies are made (fileState.publish checks). A chunk that could not be
// stored even here breaks the content: every later read, write and commit
// returns that error (EIO), never zeros, until a truncate to 0 starts the
// file afresh.
//
// content is not safe for concurrent use: fileState.mu guards it.
type content struct {
	node *chunknet.Node

	base  tree.Version
	limit uint64 // bytes of base that are still valid (a truncate lowers it)
	size  uint64 // the file's current size

	orig   tree.Version // the version the changes started from
	mtime0 int64        // the file's mtime when the changes started

	stream *tree.Builder
	up     *chunknet.Uploader

	dirty map[uint64][]byte // chunk index → ChunkSize bytes

	// short: some chunks of base were kept on this node because too few
	// replicas took them; base must not be published before they are
	// topped up (chunknet.Node.Short).
	short bool
	// broken is the error that lost bytes of the content (see above).
	broken error

	buf []byte // one group's bytes, reused by commit

	// started is when the changes started: every upload of them came
	// after it (garbage collection keeps what was put since; FS.inUse).
	started time.Time
}

func newContent(node *chunknet.Node, base tree.Version, mtime int64) *content {
	return &content{node: node, base: base, limit: base.Size, size: base.Size, orig: base, mtime0: mtime, started: time.Now()}
}

// changed reports whether the content differs from the version the
// changes started from (a write, a truncate, a finished stream).
func (c *content) changed() bool {
	return c.stream != nil || len(c.dirty) > 0 || c.base != c.orig || c.size != c.orig.Size || c.limit != c.orig.Size
}

// write stores p at off.
func (c *content) write(ctx context.Context, off uint64, p []byte) error {
	if c.broken != nil {
		return c.broken
	}
	if c.stream != nil {
		if off == c.stream.Size() {
			return c.streamWrite(p)
		}
		if err := c.finishStream(); err != nil {
			return err
		}
	}
	if off == 0 && c.size == 0 && c.limit == 0 && len(c.dirty) == 0 {
		c.up = c.node.NewUploader(c.node.Context())
		c.stream = tree.NewBuilder(c.node.Context(), c.up)
		return c.streamWrite(p)
	}
	end := off + uint64(len(p))
	for i := off / format.ChunkSize; i*format.ChunkSize < end; i++ {
		buf, err := c.chunk(ctx, i)
		if err != nil {
			return err
		}
		start := i * format.ChunkSize
		lo := max(off, start)
		hi := min(end, start+format.ChunkSize)
		copy(buf[lo-start:hi-start], p[lo-off:hi-off])
	}
	c.size = max(c.size, end)
	if len(c.dirty) > maxDirtyChunks {
		if _, err := c.commit(ctx); err != nil {
			return err
		}
	}
	return nil
}

// streamWrite appends p to the stream. The stream fails only if chunks
// could be stored nowhere: then the content is broken.
func (c *content) streamWrite(p []byte) error {
	_, err := c.stream.Write(p)
	c.size = c.stream.Size()
	if err != nil {
		c.up.Wait()
		c.stream, c.up = nil, nil
		c.broken = err
	}
	return err
}

// chunk returns the dirty buffer of chunk i, loading it from the base
// (bytes beyond limit read as zeros) the first time.
func (c *content) chunk(ctx context.Context, i uint64) ([]byte, error) {
	if buf, ok := c.dirty[i]; ok {
		return buf, nil
	}
	buf := make([]byte, format.ChunkSize)
	start := i * format.ChunkSize
	if start < c.limit {
		valid := min(c.limit-start, format.ChunkSize)
		if _, err := tree.ReadAt(ctx, c.node, c.base, buf[:valid], int64(start)); err != nil && err != io.EOF {
			return nil, err
		}
	}
	if c.dirty == nil {
		c.dirty = make(map[uint64][]byte)
	}
	c.dirty[i] = buf
	return buf, nil
}

// truncate sets the size; bytes past the old end read as zeros.
func (c *content) truncate(ctx context.Context, size uint64) error {
	if c.broken != nil {
		if size != 0 {
			return c.broken
		}
		// Nothing of the lost bytes is left to read: a fresh start.
		*c = content{node: c.node, orig: c.orig, mtime0: c.mtime0}
		return nil
	}
	if c.stream != nil {
		if err := c.finishStream(); err != nil {
			return err
		}
	}
	if size < c.size {
		// Zero the tail of the chunk the new end falls in, drop the rest.
		if size%format.ChunkSize != 0 {
			i := size / format.ChunkSize
			buf, err := c.chunk(ctx, i)
			if err != nil {
				return err
			}
			clear(buf[size%format.ChunkSize:])
		}
		for i := range c.dirty {
			if i*format.ChunkSize >= size {
				delete(c.dirty, i)
			}
		}
		c.limit = min(c.limit, size)
	}
	c.size = size
	return nil
}

// finishStream turns the stream into the base version (uploading what is
// left), leaving an empty dirty state on top. Chunks that reached too few
// replicas make the base short, not an error: they are stored here.
func (c *content) finishStream() error {
	v, err := c.stream.Finish()
	werr := c.up.Wait()
	c.stream, c.up = nil, nil
	if err == nil && werr != nil && !errors.Is(werr, chunknet.ErrNotDurable) {
		err = werr
	}
	if err != nil {
		c.broken = err
		return err
	}
	c.base, c.limit, c.size = v, v.Size, v.Size
	c.short = c.short || werr != nil
	return nil
}

// commit uploads every change and returns the new version, which becomes
// the base. Every chunk it names is stored durably when it returns without
// error: on its replicas, or, where they were too few, here (c.short is
// then set). A failed commit (a chunk it needed could not be read) leaves
// the changes as they were, for a later try.
func (c *content) commit(ctx context.Context) (tree.Version, error) {
	if c.broken != nil {
		return tree.Version{}, c.broken
	}
	if c.stream != nil {
		if err := c.finishStream(); err != nil {
			return tree.Version{}, err
		}
		if len(c.dirty) == 0 && c.size == c.base.Size {
			return c.base, nil
		}
	}
	if len(c.dirty) == 0 && c.size == c.base.Size && c.limit == c.base.Size {
		return c.base, nil
	}
	up := c.node.NewUploader(c.node.Context())
	b := tree.NewBuilder(ctx, up)
	v, err := c.build(ctx, b)
	werr := up.Wait()
	if err == nil && werr != nil && !errors.Is(werr, chunknet.ErrNotDurable) {
		err = werr
	}
	if err != nil {
		return tree.Version{}, err
	}
	if v.Size != c.size {
		return tree.Version{}, fmt.Errorf("internal: built %d bytes, want %d", v.Size, c.size)
	}
	c.base, c.limit, c.dirty = v, v.Size, nil
	c.short = c.short || werr != nil
	return v, nil
}

// build makes the new version in b: base (valid up to limit) with the
// dirty chunks on top, at size. It walks the file in aligned blocks, so
// that its work is O(depth) per changed group, whatever the size:
//   - a run of groups past the valid bytes with no dirty chunk is added
//     as holes, whole subtrees at a time (AddHoles);
//   - a subtree with no dirty chunk that holds the same leaves as the
//     base's at that place is reused whole, by its name, at the highest
//     level where that is true (AddNode): nothing under it is fetched or
//     stored again;
//   - any other group is written out whole: the base's valid bytes, the
//     dirty chunks on top, zeros past limit. Chunks are stored by group
//     (the Fanout chunks under one depth-1 node), so a group is never
//     half reused.
func (c *content) build(ctx context.Context, b *tree.Builder) (tree.Version, error) {
	n := tree.LeafCount(c.size)
	dirty := slices.Sorted(maps.Keys(c.dirty))
	base, err := tree.NewEntries(c.node, c.base)
	if err != nil {
		return tree.Version{}, err
	}
	if n == 1 {
		// A one-chunk file has no group node: its chunk is all.
		switch {
		case len(dirty) > 0:
		case c.limit == 0:
			return c.finish(b, b.AddLeaf(format.Hash{}, int(c.size)))
		case c.base.Depth == 0 && c.base.Size == c.size && c.limit == c.size:
			return c.finish(b, b.AddLeaf(c.base.Root, int(c.size)))
		}
		return c.finish(b, c.writeGroup(ctx, b, 0, 1))
	}
	bytesOf := func(from, to uint64) uint64 { return min(to*format.ChunkSize, c.size) - from*format.ChunkSize }
	for pos, d := uint64(0), 0; pos < n; {
		for d < len(dirty) && dirty[d] < pos {
			d++
		}
		next := n // the next dirty chunk
		if d < len(dirty) {
			next = dirty[d]
		}
		if pos*format.ChunkSize >= c.limit {
			// Past the base's valid bytes: holes up to the group of the
			// next dirty chunk, or to the end.
			to := n
			if next < n {
				to = next - next%format.Fanout
			}
			if to > pos {
				if err := b.AddHoles(bytesOf(pos, to)); err != nil {
					return tree.Version{}, err
				}
				pos = to
				continue
			}
		}
		level, leaves, ok := c.reusable(pos, next, n)
		if ok {
			span := uint64(1) << (8 * uint(level))
			h, err := base.At(ctx, level, pos/span)
			if err != nil {
				return tree.Version{}, err
			}
			if err := b.AddNode(level, h, leaves, bytesOf(pos, pos+leaves)); err != nil {
				return tree.Version{}, err
			}
			pos += leaves
			continue
		}
		end := min(pos+format.Fanout, n)
		if err := c.writeGroup(ctx, b, pos, end); err != nil {
			return tree.Version{}, err
		}
		pos = end
	}
	return b.Finish()
}

// finish is b.Finish after a last step that returned err.
func (c *content) finish(b *tree.Builder, err error) (tree.Version, error) {
	if err != nil {
		return tree.Version{}, err
	}
	return b.Finish()
}

// reusable returns the highest level (1 or more) of a subtree of the new
// version that starts at leaf pos, holds no dirty chunk (the next one is
// next) and is the base's subtree at that place: the same leaves, all
// valid (below limit), the same last chunk where it ends either file.
// leaves is how many leaves it covers (fewer than a whole subtree only at
// the end of the file).
func (c *content) reusable(pos, next, n uint64) (level uint8, leaves uint64, ok bool) {
	baseN := tree.LeafCount(c.base.Size)
	top := min(c.base.Depth, tree.DepthFor(n), tree.MaxDepth-1)
	for k := top; k >= 1; k-- {
		span := uint64(1) << (8 * uint(k))
		if pos%span != 0 {
			continue
		}
		end := min(pos+span, n)
		if end > next || end != min(pos+span, baseN) {
			continue // a dirty chunk inside, or other leaves than the base's
		}
		last := tree.LeafSize(c.size, end-1)
		if last != tree.LeafSize(c.base.Size, end-1) || (end-1)*format.ChunkSize+uint64(last) > c.limit {
			continue // a different last chunk, or cut by a truncate
		}
		if pos == 0 && end-pos <= span>>8 {
			continue // not a node of this level: the file is shallower
		}
		return k, end - pos, true
	}
	return 0, 0, false
}

// writeGroup writes the chunks [from, to) (one group, or a one-chunk
// file) out whole: the base's valid bytes, the dirty chunks on top,
// zeros past limit.
func (c *content) writeGroup(ctx context.Context, b *tree.Builder, from, to uint64) error {
	lo, hi := from*format.ChunkSize, min(to*format.ChunkSize, c.size)
	if c.buf == nil {
		c.buf = make([]byte, format.Fanout*format.ChunkSize)
	}
	p := c.buf[:hi-lo]
	if valid := min(c.limit, hi); valid > lo {
		if _, err := tree.ReadAt(ctx, c.node, c.base, p[:valid-lo], int64(lo)); err != nil && err != io.EOF {
			return err
		}
		clear(p[valid-lo:])
	} else {
		clear(p)
	}
	for i := from; i < to; i++ {
		if d, ok := c.dirty[i]; ok {
			copy(p[(i-from)*format.ChunkSize:], d[:tree.LeafSize(c.size, i)])
		}
	}
	_, err := b.Write(p)
	return err
}

// readAt reads the current bytes (base plus changes).
func (c *content) readAt(ctx context.Context, p []byte, off uint64) (int, error) {
	if c.broken != nil {
		return 0, c.broken
	}
	if c.stream != nil {
		if err := c.finishStream(); err != nil {
			return 0, err
		}
	}
	if off >= c.size {
		return 0, io.EOF
	}
	end := min(off+uint64(len(p)), c.size)
	if len(c.dirty) == 0 && c.limit == c.base.Size && c.size == c.base.Size {
		return tree.ReadAt(ctx, c.node, c.base, p[:end-off], int64(off))
	}
	for pos := off; pos < end; {
		i := pos / format.ChunkSize
		cend := min((i+1)*format.ChunkSize, end)
		dst := p[pos-off : cend-off]
		switch buf, ok := c.dirty[i]; {
		case ok:
			copy(dst, buf[pos-i*format.ChunkSize:])
		case pos < c.limit:
			valid := min(cend, c.limit) - pos
			if _, err := tree.ReadAt(ctx, c.node, c.base, dst[:valid], int64(pos)); err != nil && err != io.EOF {
				return 0, err
			}
			clear(dst[valid:])
		default:
			clear(dst)
		}
		pos = cend
	}
	return int(end - off), nil
}
