package fusefs

import (
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkReadPinned reads a 64 MiB file through the mount, the whole
// file per op (every open drops the kernel's cached pages of the file, so
// every read reaches the daemon):
//   - pinned-peers-gone: on peer 2 of a 2-peer cluster with one copy of
//     everything (peer 2 holds about half of it by placement), pinned
//     (chunknet Pin and SetPinned, as oashare pin does), then peer 1
//     stopped: every byte from peer 2's own store;
//   - own: on a node alone, a file it wrote: the speed of its own store,
//     which a pinned file should match.
func BenchmarkReadPinned(b *testing.B) {
	const size = 64 << 20
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		b.Fatal(err)
	}
	b.Run("pinned-peers-gone", func(b *testing.B) {
		peers := startCluster(b, 2, 1)
		if err := os.WriteFile(filepath.Join(peers[0].mnt, "f"), data, 0o644); err != nil {
			b.Fatal(err)
		}
		path := filepath.Join(peers[1].mnt, "f")
		waitFor(b, 10*time.Second, "the file on peer 2", func() bool {
			st, err := os.Stat(path)
			return err == nil && st.Size() == size
		})
		de, ok, err := peers[1].db.LookupDirent(1, "f")
		if err != nil || !ok {
			b.Fatalf("lookup: %v %v", ok, err)
		}
		ino, _, _ := peers[1].db.GetInode(de.Child)
		v := versionOf(&ino)
		if err := peers[1].node.Pin(context.Background(), v, nil); err != nil {
			b.Fatal(err)
		}
		items, err := peers[1].node.VersionItems(context.Background(), v)
		if err != nil {
			b.Fatal(err)
		}
		peers[1].node.SetPinned(items)
		peers[0].stop(b)
		waitFor(b, 10*time.Second, "peer 2 alone", func() bool { return len(peers[1].node.Peers()) == 0 })
		readWhole(b, path, size)
	})
	b.Run("own", func(b *testing.B) {
		peers := startCluster(b, 1, 1)
		path := filepath.Join(peers[0].mnt, "f")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			b.Fatal(err)
		}
		readWhole(b, path, size)
	})
}

// readWhole reads the file at path, size bytes, whole per op in 1 MiB
// reads as cat and cp do, and fails on a short read.
func readWhole(b *testing.B, path string, size int64) {
	buf := make([]byte, 1<<20)
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
		f.Close()
		if err != nil || n != size {
			b.Fatalf("read %d bytes of %d: %v", n, size, err)
		}
	}
}
