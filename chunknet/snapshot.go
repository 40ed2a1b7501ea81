package chunknet

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// Snapshots of the namespace (index ns_snapshot.go) between peers. A peer
// that pulls records this node pruned gets a Records frame saying so, and
// asks for a snapshot instead: pages of one consistent index snapshot,
// which this node keeps open for that peer as a session between pages.
// Sessions are few (snapshotSessions) and end when the last page is sent
// or after snapshotIdle without a request, so a peer that stops asking
// holds nothing for long.

const (
	snapshotSessions = 4
	snapshotIdle     = time.Minute
)

// snapshotState holds the sessions this node serves and whether it is
// loading a snapshot itself.
type snapshotState struct {
	mu       sync.Mutex
	next     uint64
	sessions map[uint64]*snapshotSession
	loading  sync.Mutex // one load at a time (pulls from several peers)
	loads    int        // snapshots loaded since start
}

type snapshotSession struct {
	peer  format.NodeID
	snap  *index.Snapshot
	timer *time.Timer
	// mu is held while a page is read, so the snapshot is not closed
	// under it (by the idle timer); closed says it was.
	mu     sync.Mutex
	closed bool
}

// SnapshotsLoaded returns how many snapshots this node loaded since it
// started.
func (n *Node) SnapshotsLoaded() int {
	n.snaps.mu.Lock()
	defer n.snaps.mu.Unlock()
	return n.snaps.loads
}

// serveSnapshot answers a Snapshot request of peer from.
func (n *Node) serveSnapshot(id uint64, from format.NodeID, session uint64, after []byte) []byte {
	st := &n.snaps
	st.mu.Lock()
	s := st.sessions[session]
	if session == 0 {
		if len(st.sessions) >= snapshotSessions {
			st.mu.Unlock()
			return wire.AppendError(nil, id, wire.CodeInternal, "too many snapshots served at once; try again later")
		}
		st.mu.Unlock()
		snap, err := n.db.Snapshot()
		if err != nil {
			return wire.AppendError(nil, id, wire.CodeInternal, "snapshot: "+err.Error())
		}
		st.mu.Lock()
		st.next++
		session = st.next
		s = &snapshotSession{peer: from, snap: snap}
		if st.sessions == nil {
			st.sessions = make(map[uint64]*snapshotSession)
		}
		st.sessions[session] = s
		sid := session
		s.timer = time.AfterFunc(snapshotIdle, func() { n.endSnapshot(sid) })
	}
	st.mu.Unlock()
	if s == nil || s.peer != from {
		return wire.AppendError(nil, id, wire.CodeInternal, "no such snapshot session (it may have expired): start again")
	}
	s.timer.Reset(snapshotIdle)
	var start []byte
	if len(after) > 0 {
		start = after
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return wire.AppendError(nil, id, wire.CodeInternal, "the snapshot session expired: start again")
	}
	items, done, err := s.snap.Page(start, wire.SnapshotPageBytes)
	s.mu.Unlock()
	if err != nil {
		n.endSnapshot(session)
		return wire.AppendError(nil, id, wire.CodeInternal, "snapshot: "+err.Error())
	}
	pg := wire.SnapshotPage{Session: session, Done: done, HLC: s.snap.HLC, Items: make([]wire.SnapshotItem, len(items))}
	for o, p := range s.snap.VV {
		pg.VV = append(pg.VV, wire.SnapshotVV{Node: o, Seq: p.Seq, HLC: p.HLC})
	}
	if len(pg.VV) > wire.MaxVVEntries {
		n.endSnapshot(session)
		return wire.AppendError(nil, id, wire.CodeInternal, "snapshot: more origins than a page carries")
	}
	for i, it := range items {
		pg.Items[i] = wire.SnapshotItem{Key: it.Key, Value: it.Value}
	}
	if done {
		n.endSnapshot(session)
	}
	return wire.AppendSnapshotPage(nil, id, pg)
}

// endSnapshot closes a session.
func (n *Node) endSnapshot(session uint64) {
	st := &n.snaps
	st.mu.Lock()
	s := st.sessions[session]
	delete(st.sessions, session)
	st.mu.Unlock()
	if s != nil {
		s.timer.Stop()
		s.mu.Lock()
		if !s.closed {
			s.closed = true
			s.snap.Close()
		}
		s.mu.Unlock()
	}
}

// closeSnapshots ends every session (the node is closing).
func (n *Node) closeSnapshots() {
	n.snaps.mu.Lock()
	ids := make([]uint64, 0, len(n.snaps.sessions))
	for id := range n.snaps.sessions {
		ids = append(ids, id)
	}
	n.snaps.mu.Unlock()
	for _, id := range ids {
		n.endSnapshot(id)
	}
}

// loadSnapshot replaces this node's namespace with a snapshot from p (see
// index ns_snapshot.go). since is SnapshotsLoaded when the caller found a
// snapshot needed: another load under way, or one that ended since, makes
// it return at once (the caller pulls again).
func (n *Node) loadSnapshot(ctx context.Context, p *peer, since int) error {
	if !n.snaps.loading.TryLock() {
		return nil
	}
	defer n.snaps.loading.Unlock()
	if n.SnapshotsLoaded() != since {
		return nil
	}
	start := time.Now()
	call := func(session uint64, after []byte) (wire.SnapshotPage, error) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		typ, payload, err := p.cc.call(cctx, func(dst []byte, id uint64) []byte {
			return wire.AppendSnapshot(dst, id, session, after)
		})
		if err == nil {
			err = expect(typ, wire.TypeSnapshotPage)
		}
		if err != nil {
			return wire.SnapshotPage{}, err
		}
		pg, err := wire.DecodeSnapshotPage(payload)
		if err != nil {
			p.cc.close(fmt.Errorf("%w: bad snapshot page: %v", ErrClosed, err))
		}
		return pg, err
	}
	pg, err := call(0, nil)
	if err != nil {
		return fmt.Errorf("snapshot from %s: %w", p.id.Short(), err)
	}
	vv := make(map[format.NodeID]index.Position, len(pg.VV))
	for _, e := range pg.VV {
		vv[e.Node] = index.Position{Seq: e.Seq, HLC: e.HLC}
	}
	l, err := n.db.LoadSnapshot(vv, pg.HLC)
	if err != nil {
		return fmt.Errorf("snapshot from %s: %w", p.id.Short(), err)
	}
	n.log.Info("loading the namespace from a snapshot", "peer", p.id.Short())
	for {
		items := make([]index.SnapshotItem, len(pg.Items))
		for i, it := range pg.Items {
			items[i] = index.SnapshotItem{Key: it.Key, Value: it.Value}
		}
		if err := l.Add(items); err != nil {
			l.Abort()
			p.cc.close(fmt.Errorf("%w: bad snapshot item: %v", ErrClosed, err))
			return fmt.Errorf("snapshot from %s: %w", p.id.Short(), err)
		}
		if pg.Done {
			break
		}
		if len(pg.Items) == 0 {
			l.Abort()
			return fmt.Errorf("snapshot from %s: %w: an empty page that is not the last", p.id.Short(), wire.ErrBadFrame)
		}
		last := pg.Items[len(pg.Items)-1].Key
		if pg, err = call(pg.Session, last); err != nil {
			l.Abort()
			return fmt.Errorf("snapshot from %s: %w", p.id.Short(), err)
		}
	}
	items := l.Items()
	reapplied, err := l.Finish()
	if err != nil {
		return fmt.Errorf("snapshot from %s: %w", p.id.Short(), err)
	}
	n.snaps.mu.Lock()
	n.snaps.loads++
	n.snaps.mu.Unlock()
	n.log.Info("namespace loaded from a snapshot", "peer", p.id.Short(), "items", items,
		"reapplied", reapplied, "took", time.Since(start).Round(time.Millisecond))
	n.appliedSig.notify()
	return nil
}
