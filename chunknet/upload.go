package chunknet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

const (
	// uploadBatchChunks and uploadBatchBytes close a batch: one PutChunks
	// frame per target peer.
	uploadBatchChunks = 256
	uploadBatchBytes  = 256 << 10
	// uploadWindow bounds the batches in flight per Uploader: Put blocks
	// beyond it, which bounds memory whatever the file size (16 batches
	// of groups: 32 MiB).
	uploadWindow = 16
	// seenMax bounds the set of chunks an Uploader remembers having queued,
	// so repeated chunks (runs of zeros, say) are sent once: 2 MiB at most.
	seenMax = 1 << 15
	// groupBatchBytes closes a batch of groups: one PutGroups frame per
	// target peer (a group's chunks all go to the same peers), which a
	// replica stores with one synced write. Every batch costs each target
	// a frame, a verification pass, a chunk log write with its flush and
	// an index commit: 2 MiB batches cost the four nodes of the testbed
	// a fifth less CPU per GiB than 512 KiB ones, and 3 MiB ones no less
	// than 2 MiB. A batch closes past this size, so it stays under a
	// frame's payload bound with a whole group to spare
	// (TestGroupBatchFitsOneFrame).
	groupBatchBytes = 2 << 20
	// smallGroupCap is the first capacity of a group's buffer.
	smallGroupCap = 16 << 10
)

// Uploader stores a stream of chunks on their replicas: it is the
// tree.Sink of a file being written. Data chunks are collected into their
// group (PutLeaf, EndGroup), tree nodes into chunk batches (Put); batches
// of groups and of chunks are sent to their target peers in parallel while
// the caller goes on producing (pipelining), and Wait reports whether every
// group and chunk reached min(replicas, live nodes) nodes.
//
// Its methods are called by one goroutine at a time (the file handle that
// owns the Uploader).
type Uploader struct {
	n   *Node
	ctx context.Context

	batch []index.Chunk
	arena []byte
	seen  map[format.Hash]bool // chunks and groups already queued by this Uploader

	leaves     []byte    // the stored chunks of the group being built
	leavesCap  int       // capacity to give the next group's buffer
	groups     []upGroup // closed groups not yet sent
	groupBytes int       // bytes of groups

	sem chan struct{}
	wg  sync.WaitGroup

	err   atomic.Pointer[error] // the first hard error of a background send
	short atomic.Pointer[error] // the first ErrNotDurable of one
}

// NewUploader returns an Uploader whose requests run under ctx.
func (n *Node) NewUploader(ctx context.Context) *Uploader {
	return &Uploader{n: n, ctx: ctx, sem: make(chan struct{}, uploadWindow), seen: make(map[format.Hash]bool)}
}

// Put queues a chunk; data is copied. It blocks while the window is full
// and returns the first error of an earlier batch, if any.
func (u *Uploader) Put(ctx context.Context, h format.Hash, data []byte) error {
	if err := u.firstErr(); err != nil {
		return err
	}
	if len(data) > format.MaxChunkData {
		return fmt.Errorf("chunk of %d bytes exceeds %d", len(data), format.MaxChunkData)
	}
	if u.seen[h] {
		return nil
	}
	u.seen[h] = true
	if len(u.seen) >= seenMax { // bound memory on huge files; a duplicate only costs bandwidth
		clear(u.seen)
	}
	if u.arena == nil {
		u.arena = make([]byte, 0, uploadBatchBytes+format.MaxChunkData)
	}
	off := len(u.arena)
	u.arena = append(u.arena, data...)
	u.batch = append(u.batch, index.Chunk{Hash: h, Data: u.arena[off:len(u.arena):len(u.arena)]})
	if len(u.batch) >= uploadBatchChunks || len(u.arena) >= uploadBatchBytes {
		return u.dispatch(ctx)
	}
	return nil
}

// upGroup is one group to store: its name, its depth-1 node (nil for a
// one-chunk file) and its chunks.
type upGroup struct {
	hash format.Hash
	node []byte
	data []byte
	// seal, if not nil, is data encrypted once for all the members the
	// group goes to (a writer's own groups; see Key records in record.go).
	seal *onceSealed
}

// PutLeaf adds a data chunk to the group being built; data is copied.
func (u *Uploader) PutLeaf(ctx context.Context, h format.Hash, data []byte) error {
	if err := u.firstErr(); err != nil {
		return err
	}
	if len(data) > format.ChunkSize || len(u.leaves)+len(data) > format.MaxGroupData {
		return fmt.Errorf("group of more than %d bytes", format.MaxGroupData)
	}
	if u.leaves == nil {
		// A small file's group stays small; once a group came close to
		// full, the next ones get room for a whole group at once.
		if u.leavesCap == format.MaxGroupData {
			u.leaves = getGroupBuf()
		} else {
			u.leaves = make([]byte, 0, max(u.leavesCap, smallGroupCap))
		}
	}
	u.leaves = append(u.leaves, data...)
	return nil
}

// EndGroup closes the group being built as group g with its depth-1 node
// (copied) and queues it; a group with no new chunk is stored already.
func (u *Uploader) EndGroup(ctx context.Context, g format.Hash, node []byte) error {
	if err := u.firstErr(); err != nil {
		return err
	}
	data := u.leaves
	u.leaves = nil
	if len(data) > format.MaxGroupData/2 {
		u.leavesCap = format.MaxGroupData
	}
	if len(data) == 0 || u.seen[g] {
		putGroupBuf(data)
		return nil
	}
	u.seen[g] = true
	ug := upGroup{hash: g, node: bytes.Clone(node), data: data}
	if u.n.secure() {
		ug.seal = new(onceSealed)
	}
	u.groups = append(u.groups, ug)
	u.groupBytes += len(data) + len(node)
	if u.groupBytes >= groupBatchBytes {
		return u.dispatchGroups(ctx)
	}
	return nil
}

func (u *Uploader) dispatchGroups(ctx context.Context) error {
	if len(u.groups) == 0 {
		return nil
	}
	batch := u.groups
	u.groups, u.groupBytes = nil, 0
	return u.send(ctx, func() error {
		err := u.n.replicateGroups(u.ctx, batch)
		// Stored or sent: nothing refers to the bytes any more.
		for _, g := range batch {
			putGroupBuf(g.data)
			g.seal.release()
		}
		return err
	})
}

// groupBufs recycles the buffers of whole groups. A large file's write
// fills one per 128 KiB; a new one costs page faults and zeroing on the
// copy into it, which profiles showed as most of the writer's memmove.
var groupBufs sync.Pool

func getGroupBuf() []byte {
	if b, ok := groupBufs.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, format.MaxGroupData)
}

// putGroupBuf gives b back for reuse if it is a whole group's buffer.
func putGroupBuf(b []byte) {
	if cap(b) == format.MaxGroupData {
		b = b[:0]
		groupBufs.Put(&b)
	}
}

// send runs one batch's replication in a goroutine, waiting while the
// window is full. A batch that reached too few nodes (ErrNotDurable) is
// kept on this node and listed as under target: the stream goes on, and
// Wait reports it. Any other error stops the Uploader.
func (u *Uploader) send(ctx context.Context, replicate func() error) error {
	select {
	case u.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		defer func() { <-u.sem }()
		if err := replicate(); errors.Is(err, ErrNotDurable) {
			u.short.CompareAndSwap(nil, &err)
		} else if err != nil {
			u.setErr(err)
		}
	}()
	return nil
}

// firstErr returns the first hard error of a background send, if any. It
// is called for every chunk, so it takes no lock.
func (u *Uploader) firstErr() error {
	if p := u.err.Load(); p != nil {
		return *p
	}
	return nil
}

func (u *Uploader) setErr(err error) {
	if err != nil {
		u.err.CompareAndSwap(nil, &err)
	}
}

func (u *Uploader) dispatch(ctx context.Context) error {
	if len(u.batch) == 0 {
		return nil
	}
	batch := u.batch
	u.batch, u.arena = nil, nil
	return u.send(ctx, func() error { return u.n.replicate(u.ctx, batch) })
}

// Wait sends what is queued, waits for every batch and returns the first
// error: a hard one (the chunks are lost: not even this node could store
// them), else an ErrNotDurable (every chunk is stored, but some on fewer
// than min(replicas, live nodes) nodes, this one among them; they are in
// the under-target set, to be topped up). Chunks given to PutLeaf after
// the last EndGroup belong to no group and are dropped. After Wait the
// Uploader may be used again, its errors cleared.
func (u *Uploader) Wait() error {
	putGroupBuf(u.leaves)
	u.leaves = nil
	err := u.dispatchGroups(u.ctx)
	if derr := u.dispatch(u.ctx); err == nil {
		err = derr
	}
	u.wg.Wait()
	if err == nil {
		err = u.firstErr()
	}
	if p := u.short.Load(); err == nil && p != nil {
		err = *p
	}
	u.err.Store(nil)
	u.short.Store(nil)
	return err
}

// replicate stores one batch of chunks (see replicateItems).
func (n *Node) replicate(ctx context.Context, batch []index.Chunk) error {
	keys := make([]format.Hash, len(batch))
	for i, c := range batch {
		keys[i] = c.Hash
	}
	send := func(ctx context.Context, id format.NodeID, p *peer, idx []int) ([]bool, error) {
		chunks := make([]index.Chunk, len(idx))
		for k, i := range idx {
			chunks[k] = batch[i]
		}
		return n.putOn(ctx, id, p, chunks)
	}
	keep := func() error {
		_, err := n.putChunksHere(batch)
		return err
	}
	return n.replicateItems(ctx, false, keys, send, keep)
}

// replicateGroups stores one batch of groups, each with its node, on the
// replicas of the group (see replicateItems).
func (n *Node) replicateGroups(ctx context.Context, batch []upGroup) error {
	keys := make([]format.Hash, len(batch))
	for i, g := range batch {
		keys[i] = g.hash
	}
	send := func(ctx context.Context, id format.NodeID, p *peer, idx []int) ([]bool, error) {
		gs := make([]upGroup, len(idx))
		for k, i := range idx {
			gs[k] = batch[i]
		}
		return n.putGroupsOn(ctx, id, p, gs)
	}
	keep := func() error { return n.storeGroupsHere(batch) }
	return n.replicateItems(ctx, true, keys, send, keep)
}

// storeGroupsHere stores groups and their nodes in the local store.
func (n *Node) storeGroupsHere(gs []upGroup) error {
	_, err := n.putGroupsHere(gs)
	return err
}

// putChunksHere stores chunks (tree nodes) in the local store, young
// (UploadGrace), and says what was new.
func (n *Node) putChunksHere(chunks []index.Chunk) (index.PutStats, error) {
	stats, err := n.db.Put(nil, chunks)
	if err == nil {
		n.markYoung(false, len(chunks), func(i int) format.Hash { return chunks[i].Hash })
	}
	return stats, err
}

// putGroupsHere stores groups with their nodes, young (UploadGrace), and
// says what was new.
func (n *Node) putGroupsHere(gs []upGroup) (index.PutStats, error) {
	groups := make([]index.Group, 0, len(gs))
	var nodes []index.Chunk
	for _, g := range gs {
		groups = append(groups, index.Group{Hash: g.hash, Data: g.data})
		if len(g.node) > 0 {
			nodes = append(nodes, index.Chunk{Hash: g.hash, Data: g.node})
		}
	}
	stats, err := n.db.Put(groups, nodes)
	if err == nil {
		n.markYoung(true, len(gs), func(i int) format.Hash { return gs[i].hash })
	}
	return stats, err
}

// sendFunc stores the items idx of a batch on node id (this node when id
// is n.self; p is nil then) and reports which were stored.
type sendFunc func(ctx context.Context, id format.NodeID, p *peer, idx []int) ([]bool, error)

// replicateItems stores the items of one batch (groups or chunks), item
// i placed by keys[i], on min(replicas, live nodes) distinct nodes each:
// first on each item's best-ranked nodes, then, for whatever a node failed
// to store, on the next-ranked ones. Items still short are retried with
// the then-live nodes for Config.RetryFor; if they stay short, keep stores
// the whole batch on this node so that nothing written is lost, and the
// error wraps ErrNotDurable. Items left with fewer copies than the
// replica target (short, or written while fewer nodes were alive) go to
// the under-target set, which the top-up loop works off as peers come.
// If keep fails too, the error is ErrNotStored: the bytes are lost.
func (n *Node) replicateItems(ctx context.Context, group bool, keys []format.Hash, send sendFunc, keep func() error) error {
	what := "chunks"
	if group {
		what = "groups"
	}
	holders := make([][]format.NodeID, len(keys)) // per item: live nodes that stored it
	var lastErr error
	short := 0
	err := n.retry(ctx, func() error {
		need, err := n.spread(ctx, keys, holders, send)
		if err != nil {
			lastErr = err
		}
		short = 0
		for i := range keys {
			if len(holders[i]) < need {
				short++
			}
		}
		if short > 0 {
			return fmt.Errorf("%w: %d of %d %s reached fewer than %d nodes (last error: %v)", ErrNotDurable, short, len(keys), what, need, lastErr)
		}
		return nil
	})
	copies := make([]int, len(keys))
	for i := range keys {
		copies[i] = len(holders[i])
	}
	if err != nil {
		// Keep the bytes here so nothing written is lost, then report.
		if perr := keep(); perr != nil {
			n.log.Error("storing unreplicated "+what+" on this node failed too: they are lost", "err", perr)
			return fmt.Errorf("%w: %v; storing them on this node: %w", ErrNotStored, err, perr)
		}
		for i := range keys {
			if !slices.Contains(holders[i], n.self) {
				copies[i]++
			}
		}
	}
	n.recordCopies(group, keys, copies)
	return err
}

// recordCopies lists in the under-target set the items (groups or chunks,
// named by keys) whose copies are below the replica target, and wakes the
// top-up loop.
func (n *Node) recordCopies(group bool, keys []format.Hash, copies []int) {
	var items []index.Item
	var counts []int
	for i, h := range keys {
		if copies[i] < n.cfg.Replicas {
			items = append(items, index.Item{Group: group, Hash: h})
			counts = append(counts, copies[i])
		}
	}
	if len(items) == 0 {
		return
	}
	if err := n.db.SetCopies(items, counts, n.cfg.Replicas); err != nil {
		n.log.Error("recording items below the replica target", "items", len(items), "err", err)
		return
	}
	n.kickTopUp()
}

// spread offers every item short of min(replicas, live nodes) holders to
// its best-ranked live nodes that do not hold it yet (one pass, see
// replicatePass), after dropping from holders the nodes that are gone: a
// copy counts only on a live node. It returns that need and the pass's
// last error.
func (n *Node) spread(ctx context.Context, keys []format.Hash, holders [][]format.NodeID, send sendFunc) (need int, err error) {
	ids, peers := n.members()
	need = min(n.cfg.Replicas, len(ids))
	for i := range holders {
		holders[i] = slices.DeleteFunc(holders[i], func(id format.NodeID) bool {
			return id != n.self && peers[id] == nil
		})
	}
	return need, n.replicatePass(ctx, keys, holders, ids, peers, need, send)
}

// replicatePass offers each item short of need holders to its best-ranked
// nodes among ids that do not hold it yet, in waves: each wave sends every
// node one frame of the items it is offered, in parallel.
func (n *Node) replicatePass(ctx context.Context, keys []format.Hash, holders [][]format.NodeID, ids []format.NodeID, peers map[format.NodeID]*peer, need int, send sendFunc) error {
	r := newRanker(ids)
	ranks := make([][]int, len(keys)) // per item: nodes to try, best first
	tried := make([]int, len(keys))   // per item: how many of ranks tried
	full := make([]bool, len(ids))    // nodes whose disk is full: tried last
	anyFull := false
	for j, id := range ids {
		full[j] = n.isFull(id)
		anyFull = anyFull || full[j]
	}
	for i, k := range keys {
		ranks[i] = append([]int(nil), r.top(k, len(ids))...)
		if anyFull {
			slices.SortStableFunc(ranks[i], func(a, b int) int {
				switch {
				case full[a] == full[b]:
					return 0
				case full[b]:
					return -1
				}
				return 1
			})
		}
	}
	has := func(i int, id format.NodeID) bool {
		for _, h := range holders[i] {
			if h == id {
				return true
			}
		}
		return false
	}
	var lastErr error
	for {
		byNode := make(map[int][]int) // node index → item indexes
		for i := range keys {
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
				id := ids[node]
				var p *peer
				if id != n.self {
					p = peers[id]
					if p == nil {
						mu.Lock()
						lastErr = fmt.Errorf("peer %s is gone", id.Short())
						mu.Unlock()
						return
					}
				}
				ok, err := send(ctx, id, p, idx)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					lastErr = err
				}
				for k, i := range idx {
					if ok[k] {
						holders[i] = append(holders[i], id)
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
func (n *Node) putOn(ctx context.Context, id format.NodeID, p *peer, chunks []index.Chunk) ([]bool, error) {
	ok := make([]bool, len(chunks))
	if id == n.self {
		if _, err := n.putChunksHere(chunks); err != nil {
			return ok, err
		}
		for i := range ok {
			ok[i] = true
		}
		return ok, nil
	}
	wc := make([]wire.Chunk, len(chunks))
	for i, c := range chunks {
		wc[i] = wire.Chunk{Hash: c.Hash, Data: c.Data}
	}
	ok, err := n.putRemote(ctx, p, "chunk", func(i int) format.Hash { return chunks[i].Hash }, len(chunks),
		func(ctx context.Context) (wire.Type, []byte, error) {
			return p.cc.call(ctx, func(dst []byte, rid uint64) []byte { return wire.AppendPutChunks(dst, rid, wc) })
		})
	n.maybeSpotCheck(p, ok, func(i int) spot { return spot{hash: chunks[i].Hash} })
	return ok, err
}

// putRemote sends peer p one put request of count items (with call) and
// reports, from its PutResult, which items it stored; name(i) names item i
// for the error about a refused one.
func (n *Node) putRemote(ctx context.Context, p *peer, what string, name func(i int) format.Hash, count int, call func(context.Context) (wire.Type, []byte, error)) ([]bool, error) {
	ok := make([]bool, count)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	typ, payload, err := call(cctx)
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
	if len(st) != count {
		return ok, fmt.Errorf("%w: stored %d %ss, got %d statuses", wire.ErrBadFrame, count, what, len(st))
	}
	var bad error
	full := false
	for i, s := range st {
		ok[i] = s == wire.StatusOK
		if !ok[i] {
			bad = fmt.Errorf("peer %s refused %s %s: status %d", p.id.Short(), what, name(i).Short(), s)
		}
		full = full || s == wire.StatusFull
	}
	if full {
		bad = fmt.Errorf("peer %s: its disk is full", p.id.Short())
	}
	n.noteFull(p.id, full, bad == nil)
	return ok, bad
}

// putGroupsOn stores groups on one node (this one or a peer) and reports
// which were stored. To a peer, they go in frames of at most
// groupBatchBytes each (one group alone may exceed it), one after the
// other.
func (n *Node) putGroupsOn(ctx context.Context, id format.NodeID, p *peer, gs []upGroup) ([]bool, error) {
	if id != n.self {
		size, start := 0, 0
		var ok []bool
		var firstErr error
		for i, g := range gs {
			size += len(g.data) + len(g.node)
			if i+1 < len(gs) && size+len(gs[i+1].data)+len(gs[i+1].node) <= groupBatchBytes {
				continue
			}
			part, err := n.putGroupFrame(ctx, p, gs[start:i+1])
			ok = append(ok, part...)
			if firstErr == nil {
				firstErr = err
			}
			size, start = 0, i+1
		}
		return ok, firstErr
	}
	ok := make([]bool, len(gs))
	if err := n.storeGroupsHere(gs); err != nil {
		return ok, err
	}
	for i := range ok {
		ok[i] = true
	}
	return ok, nil
}

// putGroupFrame stores groups on peer p with one PutGroups request.
func (n *Node) putGroupFrame(ctx context.Context, p *peer, gs []upGroup) ([]bool, error) {
	wg := make([]wire.Group, len(gs))
	var seals []*onceSealed
	for i, g := range gs {
		wg[i] = wire.Group{Hash: g.hash, Node: g.node, Data: g.data}
		if g.seal != nil {
			if seals == nil {
				seals = make([]*onceSealed, len(gs))
			}
			seals[i] = g.seal
		}
	}
	ok, err := n.putRemote(ctx, p, "group", func(i int) format.Hash { return gs[i].hash }, len(gs),
		func(ctx context.Context) (wire.Type, []byte, error) {
			return p.cc.putGroups(ctx, wg, seals)
		})
	n.maybeSpotCheck(p, ok, func(i int) spot {
		return spot{group: true, hash: gs[i].hash, first: bytes.Clone(gs[i].data[:min(format.ChunkSize, len(gs[i].data))])}
	})
	return ok, err
}
