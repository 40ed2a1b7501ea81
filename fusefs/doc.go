// Package fusefs serves an oashare node's namespace as a FUSE file system
// (go-fuse's fs API): it translates kernel requests into lookups in the
// index, operations of the namespace owner (chunknet/namespace: create,
// remove, rename, attributes, a file's new version), and reads and writes
// of file content (content.go, tree and chunknet below it), and turns
// errors into errnos in one place (FS.toErrno).
//
// # Nodes
//
// One FS holds the state of a mount. The tree comes lazily from the index:
// Lookup and Readdir read Pebble, never the network. Each kernel inode is a
// go-fuse Inode embedded in a small node type: dirNode, fileNode,
// symlinkNode and specialNode (FIFOs, sockets, devices: metadata only).
// The inode number is the index's inode ID, and so is the FUSE node ID
// (fs.Options.ExternalNodeID): IDs are never reused, and a notification sent
// through any go-fuse node of a file reaches the kernel's inode, whichever
// node a racing lookup left the kernel with. Lookup of a name the kernel
// looks up again keeps the node it has. api_test.go checks every node
// method against go-fuse's interfaces, beside the compile-time checks.
//
// # File state
//
// What this peer knows of a file beyond the index lives in a fileState
// (filestate.go), kept by the FS by inode ID while a handle is open on the
// file or it holds unpublished changes, not by the go-fuse node: the kernel
// forgets nodes when it likes. A fileState holds the version open handles
// read (close-to-open: each open reloads it unless there are local
// changes) and the unpublished changes (content.go: a streamed upload or
// dirty chunks over a base version, plus folded attribute changes). Flush
// (close), Fsync and the last writable handle's Release publish them; a
// version that cannot reach its replicas is kept in the index's pending
// journal, read back at mount, and published by pendingLoop when its
// copies are made.
//
// # Locking
//
// FS.filesMu guards the map of file states and their handle counts;
// fileState.mu guards one file's state and content; the namespace
// (chunknet/namespace) serializes the changes it checks and publishes.
// Lock order: filesMu, then a fileState's mu, then the namespace's;
// liveMu (the inodes the kernel knows) is taken alone.
// Reads of an unchanged file snapshot the version under mu and fetch
// without it, so reads run in parallel.
//
// # Kernel caches
//
// Entries, attributes and negative lookups are cached by the kernel for
// Options.CacheTimeout (1 s by default). Changes that come from peers
// invalidate them sooner: the index calls FS.onRemote for every record it
// applies, and notifyLoop, one goroutine, tells the kernel to forget the
// names (NotifyEntry) and the attributes and pages (NotifyContent) the
// record touched. Notifications are never sent from inside a FUSE request,
// which could deadlock against the kernel waiting on it (go-fuse's
// documented deadlock). The fsync barrier of another peer waits until the
// notifications of what it synced are sent (FS.notified, the hook of
// chunknet.Node.SetVisibleHook). Files are opened without FOPEN_KEEP_CACHE,
// so every open drops the file's cached pages; O_TRUNC comes with the open
// (CAP_ATOMIC_O_TRUNC), never as a separate truncate.
//
// # Known deadlocks
//
// A process that serves a mount must not exec binaries from it or mmap
// files of it (the kernel may call back into the same process while it is
// blocked in the page fault); tests run such programs in a helper process.
package fusefs
