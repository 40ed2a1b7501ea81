package fusefs

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkMembersCost measures what members only costs: the same
// workloads on two 4-peer clusters (replicas 3, real FUSE mounts, TCP on
// loopback) of today's code, one of plain TCP between anonymous nodes,
// one of members of a network (keys, signed records, TLS with pinned keys
// and sealed records between them), one after the other in one process.
// The ratio of the two is the cost of encryption and authentication
// alone, which make bench's comparison with an older build cannot show
// apart from everything else that changed since.
//
//   - write: a 64 MiB file into peer 1 per op, 1 MiB writes, fsync;
//   - cold-read: a 64 MiB file written on peer 1, read whole on peer 4
//     per op, no chunk cache in any node and no kernel cache of the file
//     (every open drops it), so what peer 4 lacks comes from its peers
//     every time, as after drop_caches;
//   - tar-x-small: one file per op as tar x makes it, 0-8 KiB.
func BenchmarkMembersCost(b *testing.B) {
	for _, mode := range []struct {
		name    string
		members bool
	}{{"plain", false}, {"members", true}} {
		b.Run(mode.name, func(b *testing.B) {
			peers := startClusterOpts(b, 4, clusterOptions{replicas: 3, members: mode.members, cacheBytes: -1})
			benchMembersWorkloads(b, peers)
		})
	}
}

func benchMembersWorkloads(b *testing.B, peers []*testPeer) {
	const size = 64 << 20
	data := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{7})
	rng.Read(data)
	runs := 0 // every run of a workload writes into names of its own
	b.Run("write", func(b *testing.B) {
		runs++
		b.SetBytes(size)
		for i := range b.N {
			f, err := os.Create(filepath.Join(peers[0].mnt, fmt.Sprintf("w%d-%d", runs, i)))
			if err != nil {
				b.Fatal(err)
			}
			for off := 0; off < size; off += 1 << 20 {
				if _, err := f.Write(data[off : off+1<<20]); err != nil {
					b.Fatal(err)
				}
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			if err := f.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cold-read", func(b *testing.B) {
		runs++
		name := fmt.Sprintf("r%d", runs)
		if err := os.WriteFile(filepath.Join(peers[0].mnt, name), data, 0o644); err != nil {
			b.Fatal(err)
		}
		path := filepath.Join(peers[3].mnt, name)
		waitFor(b, 30*time.Second, "the file on peer 4", func() bool {
			st, err := os.Stat(path)
			return err == nil && st.Size() == size
		})
		readWhole(b, path, size)
	})
	b.Run("tar-x-small", func(b *testing.B) {
		runs++
		dir := filepath.Join(peers[0].mnt, fmt.Sprintf("small%d", runs))
		for d := range 20 {
			if err := os.MkdirAll(filepath.Join(dir, fmt.Sprint(d)), 0o755); err != nil {
				b.Fatal(err)
			}
		}
		sizes := rand.New(rand.NewPCG(1, 2))
		mt := time.Unix(1_700_000_000, 0)
		b.ResetTimer()
		for i := range b.N {
			path := filepath.Join(dir, fmt.Sprint(i%20), fmt.Sprint(i))
			f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := f.Write(data[:sizes.IntN(8193)]); err != nil {
				b.Fatal(err)
			}
			tarAttrs(b, f, mt, 0, 0, 0o644)
			if err := f.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
