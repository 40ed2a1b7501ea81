// Package wire encodes and decodes the oashare peer protocol: the binary
// messages two oashare nodes exchange over one raw TCP connection (no HTTP,
// no JSON, no gRPC). It knows bytes only: connections, request multiplexing,
// retries and the meaning of records belong to package chunknet. The same
// description, for readers who do not read Go, is chunknet/PROTOCOL.md; keep
// the two in step.
//
// # Concurrency
//
// The package has no state. A [Reader] belongs to the one goroutine that
// reads its connection. The Append functions only append to the slice they
// are given; a connection has one writer, which appends frames to one
// reused buffer and sends it with one Write. Decode functions return slices
// that alias the payload they were given.
//
// # Security
//
// Between the members of a network (version 4), every connection starts
// with TLS 1.3, mutually authenticated; the hello and verdict move inside
// it, and the frames after them (since version 6) in records sealed under
// keys exported from that TLS session. chunknet (record.go, PROTOCOL.md)
// describes the keys, the records and the checks. A
// node joining with a code sends a single Join frame inside TLS instead of
// a hello, and is answered by JoinResult or Error (code JoinRefused), then
// the connection closes.
//
// # Handshake
//
// Right after the TCP connect (the TLS handshake, between members), each side writes a hello and reads the
// peer's (both sides write first, so neither waits for the other; over TCP
// the kernel buffers the few bytes, but over a synchronous net.Pipe in
// tests one side must write from another goroutine):
//
//	 0      4        6                 22      23            23+n      25+n
//	+------+--------+-----------------+-------+-------------+---------+
//	| OASH | ver    | node ID         | n     | network     | listen  |
//	|      | u16    | 16 bytes        | u8    | n bytes     | port    |
//	|      |        |                 |1..64  | UTF-8       | u16     |
//	+------+--------+-----------------+-------+-------------+---------+
//
// At most [MaxHelloSize] (89) bytes. [ReadHello] reads magic and version
// first and checks them in that order: a wrong magic is [ErrBadMagic] ("not
// an oashare peer"), another version a [*VersionError] (matching
// [ErrVersion]) naming both versions; it does not read further, because a
// hello of another version may go on differently. Magic and version stay
// the first six bytes of the hello in every version. Then it reads node ID
// and name length, checks the length (0 or above [MaxNetworkName] is
// [ErrBadHello]) and reads name and port into a fixed array: nothing
// read from the wire sizes an allocation.
//
// After both hellos, each side writes a one-byte verdict on the peer's
// hello, then reads the peer's verdict on its own:
//
//	0 VerdictAccept        accepted
//	1 VerdictWrongNetwork  the hellos name different networks
//	2 VerdictSameNode      same node ID: the node dialled itself
//	3 VerdictVersion       protocol versions differ
//	4 VerdictBusy          busy, shutting down, any other reason
//	5 VerdictImpostor      the hello names another node than the TLS peer
//
// The caller decides the verdict ([WriteVerdict]); [ReadVerdict] returns nil
// for 0 and a [*RefusedError] (matching [ErrRefused]) for anything else.
// Verdict codes are append-only; an unknown non-zero code is a refusal. A
// side that refuses, or is refused, closes the connection; nothing else is
// exchanged. A side whose ReadHello failed on magic does not write a
// verdict; on version it may write VerdictVersion, then closes.
//
// # Frames
//
// After the handshake both directions carry frames until the connection
// closes. All integers are big-endian.
//
//	 0         4      5                 13
//	+---------+------+-----------------+---------------------+
//	| length  | type | request ID      | payload             |
//	| u32     | u8   | u64             | length - 9 bytes    |
//	+---------+------+-----------------+---------------------+
//
// length counts type, request ID and payload: 9 + len(payload). The payload
// is at most [MaxPayload] (4 MiB). A request carries an ID chosen by its
// sender, unique among its requests in flight on the connection; the
// response carries the same ID, so many requests can be in flight and
// answered in any order. Each side numbers its own requests; a frame's
// type (see [Type.IsResponse]) says whether its ID is one of ours or the
// peer's.
//
// [Reader.Next] reads the 13-byte header with io.ReadFull into a fixed
// array, then checks, before allocating or reading any payload: length < 9
// is [ErrBadFrame]; a payload above the Reader's limit is
// [ErrFrameTooLarge]; an unknown type is [ErrUnknownType]; a payload on
// Ping, Pong, Bye, Stat or InUse is [ErrBadFrame]. Only then does it read the payload,
// into one buffer reused across frames. So a connection costs at most
// MaxPayload bytes of buffer however hostile the peer.
//
// # Frame types
//
// Type numbers are APPEND-ONLY: never renumbered, never reused; a new frame
// type takes the next free number (and, when old nodes could not ignore it,
// a new Version). Version 2 added the group frames, 17 to 20; version 3
// the barrier of fsync, 21 and 22; version 4 joining, 23 and 24; version
// 5 Leaving, 25; version 6 no frame (the record layer under them);
// version 7 InUse, 26 and 27; version 8 snapshots, 28 and 29 (and the
// Records flag 2, the version vector of InUseResult); version 9 no frame
// (extended attributes in namespace records); version 10 no frame (the
// data of PutGroups in bulk records of the record layer).
//
//	 1 Ping        request   empty                                → Pong
//	 2 Pong        response  empty
//	 3 PutChunks   request   count u32 | count × {hash[32] | len u32 | data[len]}  → PutResult
//	 4 PutResult   response  count u32 | count × status u8
//	 5 GetChunks   request   count u32 | count × hash[32]         → GetResult
//	 6 GetResult   response  count u32 | count × {status u8 | if status = 0: len u32 | data[len]}
//	 7 HasChunks   request   count u32 | count × hash[32]         → HasResult
//	 8 HasResult   response  count u32 | count × status u8 (0 has it, 1 not found)
//	 9 Pull        request   count u16 | count × {node ID[16] | seq u64}  → Records
//	10 Records     response  more u8 (0/1; 2 = pruned, count 0: ask for a Snapshot) | count u32 | count × {len u32 | record[len]}
//	11 Push        request   count u32 | count × {len u32 | record[len]}  → PushResult
//	12 PushResult  response  count u32 | count × status u8
//	13 Error       response  code u16 | msg len u16 | msg[msg len]
//	14 Bye         neither   empty; the sender is leaving cleanly, no reply
//	15 Stat        request   empty; answered by StatResult
//	16 StatResult  response  disk total u64 | disk free u64 | chunks u64 | chunk bytes u64 | garbage bytes u64 (version 7)
//	17 PutGroups   request   count u32 | count × {group[32] | node len u32 | node[node len] | data len u32 | data[data len]}  → PutResult
//	18 GetGroups   request   count u32 | count × {group[32] | first u16 | n u16}  → GroupResult
//	19 GroupResult response  count u32 | count × {status u8 | if status = 0: len u32 | data[len]}
//	20 HasGroups   request   count u32 | count × group[32]        → HasResult
//	21 WaitApplied request   origin node ID[16] | seq u64         → Applied
//	22 Applied     response  status u8 (0 applied, 1 not yet)
//	23 Join        request   proof[32] | name len u8 | name[name len] (at most 64, UTF-8)  → JoinResult
//	24 JoinResult  response  len u16 | network description[len] (1 to 512 bytes; index.EncodeNetwork)
//	25 Leaving     neither   draining u8 (0/1); no reply
//	26 InUse       request   empty                                → InUseResult
//	27 InUseResult response  seq u64 | unpublished ms u64 | complete u8 (0/1) | count u32 | count × {size u64 | depth u8 | root[32]} | nvv u16 | nvv × {node ID[16] | seq u64}
//	28 Snapshot    request   session u64 | key len u16 | key[len] (at most 1024)  → SnapshotPage
//	29 SnapshotPage response session u64 | done u8 (0/1) | hlc u64 | nvv u16 | nvv × {node ID[16] | seq u64 | hlc u64} | count u32 | count × {key len u16 (1 to 1024) | key | value len u32 (at most 64 KiB) | value}
//
// Result frames hold one entry per item of the request they answer, in the
// same order. Any request may be answered by Error instead of its own
// response type. Pull carries the requester's version vector: per node, the
// highest sequence number of that node's namespace log it has applied; the
// answer holds records after those, and more = 1 says "pull again". Records
// are opaque bytes here (chunknet and index give them meaning).
//
// A group is the data chunks under one depth-1 node of a file's hash tree
// (at most [format.MaxGroupChunks] chunks of 512 bytes), stored together and named
// by the hash of that node; a one-chunk file's group is named by the hash of
// its chunk, and its node is empty. PutGroups stores groups: each item
// carries the node (a multiple of 32 bytes, possibly empty) and the group's
// chunks concatenated (at least one byte), and PutResult holds one status
// per group. GetGroups asks, per group, for its stored chunks [first,
// first+n) (n ≥ 1, first+n ≤ MaxGroupChunks); GroupResult answers one item
// per range, the chunks concatenated. HasGroups is answered by HasResult,
// one status per group.
//
// WaitApplied is the barrier of fsync: answer once the records of origin
// up to seq are applied and visible to the receiver's programs; Applied
// says whether they are (1: the receiver gave up waiting).
//
// Chunk status codes ([StatusOK] …), one byte per item (chunk or group),
// append-only; any non-zero code is a failure of that item only:
//
//	0 OK  1 NotFound  2 BadHash  3 TooLarge  4 StoreError  5 Quota (of a put: the sender is over its quota here)
//	6 Full (of a put: this node's disk is full)
//
// Error codes ([CodeInternal] …), append-only:
//
//	1 Internal  2 BadRequest  3 Unsupported  4 JoinRefused
//
// # Limits
//
// MaxChunkData, MaxGroupChunks and MaxGroupData are sizes of the content
// format, defined in index/format for every package; the others are this
// package's.
//
//	MaxPayload          4 MiB    payload of any frame
//	MaxChunksPerFrame   4096     count of PutChunks, GetChunks, HasChunks and their results
//	MaxChunkData        8192     data of one chunk (oashare cuts at 512)
//	MaxVVEntries        4096     entries of a Pull
//	MaxRecordsPerFrame  65536    count of Records, Push, PushResult
//	MaxRecordBytes      1 MiB    one record
//	MaxErrorMsg         1024     bytes of an Error message (longer ones are truncated by the sender)
//	MaxNetworkName      64       bytes of the hello network name
//	MaxGroupChunks      256      chunks of one group; a GetGroups range ends at most there
//	MaxGroupData        128 KiB  data of one group in PutGroups and of one GroupResult item (256 × 512)
//	MaxGroupNode        8192     node of one PutGroups item (a multiple of 32, 0 allowed)
//	MaxGroupsPerFrame   1024     count of PutGroups, GetGroups, HasGroups, GroupResult
//
// All limits hold at once: a frame of 4096 chunks of 8192 bytes, or of 1024
// full groups, would break MaxPayload, so senders batch by bytes as well as
// by count.
//
// # Decoding and errors
//
// The Decode functions (one per payload shape) check each count against its
// limit and against the bytes left (count × smallest item size) before
// allocating a count-sized slice, check each length against its limit and
// the bytes left before slicing, check the fields that have a valid range
// (a group node is a multiple of 32 bytes, group data is not empty, a
// GetGroups range is non-empty and within a group), and reject trailing
// bytes. Byte
// slices in their results alias the payload: no copy. Chunk and group data
// is not checked against its hash here; the receive path does that in
// exactly one place.
//
// Go errors are sentinels ([ErrBadFrame], [ErrFrameTooLarge],
// [ErrUnknownType], [ErrBadMagic], [ErrVersion], [ErrBadHello],
// [ErrRefused]) wrapped with detail, matched with errors.Is. On the wire,
// errors are codes (statuses, Error frames). Any malformed frame makes the
// receiver close that connection (after logging why); the node goes on
// serving its other peers. An error on one item of a request (a chunk not
// found) is a status, not a broken connection.
//
// The Append functions panic if the caller breaks a limit: that frame would
// make the peer drop the connection, so it is a bug in the sender, never
// input from the network.
package wire
