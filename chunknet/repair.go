package chunknet

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/oashare/oashare/chunknet/wire"
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
// An item stored here less than Config.UploadGrace ago is left out of a
// pass: its writer (this node or another) is placing its copies still,
// and a pass that ran in the middle of a write saw every item in flight
// short and copied it a second time. Such items are looked at again once
// they are older (as received ones are); an upload that fails leaves its
// items in the writer's under-target set (topup.go), and a writer that
// dies wakes a pass of its own. The price: a rebalance of data written
// moments before, and each further hop of it (copies are young where
// they arrive), waits up to UploadGrace (and the few seconds of
// receivedDelay).
//
// A peer that joins or comes back wakes a pass at once (rebalance); one
// that goes wakes one RepairAfter later. Copies made in a pass are only
// counted, and surplus ones only dropped, in a later pass that finds the
// targets holding them, so a node always drops its copy after the new
// ones exist; a pass that found work (items short, copies made or
// dropped) is followed by another after 1s, 2s, 4s ... (at most 64s)
// until one finds none. A node that receives copies from peers checks
// those items receivedDelay later (repairReceived): a rebalance may have
// made it the best-ranked holder of an item still short. The bytes sent
// are paced by Config.RepairRate so that foreground reads and writes keep
// most of the links and disks.
//
// What a pass costs: per page of repairBatch items, one Has query to each
// peer that decides something about them (askFor), and the copies; see
// REPAIR.md for the model at scale.

// repairBatch is how many stored items one step of a pass examines: each
// peer gets one Has query per step about the items it must be asked about,
// so a large step keeps the queries few (see REPAIR.md). repairCopyBatch
// is how many of them are read into memory and sent at once.
const (
	repairBatch     = 4096
	repairCopyBatch = 64
)

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

	recvKick     chan struct{} // copies arrived (noteReceived)
	recvMu       sync.Mutex
	recv         map[index.Item]bool
	recvOverflow bool

	// Items stored here lately, with when (see UploadGrace); entries
	// older than that are swept out at most once per UploadGrace.
	youngMu    sync.Mutex
	young      map[index.Item]time.Time
	youngSwept time.Time

	passes, copied, copiedBytes, dropped atomic.Int64
	unsettled                            atomic.Int64 // passes in a row that found work
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
	due := time.Now().Add(settle) // of the next full pass
	recv := time.NewTimer(time.Hour)
	recv.Stop()
	defer recv.Stop()
	debouncing := false
	for {
		var next time.Duration
		var err error
		select {
		case <-n.ctx.Done():
			return
		case <-n.repair.recvKick:
			if !debouncing {
				debouncing = true
				recv.Reset(receivedDelay)
			}
			continue
		case <-recv.C:
			debouncing = false
			next, err = n.repairReceived(n.ctx)
			next = min(next, time.Until(due))
		case <-t.C:
			next, err = n.RepairPass(n.ctx)
		case <-n.repair.kick:
			if time.Since(n.repair.started) < settle {
				continue // the timer runs the first pass
			}
			next, err = n.RepairPass(n.ctx)
		}
		if err != nil && n.ctx.Err() == nil {
			n.log.Warn("repairing copies", "err", err)
			next = min(next, 10*time.Second)
		}
		next = max(next, 0)
		due = time.Now().Add(next)
		t.Reset(next)
	}
}

// receivedDelay is how long after copies arrive from peers (the last of a
// burst) this node checks them: one it now ranks best among the holders
// of may be its to copy on (see repairReceived).
const receivedDelay = 3 * time.Second

// maxReceived bounds the items remembered for repairReceived; past it, a
// full pass runs instead.
const maxReceived = 1 << 16

// noteReceived remembers items stored here for a peer: a node that gets
// a copy from a repair or a rebalance may be the best-ranked holder, so
// the one to make the rest, without any peer coming or going to wake it.
func (n *Node) noteReceived(items []index.Item) {
	if len(items) == 0 {
		return
	}
	s := &n.repair
	s.recvMu.Lock()
	for _, it := range items {
		if len(s.recv) >= maxReceived {
			s.recvOverflow = true
			break
		}
		s.recv[it] = true
	}
	s.recvMu.Unlock()
	select {
	case s.recvKick <- struct{}{}:
	default:
	}
}

// markYoung notes the count items hash(0) … hash(count-1), just stored
// here (see UploadGrace).
func (n *Node) markYoung(group bool, count int, hash func(int) format.Hash) {
	s := &n.repair
	now := time.Now()
	s.youngMu.Lock()
	defer s.youngMu.Unlock()
	s.sweepYoung(now, n.cfg.UploadGrace)
	if s.young == nil {
		s.young = make(map[index.Item]time.Time, count)
	}
	for i := range count {
		s.young[index.Item{Group: group, Hash: hash(i)}] = now
	}
}

// sweepYoung forgets the items stored UploadGrace ago or earlier, at most
// once per UploadGrace (so a map of n items costs O(1) per item stored).
// youngMu is held.
func (s *repairState) sweepYoung(now time.Time, grace time.Duration) {
	if now.Sub(s.youngSwept) < grace {
		return
	}
	s.youngSwept = now
	for it, at := range s.young {
		if now.Sub(at) >= grace {
			delete(s.young, it)
		}
	}
}

// splitYoung returns the keys of items not young, and appends the young
// ones to *young.
func (n *Node) splitYoung(group bool, keys []format.Hash, young *[]index.Item) []format.Hash {
	s := &n.repair
	now := time.Now()
	s.youngMu.Lock()
	defer s.youngMu.Unlock()
	s.sweepYoung(now, n.cfg.UploadGrace)
	if len(s.young) == 0 {
		return keys
	}
	old := make([]format.Hash, 0, len(keys))
	for _, h := range keys {
		it := index.Item{Group: group, Hash: h}
		if at, ok := s.young[it]; ok && now.Sub(at) < n.cfg.UploadGrace {
			*young = append(*young, it)
		} else {
			old = append(old, h)
		}
	}
	return old
}

// repairReceived applies the rules of a pass to the items noted by
// noteReceived (all of the store if there were too many), and returns when
// the next pass is due.
func (n *Node) repairReceived(ctx context.Context) (time.Duration, error) {
	s := &n.repair
	s.recvMu.Lock()
	items, overflow := s.recv, s.recvOverflow
	s.recv, s.recvOverflow = make(map[index.Item]bool), false
	s.recvMu.Unlock()
	if overflow {
		return n.RepairPass(ctx)
	}
	p, next := n.newRepairPass()
	if p == nil {
		return next, nil
	}
	var groups, chunks []format.Hash
	for it := range items {
		if it.Group {
			groups = append(groups, it.Hash)
		} else {
			chunks = append(chunks, it.Hash)
		}
	}
	for _, kind := range []struct {
		group bool
		keys  []format.Hash
	}{{true, groups}, {false, chunks}} {
		for b := 0; b < len(kind.keys); b += repairBatch {
			if err := p.step(ctx, kind.group, kind.keys[b:min(b+repairBatch, len(kind.keys))]); err != nil {
				return next, err
			}
		}
	}
	return p.finish(next), nil
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
	p, next := n.newRepairPass()
	if p == nil {
		return next, nil
	}
	err = n.eachStoredPage(func(items []index.Item) error {
		groups, chunks := n.splitItems(items)
		if len(groups) > 0 {
			if err := p.step(ctx, true, groups); err != nil {
				return err
			}
		}
		if len(chunks) > 0 {
			return p.step(ctx, false, chunks)
		}
		return nil
	})
	if err != nil {
		return next, err
	}
	n.repair.passes.Add(1)
	n.repair.checked.Store(p.checked)
	n.repair.short.Store(p.short)
	n.repair.waiting.Store(p.waited)
	n.repair.lastPass.Store(time.Now().UnixNano())
	return p.finish(next), nil
}

// newRepairPass returns the state of a pass over the live nodes now, or
// nil if this node is alone, and when the next pass is due as far as
// absent members go.
func (n *Node) newRepairPass() (*repairPass, time.Duration) {
	ids, peers := n.members()
	waiting, next := n.absent(ids)
	if len(ids) == 1 {
		return nil, next // alone: nothing to copy to or to compare with
	}
	wait := make(map[format.NodeID]bool, len(waiting))
	for _, id := range waiting {
		wait[id] = true
	}
	return &repairPass{n: n, ids: ids, peers: peers, view: &repairView{
		self: n.self, replicas: n.cfg.Replicas, need: min(n.cfg.Replicas, len(ids)),
		all: newRanker(append(slices.Clone(ids), waiting...)), waiting: wait}}, next
}

// finish logs what pass p did and returns when the next pass is due,
// given next: soon if it found work (see the top of this file).
func (p *repairPass) finish(next time.Duration) time.Duration {
	n := p.n
	// Young items are looked at again as received ones are, once old
	// enough (a later look finds them young still and leaves them again).
	n.noteReceived(p.young)
	if p.copied > 0 || p.dropped > 0 {
		n.log.Info("repair pass", "copies made", p.copied, "bytes", p.copiedBytes, "surplus dropped", p.dropped, "waiting", p.waited)
	}
	// Unsettled (items short, whoever copies them, or copies made or
	// dropped) : look again soon, to count the new copies and drop what
	// they made surplus, backing off while it stays so (a peer that
	// refuses, or copies slowly).
	if p.short > 0 || p.copied > 0 || p.dropped > 0 {
		next = min(next, time.Second<<min(n.repair.unsettled.Add(1)-1, 6))
	} else {
		n.repair.unsettled.Store(0)
	}
	return next
}

// repairView is what one pass decides by: who this node is, the live
// nodes and the members away for less than RepairAfter.
type repairView struct {
	self     format.NodeID
	replicas int
	need     int     // min(replicas, live nodes)
	all      *ranker // over the live nodes and waiting
	waiting  map[format.NodeID]bool
}

// askFor returns the live nodes whose holding of item h decides what this
// node does with it: its targets and every node ranked above this one.
// Nodes ranked below this one that are not targets can change nothing:
// they are not the actor if this node holds it, and their copies are
// surplus.
func (v *repairView) askFor(h format.Hash) []format.NodeID {
	mine := score(h, nodeSeed(v.self))
	top := v.all.top(h, min(v.replicas, len(v.all.ids)))
	var out []format.NodeID
	for _, j := range top {
		if id := v.all.ids[j]; id != v.self && !v.waiting[id] {
			out = append(out, id)
		}
	}
	for i, id := range v.all.ids {
		if id == v.self || v.waiting[id] || slices.Contains(out, id) {
			continue
		}
		if s := score(h, v.all.seeds[i]); s > mine || (s == mine && id.Compare(v.self) < 0) {
			out = append(out, id)
		}
	}
	return out
}

// repairDecision is what this node does with one item it stores.
type repairDecision struct {
	wait  bool            // a target is away for less than RepairAfter: nothing
	drop  bool            // every target holds it and this node is not one: drop it
	short bool            // fewer targets than need hold it
	copy  bool            // short, and this node is the actor: copy it
	held  []format.NodeID // the targets that hold it
}

// decide applies the rules of repair (see the top of this file) to item
// h, held by holders (live nodes, this one among them).
func (v *repairView) decide(h format.Hash, holders []format.NodeID) repairDecision {
	var d repairDecision
	top := v.all.top(h, min(v.replicas, len(v.all.ids)))
	self := false
	for _, j := range top {
		id := v.all.ids[j]
		if v.waiting[id] {
			return repairDecision{wait: true}
		}
		if id == v.self {
			self = true
		}
		if slices.Contains(holders, id) {
			d.held = append(d.held, id)
		}
	}
	if len(d.held) >= v.need {
		d.drop = !self && slices.Contains(holders, v.self)
		return d
	}
	d.short = true
	// The actor is the best-ranked holder.
	actor, best := format.NodeID{}, uint64(0)
	for i, id := range holders {
		s := score(h, nodeSeed(id))
		if i == 0 || s > best || (s == best && id.Compare(actor) < 0) {
			actor, best = id, s
		}
	}
	d.copy = actor == v.self
	return d
}

// repairPass is the state of one pass.
type repairPass struct {
	n     *Node
	ids   []format.NodeID // live nodes, this one included, sorted
	peers map[format.NodeID]*peer
	view  *repairView

	copied, copiedBytes, dropped, waited, checked, short int64
	young                                                []index.Item // left for later (UploadGrace)
}

// step handles one batch of stored groups (or chunks): who holds them,
// which are surplus here, which this node must copy, and does so.
func (p *repairPass) step(ctx context.Context, group bool, keys []format.Hash) error {
	n := p.n
	if keys = n.splitYoung(group, keys, &p.young); len(keys) == 0 {
		return nil
	}
	ask := make([][]format.NodeID, len(keys))
	for i, h := range keys {
		ask[i] = p.view.askFor(h)
	}
	holders, err := n.holdersAmong(ctx, group, keys, ask)
	if err != nil {
		return err
	}
	need := min(n.cfg.Replicas, len(p.ids))
	var fix []int
	var fixHolders [][]format.NodeID
	var drops []index.Item
	for i, h := range keys {
		p.checked++
		d := p.view.decide(h, holders[i])
		switch {
		case d.wait:
			p.waited++
		case d.drop:
			if it := (index.Item{Group: group, Hash: h}); !n.keepsPinned(it) {
				drops = append(drops, it) // a pinned copy stays (pin.go)
			}
		case d.short:
			p.short++
			if d.copy && !n.db.IsGarbage(index.Item{Group: group, Hash: h}) {
				// (Garbage is not copied: a node coming back would
				// bring dead items back to life; see gc.go.)
				fix = append(fix, i)
				fixHolders = append(fixHolders, d.held)
			}
		}
	}
	// Copies are read and sent a few at a time: a page's worth of groups
	// would not fit in memory.
	for b := 0; b < len(fix); b += repairCopyBatch {
		e := min(b+repairCopyBatch, len(fix))
		if err := p.copy(ctx, group, keys, fix[b:e], fixHolders[b:e], need); err != nil {
			return err
		}
	}
	if len(drops) > 0 {
		k, err := n.db.DropStored(drops)
		p.dropped += int64(k)
		n.repair.dropped.Add(int64(k))
		if k > 0 {
			n.kickReclaim()
		}
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
	b := &copyBatch{group: group}
	for k, i := range fix {
		size, ok := n.addLocal(b, keys[i], fixHolders[k])
		if !ok {
			continue
		}
		if err := n.repairWait(ctx, size); err != nil {
			return err
		}
	}
	if len(b.hashes) == 0 {
		return nil
	}
	made, err := n.copyOut(ctx, b, p.ids, p.peers, need)
	for k, m := range made {
		if m <= 0 {
			continue
		}
		bytes := int64(m) * int64(b.size(k))
		p.copied += int64(m)
		p.copiedBytes += bytes
		n.repair.copied.Add(int64(m))
		n.repair.copiedBytes.Add(bytes)
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

// holdersAmong reports, for each item keys[i], which nodes of ask[i] (and
// this one) hold it, asking each peer one Has query for all the items it
// is asked about (in frames of at most MaxGroupsPerFrame hashes).
func (n *Node) holdersAmong(ctx context.Context, group bool, keys []format.Hash, ask [][]format.NodeID) ([][]format.NodeID, error) {
	has, appendHas, perFrame := n.db.HasChunk, wire.AppendHasChunks, getFrameHashes
	if group {
		has, appendHas, perFrame = n.db.HasGroup, wire.AppendHasGroups, wire.MaxGroupsPerFrame
	}
	out := make([][]format.NodeID, len(keys))
	byPeer := make(map[format.NodeID][]int)
	for i, h := range keys {
		if ok, err := has(h); err == nil && ok {
			out[i] = append(out[i], n.self)
		}
		for _, id := range ask[i] {
			byPeer[id] = append(byPeer[id], i)
		}
	}
	_, peers := n.members()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id, idx := range byPeer {
		p := peers[id]
		if p == nil {
			continue // gone since: holds nothing that counts
		}
		for start := 0; start < len(idx); start += perFrame {
			part := idx[start:min(start+perFrame, len(idx))]
			hashes := make([]format.Hash, len(part))
			for k, i := range part {
				hashes[k] = keys[i]
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := n.askHas(ctx, p, hashes, appendHas)
				if err != nil {
					n.log.Debug("has query failed", "peer", id.Short(), "err", err)
					return
				}
				mu.Lock()
				for k, s := range st {
					if s == wire.StatusOK {
						out[part[k]] = append(out[part[k]], id)
					}
				}
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	for i := range out {
		sortIDs(out[i])
	}
	return out, ctx.Err()
}
