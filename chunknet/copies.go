package chunknet

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/oashare/oashare/chunknet/wire"

	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// copyBatch is a batch of items, all groups or all chunks, to copy to
// other nodes (repair, drain, fsck --repair), with the nodes known to hold
// each.
type copyBatch struct {
	group  bool
	hashes []format.Hash
	groups []upGroup     // group: the items, parallel to hashes
	chunks []index.Chunk // !group: the items
	held   [][]format.NodeID
}

func (b *copyBatch) addGroup(g upGroup, held []format.NodeID) {
	b.hashes = append(b.hashes, g.hash)
	b.groups = append(b.groups, g)
	b.held = append(b.held, slices.Clone(held))
}

func (b *copyBatch) addChunk(c index.Chunk, held []format.NodeID) {
	b.hashes = append(b.hashes, c.Hash)
	b.chunks = append(b.chunks, c)
	b.held = append(b.held, slices.Clone(held))
}

// size is the bytes of one copy of item k.
func (b *copyBatch) size(k int) int {
	if b.group {
		return len(b.groups[k].data) + len(b.groups[k].node)
	}
	return len(b.chunks[k].Data)
}

// addLocal adds item h from this node's store, checked against its name;
// it returns the item's size, or false (and logs why) if it is not intact
// here.
func (n *Node) addLocal(b *copyBatch, h format.Hash, held []format.NodeID) (int, bool) {
	if b.group {
		g, ok := n.localGroup(h)
		if !ok {
			return 0, false // logged; scrub replaces it
		}
		b.addGroup(g, held)
		return b.size(len(b.hashes) - 1), true
	}
	d, ok, err := n.db.GetChunk(h, nil)
	if err != nil || !ok || !verify(h, d) {
		n.log.Error("a tree node to copy is not intact in this node's store", "node", h.Short(), "err", err)
		return 0, false
	}
	b.addChunk(index.Chunk{Hash: h, Data: d}, held)
	return len(d), true
}

// copyOut offers each item of b short of need holders to its best-ranked
// nodes among ids that lack it (replicatePass), and returns how many new
// copies each item got.
func (n *Node) copyOut(ctx context.Context, b *copyBatch, ids []format.NodeID, peers map[format.NodeID]*peer, need int) ([]int, error) {
	before := make([]int, len(b.held))
	for k := range b.held {
		before[k] = len(b.held[k])
	}
	send := func(ctx context.Context, id format.NodeID, p *peer, idx []int) ([]bool, error) {
		if b.group {
			sub := make([]upGroup, len(idx))
			for k, i := range idx {
				sub[k] = b.groups[i]
			}
			return n.putGroupsOn(ctx, id, p, sub)
		}
		sub := make([]index.Chunk, len(idx))
		for k, i := range idx {
			sub[k] = b.chunks[i]
		}
		return n.putOn(ctx, id, p, sub)
	}
	err := n.replicatePass(ctx, b.hashes, b.held, ids, peers, need, send)
	made := make([]int, len(b.held))
	for k := range b.held {
		made[k] = len(b.held[k]) - before[k]
	}
	return made, err
}

// eachStoredPage calls fn with this node's stored items a page of
// repairBatch at a time (groups first, see index.ListStored), until fn
// fails or the store is walked.
func (n *Node) eachStoredPage(fn func(items []index.Item) error) error {
	var after *index.Item
	for {
		var items []index.Item
		if err := n.db.ListStored(after, repairBatch, func(it index.Item) bool {
			items = append(items, it)
			return true
		}); err != nil {
			return err
		}
		if len(items) == 0 {
			return nil
		}
		last := items[len(items)-1]
		after = &last
		if err := fn(items); err != nil {
			return err
		}
	}
}

// splitItems splits a page of stored items into groups and the chunks
// that are not a group's node (those go with their group).
func (n *Node) splitItems(items []index.Item) (groups, chunks []format.Hash) {
	for _, it := range items {
		if it.Group {
			groups = append(groups, it.Hash)
		} else if ok, _ := n.db.HasGroup(it.Hash); !ok {
			chunks = append(chunks, it.Hash)
		}
	}
	return groups, chunks
}

// askHas asks peer p which of hashes it holds (one query, built by
// appendHas) and returns one status per hash.
func (n *Node) askHas(ctx context.Context, p *peer, hashes []format.Hash, appendHas func(dst []byte, id uint64, hashes []format.Hash) []byte) ([]byte, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	typ, payload, err := p.cc.call(cctx, func(dst []byte, id uint64) []byte { return appendHas(dst, id, hashes) })
	if err == nil {
		err = expect(typ, wire.TypeHasResult)
	}
	var st []byte
	if err == nil {
		st, err = wire.DecodeStatuses(payload)
	}
	if err == nil && len(st) != len(hashes) {
		err = fmt.Errorf("%w: asked about %d hashes, got %d statuses", wire.ErrBadFrame, len(hashes), len(st))
	}
	return st, err
}
