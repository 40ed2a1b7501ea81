package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
	"testing"

	"github.com/oashare/oashare/index/format"
)

func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

var hash32 = bytes.Repeat([]byte{0xab}, 32)

// groupItem is one PutGroups item with the given lengths: node and data of
// nodeLen and dataLen zero bytes.
func groupItem(nodeLen, dataLen int) []byte {
	return cat(hash32, u32(uint32(nodeLen)), make([]byte, nodeLen), u32(uint32(dataLen)), make([]byte, dataLen))
}

// groupRange is one GetGroups item.
func groupRange(first, n uint16) []byte { return cat(hash32, u16(first), u16(n)) }

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		t    Type
		p    []byte
		want error
	}{
		// PutChunks
		{"put empty payload", TypePutChunks, nil, ErrBadFrame},
		{"put count over limit", TypePutChunks, u32(MaxChunksPerFrame + 1), ErrFrameTooLarge},
		{"put count max u32", TypePutChunks, u32(1<<32 - 1), ErrFrameTooLarge},
		{"put count beyond payload", TypePutChunks, cat(u32(2), hash32, u32(0)), ErrBadFrame},
		{"put data over limit", TypePutChunks, cat(u32(1), hash32, u32(format.MaxChunkData+1)), ErrFrameTooLarge},
		{"put data beyond payload", TypePutChunks, cat(u32(1), hash32, u32(5), []byte("abc")), ErrBadFrame},
		{"put trailing", TypePutChunks, cat(u32(1), hash32, u32(1), []byte("ab")), ErrBadFrame},
		{"put zero count trailing", TypePutChunks, cat(u32(0), []byte{0}), ErrBadFrame},
		// Statuses
		{"statuses empty", TypePutResult, nil, ErrBadFrame},
		{"statuses over limit", TypePushResult, u32(MaxRecordsPerFrame + 1), ErrFrameTooLarge},
		{"statuses beyond payload", TypePutResult, cat(u32(3), []byte{0, 0}), ErrBadFrame},
		{"statuses trailing", TypeHasResult, cat(u32(1), []byte{0, 0}), ErrBadFrame},
		// Hashes
		{"hashes short count", TypeGetChunks, []byte{0, 0, 1}, ErrBadFrame},
		{"hashes over limit", TypeGetChunks, u32(MaxChunksPerFrame + 1), ErrFrameTooLarge},
		{"hashes beyond payload", TypeHasChunks, cat(u32(2), hash32, hash32[:31]), ErrBadFrame},
		{"hashes trailing", TypeHasChunks, cat(u32(1), hash32, []byte{1}), ErrBadFrame},
		// GetResult
		{"get over limit", TypeGetResult, u32(MaxChunksPerFrame + 1), ErrFrameTooLarge},
		{"get count beyond payload", TypeGetResult, cat(u32(3), []byte{1, 1}), ErrBadFrame},
		{"get missing length", TypeGetResult, cat(u32(1), []byte{0, 0, 0}), ErrBadFrame},
		{"get data over limit", TypeGetResult, cat(u32(1), []byte{0}, u32(format.MaxChunkData+1)), ErrFrameTooLarge},
		{"get data beyond payload", TypeGetResult, cat(u32(1), []byte{0}, u32(3), []byte("ab")), ErrBadFrame},
		{"get trailing", TypeGetResult, cat(u32(1), []byte{1}, []byte{9}), ErrBadFrame},
		// Pull
		{"pull empty", TypePull, nil, ErrBadFrame},
		{"pull over limit", TypePull, u16(MaxVVEntries + 1), ErrFrameTooLarge},
		{"pull max u16", TypePull, u16(1<<16 - 1), ErrFrameTooLarge},
		{"pull beyond payload", TypePull, cat(u16(1), make([]byte, 23)), ErrBadFrame},
		{"pull trailing", TypePull, cat(u16(1), make([]byte, 25)), ErrBadFrame},
		// Records
		{"records empty", TypeRecords, nil, ErrBadFrame},
		{"records bad flag", TypeRecords, cat([]byte{3}, u32(0)), ErrBadFrame},
		{"records pruned with records", TypeRecords, cat([]byte{2}, u32(1), u32(1), []byte{1}), ErrBadFrame},
		{"records pruned trailing", TypeRecords, cat([]byte{2}, u32(0), []byte{0}), ErrBadFrame},
		{"snapshot key too long", TypeSnapshot, cat(make([]byte, 8), []byte{0x04, 0x01}, make([]byte, 1025)), ErrBadFrame},
		{"snapshot cut", TypeSnapshot, cat(make([]byte, 8), []byte{0, 5}, []byte("ab")), ErrBadFrame},
		{"snapshot page bad done", TypeSnapshotPage, cat(make([]byte, 8), []byte{2}, make([]byte, 8), []byte{0, 0}, u32(0)), ErrBadFrame},
		{"snapshot page empty key", TypeSnapshotPage, cat(make([]byte, 8), []byte{1}, make([]byte, 8), []byte{0, 0}, u32(1), []byte{0, 0}, u32(0)), ErrBadFrame},
		{"snapshot page value too long", TypeSnapshotPage, cat(make([]byte, 8), []byte{1}, make([]byte, 8), []byte{0, 0}, u32(1), []byte{0, 1, 'k'}, u32(MaxSnapshotValue+1)), ErrFrameTooLarge},
		{"snapshot page too many items", TypeSnapshotPage, cat(make([]byte, 8), []byte{1}, make([]byte, 8), []byte{0, 0}, u32(1000)), ErrBadFrame},
		{"in use result vv cut", TypeInUseResult, cat(make([]byte, 17), u32(0), []byte{0, 1}, make([]byte, 10)), ErrBadFrame},
		{"records no count", TypeRecords, []byte{1}, ErrBadFrame},
		{"records over limit", TypeRecords, cat([]byte{0}, u32(MaxRecordsPerFrame+1)), ErrFrameTooLarge},
		{"records count beyond payload", TypeRecords, cat([]byte{0}, u32(2), u32(0)), ErrBadFrame},
		{"record over limit", TypeRecords, cat([]byte{0}, u32(1), u32(MaxRecordBytes+1)), ErrFrameTooLarge},
		{"record beyond payload", TypeRecords, cat([]byte{0}, u32(1), u32(4), []byte("abc")), ErrBadFrame},
		{"records trailing", TypeRecords, cat([]byte{1}, u32(0), []byte{0}), ErrBadFrame},
		// Push
		{"push over limit", TypePush, u32(MaxRecordsPerFrame + 1), ErrFrameTooLarge},
		{"push record over limit", TypePush, cat(u32(1), u32(1<<32-1)), ErrFrameTooLarge},
		{"push trailing", TypePush, cat(u32(1), u32(0), []byte{0}), ErrBadFrame},
		// Error
		{"error empty", TypeError, nil, ErrBadFrame},
		{"error short", TypeError, []byte{0, 1, 0}, ErrBadFrame},
		{"error msg over limit", TypeError, cat(u16(1), u16(MaxErrorMsg+1), make([]byte, MaxErrorMsg+1)), ErrFrameTooLarge},
		{"error msg beyond payload", TypeError, cat(u16(1), u16(5), []byte("abcd")), ErrBadFrame},
		{"error trailing", TypeError, cat(u16(1), u16(1), []byte("ab")), ErrBadFrame},
		// PutGroups
		{"put groups empty payload", TypePutGroups, nil, ErrBadFrame},
		{"put groups count over limit", TypePutGroups, u32(MaxGroupsPerFrame + 1), ErrFrameTooLarge},
		{"put groups count over limit with bytes", TypePutGroups, cat(u32(MaxGroupsPerFrame+1), bytes.Repeat(groupItem(0, 1), MaxGroupsPerFrame+1)), ErrFrameTooLarge},
		{"put groups count max u32", TypePutGroups, u32(1<<32 - 1), ErrFrameTooLarge},
		{"put groups count beyond payload", TypePutGroups, cat(u32(2), groupItem(0, 1)), ErrBadFrame},
		{"put groups count beyond payload, smallest items", TypePutGroups, cat(u32(2), groupItem(0, 1), hash32, u32(0), u32(0)), ErrBadFrame},
		{"put groups node not ×32", TypePutGroups, cat(u32(1), groupItem(33, 1)), ErrBadFrame},
		{"put groups node of 1", TypePutGroups, cat(u32(1), groupItem(1, 1)), ErrBadFrame},
		{"put groups node over limit", TypePutGroups, cat(u32(1), groupItem(MaxGroupNode+32, 1)), ErrFrameTooLarge},
		{"put groups node max u32", TypePutGroups, cat(u32(1), hash32, u32(1<<32-1), u32(1), []byte{1}), ErrFrameTooLarge},
		{"put groups node beyond payload", TypePutGroups, cat(u32(1), hash32, u32(64), make([]byte, 32), u32(1), []byte{1}), ErrBadFrame},
		{"put groups data 0", TypePutGroups, cat(u32(1), groupItem(32, 0), []byte{0}), ErrBadFrame},
		{"put groups data 0, second item", TypePutGroups, cat(u32(2), groupItem(0, 2), groupItem(0, 0), []byte{0}), ErrBadFrame},
		{"put groups data over limit", TypePutGroups, cat(u32(1), groupItem(0, format.MaxGroupData+1)), ErrFrameTooLarge},
		{"put groups data beyond payload", TypePutGroups, cat(u32(1), hash32, u32(0), u32(5), []byte("abc")), ErrBadFrame},
		{"put groups truncated hash", TypePutGroups, cat(u32(2), groupItem(0, 50), hash32[:31]), ErrBadFrame},
		{"put groups truncated data length", TypePutGroups, cat(u32(1), hash32, u32(32), make([]byte, 32), u32(0)[:3]), ErrBadFrame},
		{"put groups trailing", TypePutGroups, cat(u32(1), groupItem(32, 3), []byte{0}), ErrBadFrame},
		{"put groups zero count trailing", TypePutGroups, cat(u32(0), []byte{0}), ErrBadFrame},
		// GetGroups
		{"get groups empty payload", TypeGetGroups, nil, ErrBadFrame},
		{"get groups count over limit", TypeGetGroups, u32(MaxGroupsPerFrame + 1), ErrFrameTooLarge},
		{"get groups count over limit with bytes", TypeGetGroups, cat(u32(MaxGroupsPerFrame+1), bytes.Repeat(groupRange(0, 1), MaxGroupsPerFrame+1)), ErrFrameTooLarge},
		{"get groups count beyond payload", TypeGetGroups, cat(u32(2), groupRange(0, 1)), ErrBadFrame},
		{"get groups truncated item", TypeGetGroups, cat(u32(1), groupRange(0, 1)[:35]), ErrBadFrame},
		{"get groups n 0", TypeGetGroups, cat(u32(1), groupRange(0, 0)), ErrBadFrame},
		{"get groups n 0, second item", TypeGetGroups, cat(u32(2), groupRange(3, 4), groupRange(7, 0)), ErrBadFrame},
		{"get groups first+n 257", TypeGetGroups, cat(u32(1), groupRange(1, format.MaxGroupChunks)), ErrBadFrame},
		{"get groups first 256", TypeGetGroups, cat(u32(1), groupRange(format.MaxGroupChunks, 1)), ErrBadFrame},
		{"get groups n 257", TypeGetGroups, cat(u32(1), groupRange(0, format.MaxGroupChunks+1)), ErrBadFrame},
		{"get groups range wraps u16", TypeGetGroups, cat(u32(1), groupRange(1<<16-1, 1<<16-1)), ErrBadFrame},
		{"get groups trailing", TypeGetGroups, cat(u32(1), groupRange(0, 1), []byte{0}), ErrBadFrame},
		// GroupResult
		{"group result empty payload", TypeGroupResult, nil, ErrBadFrame},
		{"group result count over limit", TypeGroupResult, u32(MaxGroupsPerFrame + 1), ErrFrameTooLarge},
		{"group result count over limit with bytes", TypeGroupResult, cat(u32(MaxGroupsPerFrame+1), make([]byte, MaxGroupsPerFrame+1)), ErrFrameTooLarge},
		{"group result count beyond payload", TypeGroupResult, cat(u32(3), []byte{1, 1}), ErrBadFrame},
		{"group result missing length", TypeGroupResult, cat(u32(1), []byte{0, 0, 0}), ErrBadFrame},
		{"group result data over limit", TypeGroupResult, cat(u32(1), []byte{0}, u32(format.MaxGroupData+1), make([]byte, format.MaxGroupData+1)), ErrFrameTooLarge},
		{"group result data beyond payload", TypeGroupResult, cat(u32(1), []byte{0}, u32(3), []byte("ab")), ErrBadFrame},
		{"group result trailing", TypeGroupResult, cat(u32(1), []byte{1}, []byte{9}), ErrBadFrame},
		// HasGroups
		{"group hashes short count", TypeHasGroups, []byte{0, 0, 1}, ErrBadFrame},
		{"group hashes over limit", TypeHasGroups, u32(MaxGroupsPerFrame + 1), ErrFrameTooLarge},
		{"group hashes over limit with bytes", TypeHasGroups, cat(u32(MaxGroupsPerFrame+1), bytes.Repeat(hash32, MaxGroupsPerFrame+1)), ErrFrameTooLarge},
		{"group hashes beyond payload", TypeHasGroups, cat(u32(2), hash32, hash32[:31]), ErrBadFrame},
		{"group hashes trailing", TypeHasGroups, cat(u32(1), hash32, []byte{1}), ErrBadFrame},
		// WaitApplied, Applied
		{"wait applied empty", TypeWaitApplied, nil, ErrBadFrame},
		{"wait applied short", TypeWaitApplied, make([]byte, 23), ErrBadFrame},
		{"wait applied trailing", TypeWaitApplied, make([]byte, 25), ErrBadFrame},
		{"applied empty", TypeApplied, nil, ErrBadFrame},
		{"applied unknown status", TypeApplied, []byte{StatusBadHash}, ErrBadFrame},
		{"applied trailing", TypeApplied, []byte{StatusOK, 0}, ErrBadFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := decodeFrame(Frame{Type: tt.t, Payload: tt.p})
			if !errors.Is(err, tt.want) {
				t.Fatalf("%v: got %v, %v; want %v", tt.t, v, err, tt.want)
			}
		})
	}
}

// TestDecodeRejectsCutsAndTrailers: every strict prefix of a valid payload,
// and the payload with one byte more, are rejected.
func TestDecodeRejectsCutsAndTrailers(t *testing.T) {
	for _, tf := range testFrames() {
		b := encodeFrame(nil, tf.t, tf.id, tf.v)
		p := b[HeaderSize:]
		for i := range len(p) {
			if _, err := decodeFrame(Frame{Type: tf.t, Payload: p[:i]}); !errors.Is(err, ErrBadFrame) {
				t.Errorf("%s cut at %d: %v, want ErrBadFrame", tf.name, i, err)
			}
		}
		long := append(bytes.Clone(p), 0)
		if _, err := decodeFrame(Frame{Type: tf.t, Payload: long}); !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s with a trailing byte: %v, want ErrBadFrame", tf.name, err)
		}
	}
}

// TestDecodeCountBeforeAlloc: a count at its limit over a tiny payload is
// rejected without allocating a count-sized slice.
func TestDecodeCountBeforeAlloc(t *testing.T) {
	payloads := map[string]func() error{
		"put":     func() error { _, err := DecodePutChunks(u32(MaxChunksPerFrame)); return err },
		"hashes":  func() error { _, err := DecodeHashes(u32(MaxChunksPerFrame)); return err },
		"get":     func() error { _, err := DecodeGetResult(u32(MaxChunksPerFrame)); return err },
		"pull":    func() error { _, err := DecodePull(u16(MaxVVEntries)); return err },
		"records": func() error { _, _, err := DecodeRecords(cat([]byte{0}, u32(MaxRecordsPerFrame))); return err },
		"push":    func() error { _, err := DecodePush(u32(MaxRecordsPerFrame)); return err },
		// Group items are 32 to 56 bytes in the result: 1024 of them are
		// at least 32 KiB.
		"put groups":   func() error { _, err := DecodePutGroups(u32(MaxGroupsPerFrame)); return err },
		"get groups":   func() error { _, err := DecodeGetGroups(u32(MaxGroupsPerFrame)); return err },
		"group result": func() error { _, err := DecodeGroupResult(u32(MaxGroupsPerFrame)); return err },
		"group hashes": func() error { _, err := DecodeGroupHashes(u32(MaxGroupsPerFrame)); return err },
	}
	for name, f := range payloads {
		if err := f(); !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: %v, want ErrBadFrame", name, err)
		}
		// The smallest of these slices would be 1024 × 32 bytes; 100 runs
		// allocating error values only stay far below 100 of them.
		n := bytesAllocated(func() {
			for range 100 {
				_ = f()
			}
		})
		if n > 64<<10 {
			t.Errorf("%s: 100 rejected payloads allocated %d bytes", name, n)
		}
	}
}

// TestDecodeLimitsAccepted: the largest counts the limits allow decode.
func TestDecodeLimitsAccepted(t *testing.T) {
	recs := make([][]byte, MaxRecordsPerFrame)
	b := AppendPush(nil, 1, recs)
	got, err := DecodePush(b[HeaderSize:])
	if err != nil || len(got) != MaxRecordsPerFrame {
		t.Errorf("push of %d empty records: %d, %v", MaxRecordsPerFrame, len(got), err)
	}
	b = AppendPull(nil, 1, make([]VVEntry, MaxVVEntries))
	if vv, err := DecodePull(b[HeaderSize:]); err != nil || len(vv) != MaxVVEntries {
		t.Errorf("pull of %d entries: %d, %v", MaxVVEntries, len(vv), err)
	}
	b = AppendGetResult(nil, 1, []GetItem{{StatusOK, make([]byte, format.MaxChunkData)}})
	if items, err := DecodeGetResult(b[HeaderSize:]); err != nil || len(items[0].Data) != format.MaxChunkData {
		t.Errorf("get result of a %d-byte chunk: %v", format.MaxChunkData, err)
	}
	b = AppendPutGroups(nil, 1, []Group{{Node: make([]byte, MaxGroupNode), Data: make([]byte, format.MaxGroupData)}})
	if gs, err := DecodePutGroups(b[HeaderSize:]); err != nil || len(gs[0].Node) != MaxGroupNode || len(gs[0].Data) != format.MaxGroupData {
		t.Errorf("put groups with a %d-byte node and %d bytes of data: %v", MaxGroupNode, format.MaxGroupData, err)
	}
	gs := make([]Group, MaxGroupsPerFrame)
	for i := range gs {
		gs[i].Data = []byte{byte(i)}
	}
	b = AppendPutGroups(nil, 1, gs)
	if got, err := DecodePutGroups(b[HeaderSize:]); err != nil || len(got) != MaxGroupsPerFrame {
		t.Errorf("put groups of %d one-byte groups: %d, %v", MaxGroupsPerFrame, len(got), err)
	}
	rs := make([]GroupRange, MaxGroupsPerFrame)
	for i := range rs {
		rs[i] = GroupRange{First: uint16(i % format.MaxGroupChunks), N: uint16(format.MaxGroupChunks - i%format.MaxGroupChunks)}
	}
	b = AppendGetGroups(nil, 1, rs)
	if got, err := DecodeGetGroups(b[HeaderSize:]); err != nil || !same(got, rs) {
		t.Errorf("get groups of %d ranges up to chunk %d: %v", MaxGroupsPerFrame, format.MaxGroupChunks, err)
	}
	b = AppendGroupResult(nil, 1, []GetItem{{StatusOK, make([]byte, format.MaxGroupData)}})
	if items, err := DecodeGroupResult(b[HeaderSize:]); err != nil || len(items[0].Data) != format.MaxGroupData {
		t.Errorf("group result of a %d-byte group: %v", format.MaxGroupData, err)
	}
	b = AppendGroupResult(nil, 1, make([]GetItem, MaxGroupsPerFrame))
	if items, err := DecodeGroupResult(b[HeaderSize:]); err != nil || len(items) != MaxGroupsPerFrame {
		t.Errorf("group result of %d items: %v", MaxGroupsPerFrame, err)
	}
	b = AppendHasGroups(nil, 1, make([]format.Hash, MaxGroupsPerFrame))
	if hs, err := DecodeGroupHashes(b[HeaderSize:]); err != nil || len(hs) != MaxGroupsPerFrame {
		t.Errorf("has groups of %d hashes: %v", MaxGroupsPerFrame, err)
	}
	// The group limits are their own: more hashes than a HasGroups may
	// carry still make a valid HasChunks, and a chunk above MaxChunkData a
	// valid group.
	b = AppendHasChunks(nil, 1, make([]format.Hash, MaxGroupsPerFrame+1))
	if _, err := DecodeHashes(b[HeaderSize:]); err != nil {
		t.Errorf("has chunks of %d hashes: %v", MaxGroupsPerFrame+1, err)
	}
	if _, err := DecodeGroupHashes(b[HeaderSize:]); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("has groups of %d hashes: %v, want ErrFrameTooLarge", MaxGroupsPerFrame+1, err)
	}
	b = AppendGroupResult(nil, 1, []GetItem{{StatusOK, make([]byte, format.MaxChunkData+1)}})
	if _, err := DecodeGetResult(b[HeaderSize:]); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("get result of a %d-byte chunk: %v, want ErrFrameTooLarge", format.MaxChunkData+1, err)
	}
	if _, err := DecodeGroupResult(b[HeaderSize:]); err != nil {
		t.Errorf("group result of %d bytes: %v", format.MaxChunkData+1, err)
	}
	b = AppendRecords(nil, 1, true, [][]byte{make([]byte, MaxRecordBytes)})
	if more, recs, err := DecodeRecords(b[HeaderSize:]); err != nil || !more || len(recs[0]) != MaxRecordBytes {
		t.Errorf("records with a %d-byte record: %v", MaxRecordBytes, err)
	}
}

func TestDecodeErrorMessages(t *testing.T) {
	_, err := DecodePutChunks(u32(MaxChunksPerFrame + 1))
	for _, want := range []string{"PutChunks", strconv.Itoa(MaxChunksPerFrame + 1), strconv.Itoa(MaxChunksPerFrame)} {
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("error %q should mention %q", err, want)
		}
	}
}

// TestDecodeAllocs: decoders allocate the result slice and nothing else
// (data aliases the payload); status lists allocate nothing.
func TestDecodeAllocs(t *testing.T) {
	put := AppendPutChunks(nil, 1, benchChunks())[HeaderSize:]
	recs := AppendRecords(nil, 1, false, [][]byte{[]byte("a"), []byte("b")})[HeaderSize:]
	statuses := AppendPutResult(nil, 1, make([]byte, 300))[HeaderSize:]
	groups := AppendPutGroups(nil, 1, []Group{{Node: make([]byte, 64), Data: []byte("ab")}, {Data: []byte("c")}})[HeaderSize:]
	ranges := AppendGetGroups(nil, 1, []GroupRange{{First: 0, N: 1}, {First: 3, N: 200}})[HeaderSize:]
	groupRes := AppendGroupResult(nil, 1, []GetItem{{StatusOK, []byte("ab")}, {StatusNotFound, nil}})[HeaderSize:]
	for name, tt := range map[string]struct {
		f    func()
		want float64
	}{
		"PutChunks": {func() { _, _ = DecodePutChunks(put) }, 1},
		"Records":   {func() { _, _, _ = DecodeRecords(recs) }, 1},
		"Statuses":  {func() { _, _ = DecodeStatuses(statuses) }, 0},
		"PutGroups": {func() { _, _ = DecodePutGroups(groups) }, 1},
		"GetGroups": {func() { _, _ = DecodeGetGroups(ranges) }, 1},
		"GroupRes":  {func() { _, _ = DecodeGroupResult(groupRes) }, 1},
	} {
		if got := testing.AllocsPerRun(50, tt.f); got != tt.want {
			t.Errorf("%s: %.1f allocations, want %.0f", name, got, tt.want)
		}
	}
}
