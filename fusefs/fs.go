package fusefs

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/oashare/oashare/chunknet"
	"github.com/oashare/oashare/chunknet/namespace"
	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/index"
)

// Options configure a mount.
type Options struct {
	Node   *chunknet.Node
	Logger *slog.Logger // nil = slog.Default()
	// FsName is the mount's source in /proc/mounts; oashare puts the data
	// directory there so that tools find the node that serves a mount.
	FsName string
	// AllowOther lets users other than the one who mounted use the
	// folder (needs root, or user_allow_other in /etc/fuse.conf). The
	// kernel checks permissions against each file's owner and mode either
	// way (default_permissions).
	AllowOther bool
	// CacheTimeout bounds how long the kernel trusts names and attributes
	// without asking; a remote change is visible after at most this long.
	// 0 = 1s.
	CacheTimeout time.Duration
	Debug        bool
	// NoXattrs turns extended attributes off: the kernel then answers
	// ENOTSUP itself and stops asking. With them on, it asks once per
	// file listed by ls -l (security.selinux) and once per write
	// (security.capability): one more request each.
	NoXattrs bool
}

// FS is the state shared by every node of one mount.
type FS struct {
	node *chunknet.Node
	db   *index.DB
	log  *slog.Logger
	uid  uint32
	gid  uint32

	started int64 // mount time: the root's times until it is first changed

	// ns makes and publishes the namespace changes (create, remove,
	// rename, attributes, new versions).
	ns *namespace.Namespace

	statMu    sync.Mutex
	statAt    time.Time
	statLast  chunknet.ClusterStat
	inodesAt  time.Time
	inodeLast int64

	liveMu sync.Mutex
	live   map[uint64]*fs.Inode // inodes the kernel knows (notify.go)
	notes  chan *index.Record   // remote records to turn into invalidations
	queued atomic.Uint64        // records queued in notes, ever
	noted  atomic.Uint64        // records whose invalidations are sent, ever

	filesMu     sync.Mutex
	files       map[uint64]*fileState // files in use or with changes to publish (filestate.go)
	pendingKick chan struct{}         // wakes pendingLoop

	counters Counters
}

// Counters count what programs did through the mount since it started.
type Counters struct {
	BytesRead, BytesWritten atomic.Int64
	// Unavailable counts operations that failed with EIO because no live
	// peer served a chunk they needed (chunknet.ErrUnavailable).
	Unavailable atomic.Int64
}

// Counters returns the mount's counters.
func (fsys *FS) Counters() *Counters { return &fsys.counters }

// KernelOptions are the mount options oashare gives the kernel: request
// sizes, read-ahead, cache lifetimes and permission checks. They are
// exported so that a plain loopback mount with exactly the same options
// can serve as the FUSE ceiling in benchmarks (scripts/loopback).
func KernelOptions(name, fsName string, cacheTimeout time.Duration, allowOther bool) *fs.Options {
	to := cacheTimeout
	return &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:       fsName,
			Name:         name,
			MaxWrite:     1 << 20,
			MaxReadAhead: readAheadKiB << 10,
			AllowOther:   allowOther,
			// The kernel checks access against owner and mode, as on a
			// local disk.
			Options: []string{"default_permissions"},
			// O_TRUNC comes with the open instead of as a separate
			// truncate: a file saved with open(O_TRUNC), write, close
			// goes out as one new version, and other peers never see
			// it empty in between.
			ExtraCapabilities: fuse.CAP_ATOMIC_O_TRUNC,
		},
		EntryTimeout:    &to,
		AttrTimeout:     &to,
		NegativeTimeout: &to,
		// Mode bits are shown as they are: a file made with mode 0 is
		// 0000, as on a local disk (go-fuse would show 0644).
		NullPermissions: true,
	}
}

// Mount mounts the shared namespace of opts.Node on dir and returns the
// running server; Unmount it to stop.
func Mount(dir string, opts Options) (*fuse.Server, error) {
	server, _, err := MountFS(dir, opts)
	return server, err
}

// MountFS is Mount, also returning the file system (for Versions and
// Restore).
func MountFS(dir string, opts Options) (*fuse.Server, *FS, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.CacheTimeout <= 0 {
		opts.CacheTimeout = time.Second
	}
	fsys := &FS{
		node: opts.Node,
		db:   opts.Node.DB(),
		log:  opts.Logger,
		uid:  uint32(os.Getuid()),
		gid:  uint32(os.Getgid()),

		started: time.Now().UnixNano(),
		live:    make(map[uint64]*fs.Inode),
		notes:   make(chan *index.Record, notifyQueue),

		files:       make(map[uint64]*fileState),
		pendingKick: make(chan struct{}, 1),
	}
	opts.Node.SetInUse(fsys.inUse)
	fsys.ns = namespace.New(opts.Node, fsys.uid, fsys.gid)
	if err := fsys.restorePending(); err != nil {
		return nil, nil, fmt.Errorf("reading the pending journal: %w", err)
	}

	root := &dirNode{node: node{fsys, index.RootID}}
	fopts := KernelOptions("oashare", opts.FsName, opts.CacheTimeout, opts.AllowOther)
	fopts.MountOptions.Debug = opts.Debug
	fopts.MountOptions.DisableXAttrs = opts.NoXattrs
	if opts.Debug {
		// Microsecond stamps: the request log then shows each request's
		// latency, from its rx line to its tx line.
		fopts.MountOptions.Logger = log.New(os.Stderr, "fuse: ", log.Ldate|log.Lmicroseconds)
	}
	fopts.RootStableAttr = &fs.StableAttr{Ino: index.RootID, Mode: syscall.S_IFDIR}
	// The kernel knows a file by its inode ID (index IDs are never
	// reused), whichever go-fuse node stands for it: a notification sent
	// through any node of the file reaches the kernel's inode. With node
	// IDs of go-fuse's own, a node made by a lookup that lost to one the
	// kernel already had would carry an ID the kernel never saw, and
	// invalidations sent through it would be lost (a peer would show a
	// change only when its attribute cache timed out).
	fopts.ExternalNodeID = true
	fopts.UID = fsys.uid
	fopts.GID = fsys.gid
	server, err := fs.Mount(dir, root, fopts)
	if err != nil {
		return nil, nil, err
	}
	if err := SetReadAhead(dir); err != nil {
		opts.Logger.Debug("kernel read-ahead left at its default", "err", err)
	}
	fsys.track(root.EmbeddedInode())
	opts.Node.Go(fsys.notifyLoop)
	opts.Node.Go(fsys.pendingLoop)
	fsys.db.SetOnApply(fsys.onRemote)
	opts.Node.SetVisibleHook(fsys.notified)
	return server, fsys, nil
}

// toErrno is the one place errors cross into FUSE: it logs the detail and
// returns the errno a program sees.
func (fsys *FS) toErrno(op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	switch {
	case errors.As(err, &errno):
		return errno
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, os.ErrNotExist):
		return syscall.ENOENT
	}
	for _, m := range nsErrnos {
		if errors.Is(err, m.err) {
			return m.errno // what the program asked for cannot be done: not worth a log line
		}
	}
	if errors.Is(err, chunknet.ErrUnavailable) {
		fsys.counters.Unavailable.Add(1)
	}
	fsys.log.Error(op+" failed", "err", err)
	return syscall.EIO
}

// nsErrnos are the errnos of the namespace's refusals.
var nsErrnos = []struct {
	err   error
	errno syscall.Errno
}{
	{namespace.ErrNotFound, syscall.ENOENT},
	{namespace.ErrExists, syscall.EEXIST},
	{namespace.ErrNotDir, syscall.ENOTDIR},
	{namespace.ErrIsDir, syscall.EISDIR},
	{namespace.ErrNotEmpty, syscall.ENOTEMPTY},
	{namespace.ErrReadOnly, syscall.EROFS},
	{namespace.ErrMoveCopy, syscall.EXDEV},
	{namespace.ErrBadName, syscall.EINVAL},
	{namespace.ErrLongName, syscall.ENAMETOOLONG},
	{namespace.ErrLinkDir, syscall.EPERM},
	{namespace.ErrNoXattr, syscall.ENODATA},
	{namespace.ErrXattrSpace, syscall.ENOSPC},
	{namespace.ErrXattrRange, syscall.ERANGE},
}

func typeMode(t index.EntryType) uint32 {
	switch t {
	case index.TypeDir:
		return syscall.S_IFDIR
	case index.TypeSymlink:
		return syscall.S_IFLNK
	case index.TypeFifo:
		return syscall.S_IFIFO
	case index.TypeSocket:
		return syscall.S_IFSOCK
	case index.TypeCharDev:
		return syscall.S_IFCHR
	case index.TypeBlkDev:
		return syscall.S_IFBLK
	}
	return syscall.S_IFREG
}

// modeType maps the file type bits of a mode to an entry type; ok is false
// for types oashare does not store.
func modeType(mode uint32) (index.EntryType, bool) {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG, 0:
		return index.TypeFile, true
	case syscall.S_IFDIR:
		return index.TypeDir, true
	case syscall.S_IFLNK:
		return index.TypeSymlink, true
	case syscall.S_IFIFO:
		return index.TypeFifo, true
	case syscall.S_IFSOCK:
		return index.TypeSocket, true
	case syscall.S_IFCHR:
		return index.TypeCharDev, true
	case syscall.S_IFBLK:
		return index.TypeBlkDev, true
	}
	return 0, false
}

// owner returns the uid and gid of the process making a FUSE request.
func (fsys *FS) owner(ctx context.Context) (uint32, uint32) {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Uid, c.Gid
	}
	return fsys.uid, fsys.gid
}

func nsToTime(ns int64) (uint64, uint32) {
	if ns < 0 {
		return 0, 0
	}
	return uint64(ns / 1e9), uint32(ns % 1e9)
}

// fillAttr fills out from an inode record; size overrides the record's
// size when the file has unpublished local changes.
func (fsys *FS) fillAttr(ino *index.Inode, size uint64, mtimeNs int64, out *fuse.Attr) {
	if ino.ID == index.RootID && mtimeNs == 0 {
		mtimeNs = fsys.started
	}
	out.Ino = ino.ID
	out.Mode = typeMode(ino.Type) | (ino.Mode & 0o7777)
	out.Size = size
	out.Blocks = (size + 511) / 512
	out.Blksize = 128 << 10
	out.Nlink = 1
	if ino.Type == index.TypeDir {
		out.Nlink = 2
		out.Size = 4096
		out.Blocks = 8
	}
	if ino.Type == index.TypeSymlink {
		out.Size = uint64(len(ino.Target))
	}
	out.Mtime, out.Mtimensec = nsToTime(mtimeNs)
	out.Atime, out.Atimensec = out.Mtime, out.Mtimensec
	if ino.AtimeNs != 0 {
		out.Atime, out.Atimensec = nsToTime(ino.AtimeNs)
	}
	out.Ctime, out.Ctimensec = nsToTime(max(ino.CtimeNs, mtimeNs))
	out.Uid, out.Gid = ino.Uid, ino.Gid
	out.Rdev = ino.Rdev
	if ino.ID == index.RootID && ino.Version == 0 {
		// The root nobody has changed yet belongs to whoever mounted it.
		out.Uid, out.Gid = fsys.uid, fsys.gid
	}
}

// newNode makes the go-fuse node for an inode record.
func (fsys *FS) newNode(ctx context.Context, parent *fs.Inode, ino *index.Inode) *fs.Inode {
	var emb fs.InodeEmbedder
	switch ino.Type {
	case index.TypeDir:
		emb = &dirNode{node: node{fsys, ino.ID}}
	case index.TypeSymlink:
		emb = &symlinkNode{node: node{fsys, ino.ID}}
	case index.TypeFile:
		emb = &fileNode{node: node{fsys, ino.ID}}
	default:
		emb = &specialNode{node: node{fsys, ino.ID}}
	}
	n := parent.NewInode(ctx, emb, fs.StableAttr{Mode: typeMode(ino.Type), Ino: ino.ID})
	fsys.track(n)
	return n
}

// getInode reads an inode record; a missing one is ENOENT.
func (fsys *FS) getInode(id uint64) (index.Inode, syscall.Errno) {
	ino, ok, err := fsys.db.GetInode(id)
	if err != nil {
		return ino, fsys.toErrno("getinode", err)
	}
	if !ok {
		return ino, syscall.ENOENT
	}
	return ino, 0
}

func versionOf(ino *index.Inode) tree.Version {
	return tree.Version{Size: ino.Size, Root: ino.Root, Depth: ino.Depth}
}

// clusterStat returns the network's storage, asked at most once a second
// (df and file managers call statfs often).
func (fsys *FS) clusterStat(ctx context.Context) chunknet.ClusterStat {
	fsys.statMu.Lock()
	defer fsys.statMu.Unlock()
	if time.Since(fsys.statAt) > time.Second {
		fsys.statLast = fsys.node.ClusterStat(ctx)
		fsys.statAt = time.Now()
	}
	return fsys.statLast
}

// inodeCount is CountInodes, read again at most once a second.
func (fsys *FS) inodeCount() int64 {
	fsys.statMu.Lock()
	defer fsys.statMu.Unlock()
	if time.Since(fsys.inodesAt) > time.Second {
		if n, err := fsys.db.CountInodes(); err == nil {
			fsys.inodeLast, fsys.inodesAt = n, time.Now()
		}
	}
	return fsys.inodeLast
}
