package index

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble"

	"github.com/oashare/oashare/index/format"
)

// ListStored calls fn for the groups and chunks in this node's store,
// groups first, each kind in key order, starting after item after (nil:
// from the first), at most limit of them (0: all), until fn returns
// false. Repair walks the store with it a batch at a time, so that no
// iterator stays open across the network calls between batches.
func (db *DB) ListStored(after *Item, limit int, fn func(Item) bool) error {
	if db.closed.Load() {
		return ErrClosed
	}
	kinds := []byte{prefixGroup, prefixChunk}
	if after != nil && !after.Group {
		kinds = kinds[1:]
	}
	n := 0
	for _, kind := range kinds {
		lo := []byte{kind}
		it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
		if err != nil {
			return err
		}
		ok := it.First()
		if after != nil && (kind == prefixGroup) == after.Group {
			ok = it.SeekGE(append(append([]byte{kind}, after.Hash[:]...), 0))
		}
		for ; ok; ok = it.Next() {
			k := it.Key()
			if len(k) != 1+len(format.Hash{}) {
				continue
			}
			if limit > 0 && n >= limit {
				return it.Close()
			}
			n++
			if !fn(Item{Group: kind == prefixGroup, Hash: format.Hash(k[1:])}) {
				return it.Close()
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
	}
	return nil
}

// ErrUnderTarget: an item in the under-target set cannot be dropped (this
// node may hold its only copy).
var ErrUnderTarget = errors.New("index: item is below its replica target")

// DropStored removes items from this node's store: its index stops listing
// them at once, so that this node neither serves nor counts them; their
// bytes stay in the chunk log until Reclaim gives them back. Dropping a group
// drops its depth-1 node too (stored as a chunk of the same name). Items
// in the under-target set are kept and reported with ErrUnderTarget (the
// others are dropped). Repair drops surplus copies with it, once the
// item is verified at full count elsewhere. It returns how many items
// were dropped.
func (db *DB) DropStored(items []Item) (int, error) {
	if db.closed.Load() {
		return 0, ErrClosed
	}
	if len(items) == 0 {
		return 0, nil
	}
	req := &putReq{drops: items, done: make(chan struct{})}
	if err := db.enqueuePut(req); err != nil {
		return 0, err
	}
	return req.added, req.err
}

// dropItems removes the items of r.drops in one batch, with the updated
// counters. Only the leader of the put queue calls it (the counters have
// a single writer).
func (db *DB) dropItems(r *putReq) {
	b := db.pdb.NewBatch()
	defer b.Close()
	var removed, bytesGone int64
	dropped := 0
	var kept error
	// A group's depth-1 node is a chunk of the same name: dropping the
	// group drops it, and a drop of that chunk in the same request must
	// not count its bytes again (the batch is not committed yet, so Get
	// still finds it).
	gone := make(map[string]bool)
	drop := func(key []byte, group bool) error {
		if gone[string(key)] {
			return nil
		}
		gone[string(key)] = true
		v, c, err := db.pdb.Get(key)
		if errors.Is(err, pebble.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		val := bytes.Clone(v)
		c.Close()
		var n int64
		if group {
			_, _, size, err := decodeGroupLoc(val)
			if err != nil {
				return err
			}
			n = int64(size)
			removed += (n + groupChunkSize - 1) / groupChunkSize
		} else {
			l, err := decodeLocation(val)
			if err != nil {
				return err
			}
			n = int64(l.n)
			removed++
		}
		bytesGone += n
		return b.Delete(key, nil)
	}
	seen := make(map[Item]bool, len(r.drops))
	for _, it := range r.drops {
		if seen[it] {
			continue
		}
		seen[it] = true
		if r.gc && !db.gc.isCandidate(it) {
			continue // put again since it was found unneeded
		}
		if _, under, err := db.CopiesOf(it); err != nil {
			r.err = err
			return
		} else if under {
			kept = fmt.Errorf("%w: %s", ErrUnderTarget, it)
			continue
		}
		if err := drop(chunkKey(it.Hash), false); err != nil {
			r.err = fmt.Errorf("index: drop %s: %w", it, err)
			return
		}
		if it.Group {
			k := chunkKey(it.Hash)
			k[0] = prefixGroup
			if err := drop(k, true); err != nil {
				r.err = fmt.Errorf("index: drop %s: %w", it, err)
				return
			}
		}
		dropped++
	}
	count := db.chunkCount.Load() - removed
	total := db.chunkBytes.Load() - bytesGone
	if count < 0 || total < 0 {
		count, total = max(count, 0), max(total, 0)
	}
	if err := b.Set(keyChunkCount, putU64(uint64(count)), nil); err != nil {
		r.err = err
		return
	}
	if err := b.Set(keyChunkBytes, putU64(uint64(total)), nil); err != nil {
		r.err = err
		return
	}
	// Not synced: a drop lost in a crash leaves a surplus copy, which the
	// next repair pass drops again.
	if err := b.Commit(pebble.NoSync); err != nil {
		r.err = fmt.Errorf("index: drop: %w", err)
		return
	}
	db.chunkCount.Store(count)
	db.chunkBytes.Store(total)
	r.added, r.err = dropped, kept
}

// StoredSize returns the bytes item takes in this node's store (a group
// with its depth-1 node) from its index entries alone, without reading
// them; ok is false if it is not stored.
func (db *DB) StoredSize(item Item) (size int64, ok bool, err error) {
	if db.closed.Load() {
		return 0, false, ErrClosed
	}
	read := func(key []byte, group bool) (int64, bool, error) {
		v, c, err := db.pdb.Get(key)
		if errors.Is(err, pebble.ErrNotFound) {
			return 0, false, nil
		}
		if err != nil {
			return 0, false, err
		}
		defer c.Close()
		if group {
			_, _, n, err := decodeGroupLoc(v)
			return int64(n), err == nil, err
		}
		l, err := decodeLocation(v)
		return int64(l.n), err == nil, err
	}
	key := chunkKey(item.Hash)
	node, nodeOK, err := read(key, false)
	if err != nil || !item.Group {
		return node, nodeOK, err
	}
	key[0] = prefixGroup
	data, ok, err := read(key, true)
	if err != nil || !ok {
		return 0, false, err
	}
	return data + node, true, nil
}
