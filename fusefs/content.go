package fusefs

import (
	"context"
	"fmt"
	"io"

	"github.com/oashare/oashare/chunknet"
	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/index"
)

// maxDirtyChunks bounds the changed chunks a file keeps in memory before
// they are uploaded into an intermediate (unpublished) version: 64 MiB.
const maxDirtyChunks = (64 << 20) / tree.ChunkSize

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
// content is not safe for concurrent use: fileNode.mu guards it.
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
}

func newContent(node *chunknet.Node, base tree.Version, mtime int64) *content {
	return &content{node: node, base: base, limit: base.Size, size: base.Size, orig: base, mtime0: mtime}
}

// changed reports whether the content differs from the version the
// changes started from (a write, a truncate, a finished stream).
func (c *content) changed() bool {
	return c.stream != nil || len(c.dirty) > 0 || c.base != c.orig || c.size != c.orig.Size || c.limit != c.orig.Size
}

// write stores p at off.
func (c *content) write(ctx context.Context, off uint64, p []byte) error {
	if c.stream != nil {
		if off == c.stream.Size() {
			_, err := c.stream.Write(p)
			c.size = c.stream.Size()
			return err
		}
		if err := c.finishStream(); err != nil {
			return err
		}
	}
	if off == 0 && c.size == 0 && c.limit == 0 && len(c.dirty) == 0 {
		c.up = c.node.NewUploader(c.node.Context())
		c.stream = tree.NewBuilder(c.node.Context(), c.up)
		_, err := c.stream.Write(p)
		c.size = c.stream.Size()
		return err
	}
	end := off + uint64(len(p))
	for i := off / tree.ChunkSize; i*tree.ChunkSize < end; i++ {
		buf, err := c.chunk(ctx, i)
		if err != nil {
			return err
		}
		start := i * tree.ChunkSize
		lo := max(off, start)
		hi := min(end, start+tree.ChunkSize)
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

// chunk returns the dirty buffer of chunk i, loading it from the base
// (bytes beyond limit read as zeros) the first time.
func (c *content) chunk(ctx context.Context, i uint64) ([]byte, error) {
	if buf, ok := c.dirty[i]; ok {
		return buf, nil
	}
	buf := make([]byte, tree.ChunkSize)
	start := i * tree.ChunkSize
	if start < c.limit {
		valid := min(c.limit-start, tree.ChunkSize)
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
	if c.stream != nil {
		if err := c.finishStream(); err != nil {
			return err
		}
	}
	if size < c.size {
		// Zero the tail of the chunk the new end falls in, drop the rest.
		if size%tree.ChunkSize != 0 {
			i := size / tree.ChunkSize
			buf, err := c.chunk(ctx, i)
			if err != nil {
				return err
			}
			clear(buf[size%tree.ChunkSize:])
		}
		for i := range c.dirty {
			if i*tree.ChunkSize >= size {
				delete(c.dirty, i)
			}
		}
		c.limit = min(c.limit, size)
	}
	c.size = size
	return nil
}

// finishStream turns the stream into the base version (uploading what is
// left), leaving an empty dirty state on top.
func (c *content) finishStream() error {
	v, err := c.stream.Finish()
	werr := c.up.Wait()
	c.stream, c.up = nil, nil
	if err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	c.base, c.limit, c.size = v, v.Size, v.Size
	return nil
}

// commit uploads every change and returns the new version, which becomes
// the base. Every chunk it names is durable on its replicas when it
// returns without error.
func (c *content) commit(ctx context.Context) (tree.Version, error) {
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
	n := tree.LeafCount(c.size)
	// Chunks are stored by group (the Fanout chunks under one depth-1
	// node): a group of the new version is either exactly a group of the
	// base, reused whole by its name (nothing fetched but the nodes above
	// it), a group of holes, or written out whole, its unchanged chunks
	// read from the base.
	var buf []byte
	var names []index.Hash // the base's group names from namesFrom on
	var namesFrom uint64
	for g := uint64(0); g < n; g += tree.Fanout {
		end := min(g+tree.Fanout, n)
		gsize := min(end*tree.ChunkSize, c.size) - g*tree.ChunkSize
		kind := c.groupKind(g, end)
		if kind != groupWritten && n == 1 {
			// A one-chunk file has no group node: its chunk is all.
			h := index.Hash{}
			if kind == groupReused {
				h = c.base.Root
			}
			if err := b.AddLeaf(h, int(gsize)); err != nil {
				return tree.Version{}, err
			}
			continue
		}
		switch kind {
		case groupHoles:
			if err := b.AddGroup(index.Hash{}, int(end-g), gsize); err != nil {
				return tree.Version{}, err
			}
		case groupReused:
			j := g / tree.Fanout
			if j < namesFrom || j >= namesFrom+uint64(len(names)) {
				cnt := min(uint64(groupBatch), (tree.LeafCount(c.base.Size)+tree.Fanout-1)/tree.Fanout-j)
				var err error
				if names, err = tree.Groups(ctx, c.node, c.base, j, cnt); err != nil {
					return tree.Version{}, err
				}
				namesFrom = j
			}
			if err := b.AddGroup(names[j-namesFrom], int(end-g), gsize); err != nil {
				return tree.Version{}, err
			}
		default:
			from, to := g*tree.ChunkSize, min(end*tree.ChunkSize, c.size)
			if buf == nil {
				buf = make([]byte, tree.Fanout*tree.ChunkSize)
			}
			p := buf[:to-from]
			if valid := min(c.limit, to); valid > from {
				if _, err := tree.ReadAt(ctx, c.node, c.base, p[:valid-from], int64(from)); err != nil && err != io.EOF {
					return tree.Version{}, err
				}
				clear(p[valid-from:])
			} else {
				clear(p)
			}
			for i := g; i < end; i++ {
				if d, ok := c.dirty[i]; ok {
					copy(p[(i-g)*tree.ChunkSize:], d[:tree.LeafSize(c.size, i)])
				}
			}
			if _, err := b.Write(p); err != nil {
				return tree.Version{}, err
			}
		}
	}
	v, err := b.Finish()
	if werr := up.Wait(); err == nil {
		err = werr
	}
	if err != nil {
		return tree.Version{}, err
	}
	if v.Size != c.size {
		return tree.Version{}, fmt.Errorf("internal: built %d bytes, want %d", v.Size, c.size)
	}
	c.base, c.limit, c.dirty = v, v.Size, nil
	return v, nil
}

// groupBatch is how many group names of the base commit reads at once.
const groupBatch = 4096

// How commit builds one group of the new version.
const (
	groupWritten = iota // written out whole
	groupReused         // the same as the base's: reused whole, by its name
	groupHoles          // all holes: past the valid bytes and not written
)

// groupKind says how commit builds the group of chunks [g, end) of the
// new version. The group can be reused when none of its chunks changed
// and it holds the same chunks as the base's group at that place: a full
// group of the base, or the base's last group with the same last chunk.
func (c *content) groupKind(g, end uint64) int {
	dirty := false
	for i := g; i < end && !dirty; i++ {
		_, dirty = c.dirty[i]
	}
	switch {
	case dirty:
		return groupWritten
	case g*tree.ChunkSize >= c.limit:
		return groupHoles
	}
	baseLeaves := tree.LeafCount(c.base.Size)
	if end > baseLeaves || end != min(g+tree.Fanout, baseLeaves) {
		return groupWritten // not the same chunks as the base's group here
	}
	last := tree.LeafSize(c.size, end-1)
	if last != tree.LeafSize(c.base.Size, end-1) || (end-1)*tree.ChunkSize+uint64(last) > c.limit {
		return groupWritten // a different last chunk, or cut by a truncate
	}
	return groupReused
}

// readAt reads the current bytes (base plus changes).
func (c *content) readAt(ctx context.Context, p []byte, off uint64) (int, error) {
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
		i := pos / tree.ChunkSize
		cend := min((i+1)*tree.ChunkSize, end)
		dst := p[pos-off : cend-off]
		switch buf, ok := c.dirty[i]; {
		case ok:
			copy(dst, buf[pos-i*tree.ChunkSize:])
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
