package index

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble"

	"github.com/oashare/oashare/index/format"
)

// The under-target set ("u" keys) lists the groups and chunks this node
// wrote, or stored for a failed upload, that are known to have fewer
// copies on live nodes than the replica target: written while the node was
// alone or partitioned, or refused by replicas. chunknet records them when
// an upload ends and tops them up when peers appear, then clears them; a
// file version whose items are short of min(replicas, live nodes) is not
// published yet (see Pending). Every item listed is in this node's store.
//
//	"u" kind[1] hash[32] → copies[1]   (kind 'g' group, 'c' chunk)
//
// copies is how many live nodes held a verified copy when last counted.
// The set is written without a sync: it becomes durable with the next
// synced write, at the latest the synced commit of the version that names
// its items (or the pending entry of that version), so a crash never leaves
// a published or pending version whose short items are not listed.

// Item names a stored group or chunk.
type Item struct {
	Group bool
	Hash  format.Hash
}

func (it Item) key() []byte {
	k := make([]byte, 2+len(it.Hash))
	k[0] = prefixUnder
	k[1] = prefixChunk
	if it.Group {
		k[1] = prefixGroup
	}
	copy(k[2:], it.Hash[:])
	return k
}

func (it Item) String() string {
	if it.Group {
		return "group " + it.Hash.Short()
	}
	return "chunk " + it.Hash.Short()
}

// Under is one item of the under-target set and its count of copies.
type Under struct {
	Item
	Copies int
}

// underState counts the set's items, so that status needs no scan.
type underState struct {
	mu     sync.Mutex // serializes SetCopies, so the counts stay exact
	groups int64
	chunks int64
	loaded bool
}

// SetCopies records that items[i] has copies[i] verified copies on live
// nodes: an item below target is listed (or its count updated), one at
// target or more is taken off the list.
func (db *DB) SetCopies(items []Item, copies []int, target int) error {
	if db.closed.Load() {
		return ErrClosed
	}
	if len(items) != len(copies) {
		return fmt.Errorf("index: SetCopies of %d items with %d counts", len(items), len(copies))
	}
	u := &db.under
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := db.loadUnder(); err != nil {
		return err
	}
	b := db.pdb.NewBatch()
	defer b.Close()
	var dg, dc int64
	for i, it := range items {
		k := it.key()
		had, err := db.has(k)
		if err != nil {
			return err
		}
		d := int64(0)
		if copies[i] >= target {
			if !had {
				continue
			}
			if err := b.Delete(k, nil); err != nil {
				return err
			}
			d = -1
		} else {
			if err := b.Set(k, []byte{byte(min(copies[i], 255))}, nil); err != nil {
				return err
			}
			if !had {
				d = 1
			}
		}
		if it.Group {
			dg += d
		} else {
			dc += d
		}
	}
	if b.Empty() {
		return nil
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("index: record copies: %w", err)
	}
	u.groups += dg
	u.chunks += dc
	return nil
}

// UnderTarget returns how many groups and chunks the under-target set
// lists.
func (db *DB) UnderTarget() (groups, chunks int64, err error) {
	u := &db.under
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := db.loadUnder(); err != nil {
		return 0, 0, err
	}
	return u.groups, u.chunks, nil
}

// loadUnder counts the set once. Called with under.mu held.
func (db *DB) loadUnder() error {
	u := &db.under
	if u.loaded {
		return nil
	}
	err := db.ListUnder(nil, 0, func(x Under) bool {
		if x.Group {
			u.groups++
		} else {
			u.chunks++
		}
		return true
	})
	if err != nil {
		return err
	}
	u.loaded = true
	return nil
}

// ListUnder calls fn for the items of the under-target set in key order,
// starting after item after (nil: from the first), at most limit of them
// (0: all), until fn returns false.
func (db *DB) ListUnder(after *Item, limit int, fn func(Under) bool) error {
	if db.closed.Load() {
		return ErrClosed
	}
	lo := []byte{prefixUnder}
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return err
	}
	defer it.Close()
	ok := it.First()
	if after != nil {
		ok = it.SeekGE(append(after.key(), 0))
	}
	for n := 0; ok && (limit == 0 || n < limit); ok, n = it.Next(), n+1 {
		k, v := it.Key(), it.Value()
		if len(k) != 2+len(format.Hash{}) || (k[1] != prefixGroup && k[1] != prefixChunk) || len(v) != 1 {
			return fmt.Errorf("%w: under-target entry %x", ErrCorrupt, k)
		}
		if !fn(Under{Item: Item{Group: k[1] == prefixGroup, Hash: format.Hash(k[2:])}, Copies: int(v[0])}) {
			break
		}
	}
	return it.Error()
}

// CopiesOf returns the count of copies recorded for item, and false if it
// is not in the under-target set (it reached its target when written).
func (db *DB) CopiesOf(item Item) (int, bool, error) {
	if db.closed.Load() {
		return 0, false, ErrClosed
	}
	v, c, err := db.pdb.Get(item.key())
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer c.Close()
	if len(v) != 1 {
		return 0, false, fmt.Errorf("%w: under-target entry of %s", ErrCorrupt, item)
	}
	return int(v[0]), true, nil
}

// ForEachStored calls fn for every group and chunk in this node's store,
// groups first, in key order, until fn returns false. It reads one
// snapshot of the index.
func (db *DB) ForEachStored(fn func(Item) bool) error {
	if db.closed.Load() {
		return ErrClosed
	}
	snap := db.pdb.NewSnapshot()
	defer snap.Close()
	for _, kind := range []byte{prefixGroup, prefixChunk} {
		lo := []byte{kind}
		it, err := snap.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
		if err != nil {
			return err
		}
		for it.First(); it.Valid(); it.Next() {
			k := it.Key()
			if len(k) != 1+len(format.Hash{}) {
				continue
			}
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
