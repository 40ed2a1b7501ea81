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
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			typ, payload, err := p.cc.call(cctx, wire.AppendStat)
			if err == nil {
				err = expect(typ, wire.TypeStatResult)
			}
			var s wire.StatInfo
			if err == nil {
				s, err = wire.DecodeStatResult(payload)
			}
			if err != nil {
				n.log.Debug("stat of a peer failed", "peer", p.id.Short(), "err", err)
				return
			}
			mu.Lock()
			out[p.id] = s
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}
