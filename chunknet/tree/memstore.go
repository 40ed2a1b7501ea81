package tree

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/oashare/oashare/index/format"
)

// ErrNotFound is returned by MemStore.Fetch for a hash it does not hold.
var ErrNotFound = errors.New("tree: chunk not found")

// MemStore is an in-memory chunk store for tests: a Sink that verifies
// each chunk against its hash and keeps a copy, and a Fetcher that returns
// copies. Groups are kept as a real store keeps them, their chunks back to
// back, and FetchSpans cuts data chunks out of them: a group the Builder
// formed wrongly reads back wrong (FetchSpans falls back to the chunks by
// name only for groups never stored, and counts it). It counts Put and
// Fetch calls. It is safe for concurrent use; the zero value is ready.
type MemStore struct {
	mu        sync.Mutex
	chunks    map[format.Hash][]byte
	groups    map[format.Hash][]byte
	pending   []byte // chunks put since the last EndGroup
	puts      int
	fetches   int
	fetched   int
	fallbacks int
}

var (
	_ Sink    = (*MemStore)(nil)
	_ Fetcher = (*MemStore)(nil)
)

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore { return &MemStore{} }

// Put stores a copy of data under h after checking that h is its hash.
func (m *MemStore) Put(ctx context.Context, h format.Hash, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if got := format.Sum(data); got != h {
		return fmt.Errorf("tree: memstore: put %s: bytes hash to %s", h.Short(), got.Short())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.puts++
	if m.chunks == nil {
		m.chunks = make(map[format.Hash][]byte)
	}
	if _, ok := m.chunks[h]; !ok {
		m.chunks[h] = append([]byte(nil), data...)
	}
	return nil
}

// PutLeaf stores a data chunk (by its name too, as Put) and adds it to
// the pending group.
func (m *MemStore) PutLeaf(ctx context.Context, h format.Hash, data []byte) error {
	if err := m.Put(ctx, h, data); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pending = append(m.pending, data...)
	return nil
}

// EndGroup stores the pending chunks as group g, and node (if any) by its
// name. With nothing pending, g must be stored already.
func (m *MemStore) EndGroup(ctx context.Context, g format.Hash, node []byte) error {
	if node != nil {
		if err := m.Put(ctx, g, node); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.pending) == 0 {
		if _, ok := m.groups[g]; !ok {
			return fmt.Errorf("tree: memstore: group %s reused but never stored", g.Short())
		}
		return nil
	}
	if m.groups == nil {
		m.groups = make(map[format.Hash][]byte)
	}
	if _, ok := m.groups[g]; !ok {
		m.groups[g] = m.pending
	}
	m.pending = nil
	return nil
}

// FetchSpans returns copies of the spans' data chunks, cut out of their
// groups (ChunkSize bytes each, the group's last one possibly shorter)
// and checked against their hashes; a group never stored is read by chunk
// names instead, and counted (Fallbacks).
func (m *MemStore) FetchSpans(ctx context.Context, spans []Span) ([][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fetches++
	var out [][]byte
	for _, s := range spans {
		g, grouped := m.groups[s.Group]
		if !grouped && s.Stored() > 0 {
			m.fallbacks++
		}
		k := s.First
		for _, h := range s.Leaves {
			if h.IsZero() {
				out = append(out, nil)
				continue
			}
			m.fetched++
			var b []byte
			if grouped {
				if k*format.ChunkSize >= len(g) {
					return nil, fmt.Errorf("%w: chunk %d of group %s", ErrNotFound, k, s.Group.Short())
				}
				b = g[k*format.ChunkSize : min((k+1)*format.ChunkSize, len(g))]
				if format.Sum(b) != h {
					return nil, fmt.Errorf("tree: memstore: chunk %d of group %s is not %s", k, s.Group.Short(), h.Short())
				}
			} else if b = m.chunks[h]; b == nil {
				return nil, fmt.Errorf("%w: %s", ErrNotFound, h)
			}
			out = append(out, append([]byte(nil), b...))
			k++
		}
	}
	return out, nil
}

// Fallbacks returns how many spans FetchSpans read by chunk names because
// their group was never stored.
func (m *MemStore) Fallbacks() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fallbacks
}

// Fetch returns a copy of each chunk in order; a missing one fails the
// whole call with ErrNotFound.
func (m *MemStore) Fetch(ctx context.Context, hashes []format.Hash) ([][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fetches++
	m.fetched += len(hashes)
	out := make([][]byte, len(hashes))
	for i, h := range hashes {
		b, ok := m.chunks[h]
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, h)
		}
		out[i] = append([]byte(nil), b...)
	}
	return out, nil
}

// Has reports whether m holds h.
func (m *MemStore) Has(h format.Hash) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.chunks[h]
	return ok
}

// Delete forgets h, as a chunk and as a group, to test missing chunks.
func (m *MemStore) Delete(h format.Hash) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.chunks, h)
	delete(m.groups, h)
}

// Len returns the number of distinct chunks held.
func (m *MemStore) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.chunks)
}

// Puts returns the number of successful Put calls, duplicates included.
func (m *MemStore) Puts() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.puts
}

// Fetches returns the number of Fetch calls.
func (m *MemStore) Fetches() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fetches
}

// Fetched returns the number of hashes asked for over all Fetch calls.
func (m *MemStore) Fetched() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fetched
}
