package fusefs

import (
	"context"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"

	"github.com/oashare/oashare/index"
)

// Remote changes reach the kernel's caches through notifications: when a
// record from a peer is applied, the kernel forgets the names it changed
// (including cached "no such file" answers) and the attributes and cached
// pages of the inodes it changed, so the next access asks us. The entry and
// attribute timeouts remain as a fallback.
//
// Notifications are sent from one goroutine, never from inside a FUSE
// request (the kernel may wait on that request: go-fuse's documented
// deadlock). A full queue drops the notification; the timeouts then apply.

const notifyQueue = 4096

// live tracks the go-fuse inodes the kernel knows, by inode ID.
func (fsys *FS) track(n *fs.Inode) {
	fsys.liveMu.Lock()
	fsys.live[n.StableAttr().Ino] = n
	fsys.liveMu.Unlock()
}

// forget drops n from the inodes the kernel knows, unless a newer node
// of the same file replaced it there.
func (fsys *FS) forget(n *fs.Inode) {
	fsys.liveMu.Lock()
	if id := n.StableAttr().Ino; fsys.live[id] == n {
		delete(fsys.live, id)
	}
	fsys.liveMu.Unlock()
}

func (fsys *FS) lookupLive(id uint64) *fs.Inode {
	fsys.liveMu.Lock()
	defer fsys.liveMu.Unlock()
	return fsys.live[id]
}

// onRemote queues the invalidations a record from a peer calls for.
func (fsys *FS) onRemote(rec *index.Record) {
	select {
	case fsys.notes <- rec:
		fsys.queued.Add(1)
	default:
	}
}

// notified returns once the kernel has been told about every record
// queued before the call (or ctx ends): the hook of the fsync barrier
// (chunknet.Node.SetVisibleHook). notifyLoop sends a queue in
// microseconds, so it polls.
func (fsys *FS) notified(ctx context.Context) {
	target := fsys.queued.Load()
	for fsys.noted.Load() < target && ctx.Err() == nil {
		time.Sleep(200 * time.Microsecond)
	}
}

// notifyLoop sends the kernel invalidations until ctx ends.
func (fsys *FS) notifyLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case rec := <-fsys.notes:
			for _, op := range rec.Ops {
				switch {
				case op.Dirent != nil:
					if p := fsys.lookupLive(op.Dirent.Parent); p != nil {
						logNotify(fsys, p.NotifyEntry(op.Dirent.Name))
					}
				case op.Inode != nil:
					if n := fsys.lookupLive(op.Inode.ID); n != nil {
						logNotify(fsys, n.NotifyContent(0, 0))
					}
				}
			}
			fsys.noted.Add(1)
		}
	}
}

func logNotify(fsys *FS, errno syscall.Errno) {
	// ENOENT: the kernel had already forgotten it. Anything else is worth
	// a debug line; the timeouts cover it.
	if errno != 0 && errno != syscall.ENOENT {
		fsys.log.Debug("kernel invalidation failed", "errno", errno)
	}
}

// Each node type forgets itself when the kernel does.
var (
	_ = (fs.NodeOnForgetter)((*dirNode)(nil))
	_ = (fs.NodeOnForgetter)((*fileNode)(nil))
	_ = (fs.NodeOnForgetter)((*symlinkNode)(nil))
	_ = (fs.NodeOnForgetter)((*specialNode)(nil))
)

func (d *dirNode) OnForget()     { d.fsys.forget(d.EmbeddedInode()) }
func (f *fileNode) OnForget()    { f.fsys.forget(f.EmbeddedInode()) }
func (s *symlinkNode) OnForget() { s.fsys.forget(s.EmbeddedInode()) }
func (s *specialNode) OnForget() { s.fsys.forget(s.EmbeddedInode()) }
