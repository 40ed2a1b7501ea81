package chunknet

import (
	"bytes"
	"context"
	"errors"

	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// Health counts a file's stored items (groups, and tree nodes above the
// groups) by their copies on live nodes, this one included: Full have
// min(replicas, live nodes) or more, Below fewer but at least one,
// Unavailable none.
type Health struct {
	Full, Below, Unavailable int
}

// Add adds o's counts to h.
func (h *Health) Add(o Health) {
	h.Full += o.Full
	h.Below += o.Below
	h.Unavailable += o.Unavailable
}

// Check counts the copies of every stored item of version v on the live
// nodes (asking each). With repair, an item below the target is first
// copied, from any node holding it (verified against its name on the
// way), to its best-ranked live nodes that lack it, without waiting for
// RepairAfter; the counts are then those after the repair.
func (n *Node) Check(ctx context.Context, v tree.Version, repair bool) (Health, error) {
	spans, _, nodes, err := n.storedItems(ctx, v)
	if errors.Is(err, ErrUnavailable) {
		// A tree node no live node serves: what lies below it cannot be
		// named, let alone read.
		return Health{Unavailable: 1}, nil
	}
	if err != nil {
		return Health{}, err
	}
	groups := make([]format.Hash, len(spans))
	for i, s := range spans {
		groups[i] = s.Group
	}
	var h Health
	for _, kind := range []struct {
		group bool
		keys  []format.Hash
	}{{true, groups}, {false, nodes}} {
		if len(kind.keys) == 0 {
			continue
		}
		holders, err := n.itemHolders(ctx, kind.group, kind.keys)
		if err != nil {
			return Health{}, err
		}
		ids, _ := n.members()
		need := min(n.cfg.Replicas, len(ids))
		if repair {
			var short []int
			for i := range kind.keys {
				if k := len(holders[i]); k > 0 && k < need {
					short = append(short, i)
				}
			}
			if len(short) > 0 {
				for b := 0; b < len(short); b += repairCopyBatch {
					if err := n.repairShort(ctx, kind.group, kind.keys, spans, short[b:min(b+repairCopyBatch, len(short))], holders); err != nil {
						return Health{}, err
					}
				}
				if holders, err = n.itemHolders(ctx, kind.group, kind.keys); err != nil {
					return Health{}, err
				}
			}
		}
		for i := range kind.keys {
			switch k := len(holders[i]); {
			case k >= need:
				h.Full++
			case k == 0:
				h.Unavailable++
			default:
				h.Below++
			}
		}
	}
	return h, nil
}

// storedItems walks version v: the spans of its stored groups (and the
// index of each span's first leaf), then the tree nodes above the groups
// (depth 2 and up); these are what the file keeps in stores.
func (n *Node) storedItems(ctx context.Context, v tree.Version) (spans []tree.Span, firsts []uint64, nodes []format.Hash, err error) {
	err = tree.Stored(ctx, n, v, func(first uint64, s tree.Span) error {
		spans = append(spans, s)
		firsts = append(firsts, first)
		return nil
	})
	if err == nil {
		err = tree.Nodes(ctx, n, v, func(depth uint8, h format.Hash) error {
			if depth >= 2 {
				nodes = append(nodes, h)
			}
			return nil
		})
	}
	return spans, firsts, nodes, err
}

func (n *Node) itemHolders(ctx context.Context, group bool, keys []format.Hash) ([][]format.NodeID, error) {
	if group {
		return n.GroupHolders(ctx, keys)
	}
	return n.Holders(ctx, keys)
}

// repairShort copies the items keys[short[k]] (holders: their live
// holders) to their best-ranked live nodes lacking them; the bytes come
// from this node's store or a holder, verified. spans are the groups'
// spans (group is true) in the order of keys.
func (n *Node) repairShort(ctx context.Context, group bool, keys []format.Hash, spans []tree.Span, short []int, holders [][]format.NodeID) error {
	ids, peers := n.members()
	need := min(n.cfg.Replicas, len(ids))
	b := &copyBatch{group: group}
	for _, i := range short {
		h := keys[i]
		if group {
			if g, ok := n.fetchGroup(ctx, spans[i]); ok {
				b.addGroup(g, holders[i])
			}
			continue
		}
		d, err := n.Fetch(ctx, []format.Hash{h})
		if err != nil {
			n.log.Warn("fsck: a tree node below target could not be read", "node", h.Short(), "err", err)
			continue
		}
		b.addChunk(index.Chunk{Hash: h, Data: bytes.Clone(d[0])}, holders[i])
	}
	if len(b.hashes) == 0 {
		return nil
	}
	if _, err := n.copyOut(ctx, b, ids, peers, need); err != nil && ctx.Err() == nil {
		n.log.Warn("fsck: a node refused a copy", "err", err)
	}
	return ctx.Err()
}

// fetchGroup reads group s whole, with its depth-1 node, from this node's
// store or its holders, and checks it against its name.
func (n *Node) fetchGroup(ctx context.Context, s tree.Span) (upGroup, bool) {
	if ok, _ := n.db.HasGroup(s.Group); ok {
		if g, ok := n.localGroup(s.Group); ok {
			return g, true
		}
	}
	leaves, err := n.FetchSpans(ctx, []tree.Span{s})
	if err != nil {
		n.log.Warn("fsck: a group below target could not be read", "group", s.Group.Short(), "err", err)
		return upGroup{}, false
	}
	var data []byte
	for _, l := range leaves {
		data = append(data, l...) // holes are nil: left out, as in a stored group
	}
	var node []byte
	if !(len(s.Leaves) == 1 && s.Leaves[0] == s.Group) {
		d, err := n.Fetch(ctx, []format.Hash{s.Group})
		if err != nil {
			n.log.Warn("fsck: the node of a group below target could not be read", "group", s.Group.Short(), "err", err)
			return upGroup{}, false
		}
		node = bytes.Clone(d[0])
	}
	if !verifyGroup(s.Group, node, data) {
		n.log.Error("fsck: a group read back does not match its name", "group", s.Group.Short())
		return upGroup{}, false
	}
	return upGroup{hash: s.Group, node: node, data: data}, true
}
