package chunknet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// Drain: before a node leaves for good ('oashare leave'), it copies every
// group and tree node it stores that the live members other than itself do
// not hold min(replicas, their number) times to their best-ranked nodes
// among themselves, so that nothing waits for RepairAfter and no copy is
// lost with it. A first walk counts what must move and checks that the
// others can take it; a second moves it, reporting progress.

// ErrCannotDrain: the other members cannot take this node's copies (none
// is up, or they lack the space).
var ErrCannotDrain = errors.New("the other peers cannot take this node's copies")

// DrainProgress is what a drain has done and has left.
type DrainProgress struct {
	Items, ItemsDone int64         // groups and tree nodes to copy, and copied
	Bytes, BytesDone int64         // their bytes (one per copy to make)
	Rate             float64       // bytes per second so far
	Left             time.Duration // at that rate; 0 when unknown
	Peers            int           // live peers taking the copies
}

// Drain copies what only this node holds enough of to the other live
// members (see above), calling progress after each batch. Unless force,
// it fails with ErrCannotDrain, having copied nothing, when no other
// member is up or when their free space is less than what must move.
func (n *Node) Drain(ctx context.Context, force bool, progress func(DrainProgress)) error {
	ids, peers := n.members()
	others := slices.DeleteFunc(slices.Clone(ids), func(id format.NodeID) bool { return id == n.self })
	if len(others) == 0 {
		return fmt.Errorf("%w: no other peer is up, so this node holds the only copies", ErrCannotDrain)
	}
	d := &drain{n: n, others: others, peers: peers, need: min(n.cfg.Replicas, len(others)), rank: newRanker(others)}
	// Plan: what must move.
	var plan DrainProgress
	if err := d.walk(ctx, func(group bool, keys []format.Hash, short []int, held [][]format.NodeID) error {
		for k, i := range short {
			plan.Items++
			plan.Bytes += int64(d.need-len(held[k])) * d.size(group, keys[i])
		}
		return nil
	}); err != nil {
		return err
	}
	plan.Peers = len(others)
	if plan.Items == 0 {
		progress(plan)
		return nil
	}
	st := n.ClusterStat(ctx)
	local := n.LocalStat()
	free := int64(st.DiskFree) - int64(local.DiskFree)
	if !force && st.Nodes < len(others)+1 {
		return fmt.Errorf("%w: %d of the %d other peers did not say how much space they have", ErrCannotDrain, len(others)+1-st.Nodes, len(others))
	}
	if !force && plan.Bytes > free {
		return fmt.Errorf("%w: %d bytes of copies must move, and the %d other peers have %d bytes free", ErrCannotDrain, plan.Bytes, len(others), free)
	}
	// From now on the others place nothing here, and their repair counts
	// the copies the drain makes among them as the ones that stay.
	d.announce(true)
	ok := false
	defer func() {
		if !ok {
			d.announce(false)
		}
	}()
	progress(plan)
	// Move.
	start := time.Now()
	done := DrainProgress{Items: plan.Items, Bytes: plan.Bytes, Peers: plan.Peers}
	err := d.walk(ctx, func(group bool, keys []format.Hash, short []int, held [][]format.NodeID) error {
		for b := 0; b < len(short); b += repairCopyBatch {
			e := min(b+repairCopyBatch, len(short))
			moved, bytes, err := d.move(ctx, group, keys, short[b:e], held[b:e])
			done.ItemsDone += moved
			done.BytesDone += bytes
			if err != nil {
				return err
			}
			d.report(&done, start, progress)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Check: nothing left short.
	left := 0
	if err := d.walk(ctx, func(_ bool, _ []format.Hash, short []int, _ [][]format.NodeID) error {
		left += len(short)
		return nil
	}); err != nil {
		return err
	}
	if left > 0 && !force {
		return fmt.Errorf("%w: %d groups and tree nodes could not be copied (a peer refused or left); try again", ErrCannotDrain, left)
	}
	ok = true
	return nil
}

// announce tells every live peer that this node is draining (on) or no
// longer.
func (d *drain) announce(on bool) {
	for _, p := range d.peers {
		if err := p.cc.w.write(wire.AppendLeaving(nil, 0, on)); err != nil {
			d.n.log.Debug("telling a peer this node leaves", "peer", p.id.Short(), "err", err)
		}
	}
}

// report updates p's rate and time left and passes it on.
func (d *drain) report(p *DrainProgress, start time.Time, progress func(DrainProgress)) {
	if el := time.Since(start).Seconds(); el > 0 {
		p.Rate = float64(p.BytesDone) / el
		p.Left = 0
		if p.Rate > 0 && p.Bytes > p.BytesDone {
			p.Left = time.Duration(float64(p.Bytes-p.BytesDone) / p.Rate * float64(time.Second))
		}
	}
	progress(*p)
}

type drain struct {
	n      *Node
	others []format.NodeID // live members but this node, sorted
	peers  map[format.NodeID]*peer
	need   int
	rank   *ranker
}

// walk calls fn for each page of this node's store with the items that
// the other live members hold fewer than need times, and their holders
// among them.
func (d *drain) walk(ctx context.Context, fn func(group bool, keys []format.Hash, short []int, held [][]format.NodeID) error) error {
	n := d.n
	return n.eachStoredPage(func(items []index.Item) error {
		groups, chunks := n.splitItems(items)
		for _, kind := range []struct {
			group bool
			keys  []format.Hash
		}{{true, groups}, {false, chunks}} {
			if len(kind.keys) == 0 {
				continue
			}
			holders, err := n.itemHolders(ctx, kind.group, kind.keys)
			if err != nil {
				return err
			}
			var short []int
			var held [][]format.NodeID
			for i := range kind.keys {
				h := slices.DeleteFunc(holders[i], func(id format.NodeID) bool { return id == n.self || d.peers[id] == nil })
				if len(h) < d.need {
					short = append(short, i)
					held = append(held, h)
				}
			}
			if err := fn(kind.group, kind.keys, short, held); err != nil {
				return err
			}
		}
		return nil
	})
}

// size is the bytes of one copy of item h as stored here.
func (d *drain) size(group bool, h format.Hash) int64 {
	n, _, _ := d.n.db.StoredSize(index.Item{Group: group, Hash: h})
	return n
}

// move copies the short items of one page to the others' best-ranked
// nodes that lack them; it returns how many items reached need copies and
// the bytes sent.
func (d *drain) move(ctx context.Context, group bool, keys []format.Hash, short []int, held [][]format.NodeID) (int64, int64, error) {
	n := d.n
	b := &copyBatch{group: group}
	for k, i := range short {
		n.addLocal(b, keys[i], held[k])
	}
	if len(b.hashes) == 0 {
		return 0, 0, nil
	}
	made, err := n.copyOut(ctx, b, d.others, d.peers, d.need)
	var moved, bytes int64
	for k, m := range made {
		bytes += int64(m) * int64(b.size(k))
		if len(b.held[k]) >= d.need {
			moved++
		}
	}
	if err != nil && ctx.Err() == nil {
		n.log.Warn("drain: a peer refused a copy", "err", err)
		err = nil // counted as left at the end
	}
	return moved, bytes, err
}

// setLeaving records that peer id is draining (on) or no longer: while it
// is, it gets no copies and counts as gone for placement.
func (n *Node) setLeaving(id format.NodeID, on bool) {
	n.mu.Lock()
	if on {
		n.leaving[id] = true
	} else {
		delete(n.leaving, id)
	}
	n.placementEpoch.Add(1)
	n.mu.Unlock()
	n.log.Info("peer leaving", "peer", id.Short(), "draining", on)
	n.kickRepair()
}
