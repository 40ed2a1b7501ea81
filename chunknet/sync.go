package chunknet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// Namespace replication. Every node keeps a log of every record (its own
// and its peers'), numbered per origin, and a version vector: the highest
// contiguous sequence number applied per origin. Records reach a peer two
// ways:
//   - push: a record committed here is queued to every live peer at once,
//     in commit order, so a change is visible elsewhere within a round trip;
//   - pull: every PullInterval, on connect and whenever a push leaves a gap,
//     a node sends its version vector and applies what the peer has beyond
//     it. A node that was down or cut off catches up this way, from any
//     peer, including records of origins that are gone.
// Apply accepts only the next sequence number of each origin, so the log
// and version vector stay contiguous however the two paths interleave.

// A push frame carries at most pushBatch records and, beyond the first
// record, about pushBatchBytes; records are at most 1 MiB each, so a frame
// stays under wire.MaxPayload.
const (
	pushBatch      = 256
	pushBatchBytes = 1 << 20
)

// Durability says when a published change is durable on this node. In
// every case the change is in the local index when Publish returns, and
// leaves the node (push or pull) only once it is durable here, so that a
// crash never takes back what a peer has seen.
type Durability int

const (
	// Synced: durable when Publish returns (a synced commit).
	Synced Durability = iota
	// SyncAtOnce: a background sync starts at once (flushLoop), as a
	// local disk commits a rename or a delete to its journal: renames,
	// deletes, attribute changes.
	SyncAtOnce
	// SyncBatched: synced at most soonDelay (5 ms) later, sharing one
	// sync with the changes of that time: new entries, and a file's new
	// version at close (its chunks are durable on their replicas
	// already). tar x of small files makes one sync for several files.
	// Nothing is reordered: a sync makes every earlier change durable,
	// and a later SyncAtOnce change (the delete of the journal a database
	// deletes after its commit, say) or Sync takes these along.
	SyncBatched
)

// Publish commits a local namespace change with durability d and sends it
// to every live peer once it is durable; peers receive it asynchronously
// (and pull it if a push is lost). The commit is local and short, so it
// runs to the end whatever the caller's context. published names files
// whose pending versions (index.DB.PutPending) the ops publish: their
// journal entries go in the same batch.
func (n *Node) Publish(ops []index.Op, d Durability, published ...uint64) (*index.Record, error) {
	if d == Synced {
		rec, err := n.db.Commit(ops, index.Synced, published...)
		if err != nil {
			return nil, err
		}
		n.out.add(rec)
		n.flushOut()
		return rec, nil
	}
	rec, err := n.db.Commit(ops, index.Unsynced, published...)
	if err != nil {
		return nil, err
	}
	n.out.add(rec)
	if d == SyncAtOnce {
		n.kickFlush()
	} else if n.flushArmed.CompareAndSwap(false, true) {
		// At most soonDelay after the first change not yet synced,
		// however many follow.
		time.AfterFunc(soonDelay, func() {
			n.flushArmed.Store(false)
			n.kickFlush()
		})
	}
	return rec, nil
}

// kickFlush wakes flushLoop (unless a wake-up is pending already).
func (n *Node) kickFlush() {
	select {
	case n.flushKick <- struct{}{}:
	default:
	}
}

// soonDelay is the longest a change waits for a sync (SyncBatched).
const soonDelay = 5 * time.Millisecond

// Sync makes every local change durable and sends what it made durable to
// the peers (fsync of a directory, or of a file with nothing to upload).
func (n *Node) Sync() error {
	if err := n.db.Sync(); err != nil {
		return err
	}
	n.flushOut()
	return nil
}

// flushLoop makes lazily published changes durable and sends them, at
// once: peers see changes in the order they were made, one sync after
// they were made, as when every change was synced before returning (a
// delay here would let a peer see, say, a database file's new content
// long before the unlink of the journal that followed it). Changes made
// while a sync runs share the next one.
func (n *Node) flushLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.flushKick:
		}
		if err := n.Sync(); err != nil && n.ctx.Err() == nil {
			n.log.Error("making namespace changes durable", "err", err)
		}
	}
}

// outbox holds this node's records committed but not yet sent, by Seq.
type outbox struct {
	mu      sync.Mutex
	pending map[uint64][]byte // Seq → the record as sent (Record.Wire)
}

func (o *outbox) add(rec *index.Record) {
	enc := rec.Wire
	o.mu.Lock()
	if o.pending == nil {
		o.pending = make(map[uint64][]byte)
	}
	o.pending[rec.Seq] = enc
	o.mu.Unlock()
}

// flushOut queues to every live peer, in Seq order, the records of the
// outbox that are durable.
func (n *Node) flushOut() {
	durable := n.db.DurableSeq()
	n.out.mu.Lock()
	defer n.out.mu.Unlock()
	var seqs []uint64
	for seq := range n.out.pending {
		if seq <= durable {
			seqs = append(seqs, seq)
		}
	}
	if len(seqs) == 0 {
		return
	}
	slices.Sort(seqs)
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, seq := range seqs {
		enc := n.out.pending[seq]
		delete(n.out.pending, seq)
		for _, p := range n.peers {
			select {
			case p.pushq <- enc:
			default:
				// The queue is full: the peer's next pull carries the record.
			}
		}
	}
}

func (n *Node) pushLoop(ctx context.Context, p *peer) {
	for {
		var batch [][]byte
		select {
		case <-ctx.Done():
			return
		case r := <-p.pushq:
			batch = append(batch, r)
		}
		size := len(batch[0])
	fill:
		for len(batch) < pushBatch && size < pushBatchBytes {
			select {
			case r := <-p.pushq:
				batch = append(batch, r)
				size += len(r)
			default:
				break fill
			}
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		typ, payload, err := p.cc.call(cctx, func(dst []byte, id uint64) []byte { return wire.AppendPush(dst, id, batch) })
		cancel()
		if err == nil {
			err = expect(typ, wire.TypePushResult)
		}
		if err == nil {
			_, err = wire.DecodeStatuses(payload)
		}
		if err != nil && ctx.Err() == nil {
			n.log.Debug("push failed; the peer will pull", "peer", p.id.Short(), "err", err)
		}
	}
}

// kickPull asks the puller of peer id to pull now.
func (n *Node) kickPull(id format.NodeID) {
	n.mu.Lock()
	p := n.peers[id]
	n.mu.Unlock()
	if p != nil {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

func (n *Node) pullLoop(ctx context.Context, p *peer) {
	t := time.NewTicker(n.cfg.PullInterval)
	defer t.Stop()
	for {
		if err := n.pullFrom(ctx, p); err != nil && ctx.Err() == nil {
			n.log.Debug("pull failed", "peer", p.id.Short(), "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.kick:
		}
	}
}

// pullFrom fetches and applies everything p has that we lack.
func (n *Node) pullFrom(ctx context.Context, p *peer) error {
	if loads := n.SnapshotsLoaded(); n.db.NeedsSnapshot() {
		// A snapshot load was cut short: the namespace is incomplete.
		if err := n.loadSnapshot(ctx, p, loads); err != nil {
			return err
		}
	}
	for round := 0; round < 1000; round++ {
		loads := n.SnapshotsLoaded() // before the vector the Pull sends
		vv := n.db.VersionVector()
		entries := make([]wire.VVEntry, 0, len(vv))
		for o, s := range vv {
			entries = append(entries, wire.VVEntry{Node: o, Seq: s})
		}
		if len(entries) > wire.MaxVVEntries {
			// More origins than a Pull carries (an index from before
			// their number was bounded): the peer sends the records of
			// those left out again, and Apply skips them.
			slices.SortFunc(entries, func(a, b wire.VVEntry) int { return a.Node.Compare(b.Node) })
			entries = entries[:wire.MaxVVEntries]
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		typ, payload, err := p.cc.call(cctx, func(dst []byte, id uint64) []byte { return wire.AppendPull(dst, id, entries) })
		cancel()
		if err != nil {
			return err
		}
		if err := expect(typ, wire.TypeRecords); err != nil {
			return err
		}
		more, recs, err := wire.DecodeRecords(payload)
		if errors.Is(err, wire.ErrSnapshotNeeded) {
			// The peer pruned records this node lacks.
			if err := n.loadSnapshot(ctx, p, loads); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			p.cc.close(fmt.Errorf("%w: bad records reply: %v", ErrClosed, err))
			return err
		}
		n.applyRecords(recs, p.id)
		if !more {
			return nil
		}
	}
	return nil
}

// Push result codes, per record.
const (
	pushApplied = 0 // applied, or already had it
	pushGap     = 1 // an earlier record of its origin is missing: we pull
	pushInvalid = 2 // malformed or refused; logged
)

// applyRecords decodes, checks and applies records received from peer
// from. A record whose origin is not a member yet may follow the record
// that adds it: those are tried again after the others, as long as that
// makes progress, and otherwise left for the next pull.
func (n *Node) applyRecords(recs [][]byte, from format.NodeID) []byte {
	st := make([]byte, len(recs))
	gap := false
	refused, firstErr := 0, error(nil) // logged once per batch: a peer may send thousands
	todo := make([]int, len(recs))
	for i := range todo {
		todo[i] = i
	}
	for len(todo) > 0 {
		var later []int
		for _, i := range todo {
			_, _, err := n.db.ReceiveFrom(recs[i], from)
			switch {
			case err == nil:
				st[i] = pushApplied
			case errors.Is(err, index.ErrGap):
				st[i] = pushGap
				gap = true
			case errors.Is(err, index.ErrUnknownOrigin):
				st[i] = pushGap
				later = append(later, i)
			default:
				st[i] = pushInvalid
				if refused++; firstErr == nil {
					firstErr = err
				}
			}
		}
		if len(later) == len(todo) {
			n.log.Debug("records of origins not known yet", "from", from.Short(), "records", len(later))
			break
		}
		todo = later
	}
	if refused > 0 {
		n.log.Warn("refusing records", "from", from.Short(), "refused", refused, "of", len(recs), "first error", firstErr)
	}
	if gap {
		n.kickPull(from)
	}
	n.appliedSig.notify()
	return st
}

// dropPeer closes our connection to a peer that said goodbye.
func (n *Node) dropPeer(id format.NodeID, why error) {
	n.mu.Lock()
	p := n.peers[id]
	n.mu.Unlock()
	if p != nil {
		p.cc.close(why)
	}
}
