package wire

import (
	"bytes"
	"fmt"
	"time"

	"github.com/oashare/oashare/index/format"
)

// Typed values of the payloads whose decoder returns more than one value.
type recordsVal struct {
	More bool
	Recs [][]byte
}

type errorVal struct {
	Code uint16
	Msg  string
}

type joinVal struct {
	mac  [JoinMACSize]byte
	name string
}

type snapshotReq struct {
	session uint64
	after   []byte
}

type waitVal struct {
	Origin format.NodeID
	Seq    uint64
}

// decodeFrame decodes f's payload with the decoder of its type. Ping, Pong
// and Bye decode to nil.
func decodeFrame(f Frame) (any, error) {
	switch f.Type {
	case TypeStatResult:
		return DecodeStatResult(f.Payload)
	case TypePing, TypePong, TypeBye, TypeStat, TypeInUse:
		if len(f.Payload) != 0 {
			return nil, fmt.Errorf("%v with payload: %w", f.Type, ErrBadFrame)
		}
		return nil, nil
	case TypePutChunks:
		return DecodePutChunks(f.Payload)
	case TypePutResult, TypeHasResult, TypePushResult:
		return DecodeStatuses(f.Payload)
	case TypeGetChunks, TypeHasChunks:
		return DecodeHashes(f.Payload)
	case TypeGetResult:
		return DecodeGetResult(f.Payload)
	case TypePutGroups:
		return DecodePutGroups(f.Payload)
	case TypeGetGroups:
		return DecodeGetGroups(f.Payload)
	case TypeGroupResult:
		return DecodeGroupResult(f.Payload)
	case TypeHasGroups:
		return DecodeGroupHashes(f.Payload)
	case TypePull:
		return DecodePull(f.Payload)
	case TypeRecords:
		more, recs, err := DecodeRecords(f.Payload)
		return recordsVal{more, recs}, err
	case TypePush:
		return DecodePush(f.Payload)
	case TypeError:
		code, msg, err := DecodeError(f.Payload)
		return errorVal{code, msg}, err
	case TypeWaitApplied:
		origin, seq, err := DecodeWaitApplied(f.Payload)
		return waitVal{origin, seq}, err
	case TypeApplied:
		return DecodeApplied(f.Payload)
	case TypeJoin:
		mac, name, err := DecodeJoin(f.Payload)
		return joinVal{mac, name}, err
	case TypeJoinResult:
		return DecodeJoinResult(f.Payload)
	case TypeLeaving:
		return DecodeLeaving(f.Payload)
	case TypeInUseResult:
		return DecodeInUseResult(f.Payload)
	case TypeSnapshot:
		session, after, err := DecodeSnapshot(f.Payload)
		return snapshotReq{session, after}, err
	case TypeSnapshotPage:
		return DecodeSnapshotPage(f.Payload)
	}
	return nil, fmt.Errorf("type %v: %w", f.Type, ErrUnknownType)
}

// encodeFrame is the inverse of decodeFrame, through the typed Append
// functions.
func encodeFrame(dst []byte, t Type, id uint64, v any) []byte {
	switch t {
	case TypePing:
		return AppendPing(dst, id)
	case TypePong:
		return AppendPong(dst, id)
	case TypeBye:
		return AppendBye(dst, id)
	case TypeStat:
		return AppendStat(dst, id)
	case TypeStatResult:
		return AppendStatResult(dst, id, v.(StatInfo))
	case TypePutChunks:
		return AppendPutChunks(dst, id, v.([]Chunk))
	case TypePutResult:
		return AppendPutResult(dst, id, v.([]byte))
	case TypeHasResult:
		return AppendHasResult(dst, id, v.([]byte))
	case TypePushResult:
		return AppendPushResult(dst, id, v.([]byte))
	case TypeGetChunks:
		return AppendGetChunks(dst, id, v.([]format.Hash))
	case TypeHasChunks:
		return AppendHasChunks(dst, id, v.([]format.Hash))
	case TypeGetResult:
		return AppendGetResult(dst, id, v.([]GetItem))
	case TypePutGroups:
		return AppendPutGroups(dst, id, v.([]Group))
	case TypeGetGroups:
		return AppendGetGroups(dst, id, v.([]GroupRange))
	case TypeGroupResult:
		return AppendGroupResult(dst, id, v.([]GetItem))
	case TypeHasGroups:
		return AppendHasGroups(dst, id, v.([]format.Hash))
	case TypePull:
		return AppendPull(dst, id, v.([]VVEntry))
	case TypeRecords:
		r := v.(recordsVal)
		return AppendRecords(dst, id, r.More, r.Recs)
	case TypePush:
		return AppendPush(dst, id, v.([][]byte))
	case TypeError:
		e := v.(errorVal)
		return AppendError(dst, id, e.Code, e.Msg)
	case TypeWaitApplied:
		w := v.(waitVal)
		return AppendWaitApplied(dst, id, w.Origin, w.Seq)
	case TypeApplied:
		return AppendApplied(dst, id, v.(byte))
	case TypeJoin:
		j := v.(joinVal)
		return AppendJoin(dst, id, j.mac, j.name)
	case TypeJoinResult:
		return AppendJoinResult(dst, id, v.([]byte))
	case TypeLeaving:
		return AppendLeaving(dst, id, v.(bool))
	case TypeInUse:
		return AppendInUse(dst, id)
	case TypeInUseResult:
		return AppendInUseResult(dst, id, v.(InUse))
	case TypeSnapshot:
		r := v.(snapshotReq)
		return AppendSnapshot(dst, id, r.session, r.after)
	case TypeSnapshotPage:
		return AppendSnapshotPage(dst, id, v.(SnapshotPage))
	}
	panic("encodeFrame: unknown type " + t.String())
}

// canonical checks that a frame the decoders accept re-encodes, through the
// typed Append function, to exactly the bytes it came from: the encoding is
// canonical and the decoders lose nothing.
func canonical(f Frame) error {
	v, err := decodeFrame(f)
	if err != nil {
		return nil // rejected: fine, as long as nothing panicked
	}
	if s, ok := v.([]byte); ok && (f.Type == TypePutResult || f.Type == TypeHasResult) && len(s) > MaxChunksPerFrame {
		// DecodeStatuses bounds counts by the largest request (Push);
		// chunknet checks a result's count against its own request.
		return nil
	}
	want := AppendFrame(nil, f.Type, f.ReqID, f.Payload)
	got := encodeFrame(nil, f.Type, f.ReqID, v)
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%v: decoded %v re-encodes to\n%x\nwant\n%x", f.Type, v, got, want)
	}
	return nil
}

// same compares decoded values, ignoring nil versus empty slices.
func same(a, b any) bool { return fmt.Sprintf("%v", a) == fmt.Sprintf("%v", b) }

// testFrame is one valid frame of each shape, for round trips, golden files
// and fuzz seeds.
type testFrame struct {
	name string // golden file name
	t    Type
	id   uint64
	v    any // decoded value
}

func testFrames() []testFrame {
	hi := []byte("hi")
	var ff format.Hash
	for i := range ff {
		ff[i] = 0xff
	}
	// A two-chunk group: its node is the chunks' hashes, its name the
	// node's hash; and a one-chunk file's group, named by its chunk.
	c1, c2 := []byte("chunk-1"), []byte("c2")
	h1, h2 := format.Sum(c1), format.Sum(c2)
	node := append(h1[:], h2[:]...)
	group := format.Sum(node)
	node1 := format.NodeID{0: 1, 15: 0x11}
	node2 := format.NodeID{0: 2, 15: 0x22}
	return []testFrame{
		{"ping", TypePing, 1, nil},
		{"pong", TypePong, 1, nil},
		{"bye", TypeBye, 0, nil},
		{"put_chunks", TypePutChunks, 7, []Chunk{
			{format.Sum(hi), hi},
			{format.Sum(nil), []byte{}},
			{ff, []byte{1, 2, 3}},
		}},
		{"put_chunks_empty", TypePutChunks, 2, []Chunk{}},
		{"put_result", TypePutResult, 7, []byte{StatusOK, StatusNotFound, StatusBadHash, StatusTooLarge, StatusStoreError}},
		{"get_chunks", TypeGetChunks, 8, []format.Hash{format.Sum(hi), ff}},
		{"get_result", TypeGetResult, 8, []GetItem{{StatusOK, hi}, {StatusNotFound, nil}, {StatusOK, []byte{}}}},
		{"has_chunks", TypeHasChunks, 9, []format.Hash{format.Sum(hi), ff}},
		{"has_result", TypeHasResult, 9, []byte{StatusOK, StatusNotFound}},
		{"pull", TypePull, 10, []VVEntry{{node1, 1}, {node2, 1<<40 + 5}}},
		{"pull_empty", TypePull, 3, []VVEntry{}},
		{"records", TypeRecords, 10, recordsVal{true, [][]byte{[]byte("rec-1"), {}, {0, 0xff}}}},
		{"records_last", TypeRecords, 4, recordsVal{false, [][]byte{}}},
		{"push", TypePush, 11, [][]byte{[]byte("a"), {}, []byte("bcd")}},
		{"push_result", TypePushResult, 11, []byte{StatusOK, StatusStoreError}},
		{"error", TypeError, 12, errorVal{CodeBadRequest, "too many chunks"}},
		{"error_empty", TypeError, 1<<64 - 1, errorVal{CodeInternal, ""}},
		{"stat", TypeStat, 13, nil},
		{"stat_result", TypeStatResult, 13, StatInfo{DiskTotal: 1 << 40, DiskFree: 1<<39 + 1, Chunks: 3, ChunkBytes: 1536, Garbage: 512}},
		{"put_groups", TypePutGroups, 14, []Group{
			{group, node, append(bytes.Clone(c1), c2...)},
			{format.Sum(hi), []byte{}, hi},
		}},
		{"get_groups", TypeGetGroups, 15, []GroupRange{{group, 0, 2}, {format.Sum(hi), 0, 1}, {ff, 255, 1}, {ff, 0, format.MaxGroupChunks}}},
		{"group_result", TypeGroupResult, 15, []GetItem{{StatusOK, append(bytes.Clone(c1), c2...)}, {StatusOK, hi}, {StatusNotFound, nil}, {StatusOK, []byte{}}}},
		{"has_groups", TypeHasGroups, 16, []format.Hash{group, format.Sum(hi)}},
		{"wait_applied", TypeWaitApplied, 17, waitVal{node1, 1<<33 + 7}},
		{"applied", TypeApplied, 17, StatusOK},
		{"applied_not_yet", TypeApplied, 18, StatusNotFound},
		{"join", TypeJoin, 19, joinVal{[JoinMACSize]byte{1, 31: 2}, "host-a"}},
		{"join_result", TypeJoinResult, 19, []byte("network")},
		{"leaving", TypeLeaving, 0, true},
		{"leaving_no_more", TypeLeaving, 0, false},
		{"in_use", TypeInUse, 20, nil},
		{"in_use_result", TypeInUseResult, 20, InUse{Seq: 1 << 40, Unpublished: 90 * time.Second, Complete: true,
			Roots: []Root{{Size: 1, Hash: h1}, {Size: 1 << 50, Depth: 6, Hash: ff}},
			VV:    []VVEntry{{Node: format.NodeID{1}, Seq: 9}}}},
		{"in_use_result_none", TypeInUseResult, 20, InUse{Roots: []Root{}, VV: []VVEntry{}}},
		{"snapshot_first", TypeSnapshot, 21, snapshotReq{0, []byte{}}},
		{"snapshot_next", TypeSnapshot, 21, snapshotReq{7, []byte("hkey")}},
		{"snapshot_page", TypeSnapshotPage, 21, SnapshotPage{Session: 7, Done: true, HLC: 1 << 40,
			VV:    []SnapshotVV{{Node: format.NodeID{2}, Seq: 3, HLC: 4}},
			Items: []SnapshotItem{{Key: []byte("i12345678"), Value: []byte{1, 2}}, {Key: []byte("H"), Value: []byte{}}}}},
		{"snapshot_page_empty", TypeSnapshotPage, 21, SnapshotPage{VV: []SnapshotVV{}, Items: []SnapshotItem{}}},
	}
}

func testHello() Hello {
	return Hello{
		Version:    Version,
		Node:       format.NodeID{0xde, 0xad, 0xbe, 0xef, 15: 0x01},
		Network:    "home-lan",
		ListenPort: 7946,
	}
}
