package chunknet

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// Repair keeps every group and tree node this node stores on its
// min(replicas, live members) best-ranked live nodes (placement.go), so
// that a copy lost with a holder is made again and a node that joins gets
// what it now ranks for. Each node walks its own store in passes; for
// each item it asks every live peer whether it holds it (HasGroups,
// HasChunks) and then, by the item's ranking over the live nodes:
//
//   - every target holds it, and this node is not a target: the copy
//     here is surplus and is dropped (never one in the under-target set,
//     which may be the only copy of a write not yet spread);
//   - some target lacks it: the best-ranked live holder, and only it,
//     copies it from its store to the targets that lack it (each
//     receiver verifies the bytes against their name before storing and
//     acknowledging; spot checks read some back). Every holder computes
//     the same actor from the same answers, so two holders do not both
//     copy an item;
//   - a target is a member that left less than Config.RepairAfter ago
//     (or this node started less than that ago): the item waits; a peer
//     that restarts or comes back from a short outage still has its
//     copies, and moving them would be waste.
//
// A peer that joins or comes back wakes a pass at once (rebalance); one
// that goes wakes one RepairAfter later. Copies made in a pass are only
// counted, and surplus ones only dropped, in a later pass that finds the
// targets holding them, so a node always drops its copy after the new
// ones exist. The bytes sent are paced by Config.RepairRate so that
// foreground reads and writes keep most of the links and disks.
//
// What a pass costs: one Has query per batch of repairBatch items to each
// live peer, and the copies; see REPAIR.md for the model at scale.

// repairBatch is how many stored items one step of a pass examines.
const repairBatch = 256

// RepairStats counts what repair did since the node started.
type RepairStats struct {
	Passes      int64     // completed passes
	Copied      int64     // copies made on other nodes
	CopiedBytes int64     // their bytes
	Dropped     int64     // surplus copies dropped here
	Checked     int64     // items stored here that the last pass examined
	Short       int64     // of them, with fewer live copies than the target
	Waiting     int64     // of them, waiting for a holder away for less than RepairAfter
	LastPass    time.Time // end of the last completed pass
}

type repairState struct {
	kick    chan struct{}
	limiter *rate.Limiter
	started time.Time

	passes, copied, copiedBytes, dropped atomic.Int64
	checked, short, waiting              atomic.Int64 // of the last pass
	lastPass                             atomic.Int64 // unix nanoseconds
}

// RepairStats reports the counters of repair.
func (n *Node) RepairStats() RepairStats {
	s := &n.repair
	st := RepairStats{
		Passes: s.passes.Load(), Copied: s.copied.Load(), CopiedBytes: s.copiedBytes.Load(),
		Dropped: s.dropped.Load(), Checked: s.checked.Load(), Short: s.short.Load(), Waiting: s.waiting.Load(),
	}
	if ns := s.lastPass.Load(); ns != 0 {
		st.LastPass = time.Unix(0, ns)
	}
	return st
}

// kickRepair wakes the repair loop (unless a wake-up is pending already).
func (n *Node) kickRepair() {
	select {
	case n.repair.kick <- struct{}{}:
	default:
	}
}

func (n *Node) repairLoop() {
	defer n.wg.Done()
	// The first pass waits until peers had time to connect: with half the
	// peers not yet seen, every item would look misplaced.
	settle := min(n.cfg.RepairAfter, 10*time.Second)
	t := time.NewTimer(settle)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		case <-n.repair.kick:
			if time.Since(n.repair.started) < settle {
				continue // the timer runs the first pass
			}
		}
		next, err := n.RepairPass(n.ctx)
		if err != nil && n.ctx.Err() == nil {
			n.log.Warn("repairing copies", "err", err)
			next = min(next, 10*time.Second)
		}
		t.Reset(next)
	}
}

// absent returns the members (by this node's member list and the peers
// it has seen) that are not connected now but left less than RepairAfter
// ago, or before this node had been up that long, and how long until the
// first of them counts as gone.
func (n *Node) absent(live []format.NodeID) (waiting []format.NodeID, next time.Duration) {
	next = n.cfg.RepairEvery
	now := time.Now()
	known := make(map[format.NodeID]bool)
	for _, m := range n.db.Members() {
		if !m.Removed {
			known[m.ID] = true
		}
	}
	n.mu.Lock()
	for id := range n.seen {
		if n.db.IsMember(id) && !n.distrusted[id] {
			known[id] = true
		}
	}
	since := make(map[format.NodeID]time.Time, len(known))
	for id := range known {
		since[id] = n.seenAt[id]
	}
	n.mu.Unlock()
	for id := range known {
		if slices.Contains(live, id) {
			continue
		}
		s := since[id]
		if s.Before(n.repair.started) {
			s = n.repair.started
		}
		if left := s.Add(n.cfg.RepairAfter).Sub(now); left > 0 {
			waiting = append(waiting, id)
			next = min(next, left)
		}
	}
	sortIDs(waiting)
	return waiting, next
}

// RepairPass makes one repair pass over this node's store (see above) and
// returns when the next one is due. fsck --repair runs one at once.
func (n *Node) RepairPass(ctx context.Context) (next time.Duration, err error) {
	ids, peers := n.members()
	waiting, next := n.absent(ids)
	if len(ids) == 1 {
		return next, nil // alone: nothing to copy to or to compare with
	}
	p := &repairPass{n: n, ids: ids, peers: peers, waiting: waiting,
		live: newRanker(ids), all: newRanker(append(slices.Clone(ids), waiting...))}
	var after *index.Item
	for {
		var items []index.Item
		if err := n.db.ListStored(after, repairBatch, func(it index.Item) bool {
			items = append(items, it)
			return true
		}); err != nil {
			return next, err
		}
		if len(items) == 0 {
			break
		}
		last := items[len(items)-1]
		after = &last
		var groups, chunks []format.Hash
		for _, it := range items {
			if it.Group {
				groups = append(groups, it.Hash)
			} else if ok, _ := n.db.HasGroup(it.Hash); !ok {
				chunks = append(chunks, it.Hash) // else the group's node, which goes with it
			}
		}
		for _, kind := range []struct {
			group bool
			keys  []format.Hash
		}{{true, groups}, {false, chunks}} {
			if len(kind.keys) > 0 {
				if err := p.step(ctx, kind.group, kind.keys); err != nil {
					return next, err
				}
			}
		}
	}
	n.repair.passes.Add(1)
	n.repair.checked.Store(p.checked)
	n.repair.short.Store(p.short)
	n.repair.waiting.Store(p.waited)
	n.repair.lastPass.Store(time.Now().UnixNano())
	if p.copied > 0 || p.dropped > 0 {
		n.log.Info("repair pass", "copies made", p.copied, "bytes", p.copiedBytes, "surplus dropped", p.dropped, "waiting", p.waited)
	}
	if p.copied > 0 {
		// The next pass counts the new copies and drops what they made
		// surplus.
		next = min(next, time.Second)
	}
	return next, nil
}

// repairPass is the state of one pass.
type repairPass struct {
	n       *Node
	ids     []format.NodeID // live nodes, this one included, sorted
	peers   map[format.NodeID]*peer
	waiting []format.NodeID // members absent for less than RepairAfter
	live    *ranker         // over ids
	all     *ranker         // over ids and waiting

	copied, copiedBytes, dropped, waited, checked, short int64
}

// step handles one batch of stored groups (or chunks): who holds them,
// which are surplus here, which this node must copy, and does so.
func (p *repairPass) step(ctx context.Context, group bool, keys []format.Hash) error {
	n := p.n
	var holders [][]format.NodeID
	var err error
	if group {
		holders, err = n.GroupHolders(ctx, keys)
	} else {
		holders, err = n.Holders(ctx, keys)
	}
	if err != nil {
		return err
	}
	need := min(n.cfg.Replicas, len(p.ids))
	var fix []int
	var fixHolders [][]format.NodeID
	var drops []index.Item
	for i, h := range keys {
		top := p.all.top(h, min(n.cfg.Replicas, len(p.all.ids)))
		wait := false
		targets := make([]format.NodeID, 0, len(top))
		for _, j := range top {
			id := p.all.ids[j]
			if slices.Contains(p.waiting, id) {
				wait = true
			}
			targets = append(targets, id)
		}
		p.checked++
		if wait {
			p.waited++
			continue
		}
		var held []format.NodeID
		for _, id := range targets {
			if slices.Contains(holders[i], id) {
				held = append(held, id)
			}
		}
		if len(held) >= need {
			if !slices.Contains(targets, n.self) && slices.Contains(holders[i], n.self) {
				drops = append(drops, index.Item{Group: group, Hash: h})
			}
			continue
		}
		// Short: the best-ranked live holder acts.
		p.short++
		actor := n.self
		for _, j := range p.live.top(h, len(p.ids)) {
			if slices.Contains(holders[i], p.ids[j]) {
				actor = p.ids[j]
				break
			}
		}
		if actor != n.self {
			continue
		}
		fix = append(fix, i)
		fixHolders = append(fixHolders, held)
	}
	if len(fix) > 0 {
		if err := p.copy(ctx, group, keys, fix, fixHolders, need); err != nil {
			return err
		}
	}
	if len(drops) > 0 {
		k, err := n.db.DropStored(drops)
		p.dropped += int64(k)
		n.repair.dropped.Add(int64(k))
		if err != nil && !errors.Is(err, index.ErrUnderTarget) {
			return err
		}
	}
	return nil
}

// copy sends the items keys[fix[k]] from this node's store to their
// targets that lack them (fixHolders[k] are the targets holding them),
// paced by the repair rate.
func (p *repairPass) copy(ctx context.Context, group bool, keys []format.Hash, fix []int, fixHolders [][]format.NodeID, need int) error {
	n := p.n
	var gs []upGroup
	var cs []index.Chunk
	var hs []format.Hash
	var held [][]format.NodeID
	for k, i := range fix {
		var size int
		if group {
			g, ok := n.localGroup(keys[i])
			if !ok {
				continue // logged; scrub replaces it
			}
			gs = append(gs, g)
			size = len(g.data) + len(g.node)
		} else {
			d, ok, err := n.db.GetChunk(keys[i], nil)
			if err != nil || !ok || !verify(keys[i], d) {
				n.log.Error("a chunk to repair is not intact in this node's store", "chunk", keys[i].Short(), "err", err)
				continue
			}
			cs = append(cs, index.Chunk{Hash: keys[i], Data: d})
			size = len(d)
		}
		hs = append(hs, keys[i])
		held = append(held, slices.Clone(fixHolders[k]))
		if err := n.repairWait(ctx, size); err != nil {
			return err
		}
	}
	if len(hs) == 0 {
		return nil
	}
	before := make([]int, len(hs))
	for k := range held {
		before[k] = len(held[k])
	}
	send := func(ctx context.Context, id format.NodeID, peer *peer, idx []int) ([]bool, error) {
		if group {
			sub := make([]upGroup, len(idx))
			for k, i := range idx {
				sub[k] = gs[i]
			}
			return n.putGroupsOn(ctx, id, peer, sub)
		}
		sub := make([]index.Chunk, len(idx))
		for k, i := range idx {
			sub[k] = cs[i]
		}
		return n.putOn(ctx, id, peer, sub)
	}
	err := n.replicatePass(ctx, hs, held, p.ids, p.peers, need, send)
	for k := range hs {
		made := int64(len(held[k]) - before[k])
		if made <= 0 {
			continue
		}
		var size int
		if group {
			size = len(gs[k].data) + len(gs[k].node)
		} else {
			size = len(cs[k].Data)
		}
		p.copied += made
		p.copiedBytes += made * int64(size)
		n.repair.copied.Add(made)
		n.repair.copiedBytes.Add(made * int64(size))
	}
	if err != nil && ctx.Err() == nil {
		n.log.Debug("repair: a node refused a copy", "err", err)
		return nil // the next pass tries again
	}
	return ctx.Err()
}

// repairWait paces repair to Config.RepairRate bytes per second.
func (n *Node) repairWait(ctx context.Context, size int) error {
	l := n.repair.limiter
	if l == nil {
		return nil
	}
	for size > 0 {
		k := min(size, l.Burst())
		if err := l.WaitN(ctx, k); err != nil {
			return err
		}
		size -= k
	}
	return nil
}
