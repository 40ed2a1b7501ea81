package fusefs

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
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
