package chunknet

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index"
)

// verify is the one place a chunk's bytes are checked against its name.
// Every chunk a node uses or stores passes through it, whatever its source:
// a peer, the local store, or an upload being received.
func verify(h index.Hash, data []byte) bool {
	return sha256.Sum256(data) == [32]byte(h)
}

// getFrameHashes bounds the hashes asked of one peer in one frame, so that
// the reply fits a frame even if every chunk is a full tree node.
const getFrameHashes = wire.MaxPayload / (wire.MaxChunkData + 8)

// Fetch returns the verified bytes of each chunk in hashes, in order: from
// the memory cache, the local store, or the live peers in placement order,
// falling back to the next replica on any failure. It fails (ErrUnavailable)
// only if no source serves a chunk correctly; it never returns bad bytes.
// The returned slices are shared with the cache: callers must not modify
// them.
//
// A chunk another Fetch is already getting (read-ahead racing the read it
// runs ahead of) is waited for, not fetched twice.
func (n *Node) Fetch(ctx context.Context, hashes []index.Hash) ([][]byte, error) {
	out := make([][]byte, len(hashes))
	want := make(map[index.Hash][]int)
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
	// Claim the chunks nobody is fetching; note the others' flights.
	mine := make([]index.Hash, 0, len(want))
	var waits []chan struct{}
	var theirs []index.Hash
	done := make(chan struct{})
	n.flightMu.Lock()
	for h := range want {
		if ch, ok := n.flight[h]; ok {
			waits = append(waits, ch)
			theirs = append(theirs, h)
			continue
		}
		n.flight[h] = done
		mine = append(mine, h)
	}
	n.flightMu.Unlock()
	got, err := n.fetchOwn(ctx, mine)
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
	var again []index.Hash
	for _, h := range theirs {
		if d, ok := n.cache.get(h); ok {
			got[h] = d
		} else {
			again = append(again, h)
		}
	}
	if len(again) > 0 {
		more, err := n.fetchOwn(ctx, again)
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

// localWorkers is how many goroutines read the local store at once for
// one Fetch: the store's reads are random (chunks are keyed by hash), and
// several in flight keep the disk busy.
const localWorkers = 8

// fetchOwn gets hashes from the local store, then from peers.
func (n *Node) fetchOwn(ctx context.Context, hashes []index.Hash) (map[index.Hash][]byte, error) {
	got := make(map[index.Hash][]byte, len(hashes))
	if len(hashes) == 0 {
		return got, nil
	}
	local := make([][]byte, len(hashes))
	workers := min(localWorkers, (len(hashes)+31)/32)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(hashes); i += workers {
				h := hashes[i]
				d, ok, err := n.db.GetChunk(h, nil)
				if err != nil {
					n.log.Error("reading local chunk", "chunk", h.Short(), "err", err)
					continue
				}
				if !ok {
					continue
				}
				if !verify(h, d) {
					n.log.Error("local chunk is corrupt; fetching a replica", "chunk", h.Short())
					continue
				}
				local[i] = d
			}
		}()
	}
	wg.Wait()
	missing := make(map[index.Hash]bool)
	for i, h := range hashes {
		if local[i] != nil {
			n.cache.add(h, local[i])
			got[h] = local[i]
		} else {
			missing[h] = true
		}
	}
	if len(missing) == 0 {
		return got, nil
	}
	remote, err := n.fetchRemote(ctx, missing)
	for h, d := range remote {
		got[h] = d
	}
	return got, err
}

// fetchRemote asks live peers for the chunks in want, round by round: in
// round k each chunk goes to its k-th best live holder, all peers of a
// round in parallel, each in batched frames.
func (n *Node) fetchRemote(ctx context.Context, want map[index.Hash]bool) (map[index.Hash][]byte, error) {
	got := make(map[index.Hash][]byte, len(want))
	err := n.retry(ctx, func() error {
		return n.fetchRound(ctx, want, got)
	})
	return got, err
}

// fetchRound tries every chunk of want not yet in got on the live peers,
// best-ranked first, and adds what it gets to got.
func (n *Node) fetchRound(ctx context.Context, want map[index.Hash]bool, got map[index.Hash][]byte) error {
	ids, peers := n.members()
	others := make([]index.NodeID, 0, len(ids))
	for _, id := range ids {
		if id != n.self {
			others = append(others, id)
		}
	}
	var mu sync.Mutex
	r := newRanker(others)
	remaining := make([]index.Hash, 0, len(want))
	for h := range want {
		if _, ok := got[h]; !ok {
			remaining = append(remaining, h)
		}
	}
	for round := 0; round < len(others) && len(remaining) > 0; round++ {
		byPeer := make(map[index.NodeID][]index.Hash)
		for _, h := range remaining {
			top := r.top(h, round+1)
			if len(top) > round {
				id := others[top[round]]
				byPeer[id] = append(byPeer[id], h)
			}
		}
		var wg sync.WaitGroup
		for id, hs := range byPeer {
			p := peers[id]
			for start := 0; start < len(hs); start += getFrameHashes {
				part := hs[start:min(start+getFrameHashes, len(hs))]
				wg.Add(1)
				go func() {
					defer wg.Done()
					res, err := n.getFrom(ctx, p, part)
					if err != nil {
						n.log.Debug("fetch from peer failed", "peer", p.id.Short(), "chunks", len(part), "err", err)
						return
					}
					mu.Lock()
					for h, d := range res {
						got[h] = d
					}
					mu.Unlock()
				}()
			}
		}
		wg.Wait()
		if err := ctx.Err(); err != nil {
			return err
		}
		next := remaining[:0]
		for _, h := range remaining {
			if _, ok := got[h]; !ok {
				next = append(next, h)
			}
		}
		remaining = next
	}
	if len(remaining) > 0 {
		return fmt.Errorf("%w: %d chunks (first %s) not served correctly by any of %d live peers", ErrUnavailable, len(remaining), remaining[0].Short(), len(others))
	}
	return nil
}

// getFrom fetches hashes from one peer and returns the ones it served
// correctly, verified and cached.
func (n *Node) getFrom(ctx context.Context, p *peer, hashes []index.Hash) (map[index.Hash][]byte, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	typ, payload, err := p.cc.call(cctx, func(dst []byte, id uint64) []byte { return wire.AppendGetChunks(dst, id, hashes) })
	if err != nil {
		return nil, err
	}
	if err := expect(typ, wire.TypeGetResult); err != nil {
		return nil, err
	}
	items, err := wire.DecodeGetResult(payload)
	if err != nil {
		p.cc.close(fmt.Errorf("%w: bad get reply: %v", ErrClosed, err))
		return nil, err
	}
	if len(items) != len(hashes) {
		return nil, fmt.Errorf("%w: asked %d chunks, got %d answers", wire.ErrBadFrame, len(hashes), len(items))
	}
	res := make(map[index.Hash][]byte, len(hashes))
	for i, it := range items {
		if it.Status != wire.StatusOK {
			continue
		}
		if !verify(hashes[i], it.Data) {
			n.log.Warn("peer served a corrupt chunk; trying another replica", "peer", p.id.Short(), "chunk", hashes[i].Short())
			continue
		}
		// it.Data aliases the frame payload, which this call owns alone.
		n.cache.add(hashes[i], it.Data)
		res[hashes[i]] = it.Data
	}
	return res, nil
}

// Holders reports, for each chunk, which nodes (this one included) hold a
// copy right now, by asking every live peer.
func (n *Node) Holders(ctx context.Context, hashes []index.Hash) ([][]index.NodeID, error) {
	out := make([][]index.NodeID, len(hashes))
	for i, h := range hashes {
		if ok, err := n.db.HasChunk(h); err == nil && ok {
			out[i] = append(out[i], n.self)
		}
	}
	_, peers := n.members()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range peers {
		for start := 0; start < len(hashes); start += getFrameHashes {
			part := hashes[start:min(start+getFrameHashes, len(hashes))]
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				typ, payload, err := p.cc.call(cctx, func(dst []byte, id uint64) []byte { return wire.AppendHasChunks(dst, id, part) })
				if err == nil {
					err = expect(typ, wire.TypeHasResult)
				}
				var st []byte
				if err == nil {
					st, err = wire.DecodeStatuses(payload)
				}
				if err != nil || len(st) != len(part) {
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

func sortIDs(ids []index.NodeID) {
	for i := 1; i < len(ids); i++ {
		for j := i; j > 0 && ids[j].Compare(ids[j-1]) < 0; j-- {
			ids[j], ids[j-1] = ids[j-1], ids[j]
		}
	}
}
