package wire

import (
	"encoding/binary"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/oashare/oashare/index/format"
)

// The Decode functions parse one payload (Frame.Payload) each. Byte slices
// in their results alias the payload: no data is copied, and the results are
// valid only as long as the payload is (until the Reader's next Next); copy
// what must outlive it. Every count and length is checked against its limit
// and against the bytes remaining before any slice is allocated, so a
// hostile payload costs at most a slice proportional to its own size.
// Bytes after the last item are an error. All errors wrap ErrBadFrame or
// ErrFrameTooLarge.

// dec walks a payload. Its methods never read past the end: callers check
// remaining() first.
type dec struct {
	p   []byte
	off int
}

func (d *dec) remaining() int { return len(d.p) - d.off }

func (d *dec) u8() byte {
	v := d.p[d.off]
	d.off++
	return v
}

func (d *dec) u16() uint16 {
	v := binary.BigEndian.Uint16(d.p[d.off:])
	d.off += 2
	return v
}

func (d *dec) u32() uint32 {
	v := binary.BigEndian.Uint32(d.p[d.off:])
	d.off += 4
	return v
}

func (d *dec) u64() uint64 {
	v := binary.BigEndian.Uint64(d.p[d.off:])
	d.off += 8
	return v
}

func (d *dec) bytes(n int) []byte {
	b := d.p[d.off : d.off+n : d.off+n] // capped: appending to it cannot clobber the payload
	d.off += n
	return b
}

// need checks that n bytes remain for the field part of what. (Two strings,
// joined only on error: the success path must not allocate.)
func (d *dec) need(what, part string, n int) error {
	if d.remaining() < n {
		return fmt.Errorf("wire: %s %s: need %d bytes at offset %d, have %d: %w", what, part, n, d.off, d.remaining(), ErrBadFrame)
	}
	return nil
}

// count reads a u32 (or, when wide16, u16) item count and checks it against
// limit and against the bytes left given the smallest item size.
func (d *dec) count(what string, limit, minItem int, wide16 bool) (int, error) {
	var n int
	if wide16 {
		if err := d.need(what, "count", 2); err != nil {
			return 0, err
		}
		n = int(d.u16())
	} else {
		if err := d.need(what, "count", 4); err != nil {
			return 0, err
		}
		n = int(d.u32())
	}
	if n > limit {
		return 0, fmt.Errorf("wire: %s count %d exceeds the limit of %d: %w", what, n, limit, ErrFrameTooLarge)
	}
	if n*minItem > d.remaining() {
		return 0, fmt.Errorf("wire: %s count %d needs at least %d bytes, payload has %d left: %w", what, n, n*minItem, d.remaining(), ErrBadFrame)
	}
	return n, nil
}

// lengthPrefixed reads a u32 length, checks it against limit and the bytes left,
// and returns that many bytes.
func (d *dec) lengthPrefixed(what string, i, limit int) ([]byte, error) {
	if err := d.need(what, "length", 4); err != nil {
		return nil, err
	}
	n := d.u32()
	if n > uint32(limit) {
		return nil, fmt.Errorf("wire: %s item %d: length %d exceeds the limit of %d: %w", what, i, n, limit, ErrFrameTooLarge)
	}
	if int(n) > d.remaining() {
		return nil, fmt.Errorf("wire: %s item %d: length %d at offset %d, payload has %d left: %w", what, i, n, d.off, d.remaining(), ErrBadFrame)
	}
	return d.bytes(int(n)), nil
}

func (d *dec) end(what string) error {
	if d.remaining() != 0 {
		return fmt.Errorf("wire: %s: %d trailing bytes after the last item: %w", what, d.remaining(), ErrBadFrame)
	}
	return nil
}

// DecodePutChunks decodes a PutChunks payload. Data aliases p. The data is
// NOT checked against its hash here: the receiver does that once, where it
// stores the chunk.
func DecodePutChunks(p []byte) ([]Chunk, error) {
	d := dec{p: p}
	n, err := d.count("PutChunks", MaxChunksPerFrame, putChunkFixed, false)
	if err != nil {
		return nil, err
	}
	chunks := make([]Chunk, n)
	for i := range chunks {
		if err := d.need("PutChunks", "hash", hashSize); err != nil {
			return nil, err
		}
		chunks[i].Hash = format.Hash(d.bytes(hashSize))
		if chunks[i].Data, err = d.lengthPrefixed("PutChunks", i, format.MaxChunkData); err != nil {
			return nil, err
		}
	}
	if err := d.end("PutChunks"); err != nil {
		return nil, err
	}
	return chunks, nil
}

// DecodePutGroups decodes a PutGroups payload. Node and Data alias p. A node
// must be a multiple of 32 bytes (possibly empty) and the data at least one
// byte. Neither is checked against the group hash here: the receiver does
// that once, where it stores the group.
func DecodePutGroups(p []byte) ([]Group, error) {
	d := dec{p: p}
	n, err := d.count("PutGroups", MaxGroupsPerFrame, putGroupMin, false)
	if err != nil {
		return nil, err
	}
	groups := make([]Group, n)
	for i := range groups {
		g := &groups[i]
		if err := d.need("PutGroups", "group hash", hashSize); err != nil {
			return nil, err
		}
		g.Hash = format.Hash(d.bytes(hashSize))
		if g.Node, err = d.lengthPrefixed("PutGroups node", i, MaxGroupNode); err != nil {
			return nil, err
		}
		if len(g.Node)%hashSize != 0 {
			return nil, fmt.Errorf("wire: PutGroups item %d: node length %d is not a multiple of %d: %w", i, len(g.Node), hashSize, ErrBadFrame)
		}
		if g.Data, err = d.lengthPrefixed("PutGroups data", i, format.MaxGroupData); err != nil {
			return nil, err
		}
		if len(g.Data) == 0 {
			return nil, fmt.Errorf("wire: PutGroups item %d: empty data: %w", i, ErrBadFrame)
		}
	}
	if err := d.end("PutGroups"); err != nil {
		return nil, err
	}
	return groups, nil
}

// DecodeGetGroups decodes a GetGroups payload. Each range must be non-empty
// and within MaxGroupChunks.
func DecodeGetGroups(p []byte) ([]GroupRange, error) {
	d := dec{p: p}
	n, err := d.count("GetGroups", MaxGroupsPerFrame, groupRangeSize, false)
	if err != nil {
		return nil, err
	}
	ranges := make([]GroupRange, n)
	for i := range ranges {
		g := &ranges[i]
		g.Hash = format.Hash(d.bytes(hashSize))
		g.First = d.u16()
		g.N = d.u16()
		if g.N == 0 || int(g.First)+int(g.N) > format.MaxGroupChunks {
			return nil, fmt.Errorf("wire: GetGroups item %d: range [%d, %d+%d) is empty or beyond the %d chunks of a group: %w", i, g.First, g.First, g.N, format.MaxGroupChunks, ErrBadFrame)
		}
	}
	if err := d.end("GetGroups"); err != nil {
		return nil, err
	}
	return ranges, nil
}

// DecodeStatuses decodes a PutResult, HasResult or PushResult payload: the
// returned codes alias p. The count is checked against MaxRecordsPerFrame,
// the largest any request carries; the caller checks that it matches the
// request it sent.
func DecodeStatuses(p []byte) ([]byte, error) {
	d := dec{p: p}
	n, err := d.count("statuses", MaxRecordsPerFrame, 1, false)
	if err != nil {
		return nil, err
	}
	s := d.bytes(n)
	if err := d.end("statuses"); err != nil {
		return nil, err
	}
	return s, nil
}

// DecodeHashes decodes a GetChunks or HasChunks payload.
func DecodeHashes(p []byte) ([]format.Hash, error) {
	return decodeHashes(p, "hashes", MaxChunksPerFrame)
}

// DecodeGroupHashes decodes a HasGroups payload: at most MaxGroupsPerFrame
// group hashes.
func DecodeGroupHashes(p []byte) ([]format.Hash, error) {
	return decodeHashes(p, "group hashes", MaxGroupsPerFrame)
}

func decodeHashes(p []byte, what string, limit int) ([]format.Hash, error) {
	d := dec{p: p}
	n, err := d.count(what, limit, hashSize, false)
	if err != nil {
		return nil, err
	}
	hs := make([]format.Hash, n)
	for i := range hs {
		hs[i] = format.Hash(d.bytes(hashSize))
	}
	if err := d.end(what); err != nil {
		return nil, err
	}
	return hs, nil
}

// DecodeGetResult decodes a GetResult payload. Data aliases p and is nil for
// items whose Status is not StatusOK. The data is NOT checked against its
// hash here: the requester does that once, before using it.
func DecodeGetResult(p []byte) ([]GetItem, error) {
	return decodeItems(p, "GetResult", MaxChunksPerFrame, format.MaxChunkData)
}

// DecodeGroupResult decodes a GroupResult payload. Data aliases p and is nil
// for items whose Status is not StatusOK. The data is NOT checked against
// the group's node here: the requester does that once, before using it.
func DecodeGroupResult(p []byte) ([]GetItem, error) {
	return decodeItems(p, "GroupResult", MaxGroupsPerFrame, format.MaxGroupData)
}

func decodeItems(p []byte, what string, limit, maxData int) ([]GetItem, error) {
	d := dec{p: p}
	n, err := d.count(what, limit, 1, false)
	if err != nil {
		return nil, err
	}
	items := make([]GetItem, n)
	for i := range items {
		if err := d.need(what, "status", 1); err != nil {
			return nil, err
		}
		items[i].Status = d.u8()
		if items[i].Status != StatusOK {
			continue
		}
		if items[i].Data, err = d.lengthPrefixed(what, i, maxData); err != nil {
			return nil, err
		}
	}
	if err := d.end(what); err != nil {
		return nil, err
	}
	return items, nil
}

// DecodePull decodes a Pull payload: the requester's version vector.
func DecodePull(p []byte) ([]VVEntry, error) {
	d := dec{p: p}
	n, err := d.count("Pull version vector", MaxVVEntries, vvEntrySize, true)
	if err != nil {
		return nil, err
	}
	vv := make([]VVEntry, n)
	for i := range vv {
		vv[i].Node = format.NodeID(d.bytes(16))
		vv[i].Seq = d.u64()
	}
	if err := d.end("Pull"); err != nil {
		return nil, err
	}
	return vv, nil
}

func decodeRecordList(d *dec, what string) ([][]byte, error) {
	n, err := d.count(what, MaxRecordsPerFrame, recordFixed, false)
	if err != nil {
		return nil, err
	}
	recs := make([][]byte, n)
	for i := range recs {
		if recs[i], err = d.lengthPrefixed(what, i, MaxRecordBytes); err != nil {
			return nil, err
		}
	}
	if err := d.end(what); err != nil {
		return nil, err
	}
	return recs, nil
}

// DecodeRecords decodes a Records payload. The records alias p.
func DecodeRecords(p []byte) (more bool, recs [][]byte, err error) {
	d := dec{p: p}
	if err := d.need("Records", "more flag", 1); err != nil {
		return false, nil, err
	}
	switch m := d.u8(); m {
	case 0:
	case 1:
		more = true
	case 2:
		if err := d.need("Records", "count", 4); err != nil {
			return false, nil, err
		}
		if n := d.u32(); n != 0 {
			return false, nil, fmt.Errorf("wire: Records of a pruned log carry %d records: %w", n, ErrBadFrame)
		}
		if err := d.end("Records"); err != nil {
			return false, nil, err
		}
		return false, nil, ErrSnapshotNeeded
	default:
		return false, nil, fmt.Errorf("wire: Records flag %d, want 0, 1 or 2: %w", m, ErrBadFrame)
	}
	recs, err = decodeRecordList(&d, "Records")
	if err != nil {
		return false, nil, err
	}
	return more, recs, nil
}

// DecodePush decodes a Push payload. The records alias p.
func DecodePush(p []byte) ([][]byte, error) {
	d := dec{p: p}
	return decodeRecordList(&d, "Push")
}

// DecodeError decodes an Error payload. msg is a copy: it outlives p.
func DecodeError(p []byte) (code uint16, msg string, err error) {
	d := dec{p: p}
	if err := d.need("Error", "code and message length", 4); err != nil {
		return 0, "", err
	}
	code = d.u16()
	n := int(d.u16())
	if n > MaxErrorMsg {
		return 0, "", fmt.Errorf("wire: Error message length %d exceeds the limit of %d: %w", n, MaxErrorMsg, ErrFrameTooLarge)
	}
	if err := d.need("Error", "message", n); err != nil {
		return 0, "", err
	}
	msg = string(d.bytes(n))
	if err := d.end("Error"); err != nil {
		return 0, "", err
	}
	return code, msg, nil
}

// DecodeStatResult decodes a StatResult payload: exactly five u64.
func DecodeStatResult(p []byte) (StatInfo, error) {
	if len(p) != statSize {
		return StatInfo{}, fmt.Errorf("wire: StatResult payload is %d bytes, want %d: %w", len(p), statSize, ErrBadFrame)
	}
	return StatInfo{
		DiskTotal:  binary.BigEndian.Uint64(p[0:]),
		DiskFree:   binary.BigEndian.Uint64(p[8:]),
		Chunks:     binary.BigEndian.Uint64(p[16:]),
		ChunkBytes: binary.BigEndian.Uint64(p[24:]),
		Garbage:    binary.BigEndian.Uint64(p[32:]),
	}, nil
}

// DecodeWaitApplied decodes a WaitApplied payload.
func DecodeWaitApplied(p []byte) (origin format.NodeID, seq uint64, err error) {
	if len(p) != waitAppliedSize {
		return origin, 0, fmt.Errorf("wire: WaitApplied payload is %d bytes, want %d: %w", len(p), waitAppliedSize, ErrBadFrame)
	}
	copy(origin[:], p)
	return origin, binary.BigEndian.Uint64(p[16:]), nil
}

// DecodeApplied decodes an Applied payload: its status, StatusOK or
// StatusNotFound.
func DecodeApplied(p []byte) (byte, error) {
	if len(p) != 1 || (p[0] != StatusOK && p[0] != StatusNotFound) {
		return 0, fmt.Errorf("wire: Applied payload %x, want one status byte 0 or 1: %w", p, ErrBadFrame)
	}
	return p[0], nil
}

// DecodeJoin decodes a Join payload. name is a copy.
func DecodeJoin(p []byte) (mac [JoinMACSize]byte, name string, err error) {
	d := dec{p: p}
	if err := d.need("Join", "proof and name length", JoinMACSize+1); err != nil {
		return mac, "", err
	}
	copy(mac[:], d.bytes(JoinMACSize))
	n := int(d.u8())
	if n > MaxJoinName {
		return mac, "", fmt.Errorf("wire: Join name length %d exceeds the limit of %d: %w", n, MaxJoinName, ErrBadFrame)
	}
	if err := d.need("Join", "name", n); err != nil {
		return mac, "", err
	}
	name = string(d.bytes(n))
	if !utf8.ValidString(name) {
		return mac, "", fmt.Errorf("wire: Join name is not UTF-8: %w", ErrBadFrame)
	}
	return mac, name, d.end("Join")
}

// DecodeJoinResult decodes a JoinResult payload: the network description
// (aliasing p).
func DecodeJoinResult(p []byte) ([]byte, error) {
	d := dec{p: p}
	if err := d.need("JoinResult", "length", 2); err != nil {
		return nil, err
	}
	n := int(d.u16())
	if n == 0 || n > MaxJoinResult {
		return nil, fmt.Errorf("wire: JoinResult network is %d bytes, want 1 to %d: %w", n, MaxJoinResult, ErrBadFrame)
	}
	if err := d.need("JoinResult", "network", n); err != nil {
		return nil, err
	}
	network := d.bytes(n)
	return network, d.end("JoinResult")
}

// DecodeLeaving decodes a Leaving payload.
func DecodeLeaving(p []byte) (bool, error) {
	if len(p) != 1 || p[0] > 1 {
		return false, fmt.Errorf("%w: Leaving payload %x, want one byte 0 or 1", ErrBadFrame, p)
	}
	return p[0] == 1, nil
}

// DecodeInUseResult decodes an InUseResult payload. The complete flag
// must be 0 or 1 and the count match the bytes.
func DecodeInUseResult(p []byte) (InUse, error) {
	var u InUse
	d := dec{p: p}
	if err := d.need("InUseResult", "header", 8+8+1); err != nil {
		return u, err
	}
	u.Seq = d.u64()
	ms := d.u64()
	if ms > uint64(365*24*time.Hour/time.Millisecond) {
		return u, fmt.Errorf("wire: InUseResult: unpublished for %d ms, more than a year: %w", ms, ErrBadFrame)
	}
	u.Unpublished = time.Duration(ms) * time.Millisecond
	switch d.u8() {
	case 0:
	case 1:
		u.Complete = true
	default:
		return u, fmt.Errorf("wire: InUseResult: complete flag not 0 or 1: %w", ErrBadFrame)
	}
	n, err := d.count("InUseResult", MaxInUseRoots, inUseRootSize, false)
	if err != nil {
		return u, err
	}
	u.Roots = make([]Root, n)
	for i := range u.Roots {
		u.Roots[i].Size = d.u64()
		u.Roots[i].Depth = d.u8()
		copy(u.Roots[i].Hash[:], d.bytes(32))
	}
	if n, err = d.count("InUseResult version vector", MaxVVEntries, vvEntrySize, true); err != nil {
		return u, err
	}
	u.VV = make([]VVEntry, n)
	for i := range u.VV {
		u.VV[i].Node = format.NodeID(d.bytes(16))
		u.VV[i].Seq = d.u64()
	}
	return u, d.end("InUseResult")
}
