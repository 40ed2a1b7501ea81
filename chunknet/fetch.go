package chunknet

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index/format"
)

// verify is where chunknet checks a chunk's bytes against its name: every
// chunk from a peer, or received in an upload, passes through it. Chunks
// read from the local store come from index.GetChunks, which makes the same
// SHA-256 check itself.
func verify(h format.Hash, data []byte) bool {
	return sha256.Sum256(data) == [32]byte(h)
}

// getFrameHashes bounds the hashes asked of one peer in one frame, so that
// the reply fits a frame even if every chunk is a full tree node.
const getFrameHashes = wire.MaxPayload / (format.MaxChunkData + 8)

// Fetch returns the verified bytes of each chunk in hashes, in order: from
// the memory cache, the local store, or the live peers in placement order,
// falling back to the next replica on any failure. It fails (ErrUnavailable)
// only if no source serves a chunk correctly; it never returns bad bytes.
// The returned slices may be shared with the cache: callers must not modify
// them.
//
// Chunks this node is a replica of are read from the local store, which
// reads a file's chunks in runs, and are not cached (tree nodes excepted):
// reading them again is cheaper than the cache's bookkeeping. The others
// come from peers at the same time and go into the cache; one of those
// that another Fetch is already getting (read-ahead racing the read it runs
// ahead of) is waited for, not fetched twice.
func (n *Node) Fetch(ctx context.Context, hashes []format.Hash) ([][]byte, error) {
	out := make([][]byte, len(hashes))
	want := make(map[format.Hash][]int)
	for i, h := range hashes {
		if d, ok := n.cache.get(h); ok {
			out[i] = d
			continue
		}
		want[h] = append(want[h], i)
	}
	if len(want) == 0 {
		return out, nil
	}
	// The distinct misses in the order of hashes (file order), which the
	// stores and peers read fastest.
	misses := make([]format.Hash, 0, len(want))
	for i, h := range hashes {
		if idx := want[h]; len(idx) > 0 && idx[0] == i {
			misses = append(misses, h)
		}
	}
	local, remote := n.split(misses)
	// Claim the remote chunks nobody is fetching; note the others' flights.
	mine := make([]format.Hash, 0, len(remote))
	var waits []chan struct{}
	var theirs []format.Hash
	done := make(chan struct{})
	n.flightMu.Lock()
	for _, h := range remote {
		if ch, ok := n.flight[h]; ok {
			waits = append(waits, ch)
			theirs = append(theirs, h)
			continue
		}
		n.flight[h] = done
		mine = append(mine, h)
	}
	n.flightMu.Unlock()
	got, err := n.fetchOwn(ctx, local, mine)
	n.flightMu.Lock()
	for _, h := range mine {
		delete(n.flight, h)
	}
	n.flightMu.Unlock()
	close(done)
	if err != nil {
		return nil, err
	}
	for _, ch := range waits {
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	// What the other flights got is in the cache, unless it was evicted or
	// the flight failed: fetch those ourselves.
	var again []format.Hash
	for _, h := range theirs {
		if d, ok := n.cache.get(h); ok {
			got[h] = d
		} else {
			again = append(again, h)
		}
	}
	if len(again) > 0 {
		more, err := n.fetchOwn(ctx, nil, again)
		if err != nil {
			return nil, err
		}
		for h, d := range more {
			got[h] = d
		}
	}
	for h, idx := range want {
		for _, i := range idx {
			out[i] = got[h]
		}
	}
	return out, nil
}

// Prefetch gets into the cache those of hashes that this node is not a
// replica of and that are not cached yet: read-ahead, hiding the network
// from a sequential reader. Chunks held here are left to the read itself.
func (n *Node) Prefetch(ctx context.Context, hashes []format.Hash) error {
	_, remote := n.split(hashes)
	var todo []format.Hash
	for _, h := range remote {
		if !n.cache.has(h) {
			todo = append(todo, h)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	_, err := n.Fetch(ctx, todo)
	return err
}

// split divides hashes (keeping their order) into those this node is one of
// the replicas of, by placement over the live members, or has pinned
// (pin.go), and the others.
func (n *Node) split(hashes []format.Hash) (local, remote []format.Hash) {
	ids, _ := n.members()
	r := newRanker(ids)
	self := slices.IndexFunc(ids, func(id format.NodeID) bool { return id == n.self })
	for _, h := range hashes {
		if slices.Contains(r.top(h, n.cfg.Replicas), self) || n.pinnedChunk(h) {
			local = append(local, h)
		} else {
			remote = append(remote, h)
		}
	}
	return local, remote
}

// localWorkers is how many goroutines read the local store at once for
// one Fetch, each a contiguous part of at least localPart chunks.
const (
	localWorkers = 8
	localPart    = 256
)

// dataChunkMax is the size of a full data chunk; stored chunks larger than
// this are tree nodes, which reads walk again and again and are cached.
const dataChunkMax = format.ChunkSize

// fetchOwn gets local (chunks this node should hold) from the local store
// while it asks peers for remote, all distinct and in file order. What the
// store lacks, or no peer served, is then tried at the other place, and
// finally at the peers with retries. Chunks from peers are cached.
func (n *Node) fetchOwn(ctx context.Context, local, remote []format.Hash) (map[format.Hash][]byte, error) {
	got := make(map[format.Hash][]byte, len(local)+len(remote))
	if len(local)+len(remote) == 0 {
		return got, nil
	}
	var mu sync.Mutex // guards got while the remote round runs
	roundDone := make(chan struct{})
	go func() {
		defer close(roundDone)
		if len(remote) > 0 {
			n.fetchRound(ctx, remote, got, &mu)
		}
	}()
	fromStore := n.readLocal(local)
	<-roundDone
	var missing []format.Hash
	keep := func(h format.Hash, d []byte) {
		if len(d) > dataChunkMax {
			n.cache.add(h, d)
		}
		got[h] = d
	}
	for i, h := range local {
		if fromStore[i] != nil {
			keep(h, fromStore[i])
		} else {
			missing = append(missing, h)
		}
	}
	// A chunk may be here though this node is not one of its replicas (it
	// was written while too few peers were alive).
	var unserved []format.Hash
	for _, h := range remote {
		if _, ok := got[h]; !ok {
			unserved = append(unserved, h)
		}
	}
	for i, d := range n.readLocal(unserved) {
		if d != nil {
			keep(unserved[i], d)
		} else {
			missing = append(missing, unserved[i])
		}
	}
	if len(missing) == 0 {
		return got, nil
	}
	err := n.retry(ctx, func() error {
		return n.fetchRound(ctx, missing, got, &mu)
	})
	return got, err
}

// readLocal reads hashes from the local store; a chunk not stored,
// unreadable or corrupt is nil in the result. The index's GetChunks checks
// every chunk against its hash (the same check as verify) and reads runs
// of a file's chunks with one lookup, so each worker takes a contiguous
// part of hashes.
func (n *Node) readLocal(hashes []format.Hash) [][]byte {
	out := make([][]byte, len(hashes))
	if len(hashes) == 0 {
		return out
	}
	workers := min(localWorkers, (len(hashes)+localPart-1)/localPart)
	per := (len(hashes) + workers - 1) / workers
	var wg sync.WaitGroup
	for from := 0; from < len(hashes); from += per {
		to := min(from+per, len(hashes))
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := n.db.GetChunks(hashes[from:to])
			if err != nil {
				n.log.Error("reading local chunks", "chunks", to-from, "err", err)
			}
			copy(out[from:to], got)
		}()
	}
	wg.Wait()
	return out
}

// stripeChunks is the length of the stripes into which fetchRound cuts the
// chunks it asks for: in its first round, the chunks of one stripe go to
// the same one of their holders where they can, so that each peer reads
// long stretches of its store rather than a chunk here and there.
const stripeChunks = 128

// fetchRound tries every chunk of want (in order) not yet in got on the
// live peers, and adds what it gets to got, under mu. The first round asks
// each chunk of one of its holders, chosen per stripe (see stripeChunks);
// the next rounds go down each chunk's placement order.
// It fails if some chunk was served correctly by no live peer.
func (n *Node) fetchRound(ctx context.Context, want []format.Hash, got map[format.Hash][]byte, mu *sync.Mutex) error {
	others, peers := n.otherMembers()
	r := newRanker(others)
	mu.Lock()
	remaining := make([]format.Hash, 0, len(want))
	for _, h := range want {
		if _, ok := got[h]; !ok {
			remaining = append(remaining, h)
		}
	}
	mu.Unlock()
	// order[k] is the order remaining[k] asks the others in, one per
	// round: first the holder chosen for its stripe, then the others in
	// placement order; peers that are stalled come last.
	holders := min(n.cfg.Replicas, len(others))
	stalled := stalledOf(others, peers)
	order := make([][]int, len(remaining))
	for k, h := range remaining {
		if holders == 0 {
			break // no peer to ask (all gone): no round runs
		}
		first := r.striped(h, holders, k/stripeChunks)
		order[k] = orderPeers(r.top(h, len(others)), first, stalled)
	}
	for round := 0; round < len(others) && len(remaining) > 0; round++ {
		byPeer := make(map[format.NodeID][]format.Hash)
		for k, h := range remaining {
			id := others[order[k][round]]
			byPeer[id] = append(byPeer[id], h)
		}
		askPeers(ctx, n, peers, byPeer, getFrameHashes, "chunks", n.getFrom, func(_ []format.Hash, res map[format.Hash][]byte) {
			mu.Lock()
			defer mu.Unlock()
			for h, d := range res {
				got[h] = d
			}
		})
		if err := ctx.Err(); err != nil {
			return err
		}
		mu.Lock()
		next, nextOrder := remaining[:0], order[:0]
		for k, h := range remaining {
			if _, ok := got[h]; !ok {
				next = append(next, h)
				nextOrder = append(nextOrder, order[k])
			}
		}
		mu.Unlock()
		remaining, order = next, nextOrder
	}
	if len(remaining) > 0 {
		return fmt.Errorf("%w: %d chunks (first %s) not served correctly by any of %d live peers", ErrUnavailable, len(remaining), remaining[0].Short(), len(others))
	}
	return nil
}

// stalledOf reports, per node of others, whether it is a stalled peer
// (see askPeers).
func stalledOf(others []format.NodeID, peers map[format.NodeID]*peer) []bool {
	out := make([]bool, len(others))
	for i, id := range others {
		if p := peers[id]; p != nil {
			out[i] = p.stalled.Load()
		}
	}
	return out
}

// orderPeers returns the order in which a read asks nodes for an item:
// first (an index into the nodes; -1 for none), then the others of top
// (the item's placement order over all the nodes, best first), with the
// stalled ones moved last, in the same relative order.
func orderPeers(top []int, first int, stalled []bool) []int {
	out := make([]int, 0, len(top))
	if first >= 0 && !stalled[first] {
		out = append(out, first)
	}
	for _, i := range top {
		if i != first && !stalled[i] {
			out = append(out, i)
		}
	}
	if first >= 0 && stalled[first] {
		out = append(out, first)
	}
	for _, i := range top {
		if i != first && stalled[i] {
			out = append(out, i)
		}
	}
	return out
}

// otherMembers returns the live members other than this node, by ID,
// and the peer table.
func (n *Node) otherMembers() ([]format.NodeID, map[format.NodeID]*peer) {
	ids, peers := n.members()
	others := make([]format.NodeID, 0, len(ids))
	for _, id := range ids {
		if id != n.self {
			others = append(others, id)
		}
	}
	return others, peers
}

// askPeers sends every peer of byPeer its items, at most perFrame per
// request, all requests at once, and hands each reply to merge (on the
// calling goroutine, one at a time; get returns what it served verified).
// A failed request is logged; its items stay missing for the caller's
// next round.
//
// Requests are hedged: askPeers waits for a request only until its
// peer's hedge deadline (hedgeDelay: a few times the latency that peer
// showed lately), then returns with its items missing, so that the
// caller's next round asks the next replica while the slow request goes
// on; a late reply still warms the cache, and a peer left waiting this
// way is stalled (asked last) until it answers again. One slow or stuck
// peer thus costs a read milliseconds, not the request timeout.
func askPeers[T, R any](ctx context.Context, n *Node, peers map[format.NodeID]*peer, byPeer map[format.NodeID][]T, perFrame int, what string,
	get func(ctx context.Context, p *peer, part []T) (R, error), merge func(part []T, res R)) {
	type request struct {
		p        *peer
		part     []T
		deadline time.Time
		done     bool
	}
	var reqs []request
	now := time.Now()
	for id, items := range byPeer {
		p := peers[id]
		if p == nil {
			continue
		}
		for start := 0; start < len(items); start += perFrame {
			reqs = append(reqs, request{p: p, part: items[start:min(start+perFrame, len(items))], deadline: now.Add(p.hedgeDelay())})
		}
	}
	if len(reqs) == 0 {
		return
	}
	type reply struct {
		i   int
		res R
		err error
	}
	replies := make(chan reply, len(reqs)) // late replies never block
	for i := range reqs {
		if !n.Go(func(context.Context) {
			res, err := get(ctx, reqs[i].p, reqs[i].part)
			replies <- reply{i, res, err}
		}) {
			replies <- reply{i: i, err: ErrClosed}
		}
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		// Wait while some request is outstanding and within its deadline.
		var next time.Time
		for _, r := range reqs {
			if !r.done && (next.IsZero() || r.deadline.Before(next)) && time.Now().Before(r.deadline) {
				next = r.deadline
			}
		}
		if next.IsZero() {
			break
		}
		timer.Reset(time.Until(next))
		select {
		case r := <-replies:
			reqs[r.i].done = true
			if r.err != nil {
				n.log.Debug("fetch from peer failed", "peer", reqs[r.i].p.id.Short(), what, len(reqs[r.i].part), "err", r.err)
				continue
			}
			merge(reqs[r.i].part, r.res)
		case <-timer.C:
		case <-ctx.Done():
			return
		}
	}
	// Drain what arrived meanwhile; the rest is left to its request.
	for {
		select {
		case r := <-replies:
			reqs[r.i].done = true
			if r.err == nil {
				merge(reqs[r.i].part, r.res)
			}
			continue
		default:
		}
		break
	}
	for _, r := range reqs {
		if !r.done && !r.p.stalled.Swap(true) {
			n.log.Info("peer is slow to answer reads: asking other replicas first until it answers", "peer", r.p.id.Short(),
				"waited", r.p.hedgeDelay().Round(time.Millisecond))
		}
	}
}

// Hedge deadlines: a request waits hedgeFactor times its peer's recent
// latency, within [hedgeMin, hedgeMax], before the next replica is asked.
const (
	hedgeFactor = 4
	hedgeMin    = 50 * time.Millisecond
	hedgeMax    = 2 * time.Second
)

// hedgeDelay is how long a read waits for p before asking the next
// replica.
func (p *peer) hedgeDelay() time.Duration {
	return min(hedgeMax, max(hedgeMin, hedgeFactor*time.Duration(p.latency.Load())))
}

// observe records the latency of a request p answered: a moving average
// of the last few.
func (n *Node) observe(p *peer, d time.Duration) {
	n.metrics.observeLatency(d)
	old := p.latency.Load()
	p.latency.Store(old + (int64(d)-old)/8)
	if p.stalled.Swap(false) {
		n.log.Info("peer answers reads again", "peer", p.id.Short())
	}
}

// getItems sends peer p one get request of count items (built by build)
// and returns the items of its reply (of type want, decoded by decode),
// one per item asked. A reply that does not decode closes the connection:
// the peer is out of step.
func (n *Node) getItems(ctx context.Context, p *peer, what string, count int, want wire.Type, decode func([]byte) ([]wire.GetItem, error),
	build func(dst []byte, id uint64) []byte) ([]wire.GetItem, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	start := time.Now()
	typ, payload, err := p.cc.call(cctx, build)
	if err != nil {
		return nil, err
	}
	n.observe(p, time.Since(start))
	if err := expect(typ, want); err != nil {
		return nil, err
	}
	items, err := decode(payload)
	if err != nil {
		p.cc.close(fmt.Errorf("%w: bad %v reply: %v", ErrClosed, want, err))
		return nil, err
	}
	if len(items) != count {
		return nil, fmt.Errorf("%w: asked %d %s, got %d answers", wire.ErrBadFrame, count, what, len(items))
	}
	return items, nil
}

// getFrom fetches hashes from one peer and returns the ones it served
// correctly, verified and cached.
func (n *Node) getFrom(ctx context.Context, p *peer, hashes []format.Hash) (map[format.Hash][]byte, error) {
	items, err := n.getItems(ctx, p, "chunks", len(hashes), wire.TypeGetResult, wire.DecodeGetResult,
		func(dst []byte, id uint64) []byte { return wire.AppendGetChunks(dst, id, hashes) })
	if err != nil {
		return nil, err
	}
	res := make(map[format.Hash][]byte, len(hashes))
	for i, it := range items {
		if it.Status != wire.StatusOK {
			continue
		}
		if !verify(hashes[i], it.Data) {
			n.metrics.VerifyFailures.Add(1)
			n.log.Warn("peer served a corrupt chunk; trying another replica", "peer", p.id.Short(), "chunk", hashes[i].Short())
			continue
		}
		n.metrics.fetched(1, len(it.Data))
		// it.Data aliases the frame payload, which this call owns alone.
		n.cache.add(hashes[i], it.Data)
		res[hashes[i]] = it.Data
	}
	return res, nil
}

// Holders reports, for each chunk, which nodes (this one included) hold a
// copy by its name right now, by asking every live peer.
func (n *Node) Holders(ctx context.Context, hashes []format.Hash) ([][]format.NodeID, error) {
	return n.whoHolds(ctx, hashes, getFrameHashes, n.db.HasChunk, wire.AppendHasChunks)
}

// whoHolds asks this node (has) and every live peer (frames built by
// appendHas, at most perFrame hashes each, answered by HasResult) which of
// hashes they hold, and returns the holders of each, sorted.
func (n *Node) whoHolds(ctx context.Context, hashes []format.Hash, perFrame int, has func(format.Hash) (bool, error),
	appendHas func(dst []byte, id uint64, hashes []format.Hash) []byte) ([][]format.NodeID, error) {
	out := make([][]format.NodeID, len(hashes))
	for i, h := range hashes {
		if ok, err := has(h); err == nil && ok {
			out[i] = append(out[i], n.self)
		}
	}
	_, peers := n.members()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range peers {
		for start := 0; start < len(hashes); start += perFrame {
			part := hashes[start:min(start+perFrame, len(hashes))]
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := n.askHas(ctx, p, part, appendHas)
				if err != nil {
					n.log.Debug("has query failed", "peer", p.id.Short(), "err", err)
					return
				}
				mu.Lock()
				for i, s := range st {
					if s == wire.StatusOK {
						out[start+i] = append(out[start+i], p.id)
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

func sortIDs(ids []format.NodeID) {
	for i := 1; i < len(ids); i++ {
		for j := i; j > 0 && ids[j].Compare(ids[j-1]) < 0; j-- {
			ids[j], ids[j-1] = ids[j-1], ids[j]
		}
	}
}
