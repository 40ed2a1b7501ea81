package chunknet

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// Pinning keeps whole copies of chosen files in this node's store, for
// offline use: Pin fetches what of a version is missing here (verified,
// as every fetch) and stores it; SetPinned names the items to keep, which
// repair then never drops as surplus here. Garbage collection keeps them
// anyway while they are part of a current version; when a pinned file
// changes, its owner pins the new version (the caller decides which
// files are pinned: cmd/oashare keeps the list in the index, index.Pin).

// PinProgress is what Pin reports as it goes: items (groups and tree
// nodes) and their bytes, of the version and done so far (held here
// before or fetched now), and the bytes fetched from peers.
type PinProgress struct {
	Items, ItemsDone int
	Bytes, BytesDone int64
	Fetched          int64
}

// pinWorkers is how many groups Pin fetches at once.
const pinWorkers = 8

// Pin makes this node's store hold every stored item of version v: its
// groups and the tree nodes above them. What is missing is fetched from
// the peers, verified against its name, and stored; what is here already
// is not fetched again, so a Pin cut short (a cancelled ctx, a lost peer,
// a crash) and called again continues where it stopped. progress, if not
// nil, is called after each item, from one goroutine at a time. It
// returns ErrUnavailable (wrapped) when some item could be fetched from no
// live peer; the others are stored.
func (n *Node) Pin(ctx context.Context, v tree.Version, progress func(PinProgress)) error {
	spans, firsts, nodes, err := n.storedItems(ctx, v)
	if err != nil {
		return err
	}
	spanBytes := make([]int64, len(spans)) // data bytes of each span (holes take none)
	var total int64
	for i, s := range spans {
		for j, l := range s.Leaves {
			if !l.IsZero() {
				off := (firsts[i] + uint64(j)) * format.ChunkSize
				spanBytes[i] += int64(min(format.ChunkSize, v.Size-off))
			}
		}
		total += spanBytes[i]
	}
	var mu sync.Mutex
	p := PinProgress{Items: len(spans) + len(nodes), Bytes: total}
	// Every item is pinned before it is fetched, so that repair does not
	// drop what is here as surplus before the owner's next SetPinned, and
	// reads take it from the local store.
	n.addPinned(itemList(spans, nodes))
	done := func(bytes, fetched int64) {
		mu.Lock()
		defer mu.Unlock()
		p.ItemsDone++
		p.BytesDone += bytes
		p.Fetched += fetched
		if progress != nil {
			progress(p)
		}
	}
	// Tree nodes first: few, and Stored above fetched them already.
	for _, h := range nodes {
		if ok, err := n.db.HasChunk(h); err != nil {
			return err
		} else if !ok {
			d, err := n.Fetch(ctx, []format.Hash{h})
			if err != nil {
				return err
			}
			if _, err := n.db.Put(nil, []index.Chunk{{Hash: h, Data: d[0]}}); err != nil {
				return err
			}
		}
		done(0, 0)
	}
	var next atomic.Int64
	var missing atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range min(pinWorkers, len(spans)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(spans) || ctx.Err() != nil {
					return
				}
				s := spans[i]
				if ok, err := n.db.HasGroup(s.Group); err == nil && ok {
					done(spanBytes[i], 0)
					continue
				}
				g, ok := n.fetchGroup(ctx, s)
				if !ok {
					missing.Add(1)
					continue
				}
				if _, err := n.putGroupsHere([]upGroup{g}); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				done(spanBytes[i], int64(len(g.data)+len(g.node)))
			}
		}()
	}
	wg.Wait()
	switch {
	case firstErr != nil:
		return firstErr
	case ctx.Err() != nil:
		return ctx.Err()
	case missing.Load() > 0:
		return fmt.Errorf("%w: %d of %d groups could not be fetched from any live peer", ErrUnavailable, missing.Load(), len(spans))
	}
	return nil
}

// VersionItems returns the stored items of version v (its groups, and
// the tree nodes above them), read from this node's store (or peers) as
// Pin reads them: what SetPinned takes.
func (n *Node) VersionItems(ctx context.Context, v tree.Version) ([]index.Item, error) {
	spans, _, nodes, err := n.storedItems(ctx, v)
	return itemList(spans, nodes), err
}

// itemsOf names the groups of spans and the tree nodes as stored items.
func itemList(spans []tree.Span, nodes []format.Hash) []index.Item {
	items := make([]index.Item, 0, len(spans)+len(nodes))
	for _, s := range spans {
		items = append(items, index.Item{Group: true, Hash: s.Group})
	}
	for _, h := range nodes {
		items = append(items, index.Item{Hash: h})
	}
	return items
}

// pinSet is an immutable set of pinned items: reads look it up without a
// lock (Node.pinned), writers replace it whole under Node.pinMu.
type pinSet map[index.Item]struct{}

// SetPinned names the items this node keeps whatever their placement:
// repair never drops them here as surplus, and reads take them from the
// local store. It replaces the previous set (Pin adds what it pins
// meanwhile).
func (n *Node) SetPinned(items []index.Item) {
	m := make(pinSet, len(items))
	for _, it := range items {
		m[it] = struct{}{}
	}
	n.pinMu.Lock()
	n.pinned.Store(&m)
	n.pinMu.Unlock()
}

// addPinned adds items to the set: a copy with them replaces it.
func (n *Node) addPinned(items []index.Item) {
	n.pinMu.Lock()
	defer n.pinMu.Unlock()
	var m pinSet
	if old := n.pinned.Load(); old != nil {
		m = maps.Clone(*old)
	} else {
		m = make(pinSet, len(items))
	}
	for _, it := range items {
		m[it] = struct{}{}
	}
	n.pinned.Store(&m)
}

// isPinned reports whether item it is pinned here.
func (n *Node) isPinned(it index.Item) bool {
	m := n.pinned.Load()
	if m == nil {
		return false
	}
	_, ok := (*m)[it]
	return ok
}

// pinnedChunk reports whether chunk h is pinned here: a tree node, or
// the node of a pinned group (stored as a chunk under the group's name).
func (n *Node) pinnedChunk(h format.Hash) bool {
	return n.isPinned(index.Item{Hash: h}) || n.isPinned(index.Item{Group: true, Hash: h})
}

// keepsPinned reports whether repair must keep item it here: it is
// pinned, or (Config.PinsFirst) the pins are not known yet.
func (n *Node) keepsPinned(it index.Item) bool {
	if n.pinned.Load() == nil {
		return n.cfg.PinsFirst
	}
	return n.isPinned(it)
}
