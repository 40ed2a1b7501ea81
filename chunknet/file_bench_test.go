package chunknet

import (
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/index/format"
)

// The file benchmarks move a file as the mount does, through tree.Builder
// and an Uploader (write) and tree.ReadAt (read), on four nodes with 3
// replicas: real Pebble on disk, real TCP on loopback, no chunk cache.

// BenchmarkFileWrite writes a 16 MiB file into the first node, 1 MiB per
// Write as a FUSE write does, and waits until every chunk is on its
// replicas. One op is the whole file, every chunk of it new. cpu-ms/op is
// the CPU time of the process: all four nodes, user and system.
func BenchmarkFileWrite(b *testing.B) {
	nodes := startCluster(b, 4, Config{Replicas: 3, CacheBytes: -1})
	content := randBytes(b, 16<<20)
	b.SetBytes(int64(len(content)))
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for c := 0; c < len(content); c += format.ChunkSize {
			content[c]++ // every chunk, so every group, is new every round
		}
		b.StartTimer()
		up := nodes[0].node.NewUploader(b.Context())
		bl := tree.NewBuilder(b.Context(), up)
		for p := content; len(p) > 0; p = p[1<<20:] {
			if _, err := bl.Write(p[:1<<20]); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := bl.Finish(); err != nil {
			b.Fatal(err)
		}
		if err := up.Wait(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((cpuTime(b)-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op")
}

// cpuTime returns the CPU time this process has used, user and system.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFileRead reads a 16 MiB file on the fourth node, 1 MiB per
// ReadAt as a FUSE read does: about 3/4 of it from the local store, the
// rest from peers. One op is 1 MiB.
func BenchmarkFileRead(b *testing.B) {
	nodes := startCluster(b, 4, Config{Replicas: 3, CacheBytes: -1})
	content := randBytes(b, 16<<20)
	v := writeFile(b, nodes[0].node, content)
	reader := nodes[3].node
	p := make([]byte, 1<<20)
	b.SetBytes(int64(len(p)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		off := int64(i%16) << 20
		if n, err := tree.ReadAt(b.Context(), reader, v, p, off); n != len(p) || (err != nil && err != io.EOF) {
			b.Fatalf("read %d bytes: %v", n, err)
		}
	}
}

// BenchmarkUploaderPutLeaf is the Uploader's cost per data chunk the
// builder hands it (one op is one 512-byte chunk), the group's buffer
// emptied every 256 chunks instead of sent.
func BenchmarkUploaderPutLeaf(b *testing.B) {
	nodes := startCluster(b, 1, Config{Replicas: 1, CacheBytes: -1})
	up := nodes[0].node.NewUploader(b.Context())
	chunk := randBytes(b, format.ChunkSize)
	h := format.Sum(chunk)
	b.SetBytes(format.ChunkSize)
	i := 0
	for b.Loop() {
		if err := up.PutLeaf(b.Context(), h, chunk); err != nil {
			b.Fatal(err)
		}
		if i++; i == format.Fanout {
			up.leaves, i = up.leaves[:0], 0
		}
	}
}
