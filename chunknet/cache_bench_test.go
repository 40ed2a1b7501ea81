package chunknet

import (
	"encoding/binary"
	"testing"

	"github.com/oashare/oashare/index/format"
)

// BenchmarkCacheChurn is a sequential read's use of the chunk cache: every
// chunk is new, added by read-ahead and then got by the read, while the
// oldest are evicted (32 MiB of 512-byte chunks, as a node's default).
func BenchmarkCacheChurn(b *testing.B) {
	c := newCache(32 << 20)
	data := make([]byte, 512)
	var h format.Hash
	b.SetBytes(512)
	for i := 0; i < b.N; i++ {
		binary.LittleEndian.PutUint64(h[:], uint64(i)*0x9E3779B97F4A7C15)
		binary.LittleEndian.PutUint64(h[8:], uint64(i))
		c.add(h, data)
		if _, ok := c.get(h); !ok {
			b.Fatal("chunk just added is missing")
		}
	}
}

// The cache stays within its byte bound and keeps the newest chunks
// through heavy churn (its map is rebuilt along the way).
func TestCacheChurnBound(t *testing.T) {
	const max = 1 << 20
	c := newCache(max)
	data := make([]byte, 512)
	key := func(i int) format.Hash {
		var h format.Hash
		binary.LittleEndian.PutUint64(h[:], uint64(i)*0x9E3779B97F4A7C15)
		binary.LittleEndian.PutUint64(h[8:], uint64(i))
		return h
	}
	const n = 100000
	for i := 0; i < n; i++ {
		c.add(key(i), data)
		if c.used > max {
			t.Fatalf("after %d adds the cache holds %d bytes, bound %d", i+1, c.used, max)
		}
	}
	if _, ok := c.get(key(n - 1)); !ok {
		t.Error("the newest chunk was evicted")
	}
	if _, ok := c.get(key(0)); ok {
		t.Error("the oldest chunk survived 100000 adds into a 1 MiB cache")
	}
	if len(c.items) != c.ll.Len() {
		t.Errorf("map holds %d entries, list %d", len(c.items), c.ll.Len())
	}
}
