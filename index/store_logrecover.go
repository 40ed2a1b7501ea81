package index

import (
	"fmt"

	"github.com/cockroachdb/pebble"

	"github.com/oashare/oashare/index/format"
)

var keyChunkLog = []byte("m/chunk-log")

// openLog works out where the chunk log stands (see store_chunklog.go), indexes
// the items of the batches after the indexed position that a crash left
// unindexed, and starts the appender. Open calls it once, before any other
// use of the store.
func (db *DB) openLog() error {
	l := db.chunks
	v, ok, err := db.getMeta(keyChunkLog)
	if err != nil {
		return err
	}
	var st logState
	if ok {
		if st, err = decodeLogState(v); err != nil {
			return err
		}
	} else {
		// The first open with batches: the segments there are hold raw
		// bytes indexed by synced commits, and are never scanned.
		first := uint32(1)
		if n := len(l.segs); n > 0 {
			first = l.segs[n-1]
			if l.segSize(first) > 0 {
				first++
			}
		}
		st = logState{first: first, seg: first}
		if err := db.pdb.Set(keyChunkLog, st.encode(), pebble.Sync); err != nil {
			return fmt.Errorf("store chunk log state: %w", err)
		}
	}
	db.logFirst = st.first

	b := db.pdb.NewBatch()
	defer b.Close()
	seen := make(map[string]bool)
	var added, addedBytes int64
	end, clean := st, true
	lastEnd := int64(-1) // where the last segment's batches end
	for _, seg := range l.segs {
		if seg < st.seg {
			continue
		}
		off := uint64(0)
		if seg == st.seg {
			off = st.off
		}
		e, ok, err := l.scan(seg, off, func(it batchItem) error {
			k := string(it.key)
			if seen[k] {
				return nil
			}
			has, err := db.has(it.key)
			if err != nil || has {
				return err
			}
			var val []byte
			switch {
			case it.key[0] == prefixGroup && it.len >= 1 && it.len <= format.MaxGroupData:
				val = encodeGroupLoc(nil, it.loc.seg, it.loc.off, it.len)
				added += int64((it.len + groupChunkSize - 1) / groupChunkSize)
			case it.key[0] == prefixChunk && it.len <= format.MaxChunkData:
				val = location{seg: it.loc.seg, off: it.loc.off, n: uint16(it.len)}.encode(nil)
				added++
			default:
				db.log.Error("chunk log batch holds an item the store does not make; skipped",
					"segment", seg, "offset", it.loc.off, "key", fmt.Sprintf("%x", it.key), "length", it.len)
				return nil
			}
			seen[k] = true
			addedBytes += int64(it.len)
			return b.Set(it.key, val, nil)
		})
		if err != nil {
			return err
		}
		end = logState{first: st.first, seg: seg, off: e}
		if seg == l.segs[len(l.segs)-1] {
			lastEnd = int64(e)
		}
		clean = ok
		if !ok && seg != l.segs[len(l.segs)-1] {
			// A batch torn by a crash ends its segment: the recovery
			// after that crash went on in a new segment, whose batches
			// were synced and acknowledged. Their index entries may
			// have been lost in a later crash, so the scan goes on.
			db.log.Info("chunk log segment ends in a batch torn by an earlier crash; scanning the segments after it",
				"segment", seg, "offset", e)
		}
	}
	if len(seen) > 0 || end != st {
		count := db.chunkCount.Load() + added
		total := db.chunkBytes.Load() + addedBytes
		for _, kv := range []struct{ k, v []byte }{
			{keyChunkLog, end.encode()},
			{keyChunkCount, putU64(uint64(count))},
			{keyChunkBytes, putU64(uint64(total))},
		} {
			if err := b.Set(kv.k, kv.v, nil); err != nil {
				return err
			}
		}
		if err := b.Commit(pebble.Sync); err != nil {
			return fmt.Errorf("index: chunk log recovery: %w", err)
		}
		db.chunkCount.Store(count)
		db.chunkBytes.Store(total)
		if len(seen) > 0 {
			db.log.Info("indexed chunks a crash left unindexed", "items", len(seen), "bytes", addedBytes)
		}
	}
	// Append after the last batch that checked (over the zeros written
	// ahead of it), or in a new segment if bytes that do not check
	// follow it.
	last := uint32(0)
	if n := len(l.segs); n > 0 {
		last = l.segs[n-1]
	}
	switch {
	case last < st.first:
		return l.startSegment(st.first, -1)
	case !clean:
		return l.startSegment(last+1, -1)
	default:
		return l.startSegment(last, lastEnd)
	}
}
