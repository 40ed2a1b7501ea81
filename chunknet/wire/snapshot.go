package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/oashare/oashare/index/format"
)

// Version 8: history pruning. A Records frame whose flag is 2 carries no
// records: the answerer pruned records the requester lacks, and the
// requester asks for a snapshot of the namespace instead, page by page:
//
//	Snapshot:     session u64 | after u16-len key
//	SnapshotPage: session u64 | done u8 | hlc u64
//	              | nvv u16 | nvv × (node[16] seq u64 hlc u64)
//	              | count u32 | count × (u16-len key | u32-len value)
//
// The first request has session 0 and no key; the answer opens a session
// (one consistent snapshot on the answerer) whose number the next
// requests give, each with the last key received. The version vector and
// clock come in every page (the same in each).

// ErrSnapshotNeeded is returned by DecodeRecords for a Records frame that
// says the requester needs a snapshot.
var ErrSnapshotNeeded = errors.New("wire: records pruned: a snapshot is needed")

// Snapshot limits.
const (
	// MaxSnapshotKey bounds the key of a snapshot item.
	MaxSnapshotKey = 1024
	// MaxSnapshotValue bounds the value of a snapshot item.
	MaxSnapshotValue = 64 << 10
	// SnapshotPageBytes is about how many key and value bytes a page
	// carries.
	SnapshotPageBytes = 1 << 20
)

// AppendRecordsPruned appends a Records frame saying that the requester
// needs a snapshot.
func AppendRecordsPruned(dst []byte, id uint64) []byte {
	return AppendFrame(dst, TypeRecords, id, []byte{2, 0, 0, 0, 0})
}

// SnapshotVV is one origin's position in a snapshot.
type SnapshotVV struct {
	Node     format.NodeID
	Seq, HLC uint64
}

// SnapshotItem is one key and value of a snapshot.
type SnapshotItem struct{ Key, Value []byte }

// SnapshotPage is one answer to Snapshot.
type SnapshotPage struct {
	Session uint64
	Done    bool
	HLC     uint64
	VV      []SnapshotVV
	Items   []SnapshotItem
}

// AppendSnapshot appends a Snapshot request.
func AppendSnapshot(dst []byte, id, session uint64, after []byte) []byte {
	if len(after) > MaxSnapshotKey {
		panic(fmt.Sprintf("wire: snapshot key of %d bytes", len(after)))
	}
	p := binary.BigEndian.AppendUint64(make([]byte, 0, 10+len(after)), session)
	p = binary.BigEndian.AppendUint16(p, uint16(len(after)))
	return AppendFrame(dst, TypeSnapshot, id, append(p, after...))
}

// DecodeSnapshot decodes a Snapshot payload. after aliases p.
func DecodeSnapshot(p []byte) (session uint64, after []byte, err error) {
	d := dec{p: p}
	if err := d.need("Snapshot", "header", 10); err != nil {
		return 0, nil, err
	}
	session = d.u64()
	n := int(d.u16())
	if n > MaxSnapshotKey {
		return 0, nil, fmt.Errorf("wire: Snapshot key of %d bytes exceeds %d: %w", n, MaxSnapshotKey, ErrBadFrame)
	}
	if err := d.need("Snapshot", "key", n); err != nil {
		return 0, nil, err
	}
	after = d.bytes(n)
	return session, after, d.end("Snapshot")
}

const snapshotVVSize = 16 + 8 + 8

// AppendSnapshotPage appends a SnapshotPage. The items must fit
// MaxPayload with the rest (SnapshotPageBytes of keys and values do).
func AppendSnapshotPage(dst []byte, id uint64, pg SnapshotPage) []byte {
	checkCount("snapshot version vector entries", len(pg.VV), MaxVVEntries)
	size := 8 + 1 + 8 + 2 + len(pg.VV)*snapshotVVSize + 4
	for _, it := range pg.Items {
		if len(it.Key) > MaxSnapshotKey || len(it.Value) > MaxSnapshotValue {
			panic(fmt.Sprintf("wire: snapshot item of %d+%d bytes", len(it.Key), len(it.Value)))
		}
		size += 2 + len(it.Key) + 4 + len(it.Value)
	}
	checkSize(TypeSnapshotPage, HeaderSize+size)
	dst = slices.Grow(dst, HeaderSize+size)
	start := len(dst)
	dst = appendHeader(dst, TypeSnapshotPage, id)
	dst = binary.BigEndian.AppendUint64(dst, pg.Session)
	done := byte(0)
	if pg.Done {
		done = 1
	}
	dst = append(dst, done)
	dst = binary.BigEndian.AppendUint64(dst, pg.HLC)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(pg.VV)))
	for _, e := range pg.VV {
		dst = append(dst, e.Node[:]...)
		dst = binary.BigEndian.AppendUint64(dst, e.Seq)
		dst = binary.BigEndian.AppendUint64(dst, e.HLC)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(pg.Items)))
	for _, it := range pg.Items {
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(it.Key)))
		dst = append(dst, it.Key...)
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(it.Value)))
		dst = append(dst, it.Value...)
	}
	return finish(dst, start)
}

// DecodeSnapshotPage decodes a SnapshotPage payload. Keys and values
// alias p.
func DecodeSnapshotPage(p []byte) (SnapshotPage, error) {
	var pg SnapshotPage
	d := dec{p: p}
	if err := d.need("SnapshotPage", "header", 8+1+8); err != nil {
		return pg, err
	}
	pg.Session = d.u64()
	switch d.u8() {
	case 0:
	case 1:
		pg.Done = true
	default:
		return pg, fmt.Errorf("wire: SnapshotPage: done flag not 0 or 1: %w", ErrBadFrame)
	}
	pg.HLC = d.u64()
	n, err := d.count("SnapshotPage version vector", MaxVVEntries, snapshotVVSize, true)
	if err != nil {
		return pg, err
	}
	pg.VV = make([]SnapshotVV, n)
	for i := range pg.VV {
		pg.VV[i].Node = format.NodeID(d.bytes(16))
		pg.VV[i].Seq = d.u64()
		pg.VV[i].HLC = d.u64()
	}
	n, err = d.count("SnapshotPage items", MaxPayload/6, 6, false)
	if err != nil {
		return pg, err
	}
	pg.Items = make([]SnapshotItem, n)
	for i := range pg.Items {
		if err := d.need("SnapshotPage", "key length", 2); err != nil {
			return pg, err
		}
		k := int(d.u16())
		if k == 0 || k > MaxSnapshotKey {
			return pg, fmt.Errorf("wire: SnapshotPage item %d: key of %d bytes: %w", i, k, ErrBadFrame)
		}
		if err := d.need("SnapshotPage", "key", k); err != nil {
			return pg, err
		}
		pg.Items[i].Key = d.bytes(k)
		if pg.Items[i].Value, err = d.lengthPrefixed("SnapshotPage", i, MaxSnapshotValue); err != nil {
			return pg, err
		}
	}
	return pg, d.end("SnapshotPage")
}
