package fusefs

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/oashare/oashare/chunknet"
	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/index"
)

// fileState is what this peer knows of a file beyond the index: the
// version it reads and its unpublished changes. The FS keeps it by inode
// ID (FS.files) while a handle is open on the file and, beyond, while it
// holds changes: a close whose publication failed returns EIO, the
// program goes away, and the next open must still read the bytes written,
// not the old version. A version that could not be published is also in
// the index's pending journal, so that it outlives an unmount, a crash or
// a restart; pendingLoop publishes it as soon as its copies are made.
//
// Locking: mu guards every field but id, fsys and handles (FS.filesMu).
// Reads of an unchanged file take a snapshot of v under mu and fetch
// without it, so concurrent reads run in parallel. Lock order: FS.filesMu,
// then mu, then the namespace's.
type fileState struct {
	id      uint64
	fsys    *FS
	handles int // open handles (and calls in progress) that use it; guarded by FS.filesMu

	mu     sync.Mutex
	loaded bool
	v      tree.Version     // the version this peer reads: the last one opened or published here
	base   index.VersionRef // the inode version v was read from (or published as)
	c      *content         // unpublished local changes, nil when there are none
	mtime  int64            // mtime of unpublished changes
	attrs  index.AttrChange // attribute changes made while c was pending
	// writers counts the open handles that may write; when the last goes,
	// what was written after its flush is published (Release).
	writers int
	// journaled: the pending journal holds a version of this file, the
	// one in journal (so that an unchanged retry writes nothing).
	journaled bool
	journal   index.Pending
	// unlinked: deleted on this peer while open; nobody can reach it any
	// more, and publishing would bring its name back (an update the
	// deleter had not seen shadows the tombstone).
	unlinked bool
}

// openState returns the state of file id, made if there is none, and
// counts a handle on it (released by closeState).
func (fsys *FS) openState(id uint64) *fileState {
	fsys.filesMu.Lock()
	defer fsys.filesMu.Unlock()
	st := fsys.files[id]
	if st == nil {
		st = &fileState{id: id, fsys: fsys}
		fsys.files[id] = st
	}
	st.handles++
	return st
}

// closeState releases a handle on st; the FS forgets st once it has
// neither handles nor changes.
func (fsys *FS) closeState(st *fileState) {
	fsys.filesMu.Lock()
	defer fsys.filesMu.Unlock()
	st.handles--
	fsys.forgetIdle(st)
}

// existingState returns the state of file id, nil if it has none (no
// handle open, nothing pending): the index says all there is.
func (fsys *FS) existingState(id uint64) *fileState {
	fsys.filesMu.Lock()
	defer fsys.filesMu.Unlock()
	return fsys.files[id]
}

// forgetIdle drops st from the FS if nothing needs it. Called with
// filesMu held.
func (fsys *FS) forgetIdle(st *fileState) {
	if st.handles > 0 {
		return
	}
	st.mu.Lock()
	idle := st.c == nil && !st.journaled
	st.mu.Unlock()
	if idle && fsys.files[st.id] == st {
		delete(fsys.files, st.id)
	}
}

// inUse tells garbage collection what this peer's files use (see
// chunknet/gc.go): the version of every file it knows beyond the index
// (open, or with changes), the base and original of unpublished changes,
// and when the oldest unpublished changes started.
func (fsys *FS) inUse() chunknet.InUse {
	fsys.filesMu.Lock()
	defer fsys.filesMu.Unlock()
	var u chunknet.InUse
	for id, st := range fsys.files {
		u.IDs = append(u.IDs, id)
		st.mu.Lock()
		u.Roots = append(u.Roots, st.v)
		if st.journaled {
			u.Roots = append(u.Roots, tree.Version{Size: st.journal.Size, Root: st.journal.Root, Depth: st.journal.Depth})
		}
		if c := st.c; c != nil {
			u.Roots = append(u.Roots, c.base, c.orig)
			if u.Unpublished.IsZero() || c.started.Before(u.Unpublished) {
				u.Unpublished = c.started
			}
		}
		st.mu.Unlock()
	}
	return u
}

// markLinked records that file id has a name (again): its changes are
// published.
func (fsys *FS) markLinked(id uint64) { fsys.setUnlinked(id, false) }

// markUnlinked records that this peer deleted file id (unlink, or a
// rename over it): changes still pending for it are dropped.
func (fsys *FS) markUnlinked(id uint64) { fsys.setUnlinked(id, true) }

func (fsys *FS) setUnlinked(id uint64, unlinked bool) {
	fsys.filesMu.Lock()
	st := fsys.files[id]
	fsys.filesMu.Unlock()
	if st == nil {
		return
	}
	st.mu.Lock()
	st.unlinked = unlinked
	st.mu.Unlock()
}

// publish uploads local changes and publishes the new version. It returns
// success only when every chunk is durable on min(replicas, live) nodes
// and the version is in the local index; otherwise EIO, and the changes
// stay here: in this state, and, once their bytes are all stored (here,
// where replicas were too few), in the pending journal, which pendingLoop
// retries. The version is published with chunknet.SyncBatched:
// a background sync makes it durable within a few milliseconds, and
// Fsync waits for it.
func (f *fileState) publish(ctx context.Context) syscall.Errno {
	// close(2) cannot be retried, so an interrupt must not abandon the
	// upload: it runs to completion (or to a real failure, EIO).
	ctx = context.WithoutCancel(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.publishLocked(ctx)
}

// publishLocked is publish with mu held.
func (f *fileState) publishLocked(ctx context.Context) syscall.Errno {
	if f.c == nil {
		return 0
	}
	fsys := f.fsys
	if !f.localChanges() {
		// A file created and closed unwritten, or opened for writing
		// and not written: nothing to publish.
		f.c, f.attrs = nil, index.AttrChange{}
		return 0
	}
	// An explicit utimens is an attribute change; any other new mtime
	// comes from a write or a truncate.
	contentChanged := f.c.changed() || (f.mtime != f.c.mtime0 && !f.attrs.SetMtime)
	started := f.c.started
	v, err := f.c.commit(ctx)
	if err != nil {
		return fsys.toErrno("upload", err)
	}
	if time.Since(started) >= fsys.node.ForgetAfter() {
		// Changes begun longer ago than other members wait for a member
		// away (--forget-after): what they uploaded then may have been
		// deleted as garbage meanwhile. Published only if whole.
		h, err := fsys.node.Check(ctx, v, false)
		if err != nil || h.Unavailable > 0 {
			fsys.log.Error("changes made too long ago lost data uploaded then; not published", "inode", f.id, "unavailable", h.Unavailable, "err", err)
			return syscall.EIO
		}
	}
	if f.unlinked {
		// Nobody can reach the file any more: its changes stay readable
		// through the descriptors still open, and go nowhere.
		f.v, f.c, f.attrs = v, nil, index.AttrChange{}
		return f.unjournal()
	}
	if f.c.short {
		short, err := fsys.node.Short(ctx, v)
		if err != nil || short > 0 {
			return f.keepPending(v, contentChanged, short, err)
		}
		f.c.short = false
	}
	// The namespace chooses what the new version replaces (see
	// namespace.PublishVersion): a peer's concurrent content stays as a
	// conflict copy, concurrent metadata changes are superseded.
	ino, err := fsys.ns.PublishVersion(f.pending(v, contentChanged), f.journaled)
	if err != nil {
		return fsys.toErrno("publish", err)
	}
	if f.journaled {
		fsys.log.Info("published a file version that waited for its copies", "inode", f.id, "size", v.Size)
	}
	f.v = versionOf(&ino)
	f.base = ino.Ref()
	f.mtime = ino.MtimeNs
	f.c = nil
	f.attrs = index.AttrChange{}
	f.journaled = false
	return 0
}

// pending describes the file's unpublished change: new content v, made on
// f.v read from f.base, with its mtime and attribute changes. Called with
// mu held.
func (f *fileState) pending(v tree.Version, contentChanged bool) index.Pending {
	return index.Pending{
		ID: f.id, Size: v.Size, Root: v.Root, Depth: v.Depth,
		OrigSize: f.v.Size, OrigRoot: f.v.Root, OrigDepth: f.v.Depth,
		Base: f.base, MtimeNs: f.mtime, ContentChanged: contentChanged,
		AttrChange: f.attrs,
	}
}

// keepPending records version v of the file, complete but short of
// copies, in the pending journal, and returns the EIO the program gets.
// Called with mu held.
func (f *fileState) keepPending(v tree.Version, contentChanged bool, short int, cause error) syscall.Errno {
	fsys := f.fsys
	p := f.pending(v, contentChanged)
	if f.journaled && p == f.journal {
		return syscall.EIO // recorded already
	}
	if err := fsys.db.PutPending(p); err != nil {
		return fsys.toErrno("keeping a pending version", err)
	}
	f.journal = p
	if !f.journaled {
		f.journaled = true
		fsys.log.Warn("a file's new content reached too few peers: close and fsync fail (EIO), the bytes are kept on this node and published as soon as their copies are made",
			"inode", f.id, "size", v.Size, "groups short", short, "err", cause)
		fsys.kickPending()
	}
	return syscall.EIO
}

// unjournal drops the file's pending version, if any. Called with mu held.
func (f *fileState) unjournal() syscall.Errno {
	if !f.journaled {
		return 0
	}
	if err := f.fsys.db.DeletePending(f.id); err != nil {
		return f.fsys.toErrno("dropping a pending version", err)
	}
	f.journaled = false
	return 0
}

// restorePending loads the pending journal into file states, at mount:
// each file reads its pending version on this peer, and pendingLoop
// publishes it once its copies are made.
func (fsys *FS) restorePending() error {
	ps, err := fsys.db.Pendings()
	if err != nil {
		return err
	}
	for _, p := range ps {
		st := &fileState{id: p.ID, fsys: fsys, loaded: true, journaled: true, journal: p, mtime: p.MtimeNs,
			v:     tree.Version{Size: p.OrigSize, Root: p.OrigRoot, Depth: p.OrigDepth},
			base:  p.Base,
			attrs: p.AttrChange}
		v := tree.Version{Size: p.Size, Root: p.Root, Depth: p.Depth}
		if err := v.Validate(); err != nil {
			fsys.log.Error("dropping a pending version that does not decode", "inode", p.ID, "err", err)
			continue
		}
		st.c = newContent(fsys.node, v, p.MtimeNs)
		st.c.orig, st.c.short = st.v, true
		if p.ContentChanged && v == st.v {
			// Rewritten with the same bytes: still a new version.
			st.c.mtime0 = p.MtimeNs - 1
		}
		fsys.files[p.ID] = st
	}
	if len(ps) > 0 {
		fsys.log.Warn("file versions wait for their copies before they are published", "files", len(ps))
	}
	return nil
}

// pendingEvery is how often pendingLoop tries the pending versions
// without a wake-up.
const pendingEvery = 2 * time.Second

// PublishPending tries the pending file versions now (they are tried
// every few seconds anyway): their copies may have become possible.
func (fsys *FS) PublishPending() { fsys.kickPending() }

func (fsys *FS) kickPending() {
	select {
	case fsys.pendingKick <- struct{}{}:
	default:
	}
}

// pendingLoop publishes the pending versions once their copies are made,
// until ctx ends.
func (fsys *FS) pendingLoop(ctx context.Context) {
	t := time.NewTicker(pendingEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-fsys.pendingKick:
		}
		fsys.filesMu.Lock()
		var todo []*fileState
		for _, st := range fsys.files {
			todo = append(todo, st)
		}
		fsys.filesMu.Unlock()
		for _, st := range todo {
			st.mu.Lock()
			// Journaled versions, and changes whose last publication
			// failed before their version was complete (the file's old
			// bytes could not be read from any holder): retried until
			// they go out. A file still open for writing is left to its
			// own close.
			if (st.journaled || st.c != nil) && st.writers == 0 {
				st.publishLocked(ctx)
			}
			st.mu.Unlock()
		}
		fsys.filesMu.Lock()
		for _, st := range todo {
			fsys.forgetIdle(st)
		}
		fsys.filesMu.Unlock()
	}
}
