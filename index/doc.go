// Package index is everything an oashare node keeps on its local disk, in one
// Pebble database: the local chunk store, the replicated namespace (inodes and
// directory entries), the replication log with its version vector, the node's
// identity and its hybrid logical clock.
//
// It knows nothing of the network or of FUSE. chunknet moves chunks and
// records between peers and calls PutChunks, GetChunk, Apply and LogSince;
// fusefs reads the namespace and publishes local changes with Commit.
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
// Each op is applied last-writer-wins: an op replaces the stored value under
// the same key iff its (Version, Origin) stamp is greater, Version first,
// then NodeID.Compare. A deleted directory entry is kept as a tombstone so
// that an older create arriving late cannot bring it back; LookupDirent and
// ReadDir hide tombstones. Because the rule only compares stamps, two nodes
// that have applied the same records, in any interleaving of origins, hold
// the same namespace.
//
// One record may not touch the same key twice (Validate of the record
// rejects it), so the result of a record never depends on op order.
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
//	"i" id[8]                       → inode value
//	"d" parent[8] name              → dirent value
//	"l" origin[16] seq[8]           → record (EncodeRecord bytes)
//	"v" origin[16]                  → highest applied seq[8]
//	"m" name                        → metadata:
//	    "m/node-id"                 → this node's NodeID[16], made at first Open
//	    "m/hlc"                     → last HLC value used or seen[8]
//	    "m/chunk-count"             → number of chunks in the store[8]
//	    "m/chunk-bytes"             → total bytes of those chunks[8]
//
// Chunk bytes are not in Pebble: they are appended, in arrival order, to
// segment files <dir>/chunks/NNNNNNNN.seg (raw bytes, nothing else), and the
// "c" key says where (see chunklog.go). A segment is synced before the batch
// holding its locations commits, so every location points at durable bytes.
//
// Names in dirent keys are raw bytes (no '/' or NUL), so ReadDir returns a
// directory in bytewise name order.
//
// # Value and record encoding
//
// Values and records start with a format byte (currently 1). uv is an
// unsigned varint (encoding/binary Uvarint), sv a signed (zig-zag) varint,
// str a uv length followed by that many bytes.
//
//	record: format=1 origin[16] seq:uv hlc:uv nops:uv op×nops
//	op:     kind[1]=1 inode-body | kind[1]=2 dirent-body
//	inode-body:  id:uv type[1] mode:uv size:uv mtime:sv ctime:sv
//	             root[32] depth[1] target:str uid:uv gid:uv rdev:uv
//	             atime:sv version:uv origin[16]
//	dirent-body: parent:uv name:str child:uv type[1] deleted[1]
//	             version:uv origin[16]
//
//	inode value:  format=1 inode-body
//	dirent value: format=1 child:uv type[1] deleted[1] version:uv origin[16]
//
// DecodeRecord reads bytes from the network: it checks the total size
// (MaxRecordBytes), the op count (MaxRecordOps), every string length
// (MaxNameLen, MaxTargetLen) against both its limit and the bytes left
// before allocating, rejects trailing bytes, and validates every op. A
// decoded record is therefore always valid.
//
// # Concurrency and locking
//
// Every method of DB is safe for concurrent use, except Close, which must be
// called once, after every other call has returned; calls made after Close
// return ErrClosed.
//
//   - Reads (GetChunk, HasChunk, GetInode, LookupDirent, ReadDir, LogSince)
//     take no lock of this package; each sees a consistent Pebble state.
//   - writeMu serializes Commit and Apply for their whole length (read
//     stored values, build the batch, synced commit), so the LWW comparison,
//     the sequence number and the clock are never raced.
//   - PutChunks is group-committed: putMu guards a queue of calls; the first
//     caller to find no leader becomes the leader and writes every queued
//     call's chunks in one synced batch, again and again until the queue is
//     empty, while the others wait for their call to be done. The leader is
//     the only writer of chunks and counters, so the existence check and the
//     counters agree. It is independent of writeMu: chunk uploads never wait
//     for namespace commits.
//   - stateMu guards the in-memory copy of the version vector; the clock and
//     chunk counters are atomics. Both are updated only after the batch that
//     persists them has committed.
//   - Options.OnApply runs on the goroutine that called Apply, after every
//     lock is released, so it may call back into the DB.
//
// All writes are committed with pebble.Sync: a method that returned nil has
// put its change on stable storage.
package index
