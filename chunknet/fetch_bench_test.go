package chunknet

import (
	"testing"
)

// BenchmarkFetchSequential reads a 16 MiB file's chunks in file order, 1 MiB
// (2048 chunks) per Fetch as a FUSE read does, on the fourth of four nodes
// with 3 replicas (real Pebble on disk, real TCP on loopback, no chunk
// cache): about 3/4 of the chunks come from the local store, the rest from
// peers.
func BenchmarkFetchSequential(b *testing.B) {
	benchFetchSequential(b, -1)
}

// BenchmarkFetchSequentialCached is BenchmarkFetchSequential with an
// 8 MiB chunk cache, which the 16 MiB file streams through as a large
// file streams through the default 32 MiB one.
func BenchmarkFetchSequentialCached(b *testing.B) {
	benchFetchSequential(b, 8<<20)
}

func benchFetchSequential(b *testing.B, cacheBytes int) {
	const perRead = 2048
	nodes := startCluster(b, 4, Config{Replicas: 3, CacheBytes: cacheBytes})
	chunks := randChunks(b, 16<<20/512, 512)
	if err := upload(b, nodes[0].node, chunks); err != nil {
		b.Fatal(err)
	}
	hashes := hashesOf(chunks)
	reader := nodes[3].node
	b.SetBytes(perRead * 512)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		from := (i * perRead) % len(hashes)
		got, err := reader.Fetch(b.Context(), hashes[from:from+perRead])
		if err != nil {
			b.Fatal(err)
		}
		if len(got) != perRead || len(got[0]) != 512 {
			b.Fatalf("got %d chunks", len(got))
		}
	}
}
