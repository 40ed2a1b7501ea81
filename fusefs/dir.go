package fusefs

import (
	"context"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/oashare/oashare/chunknet/namespace"
	"github.com/oashare/oashare/index"
)

// dirNode is a directory. Its children come lazily from the index: Lookup
// and Readdir read Pebble, so listing a directory never touches the
// network.
type dirNode struct {
	fs.Inode
	node
}

var (
	_ = (fs.NodeLookuper)((*dirNode)(nil))
	_ = (fs.NodeReaddirer)((*dirNode)(nil))
	_ = (fs.NodeGetattrer)((*dirNode)(nil))
	_ = (fs.NodeSetattrer)((*dirNode)(nil))
	_ = (fs.NodeMkdirer)((*dirNode)(nil))
	_ = (fs.NodeCreater)((*dirNode)(nil))
	_ = (fs.NodeUnlinker)((*dirNode)(nil))
	_ = (fs.NodeRmdirer)((*dirNode)(nil))
	_ = (fs.NodeRenamer)((*dirNode)(nil))
	_ = (fs.NodeSymlinker)((*dirNode)(nil))
	_ = (fs.NodeStatfser)((*dirNode)(nil))
)

func checkName(name string) syscall.Errno {
	if len(name) > index.MaxNameLen {
		return syscall.ENAMETOOLONG
	}
	if name == "" || name == "." || name == ".." {
		return syscall.EINVAL
	}
	return 0
}

func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := checkName(name); errno != 0 {
		return nil, errno
	}
	de, ok, err := d.fsys.db.LookupDirent(d.id, name)
	if err != nil {
		return nil, d.fsys.toErrno("lookup", err)
	}
	if !ok {
		return nil, syscall.ENOENT
	}
	ino, errno := d.fsys.getInode(de.Child)
	if errno != 0 {
		return nil, errno
	}
	// The kernel looks a known name up again when its entry times out:
	// the node it has stays the file's node.
	child := d.GetChild(name)
	if child == nil || child.StableAttr().Ino != ino.ID || child.StableAttr().Mode != typeMode(ino.Type) {
		child = d.fsys.newNode(ctx, d.EmbeddedInode(), &ino)
	}
	d.fsys.attrOf(child, &ino, &out.Attr)
	return child, 0
}

// attrOf fills out for a node, taking unpublished local writes and hard
// links into account.
func (fsys *FS) attrOf(n *fs.Inode, ino *index.Inode, out *fuse.Attr) {
	f, ok := n.Operations().(*fileNode)
	if !ok {
		fsys.fillAttr(ino, ino.Size, ino.MtimeNs, out)
		fsys.fillCounts(ino, out)
		return
	}
	size, mtime, unlinked := ino.Size, ino.MtimeNs, false
	if st := fsys.existingState(f.id); st != nil {
		size, mtime, unlinked = st.localAttr(ino)
	}
	fsys.fillAttr(ino, size, mtime, out)
	f.localAtime(out)
	if _, parent := n.Parent(); parent == nil || unlinked {
		out.Nlink = 0 // unlinked, still open
		return
	}
	fsys.countLinks(ino.ID, out)
}

// fillCounts sets out.Nlink: a directory's subdirectories, anything
// else's names.
func (fsys *FS) fillCounts(ino *index.Inode, out *fuse.Attr) {
	if ino.Type == index.TypeDir {
		fsys.countSubdirs(ino.ID, out)
	} else {
		fsys.countLinks(ino.ID, out)
	}
}

// countSubdirs sets a directory's out.Nlink as a local disk does: 2 (its
// name and its ".") plus one per subdirectory (their "..").
func (fsys *FS) countSubdirs(id uint64, out *fuse.Attr) {
	if n, err := fsys.db.Subdirs(id); err == nil {
		out.Nlink = uint32(min(2+n, 1<<31))
	}
}

// countLinks sets out.Nlink to the number of names that show inode id
// (at least 1: this one, as fillAttr set; index.LinkCount leaves out the
// rare name shown by a shadowed tombstone).
func (fsys *FS) countLinks(id uint64, out *fuse.Attr) {
	if n, err := fsys.db.LinkCount(id); err == nil && n > 1 {
		out.Nlink = uint32(min(n, 1<<31))
	}
}

func (d *dirNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	des, err := d.fsys.db.ReadDir(d.id)
	if err != nil {
		return nil, d.fsys.toErrno("readdir", err)
	}
	parent := d.id
	if _, p := d.Parent(); p != nil {
		parent = p.StableAttr().Ino
	}
	entries := make([]fuse.DirEntry, 0, len(des)+2)
	entries = append(entries,
		fuse.DirEntry{Name: ".", Ino: d.id, Mode: syscall.S_IFDIR},
		fuse.DirEntry{Name: "..", Ino: parent, Mode: syscall.S_IFDIR})
	for _, de := range des {
		entries = append(entries, fuse.DirEntry{Name: de.Name, Ino: de.Child, Mode: typeMode(de.Type)})
	}
	return fs.NewListDirStream(entries), 0
}

func (d *dirNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	ino, errno := d.fsys.getInode(d.id)
	if errno != 0 {
		return errno
	}
	d.fsys.fillAttr(&ino, ino.Size, ino.MtimeNs, &out.Attr)
	d.fsys.fillCounts(&ino, &out.Attr)
	return 0
}

func (d *dirNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return d.fsys.setattr(ctx, d.id, nil, in, out)
}

// setattr applies mode, owner and time changes to an inode (through the
// namespace), or folds them into a file's unpublished changes, to go out
// with them. Size changes of files are handled by fileNode before calling
// this.
func (fsys *FS) setattr(ctx context.Context, id uint64, f *fileState, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if index.IsConflictID(id) {
		return syscall.EROFS // conflict copies are read-only
	}
	// Lock order, everywhere: a file's mu, then the namespace's.
	if f != nil {
		f.mu.Lock()
		defer f.mu.Unlock()
	}
	if f != nil && f.c != nil {
		return f.foldAttrs(in, out)
	}
	var a namespace.Attrs
	if m, ok := in.GetMode(); ok {
		a.Mode = &m
	}
	if uid, ok := in.GetUID(); ok {
		a.Uid = &uid
	}
	if gid, ok := in.GetGID(); ok {
		a.Gid = &gid
	}
	if mt, ok := in.GetMTime(); ok {
		ns := mt.UnixNano()
		a.MtimeNs = &ns
	}
	if at, ok := in.GetATime(); ok {
		ns := at.UnixNano()
		a.AtimeNs = &ns
	}
	ino, err := fsys.ns.SetAttrs(id, a)
	if err != nil {
		return fsys.toErrno("setattr", err)
	}
	if f != nil && a.MtimeNs != nil {
		f.mtime = ino.MtimeNs
	}
	fsys.fillAttr(&ino, ino.Size, ino.MtimeNs, &out.Attr)
	fsys.fillCounts(&ino, &out.Attr)
	return 0
}

// foldAttrs records attribute changes to a file with unpublished writes,
// to be published with them in one version: `tar x` sets owner, mode and
// times on each file before closing it, and that costs one version, not
// four. This peer shows them at once. Called with f.mu held.
func (f *fileState) foldAttrs(in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	ino, errno := f.fsys.getInode(f.id)
	if errno != 0 {
		return errno
	}
	p := &f.attrs
	if m, ok := in.GetMode(); ok {
		p.SetMode, p.Mode = true, m&0o7777
	}
	if uid, ok := in.GetUID(); ok {
		p.SetUID, p.Uid = true, uid
	}
	if gid, ok := in.GetGID(); ok {
		p.SetGID, p.Gid = true, gid
	}
	if at, ok := in.GetATime(); ok {
		p.SetAtime, p.AtimeNs = true, at.UnixNano()
	}
	if mt, ok := in.GetMTime(); ok {
		f.mtime = mt.UnixNano()
		p.SetMtime = true
	}
	p.CtimeNs = time.Now().UnixNano()
	p.Apply(&ino)
	f.fsys.fillAttr(&ino, f.c.size, f.mtime, &out.Attr)
	f.fsys.countLinks(ino.ID, &out.Attr)
	return 0
}

// create publishes a new entry named name in d and returns its node.
func (d *dirNode) create(ctx context.Context, name string, ino index.Inode, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := checkName(name); errno != 0 {
		return nil, errno
	}
	ino.Uid, ino.Gid = d.fsys.owner(ctx)
	ino, err := d.fsys.ns.Create(d.id, name, ino)
	if err != nil {
		return nil, d.fsys.toErrno("create", err)
	}
	child := d.fsys.newNode(ctx, d.EmbeddedInode(), &ino)
	d.fsys.fillAttr(&ino, 0, ino.MtimeNs, &out.Attr)
	return child, 0
}

func (d *dirNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return d.create(ctx, name, index.Inode{Type: index.TypeDir, Mode: mode & 0o7777}, out)
}

func (d *dirNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	// The kernel may call Create for a name it believes absent (a stale
	// negative entry) that a peer has created since: then O_EXCL fails and
	// a plain O_CREAT opens the existing file, as on a local disk.
	if _, ok, err := d.fsys.db.LookupDirent(d.id, name); err != nil {
		return nil, nil, 0, d.fsys.toErrno("create", err)
	} else if ok {
		if flags&syscall.O_EXCL != 0 {
			return nil, nil, 0, syscall.EEXIST
		}
		child, errno := d.Lookup(ctx, name, out)
		if errno != 0 {
			return nil, nil, 0, errno
		}
		f, isFile := child.Operations().(*fileNode)
		if !isFile {
			return nil, nil, 0, syscall.EISDIR
		}
		fh, fuseFlags, errno := f.Open(ctx, flags)
		if errno != 0 {
			return nil, nil, 0, errno
		}
		return child, fh, fuseFlags, 0
	}
	child, errno := d.create(ctx, name, index.Inode{Type: index.TypeFile, Mode: mode & 0o7777}, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	f := child.Operations().(*fileNode)
	// The file is new: O_TRUNC has nothing to truncate and, as POSIX
	// says, must not touch its times.
	fh, fuseFlags, errno := f.Open(ctx, flags&^syscall.O_TRUNC)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	if h, ok := fh.(*handle); ok && h.writable {
		// A file just created and open for writing is pending until
		// close, even before its first write: owner, mode and times set
		// on it (tar x of an empty file) go out with the close.
		h.st.mu.Lock()
		h.st.changes()
		h.st.mu.Unlock()
	}
	return child, fh, fuseFlags, 0
}

func (d *dirNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if len(target) > index.MaxTargetLen {
		return nil, syscall.ENAMETOOLONG
	}
	return d.create(ctx, name, index.Inode{Type: index.TypeSymlink, Mode: 0o777, Target: target}, out)
}

// remove deletes the entry name (a tombstone, through the namespace).
func (d *dirNode) remove(ctx context.Context, name string, wantDir bool) syscall.Errno {
	child, err := d.fsys.ns.Remove(d.id, name, wantDir)
	if err != nil {
		return d.fsys.toErrno("remove", err)
	}
	d.fsys.unlinkedIfNameless(child)
	return 0
}

var _ = (fs.NodeTmpfiler)((*dirNode)(nil))

// Tmpfile makes a file with no name, open (open with O_TMPFILE): its
// writes go nowhere until linkat gives it a name (Link), after which they
// are published at close like any file's.
func (d *dirNode) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	ino := index.Inode{Type: index.TypeFile, Mode: mode & 0o7777}
	ino.Uid, ino.Gid = d.fsys.owner(ctx)
	ino, err := d.fsys.ns.CreateUnnamed(ino)
	if err != nil {
		return nil, nil, 0, d.fsys.toErrno("tmpfile", err)
	}
	child := d.NewInode(ctx, &fileNode{node: node{d.fsys, ino.ID}}, fs.StableAttr{Mode: typeMode(ino.Type), Ino: ino.ID})
	d.fsys.track(child)
	d.fsys.fillAttr(&ino, 0, ino.MtimeNs, &out.Attr)
	out.Nlink = 0
	f := child.Operations().(*fileNode)
	fh, fuseFlags, errno := f.Open(ctx, flags&^syscall.O_TRUNC)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	if h, ok := fh.(*handle); ok {
		h.st.mu.Lock()
		if h.writable {
			h.st.changes()
		}
		h.st.unlinked = true // no name yet: Link clears it
		h.st.mu.Unlock()
	}
	return child, fh, fuseFlags, 0
}

// Link makes name a further name of target (a hard link).
func (d *dirNode) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := checkName(name); errno != 0 {
		return nil, errno
	}
	id := target.EmbeddedInode().StableAttr().Ino
	ino, errno := d.fsys.getInode(id)
	if errno != 0 {
		return nil, errno
	}
	// The file's ctime moves: with its unpublished changes if it has
	// some (they are published together), else in the link's record.
	touch := true
	if st := d.fsys.existingState(id); st != nil {
		st.mu.Lock()
		if st.c != nil {
			st.attrs.CtimeNs, touch = time.Now().UnixNano(), false
		}
		st.mu.Unlock()
	}
	if err := d.fsys.ns.Link(d.id, name, ino, touch); err != nil {
		return nil, d.fsys.toErrno("link", err)
	}
	if touch {
		if cur, errno := d.fsys.getInode(id); errno == 0 {
			ino = cur
		}
	}
	d.fsys.markLinked(id) // a file of O_TMPFILE has a name now
	n := target.EmbeddedInode()
	d.AddChild(name, n, true)
	d.fsys.attrOf(n, &ino, &out.Attr)
	return n, 0
}

// unlinkedIfNameless marks file id unlinked (its pending changes are
// dropped) once no name shows it any more: deleting one of its hard
// links leaves it alive under the others.
func (fsys *FS) unlinkedIfNameless(id uint64) {
	if id == 0 {
		return
	}
	if names, err := fsys.db.Names(id); err == nil && len(names) > 0 {
		return
	}
	fsys.markUnlinked(id)
}

func (d *dirNode) Unlink(ctx context.Context, name string) syscall.Errno {
	return d.remove(ctx, name, false)
}

func (d *dirNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	return d.remove(ctx, name, true)
}

func (d *dirNode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if errno := checkName(newName); errno != 0 {
		return errno
	}
	const renameNoReplace = 1 // RENAME_NOREPLACE
	if flags&^renameNoReplace != 0 {
		return syscall.EINVAL // RENAME_EXCHANGE and RENAME_WHITEOUT are not supported
	}
	np, ok := newParent.(*dirNode)
	if !ok {
		return syscall.EXDEV
	}
	fsys := d.fsys
	src, ok, err := fsys.db.LookupDirent(d.id, name)
	if err != nil {
		return fsys.toErrno("rename", err)
	}
	if ok && src.Type == index.TypeDir {
		// A directory must not move below itself (the kernel checks it
		// too, by its own tree).
		for p := np.EmbeddedInode(); p != nil; {
			if p.StableAttr().Ino == src.Child {
				return syscall.EINVAL
			}
			_, parent := p.Parent()
			if parent == nil || p.StableAttr().Ino == index.RootID {
				break
			}
			p = parent
		}
	}
	replaced, err := fsys.ns.Rename(d.id, name, np.id, newName, flags&renameNoReplace != 0)
	if err != nil {
		return fsys.toErrno("rename", err)
	}
	fsys.unlinkedIfNameless(replaced) // nobody reaches it any more, unless by another link
	return 0
}

func (d *dirNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	st := d.fsys.clusterStat(ctx)
	// Every byte written takes `replicas` bytes of the network's disks, so
	// the share can grow by the live peers' free space divided by the
	// copies kept, and uses what the peers hold of it divided the same
	// way: not whole disks, whatever else is on them.
	copies := uint64(max(1, min(d.fsys.node.Replicas(), st.Nodes)))
	const bsize = 4096
	out.Bsize = bsize
	out.Frsize = bsize
	out.Bfree = st.DiskFree / copies / bsize
	out.Bavail = out.Bfree
	out.Blocks = out.Bfree + st.ChunkBytes/copies/bsize
	// Inodes: the files in the share, and room for a file per free block.
	used := uint64(max(d.fsys.inodeCount(), 0))
	out.Ffree = out.Bfree
	out.Files = used + out.Ffree
	out.NameLen = index.MaxNameLen
	return 0
}

var _ = (fs.NodeLinker)((*dirNode)(nil))

var _ = (fs.NodeMknoder)((*dirNode)(nil))

// Mknod makes FIFOs, sockets and device nodes as metadata-only entries (a
// regular file for S_IFREG).
func (d *dirNode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t, ok := modeType(mode)
	if !ok || t == index.TypeDir || t == index.TypeSymlink {
		return nil, syscall.EINVAL
	}
	return d.create(ctx, name, index.Inode{Type: t, Mode: mode & 0o7777, Rdev: dev}, out)
}

var _ = (fs.NodeFsyncer)((*dirNode)(nil))

// Fsync of a directory makes every namespace change this node made
// durable: creates, renames and deletes are published without waiting for
// the disk (chunknet.SyncAtOnce, SyncBatched), as a local disk keeps them
// in its journal until a sync. Like fsync of a file, it returns once every live peer has
// applied them (chunknet.Node.SyncPeers).
func (d *dirNode) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	if err := d.fsys.node.SyncPeers(ctx); err != nil {
		return d.fsys.toErrno("fsync", err)
	}
	return 0
}
