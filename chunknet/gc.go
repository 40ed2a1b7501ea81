package chunknet

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// Garbage collection: deleting the groups and tree nodes no file version
// still needs. Every node decides for the items it stores, alone, from
// what every member tells it; no two nodes need to agree, because each
// only ever deletes its own copies, and only copies that nothing can
// still need.
//
// A pass (every Config.ReclaimAfter/2, at most every 5 minutes):
//
//  1. Ask every member, this one included, what it uses (InUse): the
//     file versions it has open or pending (open handles, unpublished
//     changes' base, the pending journal), how long ago its oldest
//     upload not yet published started, and the sequence number of its
//     own last record. A member that is not connected, or does not
//     answer, stops the pass from dropping anything (it could hold an
//     old version open, or an upload still to be published), unless it
//     has been away for Config.ForgetAfter (a member gone that long with
//     a file open, or an upload begun and not published, may find them
//     gone: reads of them fail, and fusefs checks changes begun that long
//     ago whole before it publishes them, failing the close or fsync
//     with EIO otherwise; never silent).
//  2. Wait until the records of each member up to the sequence number
//     it gave are applied here, so the namespace read next holds every
//     version any member published before it answered.
//  3. Mark: the roots are every version index.DB.RetainedFiles keeps
//     (heads of files with a name, versions inside the restore window
//     Config.KeepVersions, files deleted inside it) and every version
//     named in step 1. Each root's tree nodes above the groups are
//     fetched (verified, from any holder) to name its groups. Every
//     stored item not named is a candidate, as of the first pass that
//     found it so (index store_gc.go).
//  4. Drop a candidate found unneeded at least Config.ReclaimAfter ago,
//     when every member answered, and when it was found unneeded before
//     the oldest unpublished upload of every member started.
//
// Why an item X dropped in 4 is needed by nothing, now or later. A file
// version that names X is either published or not. Published before its
// origin answered: it is in the namespace read in 3 (step 2), so X is
// named, unless that version is outside every rule of RetainedFiles:
// superseded or deleted longer than the restore window ago, and open on
// no member (it would be in that member's answer). Published after its
// origin answered, or not yet: its content is either new bytes, uploaded
// by that writer after its oldest unpublished upload started, or content
// of a version it had open (in its answer). New bytes: every put of X
// makes it a candidate no more (the store forgets it in the put queue
// that also runs the drops), so X was put before it was found unneeded,
// hence before the writer's oldest unpublished upload started (the
// condition of 4): not part of it. A version that names X and is
// published later than the pass cannot name it through a fresh upload
// without putting it on its targets again, and a surplus copy dropped
// here is not the target's. The grace ReclaimAfter leaves a reader that
// found a version just before it was superseded time to open it (open
// versions are in the answers from then on), and the copy stays readable
// until the reclaim after the drop.
//
// Repair does not copy candidates (a copy on a node coming back would
// bring dead items back to life); a candidate is still served to readers.
// A spot check (trust.go) reads an item back at most ReclaimAfter/2 after
// its put, when no member can have dropped it as garbage yet, so a copy
// rightly deleted is never taken for a lie (members are expected to run
// with the same --reclaim-after).

// InUse is what the file system above needs kept: the versions it has
// open or is changing, and when its oldest upload not yet published
// started (zero: none). Config.InUse provides it.
type InUse struct {
	Roots       []tree.Version
	Unpublished time.Time
	// IDs are the inodes the file system has open: history pruning
	// keeps them whole (index ns_prune.go). They stay on this node.
	IDs []uint64
}

// ForgetAfter is Config.ForgetAfter: changes begun longer ago than that
// are checked whole before they are published (see gc.go).
func (n *Node) ForgetAfter() time.Duration { return n.cfg.ForgetAfter }

// SetInUse installs the function that tells what this node's file system
// uses (see InUse); without one, the node uses nothing beyond its pending
// journal.
func (n *Node) SetInUse(fn func() InUse) {
	n.gc.mu.Lock()
	n.gc.inUse = fn
	n.gc.mu.Unlock()
}

// gcState is the garbage collector's state and figures (for status).
type gcState struct {
	mu        sync.Mutex
	inUse     func() InUse
	last      time.Time // end of the last pass
	roots     int       // versions marked from in the last pass
	checked   int       // items checked in the last pass
	dropped   int64     // items dropped since start
	heldBy    string    // a member that held back the last pass's drops
	passes    int
	lastFound int // candidates after the last pass
	// names holds, per version root named in the last pass, the item
	// names of its tree (hashSet entries): a version's tree never
	// changes, so the next pass fetches only the nodes of new versions.
	names map[tree.Version][]uint64
	// pruned counts what history pruning deleted since start.
	pruned index.PruneStat
}

// GCStat is what garbage collection did, for status.
type GCStat struct {
	Passes     int
	Last       time.Time
	Roots      int
	Checked    int
	Candidates int
	Dropped    int64
	HeldBack   string // why the last pass dropped nothing ("" = it could)
	Pruned     index.PruneStat
}

// GCStat returns the garbage collector's figures.
func (n *Node) GCStat() GCStat {
	n.gc.mu.Lock()
	defer n.gc.mu.Unlock()
	return GCStat{Passes: n.gc.passes, Last: n.gc.last, Roots: n.gc.roots, Checked: n.gc.checked,
		Candidates: n.gc.lastFound, Dropped: n.gc.dropped, HeldBack: n.gc.heldBy, Pruned: n.gc.pruned}
}

// localInUse is this node's answer to InUse: what its file system uses,
// its pending journal, and its own log position.
func (n *Node) localInUse() (wire.InUse, error) {
	n.gc.mu.Lock()
	fn := n.gc.inUse
	n.gc.mu.Unlock()
	// The log position first: a version published after it was read is
	// covered by the roots or the unpublished time read after it.
	vv := n.db.VersionVector()
	u := wire.InUse{Seq: vv[n.self], Complete: true, VV: make([]wire.VVEntry, 0, len(vv))}
	for o, s := range vv {
		u.VV = append(u.VV, wire.VVEntry{Node: o, Seq: s})
	}
	if len(u.VV) > wire.MaxVVEntries {
		// More origins than an answer carries: none, so the asker
		// prunes no history (it cannot tell what this node has seen).
		u.VV = u.VV[:0]
	}
	if fn != nil {
		got := fn()
		for _, v := range got.Roots {
			if v.Size > 0 && !v.Root.IsZero() {
				u.Roots = append(u.Roots, wire.Root{Size: v.Size, Depth: v.Depth, Hash: v.Root})
			}
		}
		if !got.Unpublished.IsZero() {
			u.Unpublished = max(time.Since(got.Unpublished), time.Millisecond)
		}
	}
	pend, err := n.db.Pendings()
	if err != nil {
		return u, err
	}
	for _, p := range pend {
		for _, v := range []wire.Root{{Size: p.Size, Depth: p.Depth, Hash: p.Root}, {Size: p.OrigSize, Depth: p.OrigDepth, Hash: p.OrigRoot}} {
			if v.Size > 0 && !v.Hash.IsZero() {
				u.Roots = append(u.Roots, v)
			}
		}
	}
	if len(u.Roots) > wire.MaxInUseRoots {
		u.Complete = false
	}
	return u, nil
}

func (n *Node) gcLoop() {
	defer n.wg.Done()
	every := min(n.cfg.ReclaimAfter/2, 5*time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if err := n.gcPass(n.ctx); err != nil && n.ctx.Err() == nil {
			n.log.Warn("garbage collection pass", "err", err)
		}
	}
}

// gcDropBatch bounds the items one drop call removes.
const gcDropBatch = 4096

// gcPass runs one pass (see the comment at the top of this file).
func (n *Node) gcPass(ctx context.Context) error {
	start := time.Now()
	answers, held := n.collectInUse(ctx)
	if held == "" {
		held = n.awaitLogs(ctx, answers)
	}
	nsHeld := held // every member answered and its records are here
	// The namespace, read after every answer's records are applied.
	var roots []tree.Version
	err := n.db.RetainedFiles(start, n.cfg.KeepVersions, func(in index.Inode) error {
		roots = append(roots, tree.Version{Size: in.Size, Root: in.Root, Depth: in.Depth})
		return nil
	})
	if err != nil {
		return err
	}
	// Unpublished uploads: the oldest start, on this node's clock.
	oldest := time.Time{}
	for _, a := range answers {
		for _, r := range a.u.Roots {
			roots = append(roots, tree.Version{Size: r.Size, Root: r.Hash, Depth: r.Depth})
		}
		if a.u.Unpublished > 0 {
			if s := a.at.Add(-a.u.Unpublished); oldest.IsZero() || s.Before(oldest) {
				oldest = s
			}
		}
		if !a.u.Complete && held == "" {
			held = fmt.Sprintf("member %s uses more file versions than one answer holds", a.id.Short())
		}
	}
	needed, err := n.neededItems(ctx, roots)
	if err != nil {
		// A tree node no member serves: what lies below it cannot be
		// named, so nothing is found unneeded.
		n.noteGC(start, len(roots), 0, 0, fmt.Sprintf("naming what versions use: %v", err))
		return nil
	}
	mark, err := n.db.MarkGarbage(func(it index.Item) bool { return needed.has(it.Hash) })
	if err != nil {
		return err
	}
	var dropped int
	if held == "" {
		cut := start.Add(-n.cfg.ReclaimAfter)
		for {
			k, err := n.db.DropGarbage(func(_ index.Item, since time.Time) bool {
				return !since.After(cut) && (oldest.IsZero() || since.Before(oldest))
			}, gcDropBatch)
			dropped += k
			if err != nil {
				return err
			}
			if k < gcDropBatch {
				break
			}
		}
		if dropped > 0 {
			n.log.Info("dropped items no file version needs", "items", dropped)
			n.kickReclaim()
		}
	}
	if nsHeld == "" {
		n.pruneHistory(start, answers)
	}
	cands, _ := n.db.GarbageStats()
	n.gc.mu.Lock()
	n.gc.dropped += int64(dropped)
	n.gc.mu.Unlock()
	n.noteGC(start, len(roots), mark.Checked, int(cands), held)
	return nil
}

func (n *Node) noteGC(at time.Time, roots, checked, cands int, held string) {
	n.gc.mu.Lock()
	defer n.gc.mu.Unlock()
	n.gc.passes++
	n.gc.last = at
	n.gc.roots, n.gc.checked, n.gc.lastFound, n.gc.heldBy = roots, checked, cands, held
	if held != "" {
		n.log.Debug("garbage collection drops nothing this pass", "why", held)
	}
}

// pruneHistory prunes the namespace's history (index ns_prune.go) after
// a pass in which every member answered and every member's records up to
// its answer were applied here: a record is stable when every answer's
// version vector, and this node's, holds it. The restore window is kept,
// and at least ReclaimAfter (a reader that looked a version up just
// before it was superseded may still open it).
func (n *Node) pruneHistory(start time.Time, answers []inUseAnswer) {
	var stable map[format.NodeID]uint64
	for _, a := range answers {
		vv := make(map[format.NodeID]uint64, len(a.u.VV))
		for _, e := range a.u.VV {
			vv[e.Node] = e.Seq
		}
		if a.id == n.self {
			vv = n.db.VersionVector()
		}
		if stable == nil {
			stable = vv
			continue
		}
		for o, s := range stable {
			stable[o] = min(s, vv[o])
		}
	}
	keep := max(n.cfg.KeepVersions, n.cfg.ReclaimAfter)
	var open map[uint64]bool
	n.gc.mu.Lock()
	fn := n.gc.inUse
	n.gc.mu.Unlock()
	if fn != nil {
		ids := fn().IDs
		open = make(map[uint64]bool, len(ids))
		for _, id := range ids {
			open[id] = true
		}
	}
	st, err := n.db.Prune(stable, start.Add(-keep), func(id uint64) bool { return open[id] })
	if err != nil {
		n.log.Warn("pruning history", "err", err)
		return
	}
	n.gc.mu.Lock()
	n.gc.pruned.Records += st.Records
	n.gc.pruned.Versions += st.Versions
	n.gc.pruned.Names += st.Names
	n.gc.pruned.Inodes += st.Inodes
	n.gc.mu.Unlock()
}

// inUseAnswer is one member's answer and when it arrived.
type inUseAnswer struct {
	id format.NodeID
	u  wire.InUse
	at time.Time
}

// collectInUse asks every member what it uses. held says why drops must
// wait ("" when every member answered).
func (n *Node) collectInUse(ctx context.Context) ([]inUseAnswer, string) {
	local, err := n.localInUse()
	if err != nil {
		return nil, "reading the pending journal: " + err.Error()
	}
	out := []inUseAnswer{{id: n.self, u: local, at: time.Now()}}
	n.mu.Lock()
	peers := make(map[format.NodeID]*peer, len(n.peers))
	for id, p := range n.peers {
		peers[id] = p
	}
	n.mu.Unlock()
	held := ""
	for _, id := range n.expectedMembers(peers) {
		if _, ok := peers[id]; ok || held != "" {
			continue
		}
		n.mu.Lock()
		since := n.seenAt[id]
		n.mu.Unlock()
		if since.IsZero() {
			since = n.repair.started // not seen since this node started
		}
		if time.Since(since) < n.cfg.ForgetAfter {
			held = "member " + id.Short() + " is not connected (it holds deletions back for --forget-after, or until 'oashare remove')"
		}
	}
	askEach(ctx, peers, 10*time.Second, wire.AppendInUse, wire.TypeInUseResult, wire.DecodeInUseResult,
		func(id format.NodeID, u wire.InUse, err error) {
			if err != nil {
				if held == "" {
					held = fmt.Sprintf("member %s did not say what it uses: %v", id.Short(), err)
				}
				return
			}
			out = append(out, inUseAnswer{id: id, u: u, at: time.Now()})
		})
	return out, held
}

// expectedMembers lists the nodes whose answer a pass needs: the members
// in good standing on a network; without one (an open set of nodes), the
// nodes this one has met or has records of.
func (n *Node) expectedMembers(connected map[format.NodeID]*peer) []format.NodeID {
	var ids []format.NodeID
	if _, ok := n.db.Network(); ok {
		for _, m := range n.db.Members() {
			if !m.Removed && m.ID != n.self {
				ids = append(ids, m.ID)
			}
		}
		return ids
	}
	set := make(map[format.NodeID]bool)
	for id := range n.db.VersionVector() {
		set[id] = true
	}
	n.mu.Lock()
	for id := range n.seen {
		set[id] = true
	}
	n.mu.Unlock()
	for id := range connected {
		set[id] = true
	}
	delete(set, n.self)
	for id := range set {
		ids = append(ids, id)
	}
	return ids
}

// awaitLogs waits (up to 10 s) until the records of every answering
// member up to the sequence number it gave are applied here.
func (n *Node) awaitLogs(ctx context.Context, answers []inUseAnswer) string {
	deadline := time.Now().Add(10 * time.Second)
	for {
		vv := n.db.VersionVector()
		behind := ""
		for _, a := range answers {
			if vv[a.id] < a.u.Seq {
				behind = a.id.Short()
				break
			}
		}
		if behind == "" {
			return ""
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "the records of member " + behind + " are not all applied here yet"
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// hashSet is a set of item names, kept as their first 8 bytes sorted:
// 8 bytes per item whatever the namespace. Two names sharing a prefix
// (odds about n²/2^65) only keep an unneeded item.
type hashSet []uint64

func (s hashSet) has(h format.Hash) bool {
	_, ok := slices.BinarySearch(s, binary.BigEndian.Uint64(h[:8]))
	return ok
}

// neededItems names every item the versions use: their groups and their
// tree nodes (a depth-1 node is stored under its group's name too; a
// one-chunk version's root is its group).
func (n *Node) neededItems(ctx context.Context, roots []tree.Version) (hashSet, error) {
	n.gc.mu.Lock()
	last := n.gc.names
	n.gc.mu.Unlock()
	names := make(map[tree.Version][]uint64, len(roots))
	var s hashSet
	for _, v := range roots {
		if v.Root.IsZero() {
			continue
		}
		if _, ok := names[v]; ok {
			continue
		}
		got, ok := last[v]
		if !ok {
			if v.Depth == 0 {
				got = []uint64{binary.BigEndian.Uint64(v.Root[:8])}
			} else if err := tree.Nodes(ctx, n, v, func(_ uint8, h format.Hash) error {
				got = append(got, binary.BigEndian.Uint64(h[:8]))
				return nil
			}); err != nil {
				return nil, fmt.Errorf("version %s of %d bytes: %w", v.Root.Short(), v.Size, err)
			}
		}
		names[v] = got
		s = append(s, got...)
	}
	n.gc.mu.Lock()
	n.gc.names = names
	n.gc.mu.Unlock()
	slices.Sort(s)
	return slices.Compact(s), nil
}
