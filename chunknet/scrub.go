package chunknet

import (
	"bytes"
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// Scrub re-reads every group and tree node this node stores and checks it
// against its name, so that bytes that rot at rest (a bad sector, a bit
// flip, a torn write the file system did not report) are found before a
// read or a repair needs them. A pass reads the store a page at a time,
// paced so that it takes about half of Config.ScrubEvery (at least
// scrubMinRate), and a new pass starts ScrubEvery after the last one
// started. A damaged copy is replaced by a good one read from another
// holder (verified chunk by chunk; the store then rewrites the item, see
// index's PutGroups); with no good copy anywhere, it is logged as lost.
// Reads never return the damaged bytes meanwhile: every read verifies.

// scrubMinRate is the slowest a pass reads, in bytes per second.
const scrubMinRate = 4 << 20

// ScrubStats counts what scrub did since the node started.
type ScrubStats struct {
	Passes   int64     // completed passes
	Items    int64     // groups and tree nodes checked
	Bytes    int64     // their bytes
	Damaged  int64     // found not matching their name
	Replaced int64     // of them, replaced by a good copy
	LastPass time.Time // end of the last completed pass
}

type scrubState struct {
	passes, items, bytes, damaged, replaced, lastPass atomic.Int64
}

// ScrubStats reports the counters of scrub.
func (n *Node) ScrubStats() ScrubStats {
	s := &n.scrub
	st := ScrubStats{Passes: s.passes.Load(), Items: s.items.Load(), Bytes: s.bytes.Load(),
		Damaged: s.damaged.Load(), Replaced: s.replaced.Load()}
	if ns := s.lastPass.Load(); ns != 0 {
		st.LastPass = time.Unix(0, ns)
	}
	return st
}

func (n *Node) scrubLoop() {
	defer n.wg.Done()
	every := n.cfg.ScrubEvery
	// The first pass waits a little: a node (re)started is busy catching
	// up, and a pass per restart would be waste.
	select {
	case <-n.ctx.Done():
		return
	case <-time.After(min(every/10, time.Hour)):
	}
	for {
		start := time.Now()
		if err := n.ScrubPass(n.ctx); err != nil {
			if n.ctx.Err() != nil {
				return
			}
			n.log.Warn("scrubbing the store", "err", err)
		}
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(time.Until(start.Add(every))):
		}
	}
}

// ScrubPass checks every item of this node's store once (see above).
func (n *Node) ScrubPass(ctx context.Context) error {
	_, stored := n.db.ChunkStats()
	perSec := max(float64(stored)/(n.cfg.ScrubEvery/2).Seconds(), scrubMinRate)
	lim := rate.NewLimiter(rate.Limit(perSec), format.MaxGroupData+format.MaxChunkData)
	err := n.eachStoredPage(func(items []index.Item) error {
		for _, it := range items {
			size, err := n.scrubItem(ctx, it)
			if err != nil {
				return err
			}
			if err := lim.WaitN(ctx, max(size, 1)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	n.scrub.passes.Add(1)
	n.scrub.lastPass.Store(time.Now().UnixNano())
	return nil
}

// scrubItem checks one stored item and replaces it if damaged; it returns
// the bytes read. A group's node is checked with its group.
func (n *Node) scrubItem(ctx context.Context, it index.Item) (int, error) {
	if it.Group {
		data, ok, err := n.db.GetGroup(it.Hash, 0, format.MaxGroupData, nil)
		if err != nil || !ok {
			return 0, err // dropped meanwhile
		}
		node, _, err := n.db.GetChunk(it.Hash, nil)
		if err != nil {
			return 0, err
		}
		n.scrub.items.Add(1)
		n.scrub.bytes.Add(int64(len(data) + len(node)))
		if verifyGroup(it.Hash, node, data) {
			return len(data) + len(node), nil
		}
		n.scrub.damaged.Add(1)
		n.log.Warn("scrub: a stored group does not match its name; replacing it from another holder", "group", it.Hash.Short())
		n.replaceGroup(ctx, it.Hash, node, data)
		return len(data) + len(node), ctx.Err()
	}
	if ok, _ := n.db.HasGroup(it.Hash); ok {
		return 0, nil // the node of a group: checked with it
	}
	d, ok, err := n.db.GetChunk(it.Hash, nil)
	if err != nil || !ok {
		return 0, err
	}
	n.scrub.items.Add(1)
	n.scrub.bytes.Add(int64(len(d)))
	if verify(it.Hash, d) {
		return len(d), nil
	}
	n.scrub.damaged.Add(1)
	n.log.Warn("scrub: a stored tree node does not match its name; replacing it from another holder", "node", it.Hash.Short())
	good, err := n.fetchElsewhere(ctx, it.Hash)
	if err != nil {
		n.log.Error("scrub: no good copy of a damaged tree node on any live peer", "node", it.Hash.Short(), "err", err)
		return len(d), ctx.Err()
	}
	if _, err := n.db.PutChunks([]index.Chunk{{Hash: it.Hash, Data: good}}); err != nil {
		n.log.Error("scrub: storing the good copy of a tree node", "node", it.Hash.Short(), "err", err)
		return len(d), ctx.Err()
	}
	n.scrub.replaced.Add(1)
	return len(d), nil
}

// fetchElsewhere reads chunk h, verified, from the memory cache (which
// holds verified chunks only) or a live peer: Fetch checks the copy here
// and, damaged, skips it.
func (n *Node) fetchElsewhere(ctx context.Context, h format.Hash) ([]byte, error) {
	got, err := n.Fetch(ctx, []format.Hash{h})
	if err != nil {
		return nil, err
	}
	return bytes.Clone(got[0]), nil
}

// replaceGroup stores a good copy of group g, whose stored node and data
// are damaged in some part, read from the other holders.
func (n *Node) replaceGroup(ctx context.Context, g format.Hash, node, data []byte) {
	if len(node) > 0 && !verify(g, node) {
		good, err := n.fetchElsewhere(ctx, g)
		if err != nil {
			n.log.Error("scrub: no good copy of a damaged group's node on any live peer", "group", g.Short(), "err", err)
			return
		}
		node = good
	}
	span := tree.Span{Group: g}
	if len(node) == 0 {
		span.Leaves = []format.Hash{g} // a one-chunk group is that chunk
	} else {
		for i := 0; i+format.HashSize <= len(node); i += format.HashSize {
			span.Leaves = append(span.Leaves, format.Hash(node[i:i+format.HashSize]))
		}
	}
	leaves, err := n.FetchSpans(ctx, []tree.Span{span})
	if err != nil {
		n.log.Error("scrub: no good copy of a damaged group on any live peer", "group", g.Short(), "err", err)
		return
	}
	var good []byte
	for _, l := range leaves {
		good = append(good, l...)
	}
	if !verifyGroup(g, node, good) {
		n.log.Error("scrub: the copy read back of a damaged group does not match its name", "group", g.Short())
		return
	}
	var nodes []index.Chunk
	if len(node) > 0 {
		nodes = []index.Chunk{{Hash: g, Data: node}}
	}
	if _, err := n.db.Put([]index.Group{{Hash: g, Data: good}}, nodes); err != nil {
		n.log.Error("scrub: storing the good copy of a group", "group", g.Short(), "err", err)
		return
	}
	n.scrub.replaced.Add(1)
}
