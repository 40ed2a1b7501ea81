package chunknet

import (
	"context"
	"time"

	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// Top-up. An upload that leaves items with fewer copies than the replica
// target (written while this node was alone or cut off, or refused by
// replicas) lists them in the index's under-target set, with the copies
// they have; every one of them is in this node's store. topUpLoop works
// the set off: whenever a peer comes, new items are listed, or every
// Config.TopUpEvery (a replica whose disk was full may take copies
// again), it offers each item that could gain a copy (fewer copies
// than live members) to its best-ranked live nodes, from this node's
// store, and records the new count; an item at the target leaves the set.
// Repair of copies lost later (a holder that dies) is not this loop's
// job: it only finishes what this node's own writes started.

// topUpBatch is how many items one step of a pass reads and sends.
const topUpBatch = 16

// kickTopUp wakes the top-up loop (unless a wake-up is pending already).
func (n *Node) kickTopUp() {
	select {
	case n.topUpKick <- struct{}{}:
	default:
	}
}

func (n *Node) topUpLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.TopUpEvery)
	defer t.Stop()
	stuck := false // the last pass left items that live nodes could have taken
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.topUpKick:
		case <-t.C:
			if !stuck {
				continue // nothing changed that a pass could use
			}
		}
		var err error
		stuck, err = n.topUp(n.ctx)
		if err != nil && n.ctx.Err() == nil {
			n.log.Warn("topping up copies", "err", err)
		}
	}
}

// topUp makes one pass over the under-target set. stuck reports items
// that could have gained a copy (fewer copies than live nodes) and did
// not: a node refused, or left.
func (n *Node) topUp(ctx context.Context) (stuck bool, err error) {
	if ids, _ := n.members(); len(ids) == 1 {
		return false, nil // alone: nobody to copy to
	}
	var after *index.Item
	for {
		ids, _ := n.members()
		var batch []index.Under
		err := n.db.ListUnder(after, topUpBatch, func(u index.Under) bool {
			batch = append(batch, u)
			return true
		})
		if err != nil || len(batch) == 0 {
			return stuck, err
		}
		last := batch[len(batch)-1].Item
		after = &last
		var groups []upGroup
		var chunks []index.Chunk
		for _, u := range batch {
			if u.Copies >= len(ids) {
				continue // every live node may hold it already
			}
			if u.Group {
				g, ok := n.localGroup(u.Hash)
				if ok {
					groups = append(groups, g)
				}
				continue
			}
			d, ok, err := n.db.GetChunk(u.Hash, nil)
			switch {
			case err != nil:
				n.log.Error("reading a chunk to top up", "chunk", u.Hash.Short(), "err", err)
			case !ok || !verify(u.Hash, d):
				n.log.Error("a chunk below the replica target is not intact in this node's store", "chunk", u.Hash.Short())
			default:
				chunks = append(chunks, index.Chunk{Hash: u.Hash, Data: d})
			}
		}
		if len(groups) > 0 {
			keys := make([]format.Hash, len(groups))
			for i, g := range groups {
				keys[i] = g.hash
			}
			stuck = n.topUpItems(ctx, true, keys, func(ctx context.Context, id format.NodeID, p *peer, idx []int) ([]bool, error) {
				gs := make([]upGroup, len(idx))
				for k, i := range idx {
					gs[k] = groups[i]
				}
				return n.putGroupsOn(ctx, id, p, gs)
			}) || stuck
		}
		if len(chunks) > 0 {
			stuck = n.topUpItems(ctx, false, hashesOfChunks(chunks), func(ctx context.Context, id format.NodeID, p *peer, idx []int) ([]bool, error) {
				cs := make([]index.Chunk, len(idx))
				for k, i := range idx {
					cs[k] = chunks[i]
				}
				return n.putOn(ctx, id, p, cs)
			}) || stuck
		}
		if err := ctx.Err(); err != nil {
			return stuck, err
		}
	}
}

// topUpItems offers items to their best-ranked live nodes in one pass and
// records the copies they have now. It reports whether some item has
// fewer copies than min(replicas, live nodes) after it.
func (n *Node) topUpItems(ctx context.Context, group bool, keys []format.Hash, send sendFunc) (stuck bool) {
	holders := make([][]format.NodeID, len(keys))
	need, err := n.spread(ctx, keys, holders, send)
	if err != nil {
		n.log.Debug("topping up copies: a node refused", "err", err)
	}
	copies := make([]int, len(keys))
	items := make([]index.Item, len(keys))
	for i, h := range keys {
		copies[i] = len(holders[i])
		items[i] = index.Item{Group: group, Hash: h}
		stuck = stuck || copies[i] < need
	}
	bg, bc, _ := n.db.UnderTarget()
	if err := n.db.SetCopies(items, copies, n.cfg.Replicas); err != nil {
		n.log.Error("recording copies after a top-up", "err", err)
		return true
	}
	if ag, ac, _ := n.db.UnderTarget(); ag+ac < bg+bc {
		n.log.Info("topped up items below the replica target", "done", bg+bc-ag-ac, "groups left", ag, "chunks left", ac)
	}
	return stuck
}

// localGroup reads group h whole from this node's store, with its node,
// and checks it against its name; ok is false (and the reason logged) if
// it is not there intact.
func (n *Node) localGroup(h format.Hash) (upGroup, bool) {
	data, ok, err := n.db.GetGroup(h, 0, format.MaxGroupData, nil)
	if err != nil || !ok {
		n.log.Error("a group below the replica target is not in this node's store", "group", h.Short(), "err", err)
		return upGroup{}, false
	}
	// A group of several chunks is stored with its depth-1 node; a
	// one-chunk file's group is that chunk, with none.
	node, _, err := n.db.GetChunk(h, nil)
	if err != nil {
		n.log.Error("reading a group's node", "group", h.Short(), "err", err)
		return upGroup{}, false
	}
	if !verifyGroup(h, node, data) {
		n.log.Error("a group below the replica target is not intact in this node's store", "group", h.Short())
		return upGroup{}, false
	}
	return upGroup{hash: h, node: node, data: data}, true
}

func hashesOfChunks(chunks []index.Chunk) []format.Hash {
	out := make([]format.Hash, len(chunks))
	for i, c := range chunks {
		out[i] = c.Hash
	}
	return out
}

// Short returns how many groups and tree nodes of version v have fewer
// copies than min(replicas, live nodes), by the under-target set: 0 means
// v may be published (every item reached its replicas when written, or
// has been topped up since). It reads v's tree, skipping holes.
func (n *Node) Short(ctx context.Context, v tree.Version) (int, error) {
	ids, _ := n.members()
	need := min(n.cfg.Replicas, len(ids))
	short := 0
	check := func(it index.Item) error {
		copies, listed, err := n.db.CopiesOf(it)
		if err == nil && listed && copies < need {
			short++
		}
		return err
	}
	err := tree.Stored(ctx, n, v, func(_ uint64, s tree.Span) error {
		return check(index.Item{Group: true, Hash: s.Group})
	})
	if err != nil {
		return 0, err
	}
	err = tree.Nodes(ctx, n, v, func(depth uint8, h format.Hash) error {
		if depth < 2 {
			return nil // stored with its group
		}
		return check(index.Item{Hash: h})
	})
	return short, err
}
