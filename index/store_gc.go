package index

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Garbage: items of the store that no retained file version needs. The
// deciding is chunknet's (gc.go: which versions are retained, on every
// member, and whose uploads are still unpublished); the store keeps the
// CANDIDATES, the items found unneeded by a mark and when that was first
// found, and drops them on request. A put of a candidate (an upload that
// stores it again, a copy made by repair) makes it needed: it stops being
// a candidate at once, in the put queue's leader, which also runs the
// drops, so a drop never removes an item put after it was found
// unneeded. Candidates are kept in memory only: after a restart every
// item starts again from not found unneeded, which delays a drop, never
// hastens one.

// maxCandidates bounds the candidates kept (about 100 bytes each): a
// larger garbage is found and dropped over several marks.
const maxCandidates = 1 << 20

type gcState struct {
	n       atomic.Int64 // len(cands), read by puts without the lock
	mu      sync.Mutex
	cands   map[Item]int64 // unix nanoseconds when first found unneeded
	dropped atomic.Int64   // items dropped as garbage since Open
	bytes   atomic.Int64   // bytes of the candidates, as of the last mark
}

// touch makes the items of a put needed again. Called by the put queue's
// leader before it runs drops.
func (g *gcState) touch(items []putItem) {
	if g.n.Load() == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := range items {
		it := Item{Group: items[i].group}
		copy(it.Hash[:], items[i].key[1:])
		delete(g.cands, it)
	}
	g.n.Store(int64(len(g.cands)))
}

func (g *gcState) isCandidate(it Item) bool {
	if g.n.Load() == 0 {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.cands[it]
	return ok
}

// IsGarbage reports whether item is a candidate: found unneeded by the
// last mark and not put since. Repair does not copy such an item.
func (db *DB) IsGarbage(item Item) bool {
	return db.gc.isCandidate(item)
}

// GarbageMark is what one MarkGarbage found.
type GarbageMark struct {
	Checked    int   // items in the store
	Candidates int   // found unneeded, now
	New        int   // of which found unneeded for the first time
	Bytes      int64 // the candidates' bytes
}

// MarkGarbage walks this node's store: an item needed stops being a
// candidate, an item unneeded becomes one as of now (unless it already
// is). needed must answer for every item of the store. "Now" is read
// before the walk's snapshot, so an item's candidate time is later than
// its last put (chunknet's gc.go relies on it).
func (db *DB) MarkGarbage(needed func(Item) bool) (GarbageMark, error) {
	var m GarbageMark
	now := time.Now()
	var unneeded []Item
	err := db.ForEachStored(func(it Item) bool {
		m.Checked++
		if !needed(it) {
			unneeded = append(unneeded, it)
		}
		return true
	})
	if err != nil {
		return m, err
	}
	g := &db.gc
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.cands
	g.cands = make(map[Item]int64, len(unneeded))
	for _, it := range unneeded {
		if t, ok := old[it]; ok {
			g.cands[it] = t
		} else if len(g.cands) < maxCandidates {
			g.cands[it] = now.UnixNano()
			m.New++
		}
	}
	m.Candidates = len(g.cands)
	g.n.Store(int64(len(g.cands)))
	for it := range g.cands {
		if !it.Group && g.cands[Item{Group: true, Hash: it.Hash}] != 0 {
			continue // a group's node, counted with the group
		}
		if n, ok, err := db.StoredSize(it); err == nil && ok {
			m.Bytes += n
		}
	}
	g.bytes.Store(m.Bytes)
	return m, nil
}

// DropGarbage drops, at most limit of them, the candidates for which
// drop(item, since) is true (since: when the item was first found
// unneeded). An item put since it was found unneeded is not dropped,
// even when chosen. Items in the under-target set are kept. It returns
// the items dropped; their bytes go back to the disk with the next
// Reclaim.
func (db *DB) DropGarbage(drop func(it Item, since time.Time) bool, limit int) (int, error) {
	if db.closed.Load() {
		return 0, ErrClosed
	}
	g := &db.gc
	g.mu.Lock()
	var chosen []Item
	for it, t := range g.cands {
		if len(chosen) >= limit {
			break
		}
		if drop(it, time.Unix(0, t)) {
			chosen = append(chosen, it)
		}
	}
	g.mu.Unlock()
	if len(chosen) == 0 {
		return 0, nil
	}
	req := &putReq{drops: chosen, gc: true, done: make(chan struct{})}
	if err := db.enqueuePut(req); err != nil {
		return 0, err
	}
	g.mu.Lock()
	for _, it := range chosen {
		delete(g.cands, it)
	}
	g.n.Store(int64(len(g.cands)))
	g.mu.Unlock()
	g.dropped.Add(int64(req.added))
	if errors.Is(req.err, ErrUnderTarget) {
		req.err = nil // kept: topped up first, then found unneeded again
	}
	return req.added, req.err
}

// GarbageStats returns the candidates now and the items dropped as
// garbage since Open.
func (db *DB) GarbageStats() (candidates, dropped int64) {
	return db.gc.n.Load(), db.gc.dropped.Load()
}

// GarbageBytes returns the candidates now and their bytes as of the last
// mark (a put or a drop since makes it an over-estimate): what this node
// stores that no file version needs.
func (db *DB) GarbageBytes() (candidates, bytes int64) {
	if db.gc.n.Load() == 0 {
		return 0, 0
	}
	return db.gc.n.Load(), db.gc.bytes.Load()
}
