package chunknet

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index"
)

const (
	// uploadBatchChunks and uploadBatchBytes close a batch: one PutChunks
	// frame per target peer.
	uploadBatchChunks = 256
	uploadBatchBytes  = 256 << 10
	// uploadWindow bounds the batches in flight per Uploader: Put blocks
	// beyond it, which bounds memory whatever the file size.
	uploadWindow = 32
	// seenMax bounds the set of chunks an Uploader remembers having queued,
	// so repeated chunks (runs of zeros, say) are sent once: 2 MiB at most.
	seenMax = 1 << 15
)

// Uploader stores a stream of chunks on their replicas: chunks are
// collected into batches, each batch is sent to its target peers in
// parallel while the caller goes on producing (pipelining), and Wait
// reports whether every chunk reached min(replicas, live nodes) nodes.
//
// Put and Wait are called by one goroutine at a time (the file handle that
// owns the Uploader).
type Uploader struct {
	n   *Node
	ctx context.Context

	batch []index.Chunk
	arena []byte
	seen  map[index.Hash]bool // chunks already queued by this Uploader

	sem chan struct{}
	wg  sync.WaitGroup

	mu  sync.Mutex
	err error
}

// NewUploader returns an Uploader whose requests run under ctx.
func (n *Node) NewUploader(ctx context.Context) *Uploader {
	return &Uploader{n: n, ctx: ctx, sem: make(chan struct{}, uploadWindow), seen: make(map[index.Hash]bool)}
}

// Put queues a chunk; data is copied. It blocks while the window is full
// and returns the first error of an earlier batch, if any.
func (u *Uploader) Put(ctx context.Context, h index.Hash, data []byte) error {
	if err := u.firstErr(); err != nil {
		return err
	}
	if len(data) > index.MaxChunkData {
		return fmt.Errorf("chunk of %d bytes exceeds %d", len(data), index.MaxChunkData)
	}
	if u.seen[h] {
		return nil
	}
	u.seen[h] = true
	if len(u.seen) >= seenMax { // bound memory on huge files; a duplicate only costs bandwidth
		clear(u.seen)
	}
	if u.arena == nil {
		u.arena = make([]byte, 0, uploadBatchBytes+index.MaxChunkData)
	}
	off := len(u.arena)
	u.arena = append(u.arena, data...)
	u.batch = append(u.batch, index.Chunk{Hash: h, Data: u.arena[off:len(u.arena):len(u.arena)]})
	if len(u.batch) >= uploadBatchChunks || len(u.arena) >= uploadBatchBytes {
		return u.dispatch(ctx)
	}
	return nil
}

func (u *Uploader) firstErr() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.err
}

func (u *Uploader) setErr(err error) {
	u.mu.Lock()
	if u.err == nil {
		u.err = err
	}
	u.mu.Unlock()
}

func (u *Uploader) dispatch(ctx context.Context) error {
	if len(u.batch) == 0 {
		return nil
	}
	batch := u.batch
	u.batch, u.arena = nil, nil
	select {
	case u.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		defer func() { <-u.sem }()
		if err := u.n.replicate(u.ctx, batch); err != nil {
			u.setErr(err)
		}
	}()
	return nil
}

// Wait sends what is queued, waits for every batch and returns the first
// error. After Wait the Uploader may be used again.
func (u *Uploader) Wait() error {
	err := u.dispatch(u.ctx)
	u.wg.Wait()
	if err != nil {
		return err
	}
	return u.firstErr()
}

// replicate stores one batch on min(replicas, live nodes) distinct nodes
// per chunk: first on each chunk's best-ranked nodes, then, for whatever a
// node failed to store, on the next-ranked ones. Chunks still short are
// retried with the then-live nodes for Config.RetryFor; if they stay short,
// they are stored on this node so that nothing written is lost, and the
// error says so.
func (n *Node) replicate(ctx context.Context, batch []index.Chunk) error {
	holders := make([][]index.NodeID, len(batch)) // per chunk: nodes that stored it
	var lastErr error
	short := 0
	err := n.retry(ctx, func() error {
		ids, peers := n.members()
		need := min(n.cfg.Replicas, len(ids))
		if err := n.replicatePass(ctx, batch, holders, ids, peers, need); err != nil {
			lastErr = err
		}
		short = 0
		for i := range batch {
			if len(holders[i]) < need {
				short++
			}
		}
		if short > 0 {
			return fmt.Errorf("%w: %d of %d chunks reached fewer than %d nodes (last error: %v)", ErrNotDurable, short, len(batch), need, lastErr)
		}
		return nil
	})
	if err == nil {
		return nil
	}
	// Keep the bytes here so nothing written is lost, then report.
	if _, perr := n.db.PutChunks(batch); perr != nil {
		n.log.Error("storing unreplicated chunks locally", "err", perr)
	}
	return err
}

// replicatePass offers each chunk short of need holders to its best-ranked
// nodes among ids that do not hold it yet, in waves: each wave sends every
// node one frame of the chunks it is offered, in parallel.
func (n *Node) replicatePass(ctx context.Context, batch []index.Chunk, holders [][]index.NodeID, ids []index.NodeID, peers map[index.NodeID]*peer, need int) error {
	r := newRanker(ids)
	ranks := make([][]int, len(batch)) // per chunk: nodes to try, best first
	tried := make([]int, len(batch))   // per chunk: how many of ranks tried
	for i, c := range batch {
		ranks[i] = append([]int(nil), r.top(c.Hash, len(ids))...)
	}
	has := func(i int, id index.NodeID) bool {
		for _, h := range holders[i] {
			if h == id {
				return true
			}
		}
		return false
	}
	var lastErr error
	for {
		byNode := make(map[int][]int) // node index → chunk indexes
		for i := range batch {
			for want := need - len(holders[i]); want > 0 && tried[i] < len(ranks[i]); {
				node := ranks[i][tried[i]]
				tried[i]++
				if has(i, ids[node]) {
					continue
				}
				byNode[node] = append(byNode[node], i)
				want--
			}
		}
		if len(byNode) == 0 {
			return lastErr
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for node, idx := range byNode {
			wg.Add(1)
			go func() {
				defer wg.Done()
				chunks := make([]index.Chunk, len(idx))
				for k, i := range idx {
					chunks[k] = batch[i]
				}
				ok, err := n.putOn(ctx, ids[node], peers[ids[node]], chunks)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					lastErr = err
				}
				for k, i := range idx {
					if ok[k] {
						holders[i] = append(holders[i], ids[node])
					}
				}
			}()
		}
		wg.Wait()
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// putOn stores chunks on one node (this one or a peer) and reports which
// were stored.
func (n *Node) putOn(ctx context.Context, id index.NodeID, p *peer, chunks []index.Chunk) ([]bool, error) {
	ok := make([]bool, len(chunks))
	if id == n.self {
		if _, err := n.db.PutChunks(chunks); err != nil {
			return ok, err
		}
		for i := range ok {
			ok[i] = true
		}
		return ok, nil
	}
	if p == nil {
		return ok, fmt.Errorf("peer %s is gone", id.Short())
	}
	wc := make([]wire.Chunk, len(chunks))
	for i, c := range chunks {
		wc[i] = wire.Chunk{Hash: c.Hash, Data: c.Data}
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	typ, payload, err := p.cc.call(cctx, func(dst []byte, rid uint64) []byte { return wire.AppendPutChunks(dst, rid, wc) })
	if err != nil {
		return ok, err
	}
	if err := expect(typ, wire.TypePutResult); err != nil {
		return ok, err
	}
	st, err := wire.DecodeStatuses(payload)
	if err != nil {
		return ok, err
	}
	if len(st) != len(chunks) {
		return ok, fmt.Errorf("%w: stored %d chunks, got %d statuses", wire.ErrBadFrame, len(chunks), len(st))
	}
	var bad error
	for i, s := range st {
		ok[i] = s == wire.StatusOK
		if !ok[i] {
			bad = fmt.Errorf("peer %s refused chunk %s: status %d", id.Short(), chunks[i].Hash.Short(), s)
		}
	}
	return ok, bad
}
