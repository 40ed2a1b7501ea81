package chunknet

import (
	"sync/atomic"
	"time"
)

// Metrics count what the node's reads did since it started, for the
// dashboard and /metrics (cmd/oashare).
type Metrics struct {
	// ChunksFetched counts chunks received from peers that matched their
	// names; VerifyFailures chunks (from a peer or the local store) that
	// did not, each replaced from another copy or reported as an error.
	ChunksFetched, VerifyFailures atomic.Int64
	// BytesFetched counts the bytes of ChunksFetched.
	BytesFetched atomic.Int64

	latency atomic.Pointer[func(time.Duration)]
}

// Metrics returns the node's counters.
func (n *Node) Metrics() *Metrics { return &n.metrics }

// OnLatency sets f to be called with the time each read request to a
// peer took to be answered (nil: none).
func (m *Metrics) OnLatency(f func(time.Duration)) {
	if f == nil {
		m.latency.Store(nil)
		return
	}
	m.latency.Store(&f)
}

func (m *Metrics) observeLatency(d time.Duration) {
	if f := m.latency.Load(); f != nil {
		(*f)(d)
	}
}

func (m *Metrics) fetched(n int, bytes int) {
	m.ChunksFetched.Add(int64(n))
	m.BytesFetched.Add(int64(bytes))
}
