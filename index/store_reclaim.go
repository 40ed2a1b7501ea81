package index

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
)

// Reclaiming the chunk log. Dropping an item (DropStored) removes its
// index entry; its bytes stay where they were appended. Reclaim gives
// them back to the file system: it punches the dead ranges of the
// segment files (fallocate PUNCH_HOLE, keeping each file's size, so every
// live location stays valid and nothing is moved or rewritten), and du of
// the data dir falls by the bytes dropped.
//
// What is dead, and why punching it is safe:
//   - A range is dead when no "c" or "g" key points into it and it lies
//     before the position the log is indexed up to ("m/chunk-log"), both
//     read from one Pebble snapshot. Appends only ever go past that
//     position (a put of an item again, even of one dropped, is a new
//     append), and the recovery at Open only indexes batches past it, so
//     a range dead at the snapshot stays dead for ever.
//   - Drops commit without a sync; before punching, Reclaim commits a
//     synced write, so every drop the snapshot saw is durable: a crash
//     cannot bring back an entry pointing into a hole.
//   - A read that looked up a location before its drop may still be on
//     its way to the segment: Reclaim waits a grace period between the
//     snapshot and the punching (reads take microseconds; the grace is
//     seconds).
//   - Only whole file-system blocks inside a dead range are punched, so a
//     live item's bytes are never touched, not even by zeroing a shared
//     block.
// Batch headers of indexed batches are dead too: nothing reads them
// again. A segment before the current one with no live byte left is
// removed whole (its file's size, not only its blocks, goes).

// reclaimBlock is the block size punched holes are aligned to.
const reclaimBlock = 4096

// reclaimWindow bounds the locations one sweep of the index holds in
// memory (16 bytes each): a store with more is reclaimed a range of
// segments at a time.
const reclaimWindow = 1 << 22

// ErrReclaimUnsupported: the file system of the data dir cannot punch
// holes (or the store is not on a real file system); dropped bytes stay
// on disk.
var ErrReclaimUnsupported = errors.New("index: this file system cannot punch holes; dropped copies keep their disk space")

var keyReclaim = []byte("m/reclaim")

type span struct {
	seg uint32
	off uint64
	n   uint64
}

// Reclaim punches the chunk log's dead ranges out of its segment files
// and removes the segments left with nothing live, grace after finding
// them, and returns the bytes concerned (ranges punched before count
// again; the file system frees each block once).
func (db *DB) Reclaim(ctx context.Context, grace time.Duration) (int64, error) {
	if db.closed.Load() {
		return 0, ErrClosed
	}
	db.reclaimMu.Lock()
	defer db.reclaimMu.Unlock()
	snap := db.pdb.NewSnapshot()
	dead, empty, sparse, err := db.deadSpans(snap)
	snap.Close()
	if err != nil {
		return 0, err
	}
	if len(sparse) > 0 {
		// Compacted now, removed by the next Reclaim (store_compact.go).
		req := &putReq{compact: sparse, done: make(chan struct{})}
		if err := db.enqueuePut(req); err != nil {
			return 0, err
		}
		if req.err != nil {
			return 0, fmt.Errorf("index: compact segments %v: %w", sparse, req.err)
		}
		db.compacted.Add(int64(len(sparse)))
	}
	if len(dead) == 0 && len(empty) == 0 {
		return 0, nil
	}
	// Every drop the snapshot saw becomes durable with this write.
	if err := db.pdb.Set(keyReclaim, putU64(uint64(time.Now().UnixNano())), pebble.Sync); err != nil {
		return 0, fmt.Errorf("index: reclaim: %w", err)
	}
	t := time.NewTimer(grace)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return 0, ctx.Err()
	}
	var punched int64
	for _, seg := range empty {
		n, err := db.chunks.removeSegment(seg)
		if err != nil {
			return punched, err
		}
		punched += n
	}
	for _, s := range dead {
		if db.closed.Load() {
			return punched, ErrClosed
		}
		f, err := db.chunks.file(s.seg)
		if err != nil {
			return punched, err
		}
		fd := f.Fd()
		if fd == vfs.InvalidFd {
			return punched, ErrReclaimUnsupported
		}
		if err := punchHole(fd, int64(s.off), int64(s.n)); err != nil {
			if errors.Is(err, errNoPunch) {
				return punched, ErrReclaimUnsupported
			}
			return punched, fmt.Errorf("index: reclaim segment %d at %d: %w", s.seg, s.off, err)
		}
		punched += int64(s.n)
	}
	db.reclaimed.Add(punched)
	return punched, nil
}

// deadSpans returns the whole blocks of the chunk log no index entry in
// snap points into, below the indexed position, the segments before
// the current one that no entry points into at all (removed whole), and
// the segments to compact: less than half live.
func (db *DB) deadSpans(snap *pebble.Snapshot) (dead []span, empty, sparse []uint32, err error) {
	v, c, err := snap.Get(keyChunkLog)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil, nil, nil // nothing indexed in the batch format yet
	}
	if err != nil {
		return nil, nil, nil, err
	}
	st, err := decodeLogState(v)
	c.Close()
	if err != nil {
		return nil, nil, nil, err
	}
	for lo := uint32(0); lo <= st.seg; {
		live, hi, err := liveSpans(snap, lo, st.seg)
		if err != nil {
			return nil, nil, nil, err
		}
		for seg := lo; seg < hi; seg++ {
			size := uint64(db.chunks.segSize(seg))
			if size == 0 {
				continue
			}
			if seg < st.seg && !slices.ContainsFunc(live, func(s span) bool { return s.seg == seg }) {
				empty = append(empty, seg)
				continue
			}
			end := size
			if seg == st.seg {
				end = min(end, st.off)
			}
			dead = appendGaps(dead, seg, live, end)
			var used uint64
			for _, s := range live {
				if s.seg == seg {
					used += s.n
				}
			}
			if end >= compactMin && used < end/2 {
				sparse = append(sparse, seg)
			}
		}
		lo = hi
	}
	return dead, empty, sparse, nil
}

// Compacted returns the segments compacted since Open.
func (db *DB) Compacted() int64 { return db.compacted.Load() }

// liveSpans returns the locations of snap's entries in segments lo and
// up, sorted, and the segment they end before: as many segments (up to
// last) as fit reclaimWindow locations.
func liveSpans(snap *pebble.Snapshot, lo, last uint32) ([]span, uint32, error) {
	hi := last + 1
	var live []span
	err := eachItemSpan(snap, func(_ []byte, _ bool, s span) {
		if s.seg < lo || s.seg >= hi {
			return
		}
		live = append(live, s)
		if len(live) > reclaimWindow && hi > lo+1 {
			// Too many: keep the lower half of the segments.
			hi = lo + (hi-lo)/2
			live = slices.DeleteFunc(live, func(s span) bool { return s.seg >= hi })
		}
	})
	if err != nil {
		return nil, 0, err
	}
	slices.SortFunc(live, func(a, b span) int {
		if a.seg != b.seg {
			return int(a.seg) - int(b.seg)
		}
		switch {
		case a.off < b.off:
			return -1
		case a.off > b.off:
			return 1
		}
		return 0
	})
	return live, hi, nil
}

// eachItemSpan calls fn with the key, the kind and the place in the
// chunk log of every chunk and group r indexes. key is valid during the
// call only.
func eachItemSpan(r pebble.Reader, fn func(key []byte, group bool, s span)) error {
	for _, kind := range []byte{prefixChunk, prefixGroup} {
		it, err := r.NewIter(&pebble.IterOptions{LowerBound: []byte{kind}, UpperBound: []byte{kind + 1}})
		if err != nil {
			return err
		}
		for ok := it.First(); ok; ok = it.Next() {
			if len(it.Key()) != 33 {
				continue
			}
			s, err := itemSpan(kind, it.Value())
			if err != nil {
				it.Close()
				return err
			}
			fn(it.Key(), kind == prefixGroup, s)
		}
		if err := it.Close(); err != nil {
			return err
		}
	}
	return nil
}

// itemSpan decodes where a chunk (kind prefixChunk) or a group (kind
// prefixGroup) lies in the chunk log, from its index value.
func itemSpan(kind byte, val []byte) (span, error) {
	if kind == prefixGroup {
		seg, off, n, err := decodeGroupLoc(val)
		return span{seg, off, uint64(n)}, err
	}
	l, err := decodeLocation(val)
	return span{l.seg, l.off, uint64(l.n)}, err
}

// appendGaps appends to dead the whole blocks of segment seg, below end,
// that no span of live (sorted) covers.
func appendGaps(dead []span, seg uint32, live []span, end uint64) []span {
	i, _ := slices.BinarySearchFunc(live, seg, func(s span, seg uint32) int { return int(s.seg) - int(seg) })
	from := uint64(0)
	gap := func(a, b uint64) {
		a = (a + reclaimBlock - 1) &^ (reclaimBlock - 1)
		b &^= reclaimBlock - 1
		if a < b {
			dead = append(dead, span{seg, a, b - a})
		}
	}
	for ; i < len(live) && live[i].seg == seg; i++ {
		s := live[i]
		if s.off >= end {
			break
		}
		if s.off > from {
			gap(from, s.off)
		}
		from = max(from, s.off+s.n)
	}
	if from < end {
		gap(from, end)
	}
	return dead
}

// Reclaimed returns the bytes Reclaim punched since Open.
func (db *DB) Reclaimed() int64 { return db.reclaimed.Load() }

// DiskFull reports since when the chunk log's disk has been full: a
// write of chunks failed with ENOSPC, and none succeeded since with at
// least fullClearFree left free.
func (db *DB) DiskFull() (since time.Time, full bool) {
	if ns := db.diskFullAt.Load(); ns != 0 {
		return time.Unix(0, ns), true
	}
	return time.Time{}, false
}
