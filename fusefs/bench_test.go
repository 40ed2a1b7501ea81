package fusefs

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkTarLikeSmallFiles does to each new file what tar x does: create
// it exclusively, write 2 KiB, set its times, owner and mode through the
// descriptor, close it. On a 3-peer cluster with 2 replicas, real FUSE
// mounts and real TCP on loopback; one op is one file.
func BenchmarkTarLikeSmallFiles(b *testing.B) {
	peers := startCluster(b, 3, 2)
	dir := filepath.Join(peers[0].mnt, "bench")
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 2048)
	mt := time.Unix(1_700_000_000, 0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			b.Fatal(err)
		}
		tarAttrs(b, f, mt, 0, 0, 0o644)
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadSmallFiles reads whole small files (2 KiB) on another peer
// than the one that wrote them, as `cat` does: open, read, close. One op
// is one file. Every open drops the kernel's cached pages of the file (no
// FOPEN_KEEP_CACHE), so every read reaches the daemon.
func BenchmarkReadSmallFiles(b *testing.B) {
	peers := startCluster(b, 3, 2)
	const files = 200
	dir := filepath.Join(peers[0].mnt, "small")
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 2048)
	for i := 0; i < files; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	other := filepath.Join(peers[1].mnt, "small")
	waitFor(b, 10*time.Second, "the files on peer 2", func() bool {
		ents, err := os.ReadDir(other)
		return err == nil && len(ents) == files
	})
	buf := make([]byte, 8192)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, err := os.Open(filepath.Join(other, fmt.Sprintf("f%d", i%files)))
		if err != nil {
			b.Fatal(err)
		}
		n, err := f.Read(buf)
		if err != nil || n != len(data) {
			b.Fatalf("read %d bytes: %v", n, err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTarLikeSteps is BenchmarkTarLikeSmallFiles timed step by step
// (create, write, utimes, chown, chmod, close: each reported in µs per
// file), on three clusters of the same code: anonymous nodes on plain TCP
// (plain), members (members), and plain without extended attributes
// (plain-noxattrs). It shows where the time of a small file goes and what
// each feature adds to it: with extended attributes the kernel asks for
// security.capability before the first write of a file and before every
// chown (one more round trip each); members add the signature of each
// record and sealed records.
func BenchmarkTarLikeSteps(b *testing.B) {
	for _, c := range []struct {
		name string
		o    clusterOptions
	}{
		{"plain", clusterOptions{replicas: 2}},
		{"members", clusterOptions{replicas: 2, members: true}},
		{"plain-noxattrs", clusterOptions{replicas: 2, noXattrs: true}},
	} {
		b.Run(c.name, func(b *testing.B) { tarLikeSteps(b, startClusterOpts(b, 3, c.o)) })
	}
}

func tarLikeSteps(b *testing.B, peers []*testPeer) {
	dir := filepath.Join(peers[0].mnt, "bench")
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 2048)
	mt := unix.NsecToTimespec(time.Unix(1_700_000_000, 0).UnixNano())
	steps := []string{"create", "write", "utimes", "chown", "chmod", "close"}
	var spent [6]time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var at [7]time.Time
		at[0] = time.Now()
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		at[1] = time.Now()
		if _, err := f.Write(data); err != nil {
			b.Fatal(err)
		}
		at[2] = time.Now()
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, f.Name(), []unix.Timespec{{Nsec: unix.UTIME_OMIT}, mt}, 0); err != nil {
			b.Fatal(err)
		}
		at[3] = time.Now()
		if err := f.Chown(0, 0); err != nil {
			b.Fatal(err)
		}
		at[4] = time.Now()
		if err := f.Chmod(0o644); err != nil {
			b.Fatal(err)
		}
		at[5] = time.Now()
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		at[6] = time.Now()
		for k := range spent {
			spent[k] += at[k+1].Sub(at[k])
		}
	}
	b.StopTimer()
	for k, d := range spent {
		b.ReportMetric(float64(d.Microseconds())/float64(b.N), steps[k]+"-µs/op")
	}
}
