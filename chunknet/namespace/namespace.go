// Package namespace owns the rules of oashare's shared namespace: every
// change a program makes to names and metadata (create, remove, rename,
// attribute changes, a file's new version) becomes here the index ops
// that express it — which entry or version it replaces, tombstones,
// conflict copies resolved, directory times — and is published through
// chunknet with the durability the change calls for. The file system
// (fusefs) only translates kernel requests into these operations and
// their errors into errnos, as go-fuse's loopback translates them into
// system calls.
//
// The rules themselves (versions, heads, conflict copies, shadowed
// tombstones) are the index's (its doc.go); this package chooses what
// each operation names as its base, so that a change made without seeing
// another stays, and concurrent changes resolve the same way everywhere.
//
// # Locking
//
// One mutex serializes the operations: each reads the index, builds its
// ops and publishes them as one record while no other local change can
// interleave its own checks. Reads (Lookup, ReadDir, GetInode) go to the
// index directly. A caller may hold its own locks (a file's) around an
// operation, never the other way round.
package namespace

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/oashare/oashare/chunknet"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// Errors of the operations; the file system maps each to its errno.
var (
	ErrNotFound = errors.New("no such entry")                     // ENOENT
	ErrExists   = errors.New("entry exists")                      // EEXIST
	ErrNotDir   = errors.New("not a directory")                   // ENOTDIR
	ErrIsDir    = errors.New("is a directory")                    // EISDIR
	ErrNotEmpty = errors.New("directory not empty")               // ENOTEMPTY
	ErrReadOnly = errors.New("conflict copies are read-only")     // EROFS
	ErrMoveCopy = errors.New("a conflict copy cannot be renamed") // EXDEV: mv copies it, then unlinks it
	ErrBadName  = errors.New("name is empty, '.' or '..'")        // EINVAL
	ErrLongName = errors.New("name too long")                     // ENAMETOOLONG
	ErrLinkDir  = errors.New("a directory cannot be hard-linked") // EPERM

	ErrNoXattr    = errors.New("no such extended attribute")                // ENODATA
	ErrXattrSpace = errors.New("no room left for extended attributes")      // ENOSPC
	ErrXattrRange = errors.New("extended attribute name or value too long") // ERANGE
)

// Namespace applies changes to the namespace of one node.
type Namespace struct {
	node *chunknet.Node
	db   *index.DB
	// owner is who owns the root directory until someone changes it: the
	// user who mounted.
	uid, gid uint32

	mu sync.Mutex // serializes the operations (see the package doc)
}

// New returns the namespace of node; uid and gid own the root directory
// until it is first changed.
func New(node *chunknet.Node, uid, gid uint32) *Namespace {
	return &Namespace{node: node, db: node.DB(), uid: uid, gid: gid}
}

// inode reads inode id; a missing one is ErrNotFound.
func (ns *Namespace) inode(id uint64) (index.Inode, error) {
	ino, ok, err := ns.db.GetInode(id)
	if err == nil && !ok {
		err = fmt.Errorf("inode %d: %w", id, ErrNotFound)
	}
	return ino, err
}

// Create publishes a new entry name in directory parent for ino (its type,
// mode, owner, symlink target or device number; the ID and times are set
// here) and returns the inode as published. A directory may not replace
// anything, nor anything a directory (ErrExists); any other existing
// entry is replaced, as the kernel asks only for names it believes free
// (a peer may have created one since). New entries are published in a
// batch sync (chunknet.SyncBatched): a burst of small files shares one.
func (ns *Namespace) Create(parent uint64, name string, ino index.Inode) (index.Inode, error) {
	if err := CheckName(name); err != nil {
		return ino, err
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	old, ok, err := ns.db.LookupDirent(parent, name)
	if err != nil {
		return ino, err
	}
	if ok && (old.Type == index.TypeDir || ino.Type == index.TypeDir) {
		return ino, ErrExists
	}
	now := time.Now().UnixNano()
	ino.ID = ns.db.NewID()
	ino.MtimeNs, ino.CtimeNs = now, now
	de := index.Dirent{Parent: parent, Name: name, Child: ino.ID, Type: ino.Type}
	if err := ns.setBase(&de, old, ok); err != nil {
		return ino, err
	}
	ops, err := ns.touchDirs([]index.Op{{Inode: &ino}, {Dirent: &de}}, now, parent)
	if err != nil {
		return ino, err
	}
	rec, err := ns.node.Publish(ops, chunknet.SyncBatched)
	if err != nil {
		return ino, err
	}
	return *rec.Ops[0].Inode, nil
}

// CreateUnnamed makes a file no entry names (open with O_TMPFILE): a
// name comes with Link, if ever. One that gets none is pruned with the
// history, once no one has it open (index ns_prune.go).
func (ns *Namespace) CreateUnnamed(ino index.Inode) (index.Inode, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	now := time.Now().UnixNano()
	ino.ID = ns.db.NewID()
	ino.MtimeNs, ino.CtimeNs = now, now
	rec, err := ns.node.Publish([]index.Op{{Inode: &ino}}, chunknet.SyncBatched)
	if err != nil {
		return ino, err
	}
	return *rec.Ops[0].Inode, nil
}

// Link makes name in directory parent a further name of child, a file,
// symlink or special file (a hard link): an entry like any, so links made
// or removed on several peers at once converge as entries do. An
// existing name is ErrExists, a directory or a conflict copy ErrLinkDir.
// With touch, the child's ctime moves to now in the same record (a new
// version of it, as POSIX wants of link); a caller folding that into
// unpublished changes of the file passes false. Published with the
// batched sync of a create (chunknet.SyncBatched).
func (ns *Namespace) Link(parent uint64, name string, child index.Inode, touch bool) error {
	if err := CheckName(name); err != nil {
		return err
	}
	if child.Type == index.TypeDir || index.IsConflictID(child.ID) {
		return ErrLinkDir
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	old, ok, err := ns.db.LookupDirent(parent, name)
	if err != nil {
		return err
	}
	if ok {
		return ErrExists
	}
	de := index.Dirent{Parent: parent, Name: name, Child: child.ID, Type: child.Type}
	if err := ns.setBase(&de, old, false); err != nil {
		return err
	}
	now := time.Now().UnixNano()
	ops := []index.Op{{Dirent: &de}}
	if touch {
		cur, err := ns.inode(child.ID)
		if err != nil {
			return err
		}
		cur.BaseVersion, cur.BaseOrigin = cur.Version, cur.Origin
		cur.Supersedes = nil
		cur.CtimeNs = now
		ops = append(ops, index.Op{Inode: &cur})
	}
	ops, err = ns.touchDirs(ops, now, parent)
	if err != nil {
		return err
	}
	_, err = ns.node.Publish(ops, chunknet.SyncBatched)
	return err
}

// Remove deletes the entry name of directory parent: a file, symlink or
// special file (wantDir false), or an empty directory (wantDir true). It
// returns the inode the entry named, no longer reachable by that name.
// Removing a conflict copy resolves it: the copy goes away everywhere and
// the winner stays. Published with a sync at once (chunknet.SyncAtOnce).
func (ns *Namespace) Remove(parent uint64, name string, wantDir bool) (uint64, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	de, ok, err := ns.db.LookupDirent(parent, name)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, ErrNotFound
	}
	if index.IsConflictID(de.Child) {
		if wantDir {
			return 0, ErrNotDir
		}
		op, err := ns.resolveOp(de.Child)
		if err != nil {
			return 0, err
		}
		_, err = ns.node.Publish([]index.Op{op}, chunknet.SyncAtOnce)
		return 0, err
	}
	isDir := de.Type == index.TypeDir
	switch {
	case wantDir && !isDir:
		return 0, ErrNotDir
	case !wantDir && isDir:
		return 0, ErrIsDir
	}
	if isDir {
		kids, err := ns.db.ReadDir(de.Child)
		if err != nil {
			return 0, err
		}
		if len(kids) > 0 {
			return 0, ErrNotEmpty
		}
	}
	// An entry conflict copy is deleted by a tombstone of its own entry
	// version, under the original name: the winner stays.
	if head, ok, err := ns.entryCopy(parent, name, de); err != nil {
		return 0, err
	} else if ok {
		de = head
	}
	// The tombstone names the version being deleted: an update this node
	// has not seen keeps the entry (see index's doc).
	tomb, err := ns.tombstone(de, false)
	if err != nil {
		return 0, err
	}
	ops, err := ns.touchLinked([]index.Op{{Dirent: &tomb}}, tomb.Child)
	if err != nil {
		return 0, err
	}
	if len(ops) > 1 {
		// The file lives on under its other names, with its ctime moved
		// in this record: a newer version than the one the tombstone
		// saw, which would keep the name (see index's doc, shadowed
		// tombstones). Updates racing this delete stay reachable
		// through the other names, so the tombstone names no version.
		tomb.ChildVersion, tomb.ChildOrigin = 0, format.NodeID{}
	}
	ops, err = ns.touchDirs(ops, time.Now().UnixNano(), parent)
	if err != nil {
		return 0, err
	}
	if _, err := ns.node.Publish(ops, chunknet.SyncAtOnce); err != nil {
		return 0, err
	}
	return tomb.Child, nil
}

// Rename moves the entry name of directory parent to newName in
// newParent, replacing what is there (unless noReplace: ErrExists) as
// POSIX says: a directory only an empty directory, anything else anything
// but a directory. It returns the inode the replaced entry named (0 if
// none), no longer reachable. Renaming an entry conflict copy moves its
// entry version away (resolving it); replacing a conflict copy resolves
// it. A conflict copy of an inode has no entry of its own to move
// (ErrMoveCopy: mv then copies it and unlinks the copy). The caller
// checks that a directory does not move below itself. Published with a
// sync at once.
func (ns *Namespace) Rename(parent uint64, name string, newParent uint64, newName string, noReplace bool) (uint64, error) {
	if err := CheckName(newName); err != nil {
		return 0, err
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	src, ok, err := ns.db.LookupDirent(parent, name)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, ErrNotFound
	}
	if index.IsConflictID(src.Child) {
		return 0, ErrMoveCopy
	}
	// An entry conflict copy is moved away from the entry version it
	// stands for, under the original name.
	srcHead, srcIsCopy, err := ns.entryCopy(parent, name, src)
	if err != nil {
		return 0, err
	}
	if !srcIsCopy {
		srcHead = src
	}
	dst, exists, err := ns.db.LookupDirent(newParent, newName)
	if err != nil {
		return 0, err
	}
	if exists {
		if dst.Child == src.Child {
			return 0, nil
		}
		if noReplace {
			return 0, ErrExists
		}
		switch {
		case src.Type == index.TypeDir && dst.Type != index.TypeDir:
			return 0, ErrNotDir
		case src.Type != index.TypeDir && dst.Type == index.TypeDir:
			return 0, ErrIsDir
		case dst.Type == index.TypeDir:
			kids, err := ns.db.ReadDir(dst.Child)
			if err != nil {
				return 0, err
			}
			if len(kids) > 0 {
				return 0, ErrNotEmpty
			}
		}
	}
	// The Moved tombstone is never shadowed: the file lives on under
	// newName.
	gone, err := ns.tombstone(srcHead, true)
	if err != nil {
		return 0, err
	}
	moved := index.Dirent{Parent: newParent, Name: newName, Child: src.Child, Type: src.Type}
	if err := ns.setBase(&moved, dst, exists); err != nil {
		return 0, err
	}
	var ops []index.Op
	if gone.Parent != moved.Parent || gone.Name != moved.Name {
		ops = append(ops, index.Op{Dirent: &gone})
	} // else a copy moved onto its own name: it replaces the entry shown there
	ops = append(ops, index.Op{Dirent: &moved})
	if exists && index.IsConflictID(dst.Child) {
		// Replacing a conflict copy resolves it; otherwise the new entry
		// would only hide it.
		op, err := ns.resolveOp(dst.Child)
		if err != nil {
			return 0, err
		}
		ops = append(ops, op)
	}
	if exists {
		// Replacing an entry conflict copy resolves it too.
		head, ok, err := ns.entryCopy(newParent, newName, dst)
		if err != nil {
			return 0, err
		}
		if ok && (head.Parent != gone.Parent || head.Name != gone.Name) {
			tomb, err := ns.tombstone(head, false)
			if err != nil {
				return 0, err
			}
			ops = append(ops, index.Op{Dirent: &tomb})
		}
	}
	if exists && !index.IsConflictID(dst.Child) && dst.Child != src.Child {
		if ops, err = ns.touchLinked(ops, dst.Child); err != nil {
			return 0, err
		}
	}
	ops, err = ns.touchDirs(ops, time.Now().UnixNano(), parent, newParent)
	if err != nil {
		return 0, err
	}
	if _, err := ns.node.Publish(ops, chunknet.SyncAtOnce); err != nil {
		return 0, err
	}
	if exists && !index.IsConflictID(dst.Child) {
		return dst.Child, nil
	}
	return 0, nil
}

// Attrs are attribute changes; nil fields are left as they are.
type Attrs struct {
	Mode             *uint32 // permission bits (0o7777)
	Uid, Gid         *uint32
	MtimeNs, AtimeNs *int64
}

// SetAttrs changes the attributes of inode id (not its size or content:
// a file's new version goes through PublishVersion) and returns the
// inode as published. The change is made on the version just read and
// supersedes it. A conflict copy is read-only. Published with a sync at
// once.
func (ns *Namespace) SetAttrs(id uint64, a Attrs) (index.Inode, error) {
	return ns.changeInode(id, func(ino *index.Inode) (bool, error) {
		changed := false
		set32 := func(dst *uint32, v *uint32) {
			if v != nil {
				*dst, changed = *v, true
			}
		}
		set64 := func(dst *int64, v *int64) {
			if v != nil {
				*dst, changed = *v, true
			}
		}
		if a.Mode != nil {
			m := *a.Mode & 0o7777
			set32(&ino.Mode, &m)
		}
		set32(&ino.Uid, a.Uid)
		set32(&ino.Gid, a.Gid)
		set64(&ino.MtimeNs, a.MtimeNs)
		set64(&ino.AtimeNs, a.AtimeNs)
		return changed, nil
	})
}

// Flags of SetXattr, as setxattr(2) takes them.
const (
	XattrCreate  = 1 // fail with ErrExists if the attribute exists
	XattrReplace = 2 // fail with ErrNoXattr if it does not
)

// SetXattr sets extended attribute name of inode id to value, as
// SetAttrs changes attributes: a new version made on the one just read,
// published with a sync at once. flags are XattrCreate, XattrReplace or
// 0. An attribute that would take the inode's attributes past
// index.MaxXattrBytes or their names past index.MaxXattrList is refused
// with ErrXattrSpace, a name or value over Linux's limits with
// ErrXattrRange.
func (ns *Namespace) SetXattr(id uint64, name string, value []byte, flags uint32) (index.Inode, error) {
	if name == "" || len(name) > index.MaxXattrName || len(value) > index.MaxXattrValue {
		return index.Inode{}, ErrXattrRange
	}
	return ns.changeInode(id, func(ino *index.Inode) (bool, error) {
		_, exists := ino.Xattr(name)
		switch {
		case exists && flags&XattrCreate != 0:
			return false, ErrExists
		case !exists && flags&XattrReplace != 0:
			return false, ErrNoXattr
		}
		ino.SetXattr(name, value)
		if ino.XattrBytes() > index.MaxXattrBytes || ino.XattrListBytes() > index.MaxXattrList {
			return false, ErrXattrSpace
		}
		return true, nil // the same value again still moves the ctime, as on a local disk
	})
}

// RemoveXattr removes extended attribute name of inode id, as SetXattr
// sets one; ErrNoXattr if it has none of that name.
func (ns *Namespace) RemoveXattr(id uint64, name string) (index.Inode, error) {
	return ns.changeInode(id, func(ino *index.Inode) (bool, error) {
		if !ino.RemoveXattr(name) {
			return false, ErrNoXattr
		}
		return true, nil
	})
}

// changeInode publishes the change change makes to inode id (reporting
// whether it changed anything) as a new version made on the one just
// read, with a new ctime, and returns the inode as published.
func (ns *Namespace) changeInode(id uint64, change func(*index.Inode) (bool, error)) (index.Inode, error) {
	if index.IsConflictID(id) {
		return index.Inode{}, ErrReadOnly
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	ino, err := ns.inode(id)
	if err != nil {
		return ino, err
	}
	ino.BaseVersion, ino.BaseOrigin = ino.Version, ino.Origin
	ino.Supersedes = nil
	if id == index.RootID && ino.Version == 0 {
		// The root nobody has changed yet belongs to whoever mounted it.
		ino.ID, ino.Type = index.RootID, index.TypeDir
		ino.Uid, ino.Gid = ns.uid, ns.gid
	}
	if changed, err := change(&ino); err != nil || !changed {
		return ino, err
	}
	ino.CtimeNs = time.Now().UnixNano()
	rec, err := ns.node.Publish([]index.Op{{Inode: &ino}}, chunknet.SyncAtOnce)
	if err != nil {
		return ino, err
	}
	return *rec.Ops[0].Inode, nil
}

// PublishVersion publishes the change p describes of a file: its new
// content (p.Size, p.Root, p.Depth), made on the content p.Orig* read from
// inode version p.Base, with its mtime and the attribute changes made
// with it, applied over the inode as it is now. journaled says p is in
// the pending journal: its entry goes in the same batch. The chunks of the
// content must be durable on their replicas already.
//
// The rule: if the file's content is still the one the changes were made
// on, whatever changed since is metadata only, and the new version
// supersedes it; otherwise a peer changed the content concurrently, and
// the new version is based on p.Base, so the two stay heads and the loser
// shows as a conflict copy. A change of attributes only (not of content)
// applies to whatever content is current and supersedes it. Nothing that
// would not change the inode is published. It returns the inode as it is
// after the call. Published in a batch sync (chunknet.SyncBatched).
func (ns *Namespace) PublishVersion(p index.Pending, journaled bool) (index.Inode, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	ino, err := ns.inode(p.ID)
	if err != nil {
		return ino, err
	}
	newSize, newRoot, newDepth := p.Size, p.Root, p.Depth
	base := p.Base
	if sameContent(&ino, p.OrigSize, p.OrigRoot, p.OrigDepth) {
		base = ino.Ref()
	}
	mtime := p.MtimeNs
	if !p.ContentChanged {
		newSize, newRoot, newDepth = ino.Size, ino.Root, ino.Depth
		base = ino.Ref()
		if !p.SetMtime {
			mtime = ino.MtimeNs
		}
	}
	// Attribute changes were folded into the change (their ctime is set),
	// even ones that set nothing.
	if sameContent(&ino, newSize, newRoot, newDepth) && ino.MtimeNs == mtime && !p.Changed() {
		if journaled {
			// Nothing to publish: the journal entry goes alone.
			if err := ns.db.DeletePending(p.ID); err != nil {
				return ino, err
			}
		}
		return ino, nil
	}
	p.Apply(&ino)
	ino.Size, ino.Root, ino.Depth = newSize, newRoot, newDepth
	ino.MtimeNs = mtime
	ino.CtimeNs = time.Now().UnixNano()
	ino.BaseVersion, ino.BaseOrigin = base.Version, base.Origin
	ino.Supersedes = nil
	var published []uint64
	if journaled {
		published = append(published, p.ID)
	}
	rec, err := ns.node.Publish([]index.Op{{Inode: &ino}}, chunknet.SyncBatched, published...)
	if err != nil {
		return ino, err
	}
	return *rec.Ops[0].Inode, nil
}

// sameContent reports whether ino's content is (size, root, depth).
func sameContent(ino *index.Inode, size uint64, root format.Hash, depth uint8) bool {
	return ino.Size == size && ino.Root == root && ino.Depth == depth
}

// CheckName checks a name for a new entry.
func CheckName(name string) error {
	switch {
	case len(name) > index.MaxNameLen:
		return fmt.Errorf("a name of %d bytes: %w (at most %d)", len(name), ErrLongName, index.MaxNameLen)
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("%q: %w", name, ErrBadName)
	}
	return nil
}

// resolveOp returns the op that resolves conflict copy cid: a version of
// the original inode with the winner's content that supersedes both the
// winner and the copy's version, so the copy disappears everywhere.
func (ns *Namespace) resolveOp(cid uint64) (index.Op, error) {
	id, ref, ok, err := ns.db.ConflictOf(cid)
	if err != nil {
		return index.Op{}, err
	}
	if !ok {
		return index.Op{}, ErrNotFound
	}
	w, err := ns.inode(id)
	if err != nil {
		return index.Op{}, err
	}
	w.BaseVersion, w.BaseOrigin = w.Version, w.Origin
	w.Supersedes = []index.VersionRef{ref}
	return index.Op{Inode: &w}, nil
}

// entryCopy returns, if the entry de shown as name in parent is an entry
// conflict copy, the entry version it stands for (named by the original
// name).
func (ns *Namespace) entryCopy(parent uint64, name string, de index.Dirent) (index.Dirent, bool, error) {
	if index.IsConflictID(de.Child) || !strings.Contains(name, index.ConflictSep) {
		return index.Dirent{}, false, nil
	}
	return ns.db.ConflictEntry(parent, name)
}

// tombstone returns the op deleting entry version de (as stored or as
// shown): it names de as its base and the child version this node sees.
func (ns *Namespace) tombstone(de index.Dirent, moved bool) (index.Dirent, error) {
	child, err := ns.inode(de.Child)
	if err != nil {
		return index.Dirent{}, err
	}
	return index.Dirent{Parent: de.Parent, Name: de.Name, Child: de.Child, Type: de.Type,
		Deleted: true, Moved: moved, ChildVersion: child.Version, ChildOrigin: child.Origin,
		BaseChild: de.Child, BaseVersion: de.Version, BaseOrigin: de.Origin}, nil
}

// setBase makes new entry de name the entry it replaces: seen, the entry
// LookupDirent showed under its name (if ok), unless that is a conflict
// copy (it stands for another name's version); otherwise the newest
// version stored under the name, normally a tombstone, if any.
func (ns *Namespace) setBase(de *index.Dirent, seen index.Dirent, ok bool) error {
	if ok && !index.IsConflictID(seen.Child) {
		_, isCopy, err := ns.entryCopy(de.Parent, de.Name, seen)
		if err != nil {
			return err
		}
		if !isCopy {
			de.BaseChild, de.BaseVersion, de.BaseOrigin = seen.Child, seen.Version, seen.Origin
			return nil
		}
	}
	st, ok, err := ns.db.StoredDirent(de.Parent, de.Name)
	if err != nil {
		return err
	}
	if ok {
		de.BaseChild, de.BaseVersion, de.BaseOrigin = st.Child, st.Version, st.Origin
	}
	return nil
}

// touchLinked appends to ops a new version of file id with its ctime set
// to now when it has names besides the one ops delete: the file lives on
// with one link fewer, and POSIX moves its ctime.
func (ns *Namespace) touchLinked(ops []index.Op, id uint64) ([]index.Op, error) {
	if id == 0 || index.IsConflictID(id) {
		return ops, nil
	}
	// The kept count (one read; rm -r passes here for every file).
	n, err := ns.db.LinkCount(id)
	if err != nil || n < 2 {
		return ops, err
	}
	ino, err := ns.inode(id)
	if err != nil || ino.Type == index.TypeDir {
		return ops, err
	}
	ino.BaseVersion, ino.BaseOrigin = ino.Version, ino.Origin
	ino.Supersedes = nil
	ino.CtimeNs = time.Now().UnixNano()
	return append(ops, index.Op{Inode: &ino}), nil
}

// touchDirs appends to ops a new version of each directory in dirs (once
// each) with mtime and ctime set to now: POSIX times for a directory whose
// entries changed. Being a new version of the directory, it also keeps the
// directory alive against a delete that did not see the change (an rmdir
// racing a create inside).
func (ns *Namespace) touchDirs(ops []index.Op, now int64, dirs ...uint64) ([]index.Op, error) {
	for i, id := range dirs {
		if slices.Contains(dirs[:i], id) {
			continue
		}
		ino, err := ns.inode(id)
		if err != nil {
			return nil, err
		}
		ino.BaseVersion, ino.BaseOrigin = ino.Version, ino.Origin
		ino.Supersedes = nil
		ino.MtimeNs, ino.CtimeNs = now, now
		if id == index.RootID && ino.Version == 0 {
			ino.ID, ino.Type = index.RootID, index.TypeDir
			ino.Uid, ino.Gid = ns.uid, ns.gid
		}
		ops = append(ops, index.Op{Inode: &ino})
	}
	return ops, nil
}

// Restore makes (size, root, depth), the content of an earlier version,
// the content of file id again: a new version based on the current
// winner, so it supersedes what is there now (which stays in history).
// Published at once (chunknet.SyncAtOnce).
func (ns *Namespace) Restore(id uint64, size uint64, root format.Hash, depth uint8) (index.Inode, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	ino, err := ns.inode(id)
	if err != nil {
		return ino, err
	}
	if ino.Type != index.TypeFile {
		return ino, fmt.Errorf("inode %d is not a regular file", id)
	}
	base := ino.Ref()
	now := time.Now().UnixNano()
	ino.Size, ino.Root, ino.Depth = size, root, depth
	ino.MtimeNs, ino.CtimeNs = now, now
	ino.BaseVersion, ino.BaseOrigin = base.Version, base.Origin
	ino.Supersedes = nil
	rec, err := ns.node.Publish([]index.Op{{Inode: &ino}}, chunknet.SyncAtOnce)
	if err != nil {
		return ino, err
	}
	return *rec.Ops[0].Inode, nil
}
