package tree

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/oashare/oashare/index"
)

// ErrNotFound is returned by MemStore.Fetch for a hash it does not hold.
var ErrNotFound = errors.New("tree: chunk not found")

// MemStore is an in-memory chunk store for tests: a Sink that verifies
// each chunk against its hash and keeps a copy, and a Fetcher that returns
// copies. It counts Put and Fetch calls. It is safe for concurrent use; the
// zero value is ready.
type MemStore struct {
	mu      sync.Mutex
	chunks  map[index.Hash][]byte
	puts    int
	fetches int
	fetched int
}

var (
	_ Sink    = (*MemStore)(nil)
	_ Fetcher = (*MemStore)(nil)
)

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore { return &MemStore{} }

// Put stores a copy of data under h after checking that h is its hash.
func (m *MemStore) Put(ctx context.Context, h index.Hash, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if got := index.Sum(data); got != h {
		return fmt.Errorf("tree: memstore: put %s: bytes hash to %s", h.Short(), got.Short())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.puts++
	if m.chunks == nil {
		m.chunks = make(map[index.Hash][]byte)
	}
	if _, ok := m.chunks[h]; !ok {
		m.chunks[h] = append([]byte(nil), data...)
	}
	return nil
}

// Fetch returns a copy of each chunk in order; a missing one fails the
// whole call with ErrNotFound.
func (m *MemStore) Fetch(ctx context.Context, hashes []index.Hash) ([][]byte, error) {
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
func (m *MemStore) Has(h index.Hash) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.chunks[h]
	return ok
}

// Delete forgets h, to test missing chunks.
func (m *MemStore) Delete(h index.Hash) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.chunks, h)
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
