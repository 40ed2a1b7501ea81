package chunknet

import (
	"errors"
	"time"

	"github.com/oashare/oashare/index"
)

// Reclaiming disk space. A copy dropped from this node's store (a
// surplus one after repair, say) leaves its index at once but its bytes
// in the chunk log; index.DB.Reclaim punches the ranges no entry points
// to out of the log's files. A node reclaims at most once every
// Config.ReclaimEvery, when copies were dropped since the last time, and
// once at start (what an earlier run dropped, or a crash left). The
// grace (Config.ReclaimGrace) between finding dead ranges and punching
// them lets a read that found a location just before its drop finish.
// A segment mostly dead is compacted (index store_compact.go) and
// removed by a second reclaim right after.

// kickReclaim asks for a reclaim at the next turn of reclaimLoop.
func (n *Node) kickReclaim() {
	n.reclaimPending.Store(true)
}

func (n *Node) reclaimLoop() {
	defer n.wg.Done()
	n.kickReclaim()
	t := time.NewTicker(n.cfg.ReclaimEvery)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if !n.reclaimPending.Swap(false) {
			continue
		}
		compacted := n.db.Compacted()
		got, err := n.db.Reclaim(n.ctx, n.cfg.ReclaimGrace)
		if err == nil && n.db.Compacted() > compacted {
			// The segments just compacted are removed by the next one.
			var more int64
			more, err = n.db.Reclaim(n.ctx, n.cfg.ReclaimGrace)
			got += more
		}
		switch {
		case errors.Is(err, index.ErrReclaimUnsupported):
			n.log.Info("dropped copies keep their disk space", "err", err)
			return
		case err != nil && n.ctx.Err() == nil:
			n.log.Warn("reclaiming disk space", "err", err)
			n.kickReclaim()
		case err == nil && got > 0:
			n.log.Debug("reclaimed disk space", "bytes", got)
		}
	}
}
