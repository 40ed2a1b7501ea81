package index

import (
	"bytes"
	"fmt"

	"github.com/cockroachdb/pebble"
)

// Compacting the chunk log. Punching holes (store_reclaim.go) gives a
// dead range's blocks back but not the segment file's size, so `du -b`
// and `ls -l` of a data dir still count every byte ever written. A
// segment whose live bytes are less than half its size (and at least
// compactMin big) is compacted instead: its live items are appended
// again, to the current segment (a new one first when the sparse segment
// is the current one), their index entries repointed in the same way as
// a put's, and the segment, pointed into by nothing any more, is removed
// by the next Reclaim (after its synced write and its grace, as any
// empty segment). Moving costs at most the live half of what is freed.
//
// Safety is that of a put: the bytes are appended and synced before the
// entries that point at them commit, and the log position moves past
// them in the same commit, so a crash before that commit indexes them
// again at Open (two valid copies, the new one wins); the old ones stay
// until nothing points at them. The relocation runs in the put queue's
// leader, the only writer of the log and the entries, so no put or drop
// races it: an item dropped before it is not moved, one dropped after it
// is dropped at its new place.

// compactMin is the smallest segment worth compacting.
const compactMin = 8 << 20

// relocateBatch bounds the bytes one append of a relocation writes.
const relocateBatch = 4 << 20

// compactSegments moves the live items of segments segs to the current
// segment. Only the put queue's leader calls it.
func (db *DB) compactSegments(segs []uint32) (moved int64, err error) {
	want := make(map[uint32]bool, len(segs))
	for _, s := range segs {
		want[s] = true
	}
	if want[db.chunks.cur] {
		// Never move items within the segment being emptied.
		if err := db.chunks.startSegment(db.chunks.cur+1, -1); err != nil {
			return 0, err
		}
		// The log is indexed up to the start of the new segment, so the
		// old one is no longer the current one even if nothing moves.
		st := logState{first: db.logFirst, seg: db.chunks.cur, off: uint64(db.chunks.curSize)}
		if err := db.pdb.Set(keyChunkLog, st.encode(), pebble.NoSync); err != nil {
			return 0, fmt.Errorf("index: compact: %w", err)
		}
	}
	type item struct {
		key   []byte
		loc   span
		group bool
	}
	var items []item
	err = eachItemSpan(db.pdb, func(key []byte, group bool, s span) {
		if want[s.seg] {
			items = append(items, item{key: bytes.Clone(key), loc: s, group: group})
		}
	})
	if err != nil {
		return 0, err
	}
	for len(items) > 0 {
		var keys, datas [][]byte
		size := 0
		n := 0
		for ; n < len(items) && (n == 0 || size+int(items[n].loc.n) <= relocateBatch); n++ {
			buf := make([]byte, items[n].loc.n)
			got, err := db.chunks.readSpan(items[n].loc.seg, items[n].loc.off, buf)
			if err != nil {
				return moved, err
			}
			if got != len(buf) {
				return moved, fmt.Errorf("%w: %x in segment %d ends past the file", ErrCorrupt, items[n].key, items[n].loc.seg)
			}
			keys, datas = append(keys, items[n].key), append(datas, buf)
			size += len(buf)
		}
		seg, offs, end, err := db.chunks.append(keys, datas)
		if err != nil {
			return moved, err
		}
		b := db.pdb.NewBatch()
		val := make([]byte, 0, groupLocSize)
		for i := range keys {
			if items[i].group {
				val = encodeGroupLoc(val[:0], seg, offs[i], uint32(len(datas[i])))
			} else {
				val = location{seg: seg, off: offs[i], n: uint16(len(datas[i]))}.encode(val[:0])
			}
			if err := b.Set(keys[i], val, nil); err != nil {
				b.Close()
				return moved, err
			}
		}
		if err := b.Set(keyChunkLog, logState{first: db.logFirst, seg: seg, off: end}.encode(), nil); err != nil {
			b.Close()
			return moved, err
		}
		// As a put's: the synced log batch is what makes them durable.
		if err := b.Commit(pebble.NoSync); err != nil {
			b.Close()
			return moved, fmt.Errorf("index: compact: %w", err)
		}
		b.Close()
		moved += int64(size)
		items = items[n:]
	}
	return moved, nil
}
