// Package chunknet is the network side of an oashare node: the peer
// protocol's connections, the table of live peers, chunk placement, chunk
// upload and fetch, and replication of the namespace. The frame format is in
// the wire sub-package and PROTOCOL.md; the file-level logic (cutting a
// stream into chunks and trees) is in the tree sub-package.
//
// # Connections
//
// Every node keeps one outbound TCP connection to every peer it knows (from
// discovery, static --peer addresses, or a peer that connected to it) and
// serves the inbound ones. A node sends its requests only on its outbound
// connection and answers only on inbound ones, so two nodes hold two
// connections, one per direction, and no tie-breaking is needed. Both start
// with the handshake (handshake in conn.go), the single place where a peer
// is admitted: magic, protocol version, network name and node ID are
// checked before any other byte moves. The Transport interface makes the
// byte streams.
//
// # Members only
//
// A node with an identity (Config.Identity) speaks only to the members of
// its network, over mutually authenticated TLS 1.3 with pinned keys
// (secure.go): a peer's node ID is derived from its key and checked
// against the replicated member list before our hello is sent, and the
// hello must then name the same node. A non-member may only send one Join
// frame proving it holds a join code (join.go). Records are signed by
// their origin (index), so no member forges or alters another's. A
// member's acknowledgements of stored copies are spot-checked, and its
// puts are bounded by a quota (trust.go); a removed member's connections
// are closed and the copies it held are restored (secure.go).
//
// # Goroutines
//
//   - acceptLoop: accepts inbound connections; serveConn runs one per
//     connection (handshake, then serverConn.serve).
//   - serverConn.serve reads request frames; each request is served by its
//     own goroutine, at most serverConcurrency per connection.
//   - dialLoop: one per known address; it connects, runs the peer, and
//     redials with backoff when the connection ends.
//   - runPeer, per live peer: the clientConn's readLoop (hands responses to
//     waiters by request ID), pingLoop (liveness), pushLoop (namespace
//     records in commit order) and pullLoop (anti-entropy).
//   - flushLoop: makes lazily published namespace changes durable and
//     pushes them.
//   - topUpLoop: copies the items this node wrote below the replica
//     target to live peers (topup.go).
//   - repairLoop, scrubLoop, reclaimLoop: restore lost copies, check
//     stored ones, give dropped copies' disk space back (repair.go,
//     scrub.go, reclaim.go).
//   - gcLoop: finds the stored items no file version needs and drops
//     them once that is safe (gc.go).
//   - Uploader batches run in goroutines bounded by uploadWindow; Node.Go
//     runs background work such as read-ahead.
//
// Close sends Bye on every connection, cancels the node's context, closes
// the listener and every connection, and waits for all of these goroutines.
//
// # Locking
//
// Node.mu guards the peer table, the dialers and the inbound set; it is
// never held across network I/O. clientConn.mu guards the pending-request
// map; frameWriter.mu serializes whole frames onto a connection. flightMu
// guards the set of chunks being fetched. cache has its own mutex. All
// exported methods of Node are safe for concurrent use; an Uploader belongs
// to one goroutine at a time.
//
// # Groups
//
// Data chunks are placed, stored and fetched by group (see the tree
// package): the chunks under one depth-1 tree node go, with that node, to
// the replicas of the group's hash in one PutGroups item, and are read
// back by GetGroups ranges (FetchSpans), verified chunk by chunk against
// the node's hashes. Placement, index entries and requests are thus per
// 128 KiB, not per 512 bytes. Tree nodes above depth 1 still travel by
// name (Put, Fetch); so do chunks of files stored before groups, which
// FetchSpans falls back to when no replica of a group holds it.
//
// # Namespace publication
//
// Publish commits a change with a named Durability and queues it to every
// peer once it is durable. Synced commits durably before it returns;
// SyncAtOnce (renames, deletes, attribute changes) commits without waiting
// for the disk and wakes flushLoop, which syncs at once and pushes, so
// changes made meanwhile share that sync; SyncBatched (new entries, a
// file's new version at close once its chunks are durable on their
// replicas) wakes it at most 5 ms later, so that a burst of small files
// shares one sync. Sync (fsync) syncs at once. A record leaves the node
// (push or pull) only once it is durable here (index.DB.DurableSeq), so a
// crash can never take back a record a peer has seen. What a change's ops
// are (what it replaces, tombstones, conflict copies resolved) is decided
// by the namespace sub-package, which the file system calls.
//
// # The barrier of fsync
//
// SyncPeers (barrier.go) makes this node's namespace changes durable, then
// asks every live peer (WaitApplied) to answer once it has applied them and
// its file system has invalidated its kernel's caches (SetVisibleHook): when
// it returns, a program on any live peer reads what was synced. A peer that
// does not answer within barrierGiveUp is disconnected, so the barrier
// holds for the peers that remain live.
//
// # Hedged reads
//
// askPeers waits for a peer's answer only a few times that peer's recent
// latency (peer.latency, a moving average of its get requests) before it
// returns and lets the next round ask the next replica; the slow request
// goes on and only warms the cache. A peer left waiting this way is
// stalled and is asked last (orderPeers) until it answers a get again, so
// a peer that answers pings but not reads costs reads milliseconds.
//
// # Integrity and failure
//
// verify (fetch.go) is the one place a chunk is checked against its hash:
// chunks received for storage (by name, or cut out of a group by
// verifyGroup), chunks read from the local store and chunks fetched from
// peers (cutRun, for groups) all pass through it, so bad bytes are never
// stored or returned. A fetch tries each chunk's replicas in placement order and
// retries for Config.RetryFor; a chunk no peer serves correctly is
// ErrUnavailable, which the file system turns into EIO. An upload succeeds
// only when each chunk is stored on min(replicas, live nodes) nodes, each
// acknowledgement a verified copy on a node alive when counted; otherwise
// the chunks are kept on this node and the error is ErrNotDurable (and if
// even this node cannot store them, ErrNotStored: they are lost). Items
// left with fewer copies than the replica target, for either reason or
// because fewer nodes were alive, are listed in the index's under-target
// set and topped up by topUpLoop as peers come (topup.go); Short tells
// the file system whether a version may be published yet. A peer is
// dropped when its connection fails, when it says Bye, or when nothing
// arrives from it for Config.DeadAfter.
package chunknet
