package chunknet

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/oashare/oashare/index"
)

// benchFiles is the size of the synthetic namespace of the join
// benchmarks: OASHARE_BENCH_FILES, or 1 000 000 (10 000 with -short).
func benchFiles(b *testing.B, def int) int {
	if s := os.Getenv("OASHARE_BENCH_FILES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			b.Fatalf("OASHARE_BENCH_FILES=%q: want a positive whole number", s)
		}
		return n
	}
	if testing.Short() {
		return 10_000
	}
	return def
}

// fillNamespace publishes files files on n, perRecord of them per record
// (a file is an inode and an entry), in 100 directories.
func fillNamespace(b *testing.B, n *Node, files, perRecord int) {
	b.Helper()
	dirs := uint64(100)
	var ops []index.Op
	for d := range dirs {
		id := 1<<40 + d
		ops = append(ops, index.Op{Inode: &index.Inode{ID: id, Type: index.TypeDir, Mode: 0o755}},
			index.Op{Dirent: &index.Dirent{Parent: index.RootID, Name: fmt.Sprint("d", d), Child: id, Type: index.TypeDir}})
	}
	if _, err := n.Publish(ops, SyncBatched); err != nil {
		b.Fatal(err)
	}
	ops = ops[:0]
	for i := range files {
		id := uint64(1<<41 + i)
		ops = append(ops, index.Op{Inode: &index.Inode{ID: id, Type: index.TypeFile, Mode: 0o644, Size: uint64(i)}},
			index.Op{Dirent: &index.Dirent{Parent: 1<<40 + uint64(i)%dirs, Name: fmt.Sprint("file-", i), Child: id, Type: index.TypeFile}})
		if len(ops) >= 2*perRecord || i == files-1 {
			if _, err := n.Publish(ops, SyncBatched); err != nil {
				b.Fatal(err)
			}
			ops = ops[:0]
		}
	}
	if err := n.Sync(); err != nil {
		b.Fatal(err)
	}
}

// joinTime starts a fresh node, connects it to src and returns how long
// it takes to hold src's whole namespace.
func joinTime(b *testing.B, src *testNode, cfg Config) time.Duration {
	b.Helper()
	want := src.db.VersionVector()
	start := time.Now()
	c := startNode(b, cfg)
	connectAll(b, src, c)
	waitFor(b, 30*time.Minute, "the joiner to hold the namespace", func() bool {
		got := c.db.VersionVector()
		for o, s := range want {
			if got[o] < s {
				return false
			}
		}
		return true
	})
	d := time.Since(start)
	c.stop()
	return d
}

// BenchmarkJoinFromSnapshot: a node joins a share of benchFiles files
// whose history was pruned: it loads the namespace as a snapshot over
// loopback TCP into its own Pebble index. Reported: seconds per join and
// files per second.
func BenchmarkJoinFromSnapshot(b *testing.B) {
	files := benchFiles(b, 1_000_000)
	cfg := Config{ReclaimAfter: time.Hour}
	src := startNode(b, cfg)
	t0 := time.Now()
	fillNamespace(b, src.node, files, 500)
	if _, err := src.db.Prune(src.db.VersionVector(), time.Now(), nil); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d files published and their log pruned in %v", files, time.Since(t0).Round(time.Millisecond))
	reportJoins(b, src, cfg, files)
}

// BenchmarkJoinByReplay: the same join when nothing was pruned and the
// history is one record per file: the joiner applies every record.
func BenchmarkJoinByReplay(b *testing.B) {
	files := benchFiles(b, 100_000)
	cfg := Config{ReclaimAfter: time.Hour}
	src := startNode(b, cfg)
	fillNamespace(b, src.node, files, 1)
	reportJoins(b, src, cfg, files)
}

// reportJoins times b.N joins of src's namespace of files files.
func reportJoins(b *testing.B, src *testNode, cfg Config, files int) {
	b.ResetTimer()
	var total time.Duration
	for range b.N {
		total += joinTime(b, src, cfg)
	}
	b.StopTimer()
	s := total.Seconds() / float64(b.N)
	b.ReportMetric(s, "s/join")
	b.ReportMetric(float64(files)/s, "files/s")
}
