package chunknet

import (
	"bytes"
	"context"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// Limits on what a member may make this node do, and checks of what it
// says. A member is trusted to be one of us, not to be honest or well:
//
//   - Quota. What a member has this node store for it (chunks and groups
//     new here; a copy already stored costs nothing) is counted per member
//     (index.DB.Usage). Past Config.Quota, by default a fair share of the
//     data disk (its size divided by the members), its puts are refused
//     with StatusQuota and the uploader places the copies elsewhere. A
//     member cannot fill every disk.
//   - Spot checks. Now and then (one put in Config.SpotCheckEvery), a
//     copy a peer acknowledged is read back from it a little later: a
//     peer that does not return the bytes acknowledged lied (or lost
//     them). It is reported and no longer trusted with copies (placement
//     leaves it out), and the copies this node placed on it are made
//     again elsewhere.

// quotaRecompute is how long a computed fair share is used before the
// disk and the member list are looked at again.
const quotaRecompute = 10 * time.Second

type quotaCache struct {
	at    atomic.Int64 // unix ns of the computation
	bytes atomic.Int64
}

// quota returns how many bytes one member may have this node store.
func (n *Node) quota() int64 {
	switch {
	case n.cfg.Quota < 0 || !n.secure():
		return math.MaxInt64
	case n.cfg.Quota > 0:
		return n.cfg.Quota
	}
	now := time.Now().UnixNano()
	if now-n.quotaCache.at.Load() < int64(quotaRecompute) {
		return n.quotaCache.bytes.Load()
	}
	q := int64(math.MaxInt64)
	if total := n.LocalStat().DiskTotal; total > 0 {
		members := 0
		for _, m := range n.db.Members() {
			if !m.Removed {
				members++
			}
		}
		q = int64(total) / int64(max(members, 1))
	}
	n.quotaCache.bytes.Store(q)
	n.quotaCache.at.Store(now)
	return q
}

// admitPut reports whether member from may have this node store more.
func (n *Node) admitPut(from format.NodeID) bool {
	if from == n.self || !n.secure() {
		return true // without members, nothing is charged (see charge)
	}
	used, err := n.db.Usage(from)
	if err != nil {
		n.log.Error("reading a member's usage", "peer", from.Short(), "err", err)
		return false
	}
	if q := n.quota(); used >= q {
		n.quotaLog.Do(from, func() {
			n.log.Warn("refusing copies from a member over its quota", "peer", from.Short(), "stored", used, "quota", q)
		})
		return false
	}
	return true
}

// charge counts bytes newly stored for member from.
func (n *Node) charge(from format.NodeID, st index.PutStats) {
	if from == n.self || st.Bytes == 0 || !n.secure() {
		return
	}
	if _, err := n.db.AddUsage(from, st.Bytes); err != nil {
		n.log.Error("counting a member's usage", "peer", from.Short(), "err", err)
	}
}

// spot is one acknowledged copy to read back: a group's first chunk (its
// bytes known) or a chunk by name.
type spot struct {
	group bool
	hash  format.Hash
	first []byte // a group's first chunk, as sent
	epoch int64  // placementEpoch when it was sent
	sent  time.Time
}

// maybeSpotCheck, for one put in SpotCheckEvery, reads back from p one of
// the copies it acknowledged (ok), a little later.
func (n *Node) maybeSpotCheck(p *peer, ok []bool, pick func(i int) spot) {
	if n.cfg.SpotCheckEvery < 0 || rand.IntN(max(n.cfg.SpotCheckEvery, 1)) != 0 {
		return
	}
	var acked []int
	for i, o := range ok {
		if o {
			acked = append(acked, i)
		}
	}
	if len(acked) == 0 {
		return
	}
	s := pick(acked[rand.IntN(len(acked))])
	s.epoch, s.sent = n.placementEpoch.Load(), time.Now()
	n.Go(func(ctx context.Context) {
		if !sleepCtx(ctx, n.cfg.SpotCheckDelay) {
			return
		}
		n.spotCheck(ctx, p, s)
	})
}

// spotCheck reads s back from p; a peer that answers without the bytes
// loses our trust. A peer that does not answer (gone, busy) is not judged.
func (n *Node) spotCheck(ctx context.Context, p *peer, s spot) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var lied bool
	if s.group {
		typ, payload, err := p.cc.call(ctx, func(dst []byte, id uint64) []byte {
			return wire.AppendGetGroups(dst, id, []wire.GroupRange{{Hash: s.hash, First: 0, N: 1}})
		})
		if err != nil || expect(typ, wire.TypeGroupResult) != nil {
			return
		}
		items, err := wire.DecodeGroupResult(payload)
		if err != nil || len(items) != 1 || items[0].Status == wire.StatusTooLarge || items[0].Status == wire.StatusStoreError {
			return
		}
		lied = items[0].Status != wire.StatusOK || !bytes.Equal(items[0].Data, s.first)
	} else {
		typ, payload, err := p.cc.call(ctx, func(dst []byte, id uint64) []byte {
			return wire.AppendGetChunks(dst, id, []format.Hash{s.hash})
		})
		if err != nil || expect(typ, wire.TypeGetResult) != nil {
			return
		}
		items, err := wire.DecodeGetResult(payload)
		if err != nil || len(items) != 1 || items[0].Status == wire.StatusTooLarge || items[0].Status == wire.StatusStoreError {
			return
		}
		lied = items[0].Status != wire.StatusOK || !verify(s.hash, items[0].Data)
	}
	if lied && n.mayHaveDropped(p.id, s) {
		n.log.Debug("spot check inconclusive: the peer may have dropped the copy as surplus", "peer", p.id.Short(), "item", s.hash.Short())
		return
	}
	if lied {
		n.distrust(ctx, p.id, s)
	}
}

// mayHaveDropped reports whether peer id may rightly have dropped item s
// since it acknowledged it: repair drops a copy that is surplus, which
// needs the live nodes to have changed since (placementEpoch), or id not
// to be among the item's targets now; garbage collection drops one no
// sooner than ReclaimAfter after its put (gc.go).
func (n *Node) mayHaveDropped(id format.NodeID, s spot) bool {
	if n.placementEpoch.Load() != s.epoch {
		return true
	}
	if time.Since(s.sent) >= n.cfg.ReclaimAfter {
		// Long enough for garbage collection to have deleted it, had
		// it become garbage meanwhile (a check delayed by a busy peer).
		return true
	}
	ids, _ := n.members()
	r := newRanker(ids)
	for _, j := range r.top(s.hash, n.cfg.Replicas) {
		if ids[j] == id {
			return false
		}
	}
	return true
}

// distrust stops placing copies on id, which acknowledged s and does not
// hold it, and has the copies this node placed there made again.
func (n *Node) distrust(ctx context.Context, id format.NodeID, s spot) {
	n.mu.Lock()
	if n.distrusted[id] {
		n.mu.Unlock()
		return
	}
	n.distrusted[id] = true
	n.placementEpoch.Add(1)
	n.mu.Unlock()
	what := "chunk"
	if s.group {
		what = "group"
	}
	n.log.Error("a peer acknowledged a copy it does not hold: it is no longer trusted with copies", "peer", id.Short(), what, s.hash.Short())
	if err := n.repairAfterRemoval(ctx, []format.NodeID{id}); err != nil && ctx.Err() == nil {
		n.log.Error("listing the copies placed on a distrusted peer", "err", err)
	}
}

// Distrusted returns the peers caught acknowledging copies they did not
// keep, ordered by ID.
func (n *Node) Distrusted() []format.NodeID {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]format.NodeID, 0, len(n.distrusted))
	for id := range n.distrusted {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Compare(out[j]) < 0 })
	return out
}

// everyMinute runs a function at most once a minute per node: for log
// lines a hostile peer could otherwise repeat at will.
type everyMinute struct {
	mu   sync.Mutex
	last map[format.NodeID]time.Time
}

func (e *everyMinute) Do(id format.NodeID, f func()) {
	e.mu.Lock()
	if e.last == nil {
		e.last = make(map[format.NodeID]time.Time)
	}
	now := time.Now()
	if now.Sub(e.last[id]) < time.Minute {
		e.mu.Unlock()
		return
	}
	e.last[id] = now
	e.mu.Unlock()
	f()
}
