package fusefs

import (
	"context"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/oashare/oashare/index"
)

// dirNode is a directory. Its children come lazily from the index: Lookup
// and Readdir read Pebble, so listing a directory never touches the
// network.
type dirNode struct {
	fs.Inode
	fsys *FS
	id   uint64
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

// attrOf fills out for a node, taking unpublished local writes into account.
func (fsys *FS) attrOf(n *fs.Inode, ino *index.Inode, out *fuse.Attr) {
	f, ok := n.Operations().(*fileNode)
	if !ok {
		fsys.fillAttr(ino, ino.Size, ino.MtimeNs, out)
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
	return 0
}

func (d *dirNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return d.fsys.setattr(ctx, d.id, nil, in, out)
}

// setattr applies mode and time changes to an inode record and publishes
// it. Size changes of files are handled by fileNode before calling this.
func (fsys *FS) setattr(ctx context.Context, id uint64, f *fileState, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if index.IsConflictID(id) {
		return syscall.EROFS // conflict copies are read-only
	}
	// Lock order, everywhere: a file's mu, then nsMu (publish does the
	// same).
	if f != nil {
		f.mu.Lock()
		defer f.mu.Unlock()
	}
	if f != nil && f.c != nil {
		return f.foldAttrs(in, out)
	}
	fsys.nsMu.Lock()
	defer fsys.nsMu.Unlock()
	ino, errno := fsys.getInode(id)
	if errno != 0 {
		return errno
	}
	// The change is made on the version just read: it supersedes it.
	ino.BaseVersion, ino.BaseOrigin = ino.Version, ino.Origin
	ino.Supersedes = nil
	changed := false
	if m, ok := in.GetMode(); ok {
		ino.Mode = m & 0o7777
		changed = true
	}
	if mt, ok := in.GetMTime(); ok {
		ino.MtimeNs = mt.UnixNano()
		changed = true
		if f != nil {
			f.mtime = ino.MtimeNs
		}
	}
	if at, ok := in.GetATime(); ok {
		ino.AtimeNs = at.UnixNano()
		changed = true
	}
	if uid, ok := in.GetUID(); ok {
		ino.Uid = uid
		changed = true
	}
	if gid, ok := in.GetGID(); ok {
		ino.Gid = gid
		changed = true
	}
	if changed {
		ino.CtimeNs = time.Now().UnixNano()
		if id == index.RootID && ino.Version == 0 {
			ino.ID, ino.Type = index.RootID, index.TypeDir
			if _, ok := in.GetUID(); !ok {
				ino.Uid = fsys.uid
			}
			if _, ok := in.GetGID(); !ok {
				ino.Gid = fsys.gid
			}
		}
		if _, err := fsys.node.PublishLazy(ctx, []index.Op{{Inode: &ino}}); err != nil {
			return fsys.toErrno("setattr", err)
		}
	}
	fsys.fillAttr(&ino, ino.Size, ino.MtimeNs, &out.Attr)
	return 0
}

// foldAttrs records attribute changes to a file with unpublished writes,
// to be published with them (see pendingAttrs). Called with f.mu held.
func (f *fileState) foldAttrs(in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	ino, errno := f.fsys.getInode(f.id)
	if errno != 0 {
		return errno
	}
	p := &f.attrs
	if m, ok := in.GetMode(); ok {
		p.setMode, p.mode = true, m&0o7777
	}
	if uid, ok := in.GetUID(); ok {
		p.setUID, p.uid = true, uid
	}
	if gid, ok := in.GetGID(); ok {
		p.setGID, p.gid = true, gid
	}
	if at, ok := in.GetATime(); ok {
		p.setAtime, p.atime = true, at.UnixNano()
	}
	if mt, ok := in.GetMTime(); ok {
		f.mtime = mt.UnixNano()
		p.setMtime = true
	}
	p.set = true
	p.ctime = time.Now().UnixNano()
	p.apply(&ino)
	f.fsys.fillAttr(&ino, f.c.size, f.mtime, &out.Attr)
	return 0
}

// create publishes a new entry named name in d and returns its node.
func (d *dirNode) create(ctx context.Context, name string, ino index.Inode, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := checkName(name); errno != 0 {
		return nil, errno
	}
	fsys := d.fsys
	fsys.nsMu.Lock()
	defer fsys.nsMu.Unlock()
	old, ok, err := fsys.db.LookupDirent(d.id, name)
	if err != nil {
		return nil, fsys.toErrno("create", err)
	} else if ok && (old.Type == index.TypeDir || ino.Type == index.TypeDir) {
		return nil, syscall.EEXIST
	}
	now := time.Now().UnixNano()
	ino.ID = fsys.db.NewID()
	ino.MtimeNs, ino.CtimeNs = now, now
	ino.Uid, ino.Gid = fsys.owner(ctx)
	de := index.Dirent{Parent: d.id, Name: name, Child: ino.ID, Type: ino.Type}
	if errno := fsys.setBase(&de, old, ok); errno != 0 {
		return nil, errno
	}
	ops, errno := fsys.touchDirs([]index.Op{{Inode: &ino}, {Dirent: &de}}, now, d.id)
	if errno != 0 {
		return nil, errno
	}
	if _, err := fsys.node.PublishSoon(ctx, ops); err != nil {
		return nil, fsys.toErrno("create", err)
	}
	child := fsys.newNode(ctx, d.EmbeddedInode(), &ino)
	fsys.fillAttr(&ino, 0, now, &out.Attr)
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

// remove publishes a tombstone for name after checking its type.
func (d *dirNode) remove(ctx context.Context, name string, wantDir bool) syscall.Errno {
	fsys := d.fsys
	fsys.nsMu.Lock()
	defer fsys.nsMu.Unlock()
	de, ok, err := fsys.db.LookupDirent(d.id, name)
	if err != nil {
		return fsys.toErrno("remove", err)
	}
	if !ok {
		return syscall.ENOENT
	}
	if index.IsConflictID(de.Child) {
		if wantDir {
			return syscall.ENOTDIR
		}
		op, errno := fsys.resolveOp(de.Child)
		if errno != 0 {
			return errno
		}
		if _, err := fsys.node.PublishLazy(ctx, []index.Op{op}); err != nil {
			return fsys.toErrno("resolve", err)
		}
		return 0
	}
	isDir := de.Type == index.TypeDir
	switch {
	case wantDir && !isDir:
		return syscall.ENOTDIR
	case !wantDir && isDir:
		return syscall.EISDIR
	}
	if isDir {
		kids, err := fsys.db.ReadDir(de.Child)
		if err != nil {
			return fsys.toErrno("rmdir", err)
		}
		if len(kids) > 0 {
			return syscall.ENOTEMPTY
		}
	}
	// An entry conflict copy is deleted by a tombstone of its own entry
	// version, under the original name: the winner stays.
	if head, ok, errno := fsys.entryCopy(d.id, name, de); errno != 0 {
		return errno
	} else if ok {
		de = head
	}
	// The tombstone names the version being deleted: an update this node
	// has not seen keeps the entry (see index's doc).
	tomb, errno := fsys.tombstone(de, false)
	if errno != 0 {
		return errno
	}
	ops, errno := fsys.touchDirs([]index.Op{{Dirent: &tomb}}, time.Now().UnixNano(), d.id)
	if errno != 0 {
		return errno
	}
	if _, err := fsys.node.PublishLazy(ctx, ops); err != nil {
		return fsys.toErrno("remove", err)
	}
	fsys.markUnlinked(tomb.Child)
	return 0
}

// resolveOp returns the op that resolves conflict copy cid: a version of
// the original inode with the winner's content that supersedes both the
// winner and the copy's version, so the copy disappears everywhere.
func (fsys *FS) resolveOp(cid uint64) (index.Op, syscall.Errno) {
	id, ref, ok, err := fsys.db.ConflictOf(cid)
	if err != nil {
		return index.Op{}, fsys.toErrno("resolve", err)
	}
	if !ok {
		return index.Op{}, syscall.ENOENT
	}
	w, errno := fsys.getInode(id)
	if errno != 0 {
		return index.Op{}, errno
	}
	w.BaseVersion, w.BaseOrigin = w.Version, w.Origin
	w.Supersedes = []index.VersionRef{ref}
	return index.Op{Inode: &w}, 0
}

// entryCopy returns, if the entry de shown as name in parent is an entry
// conflict copy, the entry version it stands for (named by the original
// name).
func (fsys *FS) entryCopy(parent uint64, name string, de index.Dirent) (index.Dirent, bool, syscall.Errno) {
	if index.IsConflictID(de.Child) || !strings.Contains(name, ".conflict-") {
		return index.Dirent{}, false, 0
	}
	head, ok, err := fsys.db.ConflictEntry(parent, name)
	if err != nil {
		return index.Dirent{}, false, fsys.toErrno("lookup", err)
	}
	return head, ok, 0
}

// tombstone returns the op deleting entry version de (as stored or as
// shown): it names de as its base and the child version this node sees.
func (fsys *FS) tombstone(de index.Dirent, moved bool) (index.Dirent, syscall.Errno) {
	child, errno := fsys.getInode(de.Child)
	if errno != 0 {
		return index.Dirent{}, errno
	}
	return index.Dirent{Parent: de.Parent, Name: de.Name, Child: de.Child, Type: de.Type,
		Deleted: true, Moved: moved, ChildVersion: child.Version, ChildOrigin: child.Origin,
		BaseChild: de.Child, BaseVersion: de.Version, BaseOrigin: de.Origin}, 0
}

// setBase makes new entry de name the entry it replaces: seen, the entry
// LookupDirent showed under its name (if ok), unless that is a conflict
// copy (it stands for another name's version); otherwise the newest
// version stored under the name, normally a tombstone, if any.
func (fsys *FS) setBase(de *index.Dirent, seen index.Dirent, ok bool) syscall.Errno {
	if ok && !index.IsConflictID(seen.Child) {
		_, isCopy, errno := fsys.entryCopy(de.Parent, de.Name, seen)
		if errno != 0 {
			return errno
		}
		if !isCopy {
			de.BaseChild, de.BaseVersion, de.BaseOrigin = seen.Child, seen.Version, seen.Origin
			return 0
		}
	}
	st, ok, err := fsys.db.StoredDirent(de.Parent, de.Name)
	if err != nil {
		return fsys.toErrno("lookup", err)
	}
	if ok {
		de.BaseChild, de.BaseVersion, de.BaseOrigin = st.Child, st.Version, st.Origin
	}
	return 0
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
	fsys.nsMu.Lock()
	defer fsys.nsMu.Unlock()
	src, ok, err := fsys.db.LookupDirent(d.id, name)
	if err != nil {
		return fsys.toErrno("rename", err)
	}
	if !ok {
		return syscall.ENOENT
	}
	if index.IsConflictID(src.Child) {
		// A conflict copy has no record of its own to move: EXDEV makes
		// mv copy it to a new file and unlink it, which resolves it.
		return syscall.EXDEV
	}
	// An entry conflict copy is moved away from the entry version it
	// stands for, under the original name.
	srcHead, srcIsCopy, errno := fsys.entryCopy(d.id, name, src)
	if errno != 0 {
		return errno
	}
	if !srcIsCopy {
		srcHead = src
	}
	if src.Type == index.TypeDir {
		// A directory must not move below itself.
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
	dst, exists, err := fsys.db.LookupDirent(np.id, newName)
	if err != nil {
		return fsys.toErrno("rename", err)
	}
	if exists {
		if dst.Child == src.Child {
			return 0
		}
		if flags&renameNoReplace != 0 {
			return syscall.EEXIST
		}
		switch {
		case src.Type == index.TypeDir && dst.Type != index.TypeDir:
			return syscall.ENOTDIR
		case src.Type != index.TypeDir && dst.Type == index.TypeDir:
			return syscall.EISDIR
		case dst.Type == index.TypeDir:
			kids, err := fsys.db.ReadDir(dst.Child)
			if err != nil {
				return fsys.toErrno("rename", err)
			}
			if len(kids) > 0 {
				return syscall.ENOTEMPTY
			}
		}
	}
	// The Moved tombstone is never shadowed: the file lives on under
	// newName.
	gone, errno := fsys.tombstone(srcHead, true)
	if errno != 0 {
		return errno
	}
	moved := index.Dirent{Parent: np.id, Name: newName, Child: src.Child, Type: src.Type}
	if errno := fsys.setBase(&moved, dst, exists); errno != 0 {
		return errno
	}
	var ops []index.Op
	if gone.Parent != moved.Parent || gone.Name != moved.Name {
		ops = append(ops, index.Op{Dirent: &gone})
	} // else a copy moved onto its own name: it replaces the entry shown there
	ops = append(ops, index.Op{Dirent: &moved})
	if exists && index.IsConflictID(dst.Child) {
		// Replacing a conflict copy resolves it; otherwise the new entry
		// would only hide it.
		op, errno := fsys.resolveOp(dst.Child)
		if errno != 0 {
			return errno
		}
		ops = append(ops, op)
	}
	if exists {
		// Replacing an entry conflict copy resolves it too.
		head, ok, errno := fsys.entryCopy(np.id, newName, dst)
		if errno != 0 {
			return errno
		}
		if ok && (head.Parent != gone.Parent || head.Name != gone.Name) {
			tomb, errno := fsys.tombstone(head, false)
			if errno != 0 {
				return errno
			}
			ops = append(ops, index.Op{Dirent: &tomb})
		}
	}
	ops, errno = fsys.touchDirs(ops, time.Now().UnixNano(), d.id, np.id)
	if errno != 0 {
		return errno
	}
	if _, err := fsys.node.PublishLazy(ctx, ops); err != nil {
		return fsys.toErrno("rename", err)
	}
	if exists && !index.IsConflictID(dst.Child) {
		fsys.markUnlinked(dst.Child) // replaced: nobody reaches it any more
	}
	return 0
}

// touchDirs appends to ops a new version of each directory in dirs (once
// each) with mtime and ctime set to now: POSIX times for a directory whose
// entries changed. Being a new version of the directory, it also keeps the
// directory alive against a delete that did not see the change (an rmdir
// racing a create inside). Called with nsMu held.
func (fsys *FS) touchDirs(ops []index.Op, now int64, dirs ...uint64) ([]index.Op, syscall.Errno) {
	for i, id := range dirs {
		if slices.Contains(dirs[:i], id) {
			continue
		}
		ino, errno := fsys.getInode(id)
		if errno != 0 {
			return nil, errno
		}
		ino.BaseVersion, ino.BaseOrigin = ino.Version, ino.Origin
		ino.Supersedes = nil
		ino.MtimeNs, ino.CtimeNs = now, now
		if id == index.RootID && ino.Version == 0 {
			ino.ID, ino.Type = index.RootID, index.TypeDir
			ino.Uid, ino.Gid = fsys.uid, fsys.gid
		}
		ops = append(ops, index.Op{Inode: &ino})
	}
	return ops, 0
}

func (d *dirNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	st := d.fsys.clusterStat(ctx)
	// Every byte written takes `replicas` bytes of the network's disks, so
	// the network holds its disks' sum divided by the copies kept.
	copies := uint64(max(1, min(d.fsys.node.Replicas(), st.Nodes)))
	const bsize = 4096
	out.Bsize = bsize
	out.Frsize = bsize
	out.Blocks = st.DiskTotal / copies / bsize
	out.Bfree = st.DiskFree / copies / bsize
	out.Bavail = out.Bfree
	// Inodes are index entries: as many as the disks hold.
	out.Files = st.DiskTotal / 512
	out.Ffree = st.DiskFree / 512
	out.NameLen = index.MaxNameLen
	return 0
}

var _ = (fs.NodeLinker)((*dirNode)(nil))

// Link refuses hard links cleanly: a file has one name in the shared
// namespace.
func (d *dirNode) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

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
// durable: creates, renames and deletes are published lazily (see
// chunknet.Node.PublishLazy), as a local disk keeps them in its journal
// until a sync. Like fsync of a file, it returns once every live peer has
// applied them (chunknet.Node.SyncPeers).
func (d *dirNode) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	if err := d.fsys.node.SyncPeers(ctx); err != nil {
		return d.fsys.toErrno("fsync", err)
	}
	return 0
}
