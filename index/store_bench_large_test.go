package index

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/oashare/oashare/index/format"
)

// The *Large benchmarks share one index on the real file system, filled
// with largeChunks random 512-byte chunks (512 MiB of chunk bytes, about
// what a node holds after a few large copies), built once per test process
// in a temporary directory that TestMain removes.

const (
	largeChunks    = 1 << 20
	largeChunkSize = 512
	// largeFillGroup is how many chunks one PutChunks call of the fill
	// stores; the benchmarks themselves use groups of 256.
	largeFillGroup = 8192
)

var large struct {
	once   sync.Once
	dir    string
	db     *DB
	hashes []format.Hash // hashes[i] is chunk i, in the order they were written
	err    error
	next   atomic.Int64 // number of the next chunk never stored
}

func TestMain(m *testing.M) {
	code := m.Run()
	if large.db != nil {
		large.db.Close()
	}
	if large.dir != "" {
		os.RemoveAll(large.dir)
	}
	os.Exit(code)
}

// largeChunk makes chunk number i: its number in the first 8 bytes, the
// rest zero.
func largeChunk(i int64) Chunk {
	data := make([]byte, largeChunkSize)
	binary.BigEndian.PutUint64(data, uint64(i))
	return Chunk{Hash: format.Sum(data), Data: data}
}

// largeDB returns the shared pre-filled index, building it on first use.
func largeDB(b *testing.B) *DB {
	b.Helper()
	large.once.Do(func() {
		start := time.Now()
		large.dir, large.err = os.MkdirTemp("", "index-bench-")
		if large.err != nil {
			return
		}
		large.db, large.err = Open(large.dir, Options{FS: vfs.Default, Logger: quietLogger})
		if large.err != nil {
			return
		}
		large.hashes = make([]format.Hash, largeChunks)
		group := make([]Chunk, 0, largeFillGroup)
		for i := int64(0); i < largeChunks; i++ {
			c := largeChunk(i)
			large.hashes[i] = c.Hash
			group = append(group, c)
			if len(group) == cap(group) || i == largeChunks-1 {
				if _, large.err = large.db.PutChunks(group); large.err != nil {
					return
				}
				group = group[:0]
			}
		}
		large.next.Store(largeChunks)
		waitCompactions(large.db)
		cl, pf := large.db.DiskUsage()
		fmt.Fprintf(os.Stderr, "large index: %d chunks built in %v; chunk log %d B, pebble %d B, %.1f B of index per chunk, total %.4f× the chunk bytes\n",
			largeChunks, time.Since(start).Round(time.Millisecond), cl, pf,
			float64(pf)/largeChunks, float64(cl+pf)/float64(largeChunks*largeChunkSize))
		if os.Getenv("INDEX_BENCH_METRICS") != "" {
			fmt.Fprint(os.Stderr, large.db.pdb.Metrics())
		}
	})
	if large.err != nil {
		b.Fatal(large.err)
	}
	return large.db
}

// waitCompactions waits until Pebble has had no compaction running for a
// few polls, so that background work of the fill does not land in a
// measurement.
func waitCompactions(db *DB) {
	quiet := 0
	for deadline := time.Now().Add(2 * time.Minute); quiet < 5 && time.Now().Before(deadline); {
		if db.pdb.Metrics().Compact.NumInProgress == 0 {
			quiet++
		} else {
			quiet = 0
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BenchmarkPutChunksLarge stores new chunks, 256 per call, into the large
// index: the cost per chunk of the existence check, the chunk log append
// and the index write, with one sync per call.
func BenchmarkPutChunksLarge(b *testing.B) {
	const group = 256
	db := largeDB(b)
	b.SetBytes(largeChunkSize)
	b.ReportAllocs()
	b.ResetTimer()
	chunks := make([]Chunk, 0, group)
	for done := 0; done < b.N; {
		n := min(group, b.N-done)
		b.StopTimer() // making and hashing chunks is the caller's cost
		chunks = chunks[:0]
		first := large.next.Add(int64(n)) - int64(n)
		for i := int64(0); i < int64(n); i++ {
			chunks = append(chunks, largeChunk(first+i))
		}
		b.StartTimer()
		if added, err := db.PutChunks(chunks); err != nil || added != n {
			b.Fatalf("PutChunks = %d, %v; want %d", added, err, n)
		}
		done += n
	}
}

// BenchmarkPutChunksLargeStored offers chunks the large index already
// holds, 256 per call: the existence check alone.
func BenchmarkPutChunksLargeStored(b *testing.B) {
	const group = 256
	db := largeDB(b)
	rng := rand.New(rand.NewPCG(1, 2))
	b.SetBytes(largeChunkSize)
	b.ReportAllocs()
	b.ResetTimer()
	chunks := make([]Chunk, group)
	for done := 0; done < b.N; {
		n := min(group, b.N-done)
		for i := range chunks[:n] {
			chunks[i] = Chunk{Hash: large.hashes[rng.IntN(largeChunks)], Data: make([]byte, largeChunkSize)}
		}
		if added, err := db.PutChunks(chunks[:n]); err != nil || added != 0 {
			b.Fatalf("PutChunks = %d, %v; want 0", added, err)
		}
		done += n
	}
}

// BenchmarkGetChunkLarge reads chunks of the large index in random order.
func BenchmarkGetChunkLarge(b *testing.B) {
	db := largeDB(b)
	rng := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, 0, format.MaxChunkData)
	b.SetBytes(largeChunkSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		data, ok, err := db.GetChunk(large.hashes[rng.IntN(largeChunks)], buf)
		if err != nil || !ok || len(data) != largeChunkSize {
			b.Fatalf("GetChunk = %d bytes, %v, %v", len(data), ok, err)
		}
	}
}

// BenchmarkGetChunkLargeSeq reads chunks of the large index one by one in
// the order they were written, as a sequential read of a file does.
func BenchmarkGetChunkLargeSeq(b *testing.B) {
	db := largeDB(b)
	start := rand.IntN(largeChunks)
	buf := make([]byte, 0, format.MaxChunkData)
	b.SetBytes(largeChunkSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		data, ok, err := db.GetChunk(large.hashes[(start+i)%largeChunks], buf)
		if err != nil || !ok || len(data) != largeChunkSize {
			b.Fatalf("GetChunk = %d bytes, %v, %v", len(data), ok, err)
		}
	}
}

// BenchmarkGetChunksLargeSeq reads the chunks of the large index with
// GetChunks, 256 per call in the order they were written, as a sequential
// read of a file does.
func BenchmarkGetChunksLargeSeq(b *testing.B) {
	benchGetChunksLarge(b, func(start, i int) int { return (start + i) % largeChunks })
}

// BenchmarkGetChunksLargeSparse reads every third chunk of the large index
// in write order, 256 per call: what a peer serves to a reader that gets
// the other chunks of the file from other replicas.
func BenchmarkGetChunksLargeSparse(b *testing.B) {
	benchGetChunksLarge(b, func(start, i int) int { return (start + 3*i) % largeChunks })
}

// BenchmarkGetChunksLargeRandom reads chunks of the large index with
// GetChunks, 256 per call in random order: every guess fails.
func BenchmarkGetChunksLargeRandom(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	benchGetChunksLarge(b, func(int, int) int { return rng.IntN(largeChunks) })
}

func benchGetChunksLarge(b *testing.B, pick func(start, i int) int) {
	const group = 256
	db := largeDB(b)
	start := rand.IntN(largeChunks)
	hashes := make([]format.Hash, group)
	b.SetBytes(largeChunkSize)
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(group, b.N-done)
		for i := range hashes[:n] {
			hashes[i] = large.hashes[pick(start, done+i)]
		}
		out, err := db.GetChunks(hashes[:n])
		if err != nil {
			b.Fatal(err)
		}
		for i, d := range out {
			if len(d) != largeChunkSize {
				b.Fatalf("chunk %d: %d bytes", i, len(d))
			}
		}
		done += n
	}
}
