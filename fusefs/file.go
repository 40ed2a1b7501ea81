package fusefs

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// readAheadChunks is how far ahead of a sequential reader chunks are
// fetched into the cache: 4 MiB.
const readAheadChunks = (4 << 20) / format.ChunkSize

// fileNode is a regular file as the kernel knows it. What this peer knows
// of the file beyond the index lives in a fileState the FS keeps by inode
// ID (filestate.go), shared by every open handle, so two descriptors see
// each other's writes at once; the kernel may hold several fileNodes of
// one file over time (it forgets and looks up again), all with the same
// state.
type fileNode struct {
	fs.Inode
	node

	// atime is the last read on this peer (unix ns). Access times stay on
	// the peer that reads: publishing them would make every read a new
	// version of the file, racing real writes elsewhere.
	atime atomic.Int64
}

var (
	_ = (fs.NodeOpener)((*fileNode)(nil))
	_ = (fs.NodeReader)((*fileNode)(nil))
	_ = (fs.NodeWriter)((*fileNode)(nil))
	_ = (fs.NodeFlusher)((*fileNode)(nil))
	_ = (fs.NodeFsyncer)((*fileNode)(nil))
	_ = (fs.NodeReleaser)((*fileNode)(nil))
	_ = (fs.NodeGetattrer)((*fileNode)(nil))
	_ = (fs.NodeSetattrer)((*fileNode)(nil))
)

// handle is one open file description. It tracks the sequential read
// position to drive read-ahead.
type handle struct {
	mu         sync.Mutex
	next       int64  // where a sequential read would continue
	aheadUntil uint64 // chunks below this index have been prefetched

	st       *fileState
	writable bool // opened for writing: counted in fileState.writers
}

// state returns the state an open handle uses, else the file's, if it
// has one.
func (f *fileNode) state(fh fs.FileHandle) *fileState {
	if h, ok := fh.(*handle); ok && h.st != nil {
		return h.st
	}
	return f.fsys.existingState(f.id)
}

// localAtime shows a read on this peer that is newer than the stored
// access time.
func (f *fileNode) localAtime(out *fuse.Attr) {
	at := f.atime.Load()
	if at == 0 {
		return
	}
	if sec, nsec := nsToTime(at); sec > out.Atime || sec == out.Atime && nsec > out.Atimensec {
		out.Atime, out.Atimensec = sec, nsec
	}
}

// localAttr returns size and mtime including unpublished changes, and
// whether the file was deleted here while open, and applies unpublished
// attribute changes to ino.
func (f *fileState) localAttr(ino *index.Inode) (size uint64, mtime int64, unlinked bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.c != nil {
		f.attrs.Apply(ino)
		return f.c.size, f.mtime, f.unlinked
	}
	return ino.Size, ino.MtimeNs, f.unlinked
}

// refresh loads the newest version from the index unless there are local
// changes (close-to-open: an open sees what was published before it).
// Called with mu held.
func (f *fileState) refresh() syscall.Errno {
	if f.localChanges() {
		return 0
	}
	ino, errno := f.fsys.getInode(f.id)
	if errno != 0 {
		return errno
	}
	f.v = versionOf(&ino)
	f.base = ino.Ref()
	f.mtime = ino.MtimeNs
	f.loaded = true
	if f.c != nil {
		// Pending but unchanged (created, not yet written): it follows
		// the newest version until something changes here.
		f.c = newContent(f.fsys.node, f.v, f.mtime)
	}
	return 0
}

func (f *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if index.IsConflictID(f.id) && (flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0) {
		return nil, 0, syscall.EROFS // a conflict copy is read-only: copy it to keep it
	}
	st := f.fsys.openState(f.id)
	h, fuseFlags, errno := st.open(ctx, flags)
	if errno != 0 {
		f.fsys.closeState(st)
	}
	return h, fuseFlags, errno
}

// open opens a handle on the file: close-to-open, it reads the newest
// version (unless there are local changes), and O_TRUNC truncates.
func (f *fileState) open(ctx context.Context, flags uint32) (*handle, uint32, syscall.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if errno := f.refresh(); errno != 0 {
		return nil, 0, errno
	}
	if flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		if err := f.changes().truncate(ctx, 0); err != nil {
			return nil, 0, f.fsys.toErrno("open", err)
		}
		f.mtime = time.Now().UnixNano()
	}
	// No FOPEN_KEEP_CACHE: the kernel drops this file's cached pages on
	// open, so an open always sees the newest published version. A
	// read-only descriptor has nothing to publish at close: FOPEN_NOFLUSH
	// spares close(2) a round trip to this process.
	var fuseFlags uint32
	h := &handle{st: f, writable: flags&syscall.O_ACCMODE != syscall.O_RDONLY}
	if h.writable {
		f.writers++
	} else {
		fuseFlags = fuse.FOPEN_NOFLUSH
	}
	return h, fuseFlags, 0
}

// localChanges reports whether this peer has changed the file since its
// pending state began: content, mtime or attributes. Called with mu held.
func (f *fileState) localChanges() bool {
	return f.c != nil && (f.c.changed() || f.attrs.Changed() || f.mtime != f.c.mtime0)
}

// changes returns the local change state, creating it on the current
// version. Called with mu held.
func (f *fileState) changes() *content {
	if f.c == nil {
		f.c = newContent(f.fsys.node, f.v, f.mtime)
	}
	return f.c
}

func (f *fileNode) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if uint64(off)+uint64(len(data)) > tree.MaxFileSize {
		return 0, syscall.EFBIG
	}
	st := f.state(fh)
	if st == nil {
		return 0, syscall.EBADF
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.loaded {
		if errno := st.refresh(); errno != 0 {
			return 0, errno
		}
	}
	if err := st.changes().write(ctx, uint64(off), data); err != nil {
		return 0, f.fsys.toErrno("write", err)
	}
	st.mtime = time.Now().UnixNano()
	f.fsys.counters.BytesWritten.Add(int64(len(data)))
	return uint32(len(data)), 0
}

func (f *fileNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	f.atime.Store(time.Now().UnixNano())
	st := f.state(fh)
	var v tree.Version
	if st == nil {
		ino, errno := f.fsys.getInode(f.id)
		if errno != 0 {
			return nil, errno
		}
		v = versionOf(&ino)
	} else {
		st.mu.Lock()
		if !st.loaded {
			if errno := st.refresh(); errno != 0 {
				st.mu.Unlock()
				return nil, errno
			}
		}
		if st.c != nil {
			defer st.mu.Unlock()
			n, err := st.c.readAt(ctx, dest, uint64(off))
			if err != nil && err != io.EOF {
				return nil, f.fsys.toErrno("read", err)
			}
			f.fsys.counters.BytesRead.Add(int64(n))
			return fuse.ReadResultData(dest[:n]), 0
		}
		v = st.v
		st.mu.Unlock()
	}
	if h, ok := fh.(*handle); ok {
		f.fsys.readAhead(h, v, off, len(dest))
	}
	n, err := tree.ReadAt(ctx, f.fsys.node, v, dest, off)
	if err != nil && err != io.EOF {
		return nil, f.fsys.toErrno("read", err)
	}
	f.fsys.counters.BytesRead.Add(int64(n))
	return fuse.ReadResultData(dest[:n]), 0
}

// readAhead starts fetching the chunks after a sequential read into the
// node's cache, so the next reads find them there.
func (fsys *FS) readAhead(h *handle, v tree.Version, off int64, n int) {
	if !fsys.node.Caching() {
		return
	}
	h.mu.Lock()
	sequential := off == h.next || off == 0
	h.next = off + int64(n)
	end := min(uint64(h.next), v.Size)
	leaves := tree.LeafCount(v.Size)
	first := max(h.aheadUntil, tree.LeafCount(end))
	if !sequential || first >= leaves || h.aheadUntil > tree.LeafCount(end)+readAheadChunks/2 {
		h.mu.Unlock()
		return
	}
	last := min(first+readAheadChunks, leaves)
	h.aheadUntil = last
	h.mu.Unlock()
	node := fsys.node
	node.Go(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		spans, err := tree.Spans(ctx, node, v, first, last-first)
		if err == nil {
			err = node.PrefetchSpans(ctx, spans)
		}
		if err != nil {
			fsys.log.Debug("read-ahead failed", "err", err)
		}
	})
}

func (f *fileNode) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	if st := f.state(fh); st != nil {
		return st.publish(ctx)
	}
	return 0
}

// Fsync uploads and publishes the file's changes, then makes every
// namespace change this node made durable too (its create, say), as
// fsync(2) of a file on a local disk does for the file's metadata, and
// returns once every live peer has applied them: after fsync, a program
// on any peer that opens the file reads what was synced (the barrier,
// chunknet.Node.SyncPeers).
func (f *fileNode) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	if st := f.state(fh); st != nil {
		if errno := st.publish(ctx); errno != 0 {
			return errno
		}
	}
	if err := f.fsys.node.SyncPeers(ctx); err != nil {
		return f.fsys.toErrno("fsync", err)
	}
	return 0
}

// Release publishes what was written after the last flush, when the last
// handle that may write goes: the pages of a shared mapping that the
// kernel writes back at munmap, after close(2) of the descriptor that made
// the mapping. Nothing waits for the answer; a publication that fails is
// kept in the pending journal and retried.
//
// The kernel sends RELEASE after close(2) has returned, so it may arrive
// together with the next open of the file: the count and the publication
// are one step under mu, or a save by open(O_TRUNC), write, close would
// publish the next open's truncation, an empty file, before its write.
func (f *fileNode) Release(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	h, ok := fh.(*handle)
	if !ok || h.st == nil {
		return 0
	}
	if h.writable {
		h.st.mu.Lock()
		h.st.writers--
		if h.st.writers == 0 {
			h.st.publishLocked(context.WithoutCancel(ctx))
		}
		h.st.mu.Unlock()
	}
	f.fsys.closeState(h.st)
	return 0
}

func (f *fileNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	ino, errno := f.fsys.getInode(f.id)
	if errno != 0 {
		return errno
	}
	f.fsys.attrOf(f.EmbeddedInode(), &ino, &out.Attr)
	return 0
}

var _ = (fs.NodeAllocater)((*fileNode)(nil))

// Allocate implements fallocate for modes 0 (extend with zeros) and
// FALLOC_FL_KEEP_SIZE (nothing to reserve: chunks are stored when
// written); other modes are ENOTSUP.
func (f *fileNode) Allocate(ctx context.Context, fh fs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	const keepSize = 1 // FALLOC_FL_KEEP_SIZE
	switch mode {
	case keepSize:
		return 0
	case 0:
	default:
		return syscall.EOPNOTSUPP
	}
	if off+size < off || off+size > tree.MaxFileSize {
		return syscall.EFBIG
	}
	st := f.state(fh)
	if st == nil {
		return syscall.EBADF
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.loaded {
		if errno := st.refresh(); errno != 0 {
			return errno
		}
	}
	c := st.changes()
	if end := off + size; end > c.size {
		if err := c.truncate(ctx, end); err != nil {
			return f.fsys.toErrno("fallocate", err)
		}
		st.mtime = time.Now().UnixNano()
	}
	return 0
}

func (f *fileNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if index.IsConflictID(f.id) {
		return syscall.EROFS
	}
	// The state stays while this change is made (it may have no handle).
	st := f.fsys.openState(f.id)
	defer f.fsys.closeState(st)
	if size, ok := in.GetSize(); ok {
		if size > tree.MaxFileSize {
			return syscall.EFBIG // as ext4 above 16 TiB
		}
		st.mu.Lock()
		errno := st.refreshIfIdle()
		if errno == 0 {
			if err := st.changes().truncate(ctx, size); err != nil {
				errno = f.fsys.toErrno("truncate", err)
			}
			st.mtime = time.Now().UnixNano()
		}
		st.mu.Unlock()
		if errno != 0 {
			return errno
		}
		// A truncate is published at once, like any metadata change.
		if errno := st.publish(ctx); errno != 0 {
			return errno
		}
	}
	return f.fsys.setattr(ctx, f.id, st, in, out)
}

// refreshIfIdle loads the newest version when nothing local is pending.
func (f *fileState) refreshIfIdle() syscall.Errno {
	if f.c == nil {
		return f.refresh()
	}
	return 0
}
