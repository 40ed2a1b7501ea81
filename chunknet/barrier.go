package chunknet

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index/format"
)

// The barrier of fsync. SyncPeers makes this node's namespace changes
// durable, then asks every live peer (WaitApplied) to answer once it has
// applied them and their effects are visible to its programs: the file
// system there has told its kernel to forget what the changes touched
// (Node.SetVisibleHook). When fsync returns, a program on any live peer
// that opens the file reads what was synced.
//
// A peer that has not applied the changes after barrierGiveUp is not
// keeping up: its connection is closed, so it is no longer live (it
// catches up by pulling when it reconnects), and the barrier holds for
// the peers that remain.

const (
	// barrierServe bounds how long a node waits for records before it
	// answers a WaitApplied with "not yet".
	barrierServe = 5 * time.Second
	// barrierGiveUp bounds a barrier's wait for one peer.
	barrierGiveUp = 10 * time.Second
)

// signal is a broadcast: wait returns a channel that is closed at the next
// notify.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signal) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

// SetVisibleHook sets the function a WaitApplied answer calls once the
// records are applied: it returns when their effects are visible to
// programs on this node (the file system's kernel invalidations are
// done), or when ctx ends. nil: applied is visible.
func (n *Node) SetVisibleHook(f func(ctx context.Context)) {
	if f == nil {
		n.visible.Store(nil)
		return
	}
	n.visible.Store(&f)
}

// waitApplied answers a WaitApplied from peer from: StatusOK once the
// records of origin up to seq are applied here and visible, StatusNotFound
// if they are not within barrierServe.
func (n *Node) waitApplied(origin format.NodeID, seq uint64, from format.NodeID) byte {
	ctx, cancel := context.WithTimeout(n.ctx, barrierServe)
	defer cancel()
	pulled := false
	for {
		ch := n.appliedSig.wait()
		if n.db.Applied(origin) >= seq {
			break
		}
		if !pulled {
			n.kickPull(from) // a push may have been dropped
			pulled = true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return wire.StatusNotFound
		}
	}
	if f := n.visible.Load(); f != nil {
		(*f)(ctx)
		if ctx.Err() != nil {
			return wire.StatusNotFound
		}
	}
	return wire.StatusOK
}

// SyncPeers makes every namespace change of this node durable (Sync) and
// returns once every live peer has applied them and shows them to its
// programs (see the top of this file). It fails only if the local sync
// fails or ctx ends.
func (n *Node) SyncPeers(ctx context.Context) error {
	if err := n.Sync(); err != nil {
		return err
	}
	seq := n.db.DurableSeq()
	if seq == 0 {
		return nil
	}
	_, peers := n.members()
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.barrier(ctx, p, seq)
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// barrier waits until peer p has applied this node's records up to seq,
// or is no longer live.
func (n *Node) barrier(ctx context.Context, p *peer, seq uint64) {
	giveUp := time.Now().Add(barrierGiveUp)
	for {
		cctx, cancel := context.WithDeadline(ctx, giveUp)
		typ, payload, err := p.cc.call(cctx, func(dst []byte, id uint64) []byte {
			return wire.AppendWaitApplied(dst, id, n.self, seq)
		})
		cancel()
		if err == nil {
			err = expect(typ, wire.TypeApplied)
		}
		st := wire.StatusNotFound
		if err == nil {
			st, err = wire.DecodeApplied(payload)
		}
		switch {
		case err == nil && st == wire.StatusOK:
			return
		case ctx.Err() != nil, p.cc.closedErr() != nil:
			return // interrupted, or the peer is gone: not live
		case time.Now().After(giveUp):
			n.log.Warn("peer has not applied this node's changes in time: dropping it until it catches up",
				"peer", p.id.Short(), "seq", seq, "err", err)
			p.cc.close(fmt.Errorf("%w: behind on this node's changes (barrier of fsync)", ErrClosed))
			return
		case err != nil:
			if !sleepCtx(ctx, 50*time.Millisecond) {
				return
			}
		}
	}
}
