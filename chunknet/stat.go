package chunknet

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index/format"
)

// LocalStat reports this node's storage: the disk holding Config.DataDir
// (zero if unset or unreadable) and the chunks stored.
func (n *Node) LocalStat() wire.StatInfo {
	count, bytes := n.db.ChunkStats()
	_, garbage := n.db.GarbageBytes()
	s := wire.StatInfo{Chunks: uint64(count), ChunkBytes: uint64(bytes), Garbage: uint64(garbage)}
	if n.cfg.DataDir == "" {
		return s
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(n.cfg.DataDir, &st); err != nil {
		n.log.Debug("statfs of the data directory", "err", err)
		return s
	}
	s.DiskTotal = uint64(st.Blocks) * uint64(st.Bsize)
	s.DiskFree = uint64(st.Bavail) * uint64(st.Bsize)
	return s
}

// ClusterStat is the storage of this node and every live peer: the sums of
// their answers, and how many nodes answered.
type ClusterStat struct {
	wire.StatInfo
	Nodes int
}

// ClusterStat asks every live peer for its storage (peers that do not
// answer within two seconds are left out) and adds this node's.
func (n *Node) ClusterStat(ctx context.Context) ClusterStat {
	total := ClusterStat{StatInfo: n.LocalStat(), Nodes: 1}
	for _, s := range n.PeerStats(ctx) {
		total.DiskTotal += s.DiskTotal
		total.DiskFree += s.DiskFree
		total.Chunks += s.Chunks
		total.ChunkBytes += s.ChunkBytes
		total.Garbage += s.Garbage
		total.Nodes++
	}
	return total
}

// PeerStats asks every live peer for its storage, in parallel; peers that
// do not answer within two seconds are left out.
func (n *Node) PeerStats(ctx context.Context) map[format.NodeID]wire.StatInfo {
	_, peers := n.members()
	out := make(map[format.NodeID]wire.StatInfo, len(peers))
	askEach(ctx, peers, 2*time.Second, wire.AppendStat, wire.TypeStatResult, wire.DecodeStatResult,
		func(id format.NodeID, s wire.StatInfo, err error) {
			if err != nil {
				n.log.Debug("stat of a peer failed", "peer", id.Short(), "err", err)
				return
			}
			out[id] = s
		})
	return out
}

// askEach sends every peer of peers one request (build), in parallel,
// each within timeout, and calls got (one call at a time) with each
// answer of type want decoded by decode, or with why there is none.
func askEach[T any](ctx context.Context, peers map[format.NodeID]*peer, timeout time.Duration,
	build func(dst []byte, id uint64) []byte, want wire.Type, decode func([]byte) (T, error),
	got func(id format.NodeID, v T, err error)) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			typ, payload, err := p.cc.call(cctx, build)
			if err == nil {
				err = expect(typ, want)
			}
			var v T
			if err == nil {
				v, err = decode(payload)
			}
			mu.Lock()
			defer mu.Unlock()
			got(id, v, err)
		}()
	}
	wg.Wait()
}
