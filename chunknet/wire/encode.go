package wire

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/oashare/oashare/index/format"
)

// Chunk is one chunk in a PutChunks frame. Decoded Data aliases the payload.
type Chunk struct {
	Hash format.Hash
	Data []byte
}

// GetItem is one answer in a GetResult or GroupResult frame: Data is
// present only when Status is StatusOK. Decoded Data aliases the payload.
type GetItem struct {
	Status byte
	Data   []byte
}

// Group is one PutGroups item: the data chunks under one depth-1 tree node
// of a file, stored together and named by the hash of that node (for a
// one-chunk file, by the hash of the chunk; Node is then empty). Decoded
// Node and Data alias the payload.
type Group struct {
	Hash format.Hash
	Node []byte // the depth-1 tree node (a multiple of 32 bytes), or empty for a one-chunk file
	Data []byte // the group's stored chunks, concatenated
}

// GroupRange is one GetGroups item: stored chunks [First, First+N) of group
// Hash.
type GroupRange struct {
	Hash  format.Hash
	First uint16
	N     uint16
}

// VVEntry is one entry of a version vector: the highest sequence number of
// Node's namespace log the sender has applied.
type VVEntry struct {
	Node format.NodeID
	Seq  uint64
}

// Sizes of the fixed parts of items, used to check counts against the bytes
// present before allocating, and to size buffers when encoding.
const (
	putChunkFixed = 32 + 4 // hash, data length
	hashSize      = format.HashSize
	vvEntrySize   = 16 + 8 // node ID, seq
	recordFixed   = 4      // record length
)

// Sizes of the fixed parts of group items.
const (
	putGroupFixed  = 32 + 4 + 4        // group hash, node length, data length
	putGroupMin    = putGroupFixed + 1 // the smallest PutGroups item: data is at least one byte
	groupRangeSize = 32 + 2 + 2        // group hash, first, n
)

// The Append functions append one whole frame, header and payload, to dst
// and return the extended slice, so that a connection's single writer can
// reuse one buffer and send each frame (or a batch of frames) with one
// Write.
//
// They panic when the caller breaks a limit of the protocol (a count, a
// chunk, group node, group data or record length, a group range, or a
// payload above MaxPayload): such a frame would make the peer close the
// connection, so it is a bug in the caller, which must batch within the
// limits.

// AppendFrame appends a frame of type t with the given payload. It is the
// general form of the typed Append functions and does not check the payload
// against the type.
func AppendFrame(dst []byte, t Type, id uint64, payload []byte) []byte {
	checkSize(t, HeaderSize+len(payload))
	dst = slices.Grow(dst, HeaderSize+len(payload))
	start := len(dst)
	dst = appendHeader(dst, t, id)
	dst = append(dst, payload...)
	return finish(dst, start)
}

// appendHeader appends a header whose length field finish fills in.
func appendHeader(dst []byte, t Type, id uint64) []byte {
	dst = append(dst, 0, 0, 0, 0, byte(t))
	return binary.BigEndian.AppendUint64(dst, id)
}

// finish writes the length field of the frame that starts at dst[start].
func finish(dst []byte, start int) []byte {
	n := len(dst) - start - 4
	if n-(HeaderSize-4) > MaxPayload {
		panic(fmt.Sprintf("wire: %v payload of %d bytes exceeds MaxPayload", Type(dst[start+4]), n-(HeaderSize-4)))
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(n))
	return dst
}

// checkSize panics before anything is allocated when a frame of size bytes
// would carry a payload above MaxPayload.
func checkSize(t Type, size int) {
	if size-HeaderSize > MaxPayload {
		panic(fmt.Sprintf("wire: %v payload of %d bytes exceeds MaxPayload", t, size-HeaderSize))
	}
}

func checkCount(what string, n, limit int) {
	if n > limit {
		panic(fmt.Sprintf("wire: %d %s exceed the limit of %d per frame", n, what, limit))
	}
}

// AppendPing appends a Ping frame.
func AppendPing(dst []byte, id uint64) []byte { return AppendFrame(dst, TypePing, id, nil) }

// AppendPong appends a Pong frame answering the Ping with request ID id.
func AppendPong(dst []byte, id uint64) []byte { return AppendFrame(dst, TypePong, id, nil) }

// AppendLeaving appends a Leaving frame: the sender is draining (on) or
// no longer. Like Bye, it has no reply; id is not used, 0 will do.
func AppendLeaving(dst []byte, id uint64, on bool) []byte {
	b := byte(0)
	if on {
		b = 1
	}
	return AppendFrame(dst, TypeLeaving, id, []byte{b})
}

// AppendBye appends a Bye frame. id is not used by the receiver; 0 will do.
func AppendBye(dst []byte, id uint64) []byte { return AppendFrame(dst, TypeBye, id, nil) }

// AppendStat appends a Stat request.
func AppendStat(dst []byte, id uint64) []byte { return AppendFrame(dst, TypeStat, id, nil) }

// StatInfo is a node's storage: the disk holding its data directory and
// what it stores there.
type StatInfo struct {
	DiskTotal  uint64 // bytes of the disk
	DiskFree   uint64 // bytes free for an unprivileged user
	Chunks     uint64 // chunks stored
	ChunkBytes uint64 // bytes of those chunks
	Garbage    uint64 // bytes of them no file version needs, to be dropped (version 7)
}

// statSize is the StatResult payload: five u64.
const statSize = 40

// AppendStatResult appends a StatResult frame answering request id.
func AppendStatResult(dst []byte, id uint64, s StatInfo) []byte {
	var p [statSize]byte
	binary.BigEndian.PutUint64(p[0:], s.DiskTotal)
	binary.BigEndian.PutUint64(p[8:], s.DiskFree)
	binary.BigEndian.PutUint64(p[16:], s.Chunks)
	binary.BigEndian.PutUint64(p[24:], s.ChunkBytes)
	binary.BigEndian.PutUint64(p[32:], s.Garbage)
	return AppendFrame(dst, TypeStatResult, id, p[:])
}

// AppendPutChunks appends a PutChunks frame. At most MaxChunksPerFrame
// chunks of at most MaxChunkData bytes each, and at most MaxPayload bytes in
// all (4 + Σ(36 + len(Data))).
func AppendPutChunks(dst []byte, id uint64, chunks []Chunk) []byte {
	checkCount("chunks", len(chunks), MaxChunksPerFrame)
	size := HeaderSize + 4
	for _, c := range chunks {
		if len(c.Data) > format.MaxChunkData {
			panic(fmt.Sprintf("wire: chunk %v of %d bytes exceeds MaxChunkData", c.Hash.Short(), len(c.Data)))
		}
		size += putChunkFixed + len(c.Data)
	}
	checkSize(TypePutChunks, size)
	dst = slices.Grow(dst, size)
	start := len(dst)
	dst = appendHeader(dst, TypePutChunks, id)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(chunks)))
	for _, c := range chunks {
		dst = append(dst, c.Hash[:]...)
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(c.Data)))
		dst = append(dst, c.Data...)
	}
	return finish(dst, start)
}

// AppendPutGroups appends a PutGroups frame. At most MaxGroupsPerFrame
// groups, each with a node of at most MaxGroupNode bytes (a multiple of 32,
// possibly empty) and 1 to MaxGroupData bytes of data, and at most
// MaxPayload bytes in all (4 + Σ(40 + len(Node) + len(Data))).
func AppendPutGroups(dst []byte, id uint64, groups []Group) []byte {
	_, frame := PutGroupsVec(nil, id, groups)
	n := 0
	for _, p := range frame {
		n += len(p)
	}
	dst = slices.Grow(dst, n)
	for _, p := range frame {
		dst = append(dst, p...)
	}
	return dst
}

// PutGroupsVec is AppendPutGroups for a vectored write: it appends the
// frame's own bytes (header, hashes, nodes, lengths) to buf and returns
// buf and the frame as pieces in order, slices of buf alternating with the
// groups' Data, which it does not copy.
func PutGroupsVec(buf []byte, id uint64, groups []Group) ([]byte, [][]byte) {
	checkCount("groups", len(groups), MaxGroupsPerFrame)
	size := HeaderSize + 4
	for _, g := range groups {
		if len(g.Node) > MaxGroupNode || len(g.Node)%hashSize != 0 {
			panic(fmt.Sprintf("wire: group %v node of %d bytes is not a multiple of 32 up to MaxGroupNode", g.Hash.Short(), len(g.Node)))
		}
		if len(g.Data) == 0 || len(g.Data) > format.MaxGroupData {
			panic(fmt.Sprintf("wire: group %v data of %d bytes, want 1..MaxGroupData", g.Hash.Short(), len(g.Data)))
		}
		size += putGroupFixed + len(g.Node) + len(g.Data)
	}
	checkSize(TypePutGroups, size)
	start := len(buf)
	buf = appendHeader(buf, TypePutGroups, id)
	binary.BigEndian.PutUint32(buf[start:], uint32(size-4))
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(groups)))
	cuts := make([]int, len(groups)) // where in buf each group's data goes
	for i, g := range groups {
		buf = append(buf, g.Hash[:]...)
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(g.Node)))
		buf = append(buf, g.Node...)
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(g.Data)))
		cuts[i] = len(buf)
	}
	frame := make([][]byte, 0, 2*len(groups)+1)
	from := start
	for i, g := range groups {
		frame = append(frame, buf[from:cuts[i]], g.Data)
		from = cuts[i]
	}
	if len(groups) == 0 {
		frame = append(frame, buf[start:])
	}
	return buf, frame
}

// PutGroupsData reports whether piece i of a frame made by PutGroupsVec
// is a group's Data (the odd ones).
func PutGroupsData(i int) bool { return i%2 == 1 }

// checkGroupRange panics unless [First, First+N) is a valid range of stored
// chunks of one group.
func checkGroupRange(g GroupRange) {
	if g.N == 0 || int(g.First)+int(g.N) > format.MaxGroupChunks {
		panic(fmt.Sprintf("wire: group %v range [%d, %d+%d) is empty or beyond MaxGroupChunks", g.Hash.Short(), g.First, g.First, g.N))
	}
}

// AppendGetGroups appends a GetGroups frame asking for the stored chunks
// [First, First+N) of each group (at most MaxGroupsPerFrame ranges, N at
// least 1, First+N at most MaxGroupChunks).
func AppendGetGroups(dst []byte, id uint64, ranges []GroupRange) []byte {
	checkCount("group ranges", len(ranges), MaxGroupsPerFrame)
	for _, g := range ranges {
		checkGroupRange(g)
	}
	dst = slices.Grow(dst, HeaderSize+4+groupRangeSize*len(ranges))
	start := len(dst)
	dst = appendHeader(dst, TypeGetGroups, id)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(ranges)))
	for _, g := range ranges {
		dst = append(dst, g.Hash[:]...)
		dst = binary.BigEndian.AppendUint16(dst, g.First)
		dst = binary.BigEndian.AppendUint16(dst, g.N)
	}
	return finish(dst, start)
}

// appendStatuses appends a frame whose payload is count u32 | statuses.
func appendStatuses(dst []byte, t Type, id uint64, statuses []byte, limit int) []byte {
	checkCount("statuses", len(statuses), limit)
	dst = slices.Grow(dst, HeaderSize+4+len(statuses))
	start := len(dst)
	dst = appendHeader(dst, t, id)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(statuses)))
	dst = append(dst, statuses...)
	return finish(dst, start)
}

// AppendPutResult appends a PutResult frame: one Status* code per chunk of
// the PutChunks, or per group of the PutGroups, it answers, in the same
// order.
func AppendPutResult(dst []byte, id uint64, statuses []byte) []byte {
	return appendStatuses(dst, TypePutResult, id, statuses, MaxChunksPerFrame)
}

// AppendHasResult appends a HasResult frame: one code per hash of the
// HasChunks or HasGroups it answers (StatusOK: held here, StatusNotFound:
// not held).
func AppendHasResult(dst []byte, id uint64, statuses []byte) []byte {
	return appendStatuses(dst, TypeHasResult, id, statuses, MaxChunksPerFrame)
}

// AppendPushResult appends a PushResult frame: one code per record of the
// Push it answers.
func AppendPushResult(dst []byte, id uint64, statuses []byte) []byte {
	return appendStatuses(dst, TypePushResult, id, statuses, MaxRecordsPerFrame)
}

func appendHashes(dst []byte, t Type, id uint64, hashes []format.Hash, limit int) []byte {
	checkCount("hashes", len(hashes), limit)
	dst = slices.Grow(dst, HeaderSize+4+hashSize*len(hashes))
	start := len(dst)
	dst = appendHeader(dst, t, id)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(hashes)))
	for i := range hashes {
		dst = append(dst, hashes[i][:]...)
	}
	return finish(dst, start)
}

// AppendGetChunks appends a GetChunks frame asking for the chunks named by
// hashes (at most MaxChunksPerFrame).
func AppendGetChunks(dst []byte, id uint64, hashes []format.Hash) []byte {
	return appendHashes(dst, TypeGetChunks, id, hashes, MaxChunksPerFrame)
}

// AppendHasChunks appends a HasChunks frame asking which of hashes (at most
// MaxChunksPerFrame) the peer holds.
func AppendHasChunks(dst []byte, id uint64, hashes []format.Hash) []byte {
	return appendHashes(dst, TypeHasChunks, id, hashes, MaxChunksPerFrame)
}

// AppendHasGroups appends a HasGroups frame asking which of the groups named
// by hashes (at most MaxGroupsPerFrame) the peer holds.
func AppendHasGroups(dst []byte, id uint64, hashes []format.Hash) []byte {
	return appendHashes(dst, TypeHasGroups, id, hashes, MaxGroupsPerFrame)
}

// AppendGetResult appends a GetResult frame: one item per hash of the
// GetChunks it answers, in the same order. Data is sent only for items with
// StatusOK and must then be at most MaxChunkData bytes.
func AppendGetResult(dst []byte, id uint64, items []GetItem) []byte {
	return appendItems(dst, TypeGetResult, id, items, MaxChunksPerFrame, format.MaxChunkData)
}

// AppendGroupResult appends a GroupResult frame: one item per range of the
// GetGroups it answers, in the same order. Data (the range's stored chunks,
// concatenated) is sent only for items with StatusOK and must then be at
// most MaxGroupData bytes.
func AppendGroupResult(dst []byte, id uint64, items []GetItem) []byte {
	return appendItems(dst, TypeGroupResult, id, items, MaxGroupsPerFrame, format.MaxGroupData)
}

// appendItems appends a frame whose payload is
// count u32 | count × {status u8 | if status = 0: len u32 | data[len]}.
func appendItems(dst []byte, t Type, id uint64, items []GetItem, limit, maxData int) []byte {
	checkCount("items", len(items), limit)
	size := HeaderSize + 4
	for _, it := range items {
		size++
		if it.Status == StatusOK {
			if len(it.Data) > maxData {
				panic(fmt.Sprintf("wire: %v item of %d bytes exceeds the limit of %d", t, len(it.Data), maxData))
			}
			size += 4 + len(it.Data)
		}
	}
	checkSize(t, size)
	dst = slices.Grow(dst, size)
	start := len(dst)
	dst = appendHeader(dst, t, id)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(items)))
	for _, it := range items {
		dst = append(dst, it.Status)
		if it.Status == StatusOK {
			dst = binary.BigEndian.AppendUint32(dst, uint32(len(it.Data)))
			dst = append(dst, it.Data...)
		}
	}
	return finish(dst, start)
}

// AppendPull appends a Pull frame carrying the requester's version vector
// (at most MaxVVEntries entries).
func AppendPull(dst []byte, id uint64, vv []VVEntry) []byte {
	checkCount("version vector entries", len(vv), MaxVVEntries)
	dst = slices.Grow(dst, HeaderSize+2+vvEntrySize*len(vv))
	start := len(dst)
	dst = appendHeader(dst, TypePull, id)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(vv)))
	for _, e := range vv {
		dst = append(dst, e.Node[:]...)
		dst = binary.BigEndian.AppendUint64(dst, e.Seq)
	}
	return finish(dst, start)
}

func recordsSize(recs [][]byte) int {
	checkCount("records", len(recs), MaxRecordsPerFrame)
	size := 0
	for _, r := range recs {
		if len(r) > MaxRecordBytes {
			panic(fmt.Sprintf("wire: record of %d bytes exceeds MaxRecordBytes", len(r)))
		}
		size += recordFixed + len(r)
	}
	return size
}

func appendRecordList(dst []byte, recs [][]byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(recs)))
	for _, r := range recs {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(r)))
		dst = append(dst, r...)
	}
	return dst
}

// AppendRecords appends a Records frame answering a Pull. more tells the
// requester that further records remain and it should Pull again. At most
// MaxRecordsPerFrame records of at most MaxRecordBytes each, and at most
// MaxPayload bytes in all (5 + Σ(4 + len(rec))).
func AppendRecords(dst []byte, id uint64, more bool, recs [][]byte) []byte {
	size := HeaderSize + 1 + 4 + recordsSize(recs)
	checkSize(TypeRecords, size)
	dst = slices.Grow(dst, size)
	start := len(dst)
	dst = appendHeader(dst, TypeRecords, id)
	var m byte
	if more {
		m = 1
	}
	dst = append(dst, m)
	dst = appendRecordList(dst, recs)
	return finish(dst, start)
}

// AppendPush appends a Push frame. Same limits as AppendRecords
// (4 + Σ(4 + len(rec)) payload bytes).
func AppendPush(dst []byte, id uint64, recs [][]byte) []byte {
	size := HeaderSize + 4 + recordsSize(recs)
	checkSize(TypePush, size)
	dst = slices.Grow(dst, size)
	start := len(dst)
	dst = appendHeader(dst, TypePush, id)
	dst = appendRecordList(dst, recs)
	return finish(dst, start)
}

// AppendError appends an Error frame answering the request with ID id. A
// msg longer than MaxErrorMsg bytes is truncated, at a UTF-8 boundary where
// msg is valid UTF-8.
func AppendError(dst []byte, id uint64, code uint16, msg string) []byte {
	if len(msg) > MaxErrorMsg {
		n := MaxErrorMsg
		for n > MaxErrorMsg-utf8.UTFMax && !utf8.RuneStart(msg[n]) {
			n--
		}
		msg = msg[:n]
	}
	dst = slices.Grow(dst, HeaderSize+4+len(msg))
	start := len(dst)
	dst = appendHeader(dst, TypeError, id)
	dst = binary.BigEndian.AppendUint16(dst, code)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(msg)))
	dst = append(dst, msg...)
	return finish(dst, start)
}

// waitAppliedSize is the WaitApplied payload: origin[16] seq u64.
const waitAppliedSize = 16 + 8

// AppendWaitApplied appends a WaitApplied frame: the requester asks to be
// answered once the peer has applied the records of origin up to seq, and
// their effects are visible to the peer's programs (or once the peer gives
// up waiting).
func AppendWaitApplied(dst []byte, id uint64, origin format.NodeID, seq uint64) []byte {
	var p [waitAppliedSize]byte
	copy(p[:], origin[:])
	binary.BigEndian.PutUint64(p[16:], seq)
	return AppendFrame(dst, TypeWaitApplied, id, p[:])
}

// AppendApplied appends an Applied frame answering request id: StatusOK if
// the records asked for are applied, StatusNotFound if the peer gave up
// waiting for them.
func AppendApplied(dst []byte, id uint64, status byte) []byte {
	return AppendFrame(dst, TypeApplied, id, []byte{status})
}

// MaxJoinName bounds the name a joiner gives (its host name), and
// MaxJoinResult the network description a JoinResult carries, in bytes.
const (
	MaxJoinName   = 64
	MaxJoinResult = 512
	// JoinMACSize is the size of the proof of a Join.
	JoinMACSize = 32
)

// AppendJoin appends a Join frame: the proof that the joiner holds a join
// code (see chunknet) and the name it joins under (at most MaxJoinName
// bytes; longer names are cut).
func AppendJoin(dst []byte, id uint64, mac [JoinMACSize]byte, name string) []byte {
	if len(name) > MaxJoinName {
		name = name[:MaxJoinName]
	}
	p := make([]byte, 0, JoinMACSize+1+len(name))
	p = append(p, mac[:]...)
	p = append(p, byte(len(name)))
	p = append(p, name...)
	return AppendFrame(dst, TypeJoin, id, p)
}

// AppendJoinResult appends a JoinResult frame answering request id with
// the network description network (at most MaxJoinResult bytes, opaque
// here).
func AppendJoinResult(dst []byte, id uint64, network []byte) []byte {
	p := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(network)), uint16(len(network)))
	return AppendFrame(dst, TypeJoinResult, id, append(p, network...))
}

// AppendInUse appends an InUse request.
func AppendInUse(dst []byte, id uint64) []byte { return AppendFrame(dst, TypeInUse, id, nil) }

// Root names a file version: the size and the root of its chunk tree.
type Root struct {
	Size  uint64
	Depth uint8
	Hash  format.Hash
}

// InUse is what a node needs kept beyond the namespace's own versions:
// the position of its log (Seq, its own last record), how long ago its
// oldest upload not yet published started (Unpublished, 0 = none), and
// the file versions it has open or pending (Roots). Complete is false
// when the roots did not fit one frame: the asker then drops nothing.
type InUse struct {
	Seq         uint64
	Unpublished time.Duration
	Complete    bool
	Roots       []Root
	// VV is the answerer's version vector (version 8): how far it has
	// applied each origin's records, which says what every member has
	// seen, so what history may be pruned.
	VV []VVEntry
}

// inUseRootSize is one Root on the wire: size u64 | depth u8 | hash[32].
const inUseRootSize = 8 + 1 + 32

// AppendInUseResult appends an InUseResult: seq u64 | unpublished ms u64
// | complete u8 | count u32 | count × root | nvv u16 | nvv × (node[16]
// seq u64). Roots past MaxInUseRoots are left out and Complete cleared;
// the vector must hold at most MaxVVEntries entries.
func AppendInUseResult(dst []byte, id uint64, u InUse) []byte {
	roots := u.Roots
	if len(roots) > MaxInUseRoots {
		roots, u.Complete = roots[:MaxInUseRoots], false
	}
	checkCount("version vector entries", len(u.VV), MaxVVEntries)
	dst = slices.Grow(dst, HeaderSize+8+8+1+4+len(roots)*inUseRootSize+2+len(u.VV)*vvEntrySize)
	start := len(dst)
	dst = appendHeader(dst, TypeInUseResult, id)
	dst = binary.BigEndian.AppendUint64(dst, u.Seq)
	dst = binary.BigEndian.AppendUint64(dst, uint64(max(u.Unpublished.Milliseconds(), 0)))
	c := byte(0)
	if u.Complete {
		c = 1
	}
	dst = append(dst, c)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(roots)))
	for _, r := range roots {
		dst = binary.BigEndian.AppendUint64(dst, r.Size)
		dst = append(dst, r.Depth)
		dst = append(dst, r.Hash[:]...)
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(u.VV)))
	for _, e := range u.VV {
		dst = append(dst, e.Node[:]...)
		dst = binary.BigEndian.AppendUint64(dst, e.Seq)
	}
	return finish(dst, start)
}
