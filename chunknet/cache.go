package chunknet

import (
	"container/list"
	"sync"

	"github.com/oashare/oashare/index/format"
)

// cache keeps verified chunks (data and tree nodes) in memory, least
// recently used first out, bounded by bytes. Everything in it has been
// checked against its hash, so a hit needs no second check.
type cache struct {
	mu    sync.Mutex
	max   int
	used  int
	ll    *list.List
	items map[format.Hash]*list.Element
}

type cacheEntry struct {
	h    format.Hash
	data []byte
}

func newCache(maxBytes int) *cache {
	return &cache{max: maxBytes, ll: list.New(), items: make(map[format.Hash]*list.Element)}
}

func (c *cache) get(h format.Hash) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[h]; ok {
		c.ll.MoveToFront(e)
		return e.Value.(*cacheEntry).data, true
	}
	return nil, false
}

// has reports whether h is cached, without touching its recency.
func (c *cache) has(h format.Hash) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.items[h]
	return ok
}

// add stores data, which the cache then owns; callers must not modify it.
func (c *cache) add(h format.Hash, data []byte) {
	if c.max <= 0 || len(data) > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[h]; ok {
		c.ll.MoveToFront(e)
		return
	}
	c.items[h] = c.ll.PushFront(&cacheEntry{h, data})
	c.used += len(data) + 64
	for c.used > c.max {
		e := c.ll.Back()
		ce := e.Value.(*cacheEntry)
		c.ll.Remove(e)
		delete(c.items, ce.h)
		c.used -= len(ce.data) + 64
	}
}
