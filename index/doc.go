// Package index is everything an oashare node keeps on its local disk, in one
// Pebble database: the local chunk store, the replicated namespace (inodes and
// directory entries), the replication log with its version vector, the node's
// identity and its hybrid logical clock.
//
// It knows nothing of the network or of FUSE. chunknet moves chunks and
// records between peers and calls PutChunks, GetChunk, Apply and LogSince;
// chunknet/namespace makes local changes with Commit; fusefs reads the
// namespace.
//
// # Two halves
//
// One DB, one Pebble instance, two halves that share nothing but it:
//
//   - the chunk store (store_*.go): chunks and groups appended to the
//     chunk log (store_chunklog.go), their locations in Pebble
//     (store_chunks.go, store_groups.go), recovery after a crash
//     (store_logrecover.go), the under-target set (store_under.go),
//     dropping copies and giving their disk space back (store_drop.go,
//     store_reclaim.go), the garbage candidates (store_gc.go);
//   - the namespace (ns_*.go): records, versions, heads and conflict
//     copies of inodes (ns_versions.go) and entries (ns_entries.go), their
//     encoding (ns_record.go), Commit, Apply, the log and the clock
//     (ns_commit.go), the pending journal (ns_pending.go), and which
//     file versions keep their content (ns_retain.go).
//
// db.go opens both; walzero.go serves Pebble's write-ahead log. The names
// and sizes every package shares (Hash, NodeID, the format sizes) are in
// the leaf package index/format.
//
// # Namespace and replication
//
// The namespace is a set of inodes (keyed by a random 64-bit ID, RootID for
// the root directory) and directory entries (keyed by parent ID and name).
// Every change is made by Commit, which bundles one or more ops into a
// Record stamped with this node's ID (Origin), the next local sequence
// number (Seq) and a hybrid logical clock value (HLC). Records of one origin
// form a gapless log, 1, 2, 3, …; peers exchange them with LogSince and
// Apply, and the version vector (origin → highest Seq applied) says how far
// each log has been applied locally.
//
// Stamps (Version, Origin) are ordered Version first, then
// NodeID.Compare. A deleted directory entry is kept as a tombstone, an
// entry version like any other (see Entry versions below).
//
// # Versions, heads and conflict copies
//
// An inode is not a register but a set of versions. Every inode op is one
// version, named by its stamp (Version, Origin), and names the version it
// was made on (BaseVersion, BaseOrigin; zero for a new inode) and up to
// MaxSupersedes further versions it replaces (Supersedes, for a merge).
// Both must be older than the op (Validate), so the graph has no cycles.
// The index keeps every version received ("h" keys) and the set of HEADS:
// the versions that no received version names as base or in Supersedes.
// The WINNER is the head with the greatest stamp; the "i" key holds it and
// GetInode returns it. Heads and winner are a pure function of the set of
// versions received, so peers that received the same records show the same
// thing whatever the order. (A version arriving before its base makes the
// base's predecessor look like a head only until the missing link
// arrives.) The newest version received is always a head, so an inode with
// versions always has a winner. Apply and Commit update history, heads and
// winner in the same batch as the record.
//
// Conflict copies are a view derived from the heads, not records, so they
// need no coordination: for every visible entry (parent, name) → child of
// a type other than directory, each losing head H (a head that is not the
// winner) of child is also shown as an entry named
//
//	name + ".conflict-" + H.Origin.Short() + "-" + decimal H.Version
//
// (name cut bytewise so that the whole fits MaxNameLen), of H's type,
// whose Child is the derived ID of H: the first 8 bytes of SHA-256(child[8]
// H.Version[8] H.Origin[16]) with ConflictIDBit (the top bit) set. NewID
// never sets that bit and Validate refuses it in ops, so derived IDs never
// collide with real ones (two derived IDs collide with probability about
// 2^-63). GetInode of a derived ID returns H's record with that ID (for any
// version ever received, so an open conflict copy stays readable after it
// is resolved); ConflictOf maps it back to (child, H). A real entry hides a
// conflict copy of the same name. Directories keep only their winner in the
// view: their losing heads differ in metadata only; so does a file's
// losing head whose content (type, size, root, target, rdev) is the
// winner's (two peers linking it at once, each moving its ctime).
//
// A conflict copy is resolved by a version of the child that supersedes H:
// fusefs unlinks one by committing the current winner's content with base =
// winner and Supersedes = [H].
//
// Tombstones and updates: a tombstone carries the version of the child the
// deleter saw (ChildVersion, ChildOrigin). A tombstone is SHADOWED — the
// entry stays visible, pointing at the same child — iff it is not Moved,
// has a child and a non-zero ChildVersion, and the child's winner is newer
// than (ChildVersion, ChildOrigin): the winner is then neither the version
// the deleter saw nor one of its ancestors (ancestors are older), so it is
// an update the deleter had not seen, and a delete racing an update keeps
// the update. Comparing stamps is enough: once the version the deleter saw
// has arrived, the winner is at least as new as it, and equal iff nothing
// newer exists. A rename leaves a Moved tombstone at the old name, which is
// never shadowed: the file lives on under its new name. LookupDirent and
// ReadDir show shadowed tombstones as live entries and hide the others.
// Known limit: an update made on a node that had already applied the
// tombstone (through a descriptor still open on the unlinked file) also
// shadows it; fusefs does not publish a file unlinked locally.
//
// # Entry versions and entry conflict copies
//
// A directory entry (parent, name) is, like an inode, a set of versions:
// every dirent op is one, named by its stamp, and names the entry version
// it replaces (BaseVersion, BaseOrigin, with its BaseChild for the
// reader; zero when the writer believed the name free). The base must be
// older than the op (Validate). fusefs sets it to the entry it saw: create
// names the entry shown under the name (normally none, or the tombstone
// StoredDirent returns), remove the entry it deletes, rename the
// destination it replaces (the source's Moved tombstone names the source).
// The index keeps every entry version received ("e" keys) and its HEADS,
// the versions no received version names ("E" keys; "N" marks the named
// ones; "C" marks a name with two heads or more). The "d" key holds the
// newest version received, which is always a head: with one head the name
// behaves exactly as a last-writer-wins register.
//
// What a name shows is a function of its heads, so the same on every
// peer: take its VISIBLE heads (live entries, and tombstones shadowed as
// below), newest first, dropping any whose child is that of a newer one.
// The first is shown under name. Each other one is shown as an entry
// conflict copy named ConflictName(name, head) (as for inode conflict
// copies, with the head's stamp) whose Child is the head's own child, a
// real inode: concurrent creates of one name, a rename onto a name created
// concurrently, two concurrent mkdirs (the losing directory stays
// reachable, contents included). A tombstone is never shown, so a delete
// racing a create (or an update of the entry) keeps the other version
// under the original name; and deleting a name that has copies shows the
// next copy under the name. ConflictEntry maps a copy's name back to its
// head. A copy is resolved by an op on (parent, name) whose base is its
// head: fusefs unlinks one with a tombstone, and renames one away with a
// Moved tombstone plus the new entry. Inode conflict copies of an entry
// copy's child are listed too, named after the entry copy.
//
// Hard links: several entries may name one inode. Nothing in the inode
// counts them; Names finds them through the "r" keys and keeps those the
// view shows, so a link count is a function of the view too.
//
// Because everything the view shows is a function of the set of entry
// versions and inode versions received, two nodes that have applied the
// same records, in any interleaving of origins, show the same namespace.
//
// One record may not touch the same key twice (Validate of the record
// rejects it), so the result of a record never depends on op order.
//
// # History pruning and snapshots
//
// History is kept only as long as someone may need it (ns_prune.go holds
// the argument): records every member has applied leave the log (each
// origin's floor, "f", says where its log starts; LogSince below it
// answers ErrPruned); versions that are no longer heads go once superseded
// longer than the restore window ago; names whose heads are old tombstones
// every member has seen go whole, and so do inodes no entry names any
// more. What a node shows never changes by pruning. A peer that needs
// records pruned everywhere it asks loads a snapshot of the namespace
// instead (ns_snapshot.go): one Pebble snapshot's namespace keys in pages,
// then the records after it; its own records the snapshot lacks are
// applied again on top, so a member back from a long absence merges its
// changes.
//
// # Garbage
//
// History is pruned (above), and data no kept version needs is deleted.
// RetainedFiles names the file versions whose content must be kept, by
// rules that read only the namespace (ns_retain.go): every head of a file
// that has a name, every version superseded and every file deleted less
// than the restore window ago. chunknet's garbage collector (gc.go, which
// holds the argument why a dropped item is needed by nothing) adds the
// versions each member has open or pending, names their groups and tree
// nodes, and marks the stored items none names as candidates
// (MarkGarbage); a put of a candidate makes it needed again in the put
// queue's leader, which also runs DropGarbage, so an item put after it was
// found unneeded is never dropped. Candidates live in memory: a restart
// starts them afresh, which delays drops and never hastens one.
//
// # Hybrid logical clock
//
// An HLC value is (unix milliseconds << 16) | logical counter. A local
// Commit takes max(wall<<16, last+1); Apply raises the clock to the
// record's HLC (and to any larger op Version in it), so a later local change
// always outranks what this node has already seen. The clock is stored in
// the same batch as the change that moved it, so it never goes backwards
// across a restart.
//
// # Key layout
//
// All integers are big endian, so Pebble's bytewise key order is numeric
// order. A key starts with a one-byte prefix:
//
//	"c" hash[32]                    → chunk location: segment[4] offset[8] length[2]
//	"g" hash[32]                    → group location: segment[4] offset[8] length[4]
//	"i" id[8]                       → inode value of the winner
//	"d" parent[8] name              → dirent value of the newest entry version
//	"h" id[8] version[8] origin[16] → every inode version received (inode value)
//	"H" id[8] version[8] origin[16] → empty: the version is a head
//	"n" id[8] version[8] origin[16] → empty: a received version names it
//	"x" derived-id[8]               → id[8] version[8] origin[16] of a conflict copy
//	"e" parent[8] name 0 version[8] origin[16] → every entry version received (dirent value)
//	"E" parent[8] name 0 version[8] origin[16] → empty: the entry version is a head
//	"N" parent[8] name 0 version[8] origin[16] → empty: a received entry version names it
//	"C" parent[8] name              → empty: the entry has two heads or more
//	"r" child[8] parent[8] name     → empty: an entry version of (parent, name) names child (hard links, ns_links.go)
//	"s" parent[8]                   → count[8] of names in parent whose "d" value is a live directory (nlink)
//	"l" origin[16] seq[8]           → record (Record.Wire: EncodeRecord bytes, then a signature on a network)
//	"v" origin[16]                  → highest applied seq[8]
//	"f" origin[16]                  → log floor: records up to seq[8] are pruned; hlc[8] of record seq
//	"u" kind[1] hash[32]            → copies[1]: an item below the replica target (store_under.go)
//	"p" id[8]                       → a file version not published yet (ns_pending.go)
//	"M" id[16]                      → member value: format=1 member-body (ns_members.go)
//	"q" id[16]                      → bytes[8] stored here for that member (ns_members.go)
//	"P" id[8]                       → empty: the file or tree is pinned on this node (pins.go); never sent
//	"m" name                        → metadata:
//	    "m/node-id"                 → this node's NodeID[16], made at first Open
//	    "m/hlc"                     → last HLC value used or seen[8]
//	    "m/chunk-count"             → number of chunks in the store[8]
//	    "m/chunk-bytes"             → total bytes of those chunks[8]
//	    "m/chunk-log"               → where the chunk log stands (below)
//	    "m/reclaim"                 → unix nanoseconds[8] of the last reclaim (its synced write)
//	    "m/snapshot"                → empty: a snapshot load is under way or was cut short
//	    "m/links", "m/subdirs"      → empty: the "r" and "s" keys were written for what existed before them
//	    "m/network"                 → the network this node belongs to (ns_members.go)
//	    "m/invite/" h[8]            → an invitation this node issued, h from SHA-256 of its token
//
// Chunk bytes are not in Pebble: they are appended, in arrival order, to
// segment files <dir>/chunks/NNNNNNNN.seg, one self-describing batch per
// write (store_chunklog.go has the format), and the "c" key says where. A group
// (store_groups.go: the up to 256 data chunks under one depth-1 node of a
// file's tree, named by that node's hash) is stored the same way, its
// chunks back to back, under one "g" key: a file costs one index entry per
// 128 KiB, not one per chunk. A batch is synced before its index entries
// commit (unsynced: one fsync per write), and "m/chunk-log" (first batch
// segment[4], indexed up to segment[4] offset[8]) says where Open resumes
// indexing after a crash, so every location points at durable bytes and
// every durable batch is indexed.
//
// Names in dirent keys are raw bytes (no '/' or NUL), so ReadDir returns a
// directory in bytewise name order, and the 0 after a name in "e", "E" and
// "N" keys ends it unambiguously.
//
// # Value and record encoding
//
// Values and records start with a format byte (1; 2 for an inode value
// with extended attributes). uv is an
// unsigned varint (encoding/binary Uvarint), sv a signed (zig-zag) varint,
// str a uv length followed by that many bytes.
//
//	record: format=1 origin[16] seq:uv hlc:uv nops:uv op×nops
//	op:     kind[1]=1 inode-body | kind[1]=2 dirent-body | kind[1]=3 id[16] member-body
//	        | kind[1]=4 inode-body xattrs
//	inode-body:  id:uv type[1] mode:uv size:uv mtime:sv ctime:sv
//	             root[32] depth[1] target:str uid:uv gid:uv rdev:uv
//	             atime:sv version:uv origin[16]
//	             baseversion:uv baseorigin[16]
//	             nsupersedes:uv (version:uv origin[16])×nsupersedes
//	xattrs:      n:uv (name:str value:str)×n     n ≥ 1, names sorted
//	dirent-body: parent:uv name:str dirent-val
//	dirent-val:  child:uv type[1] flags[1] version:uv origin[16]
//	             childversion:uv childorigin[16]
//	             basechild:uv baseversion:uv baseorigin[16]
//	flags:       bit 0 deleted, bit 1 moved; other bits must be 0
//	member-body: key[32] name:str mflags[1] untilseq:uv version:uv origin[16]
//	mflags:      bit 0 removed; other bits must be 0
//
// Every version an op makes is stamped with its record's HLC and origin
// (Commit does it; Apply refuses a record with other stamps).
//
// On a network (a DB with an identity) the log holds, and peers exchange,
// each record's encoding followed by its origin's Ed25519 signature[64]
// over "oashare record v1" and the encoding. Receive checks it;
// ReceiveFrom does not for a record that came from its origin over a
// connection that authenticated the origin's key.
//
//	inode value:  format=1 inode-body | format=2 inode-body xattrs
//	dirent value: format=1 dirent-val
//
// DecodeRecord reads bytes from the network: it checks the total size
// (MaxRecordBytes), the op count (MaxRecordOps), every string length
// (MaxNameLen, MaxTargetLen, MaxXattrName, MaxXattrValue), the
// supersedes count (MaxSupersedes) and the xattr count and total
// (MaxXattrBytes, MaxXattrList)
// against both its limit and the bytes left
// before allocating, rejects trailing bytes, and validates every op. A
// decoded record is therefore always valid.
//
// # Concurrency and locking
//
// Every method of DB is safe for concurrent use, except Close, which must be
// called once, after every other call has returned; calls made after Close
// return ErrClosed.
//
//   - Reads (GetChunk, GetChunks, HasChunk, GetInode, LookupDirent, ReadDir, Heads,
//     ConflictOf, ConflictEntry, StoredDirent, LogSince) take no lock of this package; each sees a
//     consistent Pebble state (the namespace views read one snapshot).
//   - writeMu serializes Commit and Apply for their whole
//     length (read stored values, build the batch, commit), so the heads
//     of an entry or an inode, the sequence number and the clock are never
//     raced; it also guards the writer's cache of inode heads
//     (writerHeads), updated only by batches that committed.
//   - PutChunks and PutGroups are group-committed together: putMu guards
//     a queue of calls; the first caller to find no leader becomes the
//     leader and writes every queued call's chunks and groups as one log
//     batch with one sync, again and again until the queue is
//     empty, while the others wait for their call to be done. The leader is
//     the only writer of chunks and counters, so the existence check and the
//     counters agree. It is independent of writeMu: chunk uploads never wait
//     for namespace commits.
//   - stateMu guards the in-memory copy of the version vector; the clock and
//     chunk counters are atomics. Both are updated only after the batch that
//     persists them has committed.
//   - Options.OnApply runs on the goroutine that called Apply, under
//     writeMu, once the record's batch committed and before the version
//     vector in memory counts it: whoever sees Applied reach a record
//     (the fsync barrier) also sees what OnApply did. It must not call
//     the DB.
//
// Writes of this node's own changes (Commit, PutChunks, PutGroups) are
// durable when the method returns nil. Apply of a peer's record is not
// synced: its origin has made it durable before sending it, and a record
// lost here in a crash is lost together with the version vector entry that
// counted it (same batch), so the node pulls it again from any peer. It
// becomes durable here with the next synced write.
package index
