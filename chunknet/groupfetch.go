package chunknet

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
	"github.com/oashare/oashare/index/format/multisha"
)

// Data chunks are read by group: a tree.Span names a run of a group's
// chunks, which sit back to back in the stores of the group's replicas.
// One GetGroups item (or one local index lookup) then reads a whole run,
// and every chunk cut out of it is verified against its hash from the
// depth-1 node.

// groupsPerFrame bounds the items of one GetGroups frame, so that the
// reply (at most a full group each) stays well inside a frame.
const groupsPerFrame = 16

// groupRun is a run of stored chunks of one group that a read wants:
// stored chunks [first, first+len(hashes)) of group, named hashes.
type groupRun struct {
	group  format.Hash
	first  int
	hashes []format.Hash
	// dst, if set, is where the chunks go (dst[k] for hashes[k]): the
	// caller's result slots, so that chunks need no map of results. Runs
	// without it (none that FetchSpans makes) put chunks in the map.
	dst [][]byte
}

// done reports whether chunk k of r is had.
func (r *groupRun) done(k int, got map[format.Hash][]byte) bool {
	if r.dst != nil && r.dst[k] != nil {
		return true
	}
	_, ok := got[r.hashes[k]]
	return ok
}

// FetchSpans returns the verified bytes of every leaf of spans, in order,
// nil for holes: from the memory cache, the local store, or the group's
// replicas among the live peers in placement order, falling back to the
// next replica on any failure, then to the chunks' own names (files stored
// chunk by chunk) and retrying for Config.RetryFor. It fails
// (ErrUnavailable) only if no source serves a chunk correctly; it never
// returns bad bytes. The returned slices may be shared with the cache.
//
// As with Fetch, the chunks of groups this node is a replica of are read
// from its store and not cached; the others come from peers at the same
// time and are cached, and a group another FetchSpans is already getting
// chunks of from peers (read-ahead) is waited for; what that fetch did not
// bring is then fetched here.
func (n *Node) FetchSpans(ctx context.Context, spans []tree.Span) ([][]byte, error) {
	total := 0
	for _, s := range spans {
		total += len(s.Leaves)
	}
	// Runs keep slices of out (their result slots): it must not move.
	out := make([][]byte, 0, total)
	got := make(map[format.Hash][]byte)
	ids, _ := n.members()
	r := newRanker(ids)
	self := indexOf(ids, n.self)
	var local, remote []groupRun
	for _, s := range spans {
		// Chunks of groups held here (by placement, or pinned) are read
		// from the store, not cached.
		isLocal := s.Stored() > 0 && (containsInt(r.top(s.Group, n.cfg.Replicas), self) || n.isPinned(index.Item{Group: true, Hash: s.Group}))
		rank := s.First
		var run *groupRun
		for _, h := range s.Leaves {
			out = append(out, nil)
			if h.IsZero() {
				run = nil // runs fill consecutive result slots
				continue
			}
			k := rank
			rank++
			if !isLocal {
				if d, ok := n.cache.get(h); ok {
					out[len(out)-1] = d
					run = nil
					continue
				}
			}
			if run == nil || run.first+len(run.hashes) != k {
				if isLocal {
					local = append(local, groupRun{group: s.Group, first: k})
					run = &local[len(local)-1]
				} else {
					remote = append(remote, groupRun{group: s.Group, first: k})
					run = &remote[len(remote)-1]
				}
			}
			run.hashes = append(run.hashes, h)
			run.dst = out[len(out)-len(run.hashes) : len(out) : len(out)]
		}
	}
	if len(local)+len(remote) > 0 {
		if err := n.fetchRuns(ctx, local, remote, got); err != nil {
			return nil, err
		}
	}
	i := 0
	for _, s := range spans {
		for _, h := range s.Leaves {
			if !h.IsZero() && out[i] == nil {
				d, ok := got[h]
				if !ok {
					return nil, fmt.Errorf("internal: chunk %s fetched by nobody", h.Short())
				}
				out[i] = d
			}
			i++
		}
	}
	return out, nil
}

// PrefetchSpans gets into the cache the chunks of spans whose group this
// node is not a replica of and that are not cached yet: read-ahead.
func (n *Node) PrefetchSpans(ctx context.Context, spans []tree.Span) error {
	ids, _ := n.members()
	r := newRanker(ids)
	self := indexOf(ids, n.self)
	var todo []tree.Span
	for _, s := range spans {
		if s.Stored() == 0 || containsInt(r.top(s.Group, n.cfg.Replicas), self) || n.isPinned(index.Item{Group: true, Hash: s.Group}) {
			continue
		}
		for _, h := range s.Leaves {
			if !h.IsZero() && !n.cache.has(h) {
				todo = append(todo, s)
				break
			}
		}
	}
	if len(todo) == 0 {
		return nil
	}
	_, err := n.FetchSpans(ctx, todo)
	return err
}

// fetchRuns gets every chunk of local (runs of groups this node is a
// replica of) and remote (the others) into the runs' result slots (or got,
// for chunks found by name).
func (n *Node) fetchRuns(ctx context.Context, local, remote []groupRun, got map[format.Hash][]byte) error {
	// Claim the groups of remote runs nobody is fetching; note the
	// others' flights (read-ahead racing the read it runs ahead of).
	var mine, theirs []groupRun
	var waits []chan struct{}
	var claimed []format.Hash
	done := make(chan struct{})
	n.flightMu.Lock()
	for _, r := range remote {
		if ch, ok := n.groupFlight[r.group]; ok && ch != done {
			waits = append(waits, ch)
			theirs = append(theirs, r)
			continue
		}
		if _, ok := n.groupFlight[r.group]; !ok {
			n.groupFlight[r.group] = done
			claimed = append(claimed, r.group)
		}
		mine = append(mine, r)
	}
	n.flightMu.Unlock()
	err := n.retry(ctx, func() error { return n.runsAttempt(ctx, local, mine, got) })
	n.flightMu.Lock()
	for _, g := range claimed {
		delete(n.groupFlight, g)
	}
	n.flightMu.Unlock()
	close(done)
	if err != nil || len(theirs) == 0 {
		return err
	}
	for _, ch := range waits {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// What the other flights got is in the cache, unless it was evicted,
	// the flight failed or wanted other chunks of the group: fetch the
	// rest ourselves.
	for _, r := range theirs {
		for k, h := range r.hashes {
			if r.dst[k] == nil {
				if d, ok := n.cache.get(h); ok {
					r.dst[k] = d
				}
			}
		}
	}
	var mu sync.Mutex
	rest := pending(theirs, got, &mu)
	if len(rest) == 0 {
		return nil
	}
	return n.retry(ctx, func() error { return n.runsAttempt(ctx, nil, rest, got) })
}

// runsAttempt is one try at every chunk of local and remote not yet in
// got: local runs from this node's store while the remote ones are asked
// of their groups' replicas; then what is still missing from this node's
// store whatever the placement, from the other replicas, and finally by
// the chunks' own names (chunks stored one by one). It fails if some chunk
// was found nowhere.
func (n *Node) runsAttempt(ctx context.Context, local, remote []groupRun, got map[format.Hash][]byte) error {
	var mu sync.Mutex // guards got while the remote round runs
	roundDone := make(chan struct{})
	go func() {
		defer close(roundDone)
		n.groupRounds(ctx, pending(remote, got, &mu), got, &mu)
	}()
	n.readLocalRuns(pending(local, got, &mu), got, &mu, false)
	<-roundDone
	if err := ctx.Err(); err != nil {
		return err
	}
	// A group may be here though this node is not one of its replicas (it
	// was written while too few peers were alive); one held here may have
	// lost a chunk, which its other replicas still serve.
	n.readLocalRuns(pending(remote, got, &mu), got, &mu, true)
	n.groupRounds(ctx, pending(local, got, &mu), got, &mu)
	var names []format.Hash
	for _, r := range append(pending(local, got, &mu), pending(remote, got, &mu)...) {
		names = append(names, r.hashes...)
	}
	if len(names) == 0 {
		return nil
	}
	for i, d := range n.readLocal(names) {
		if d != nil {
			got[names[i]] = d
		}
	}
	var byName []format.Hash
	for _, h := range names {
		if _, ok := got[h]; !ok {
			byName = append(byName, h)
		}
	}
	if len(byName) == 0 {
		return nil
	}
	if err := n.fetchRound(ctx, byName, got, &mu); err != nil {
		return fmt.Errorf("%w: %d chunks (first %s) not served correctly by their groups' replicas or by name", ErrUnavailable, len(byName), byName[0].Short())
	}
	return nil
}

// pending returns the parts of runs whose chunks are not in got, as runs.
func pending(runs []groupRun, got map[format.Hash][]byte, mu *sync.Mutex) []groupRun {
	mu.Lock()
	defer mu.Unlock()
	var out []groupRun
	for _, r := range runs {
		var cur *groupRun
		from := 0 // k of cur's first chunk
		for k, h := range r.hashes {
			if r.done(k, got) {
				cur = nil
				continue
			}
			if cur == nil {
				out = append(out, groupRun{group: r.group, first: r.first + k})
				cur, from = &out[len(out)-1], k
			}
			cur.hashes = append(cur.hashes, h)
			if r.dst != nil {
				cur.dst = r.dst[from : k+1 : k+1]
			}
		}
	}
	return out
}

// readLocalRuns reads runs from the local store into got; chunks from
// groups this node is not a replica of (cache true) are cached.
func (n *Node) readLocalRuns(runs []groupRun, got map[format.Hash][]byte, mu *sync.Mutex, cache bool) {
	if len(runs) == 0 {
		return
	}
	workers := min(localWorkers, len(runs))
	next := make(chan groupRun)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for r := range next {
				data, ok, err := n.db.GetGroup(r.group, r.first*format.ChunkSize, len(r.hashes)*format.ChunkSize, buf[:0])
				if err != nil {
					n.log.Error("reading a local group", "group", r.group.Short(), "err", err)
				}
				if !ok {
					continue
				}
				if r.dst != nil {
					// Each slot belongs to this run alone.
					n.cutRun(r, data, "local store", func(k int, h format.Hash, d []byte) {
						r.dst[k] = d
						if cache {
							n.cache.add(h, d)
						}
					})
					continue
				}
				mu.Lock()
				n.cutRun(r, data, "local store", func(_ int, h format.Hash, d []byte) {
					got[h] = d
					if cache {
						n.cache.add(h, d)
					}
				})
				mu.Unlock()
			}
		}()
	}
	for _, r := range runs {
		next <- r
	}
	close(next)
	wg.Wait()
}

// cutRun cuts the bytes of run r into chunks (format.ChunkSize each, the
// group's last one possibly shorter) and calls keep for each that matches
// its hash; a mismatch is logged, with from saying where the bytes came
// from. This is where group bytes are verified.
func (n *Node) cutRun(r groupRun, data []byte, from string, keep func(k int, h format.Hash, d []byte)) {
	data = data[:min(len(data), len(r.hashes)*format.ChunkSize)]
	var buf [format.Fanout]format.Hash
	for k, sum := range multisha.Chunks(buf[:0], data, format.ChunkSize) {
		h := r.hashes[k]
		lo := k * format.ChunkSize
		hi := min(lo+format.ChunkSize, len(data))
		d := data[lo:hi:hi]
		if sum != h {
			n.metrics.VerifyFailures.Add(1)
			n.log.Warn("corrupt chunk in a group; trying another replica", "from", from, "group", r.group.Short(), "chunk", h.Short())
			continue
		}
		keep(k, h, d)
	}
}

// groupRounds asks the live peers for every chunk of runs, adding what it
// gets to got (under mu) and to the cache: round j asks each run of the
// j-th replica of its group, among the peers other than this node, in
// placement order, stalled peers last (see askPeers).
func (n *Node) groupRounds(ctx context.Context, runs []groupRun, got map[format.Hash][]byte, mu *sync.Mutex) {
	if len(runs) == 0 {
		return
	}
	others, peers := n.otherMembers()
	r := newRanker(others)
	stalled := stalledOf(others, peers)
	anyStalled := slices.Contains(stalled, true)
	merge := func(part []groupRun, res [][][]byte) {
		mu.Lock()
		defer mu.Unlock()
		for i, run := range part {
			for k, d := range res[i] {
				switch {
				case d == nil:
				case run.dst != nil:
					run.dst[k] = d
				default:
					got[run.hashes[k]] = d
				}
			}
		}
	}
	for round := 0; round < len(others) && len(runs) > 0; round++ {
		byPeer := make(map[format.NodeID][]groupRun)
		for _, run := range runs {
			var pick int
			if anyStalled {
				pick = orderPeers(r.top(run.group, len(others)), -1, stalled)[round]
			} else {
				pick = r.top(run.group, round+1)[round]
			}
			byPeer[others[pick]] = append(byPeer[others[pick]], run)
		}
		askPeers(ctx, n, peers, byPeer, groupsPerFrame, "groups", n.getGroupsFrom, merge)
		if ctx.Err() != nil {
			return
		}
		runs = pending(runs, got, mu)
	}
}

// getGroupsFrom asks one peer for runs and returns, per run, the chunks it
// served correctly (nil for the others), verified and cached.
func (n *Node) getGroupsFrom(ctx context.Context, p *peer, runs []groupRun) ([][][]byte, error) {
	ranges := make([]wire.GroupRange, len(runs))
	for i, r := range runs {
		ranges[i] = wire.GroupRange{Hash: r.group, First: uint16(r.first), N: uint16(len(r.hashes))}
	}
	items, err := n.getItems(ctx, p, "groups", len(runs), wire.TypeGroupResult, wire.DecodeGroupResult,
		func(dst []byte, id uint64) []byte { return wire.AppendGetGroups(dst, id, ranges) })
	if err != nil {
		return nil, err
	}
	res := make([][][]byte, len(runs))
	for i, it := range items {
		if it.Status != wire.StatusOK {
			continue
		}
		// it.Data aliases the frame payload, which this call owns alone.
		r := runs[i]
		res[i] = make([][]byte, len(r.hashes))
		n.cutRun(r, it.Data, "peer "+p.id.Short(), func(k int, h format.Hash, d []byte) {
			n.metrics.fetched(1, len(d))
			n.cache.add(h, d)
			res[i][k] = d
		})
	}
	return res, nil
}

// GroupHolders reports, for each group, which nodes (this one included)
// hold it right now, by asking every live peer.
func (n *Node) GroupHolders(ctx context.Context, groups []format.Hash) ([][]format.NodeID, error) {
	return n.whoHolds(ctx, groups, wire.MaxGroupsPerFrame, n.db.HasGroup, wire.AppendHasGroups)
}

func indexOf(ids []format.NodeID, id format.NodeID) int {
	for i, x := range ids {
		if x == id {
			return i
		}
	}
	return -1
}

func containsInt(xs []int, x int) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
