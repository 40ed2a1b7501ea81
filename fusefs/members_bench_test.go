package fusefs

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// BenchmarkMembersCost measures what members only costs: the same
// workloads on two 4-peer clusters (replicas 3, real FUSE mounts, TCP on
// loopback) of today's code, one of plain TCP between anonymous nodes,
// one of members of a network (keys, signed records, TLS with pinned keys
// and sealed records between them). The ratio of the two is the cost of
// encryption and authentication alone, which make bench's comparison
// with an older build cannot show apart from everything else that
// changed since. Both clusters stay up and take turns, workload by
// workload, in membersRounds rounds (names …#01, #02), so that a moment
// when the machine is slower slows both alike; which of the two goes
// first alternates from round to round, and before each run the page
// cache is written out and the process waits to be idle (settle). Every
// file holds bytes the share has not seen (a write of stored bytes stores
// nothing). Besides ns/op, each run reports cpu-ms/op: the CPU of the
// whole process, every peer of both clusters, per op.
//
//   - write: a 64 MiB file into peer 1 per op, 1 MiB writes, fsync;
//   - cold-read: a 64 MiB file written on peer 1, read whole on peer 4
//     per op, no chunk cache in any node and no kernel cache of the file
//     (every open drops it), so what peer 4 lacks comes from its peers
//     every time, as after drop_caches;
//   - tar-x-small: one file per op as tar x makes it, 0-8 KiB.
func BenchmarkMembersCost(b *testing.B) {
	clusters := []struct {
		mode string
		w    *membersWorkloads
	}{
		{"plain", newMembersWorkloads(startClusterOpts(b, 4, clusterOptions{replicas: 3, cacheBytes: -1}))},
		{"members", newMembersWorkloads(startClusterOpts(b, 4, clusterOptions{replicas: 3, members: true, cacheBytes: -1}))},
	}
	workloads := []struct {
		name string
		run  func(*membersWorkloads, *testing.B)
	}{
		{"write", (*membersWorkloads).write},
		{"cold-read", (*membersWorkloads).coldRead},
		{"tar-x-small", (*membersWorkloads).tarXSmall},
	}
	for round := range membersRounds {
		for _, wl := range workloads {
			for i := range clusters {
				c := clusters[(i+round)%len(clusters)]
				settle(b)
				b.Run(wl.name+"/"+c.mode, func(b *testing.B) {
					cpu := cpuTime()
					wl.run(c.w, b)
					// All peers of both clusters share this process: the
					// CPU it used is what the run cost the machine.
					b.ReportMetric((cpuTime()-cpu).Seconds()*1e3/float64(b.N), "cpu-ms/op")
				})
			}
		}
	}
}

// settle writes out what the last run left in the page cache and waits
// until the process, every peer of both clusters, has been idle for a
// moment, so that the work one run leaves behind (dirty pages, copies
// still moving, passes over items no longer young) is not charged to the
// next.
func settle(b *testing.B) {
	start := time.Now()
	syscall.Sync()
	runtime.GC()
	// Items a run stored are looked at once more when they stop being
	// young (chunknet's Config.UploadGrace, 10 s by default): that work
	// belongs to the run before, not to the next.
	time.Sleep(time.Until(start.Add(settleGrace)))
	for time.Since(start) < 30*time.Second {
		before := cpuTime()
		time.Sleep(500 * time.Millisecond)
		if d := cpuTime() - before; d < 20*time.Millisecond {
			b.Logf("settled in %v", time.Since(start).Round(time.Millisecond))
			return
		}
	}
	b.Logf("not idle after %v", time.Since(start).Round(time.Millisecond))
}

// settleGrace outlasts chunknet's default UploadGrace.
const settleGrace = 11 * time.Second

// cpuTime is the CPU time the process has used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// membersRounds is how many times each workload runs on each cluster.
const membersRounds = 3

const membersFileSize = 64 << 20

// membersWorkloads are the workloads of BenchmarkMembersCost on one
// cluster; every run writes into names of its own.
type membersWorkloads struct {
	peers []*testPeer
	data  []byte
	runs  int
	gen   uint64 // times data was made new
	next  int    // where the next small file's bytes start in data
}

// fresh makes every 512-byte chunk of data new, so that what the next
// write stores is not stored already (a write of bytes the share holds
// stores nothing new: a different workload).
func (w *membersWorkloads) fresh(b *testing.B) {
	b.StopTimer()
	w.gen++
	for off := 0; off < len(w.data); off += 512 {
		binary.LittleEndian.PutUint64(w.data[off:], w.gen)
	}
	b.StartTimer()
}

// small returns the bytes of the next small file: n bytes from a place
// in data no small file has started at since data was last made new.
func (w *membersWorkloads) small(b *testing.B, n int) []byte {
	const stride = 8191 // not a multiple of 512: each file's chunks differ
	if w.next+n > len(w.data) {
		w.fresh(b)
		w.next = 0
	}
	p := w.data[w.next : w.next+n]
	w.next += stride
	return p
}

func newMembersWorkloads(peers []*testPeer) *membersWorkloads {
	data := make([]byte, membersFileSize)
	rand.NewChaCha8([32]byte{7}).Read(data)
	return &membersWorkloads{peers: peers, data: data}
}

func (w *membersWorkloads) write(b *testing.B) {
	w.runs++
	b.SetBytes(membersFileSize)
	for i := range b.N {
		w.fresh(b)
		f, err := os.Create(filepath.Join(w.peers[0].mnt, fmt.Sprintf("w%d-%d", w.runs, i)))
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < membersFileSize; off += 1 << 20 {
			if _, err := f.Write(w.data[off : off+1<<20]); err != nil {
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
}

func (w *membersWorkloads) coldRead(b *testing.B) {
	w.runs++
	name := fmt.Sprintf("r%d", w.runs)
	w.fresh(b)
	if err := os.WriteFile(filepath.Join(w.peers[0].mnt, name), w.data, 0o644); err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(w.peers[3].mnt, name)
	waitFor(b, 30*time.Second, "the file on peer 4", func() bool {
		st, err := os.Stat(path)
		return err == nil && st.Size() == membersFileSize
	})
	readWhole(b, path, membersFileSize)
}

func (w *membersWorkloads) tarXSmall(b *testing.B) {
	w.runs++
	dir := filepath.Join(w.peers[0].mnt, fmt.Sprintf("small%d", w.runs))
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
		if _, err := f.Write(w.small(b, sizes.IntN(8193))); err != nil {
			b.Fatal(err)
		}
		tarAttrs(b, f, mt, 0, 0, 0o644)
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
