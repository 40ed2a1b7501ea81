package fusefs

import (
	"context"
	"crypto/rand"
	"testing"

	"github.com/oashare/oashare/chunknet/tree"
)

// BenchmarkSmallChangeBigFile commits a 4 KiB write into a 64 MiB file,
// as an editor or a database does, on one real node and index (no mount):
// one op is one write and commit. Only the changed group should cost
// anything: stored-B/op is what each op adds to the store (every replica
// stores as much), the amplification of a small write.
func BenchmarkSmallChangeBigFile(b *testing.B) {
	node := loneNode(b)
	ctx := context.Background()
	const size = 64 << 20
	c := newContent(node, tree.Version{}, 0)
	big := make([]byte, size)
	rand.Read(big)
	if err := c.write(ctx, 0, big); err != nil {
		b.Fatal(err)
	}
	if _, err := c.commit(ctx); err != nil {
		b.Fatal(err)
	}
	p := make([]byte, 4096)
	_, before := node.DB().ChunkStats()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rand.Read(p)
		if err := c.write(ctx, uint64(i*7919*4096)%(size-4096), p); err != nil {
			b.Fatal(err)
		}
		if _, err := c.commit(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	_, after := node.DB().ChunkStats()
	b.ReportMetric(float64(after-before)/float64(b.N), "stored-B/op")
}
