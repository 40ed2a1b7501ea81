package fusefs

import (
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// dataDirBytes returns what peer p's data takes on disk: the chunk log's
// allocated blocks and Pebble's files.
func dataDirBytes(p *testPeer) int64 {
	log, pebble := p.db.DiskUsage()
	return log + pebble
}

// BenchmarkRewriteReclaim rewrites a tree of files 20 times on a 3-peer
// cluster (2 replicas, --reclaim-after 1s, --keep-versions 0) and reports
// the bytes the data dirs take as a ratio to the live bytes times the
// replicas: right after the last round (before reclaim) and once
// garbage collection and reclaim are done (the figure steady for 5 s),
// with the seconds it took to come within 1.15 of it (0: never, in 2
// minutes). One op is the whole run.
//
//	go test -run XXX -bench RewriteReclaim -benchtime 1x ./fusefs
func BenchmarkRewriteReclaim(b *testing.B) {
	const files, size, rounds = 16, 2 << 20, 20
	for i := 0; i < b.N; i++ {
		peers := startClusterOpts(b, 3, clusterOptions{replicas: 2, reclaimAfter: time.Second, keepVersions: -1})
		dir := filepath.Join(peers[0].mnt, "tree")
		if err := os.Mkdir(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, size)
		for range rounds {
			for f := range files {
				io.ReadFull(rand.Reader, buf)
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", f)), buf, 0o644); err != nil {
					b.Fatal(err)
				}
			}
		}
		live := float64(files * size * 2)
		disk := func() float64 {
			var n int64
			for _, p := range peers {
				n += dataDirBytes(p)
			}
			return float64(n)
		}
		before := disk()
		start := time.Now()
		var after float64
		var took time.Duration
		for steady := 0; steady < 5 && time.Since(start) < 2*time.Minute; {
			time.Sleep(time.Second)
			now := disk()
			if now == after {
				steady++
			} else {
				steady = 0
			}
			after = now
			if took == 0 && after <= 1.15*live {
				took = time.Since(start)
			}
		}
		b.ReportMetric(before/live, "disk/live-before")
		b.ReportMetric(after/live, "disk/live-after")
		b.ReportMetric(took.Seconds(), "s-to-1.15x")
		for _, p := range peers {
			p.stop(b)
		}
	}
}
