package fusefs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oashare/oashare/chunknet/tree"
)

// TestLocalDiskBehaviour checks behaviours programs rely on that the
// go-fuse suite does not cover, across two peers.
func TestLocalDiskBehaviour(t *testing.T) {
	peers := startCluster(t, 2, 2)
	a, b := peers[0].mnt, peers[1].mnt
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	t.Run("append", func(t *testing.T) {
		p := filepath.Join(a, "log")
		for _, line := range []string{"one\n", "two\n", "three\n"} {
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
			must(err)
			_, err = f.WriteString(line)
			must(err)
			must(f.Close())
		}
		waitContent(t, filepath.Join(b, "log"), []byte("one\ntwo\nthree\n"))
	})

	t.Run("names", func(t *testing.T) {
		long := strings.Repeat("é", 127) + "x" // 255 bytes of UTF-8
		must(os.WriteFile(filepath.Join(a, long), []byte("long"), 0o644))
		waitContent(t, filepath.Join(b, long), []byte("long"))
		err := os.WriteFile(filepath.Join(a, long+"y"), nil, 0o644)
		if !errors.Is(err, syscall.ENAMETOOLONG) {
			t.Errorf("256-byte name: %v, want ENAMETOOLONG", err)
		}
		for _, n := range []string{"日本語のファイル", "emoji-😀", "sp ace", "a\tb", "-dash"} {
			must(os.WriteFile(filepath.Join(a, n), []byte(n), 0o644))
			waitContent(t, filepath.Join(b, n), []byte(n))
		}
	})

	t.Run("deep-path", func(t *testing.T) {
		// Close to PATH_MAX (4096) below the mount: 30 levels of 120 bytes.
		seg := strings.Repeat("d", 120)
		rel := ""
		for i := 0; i < 30; i++ {
			rel = filepath.Join(rel, seg)
		}
		// Create level by level with *at calls: the full path may pass
		// PATH_MAX together with the mount's own path.
		dir, err := syscall.Open(a, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		must(err)
		for i := 0; i < 30; i++ {
			must(syscall.Mkdirat(dir, seg, 0o755))
			next, err := syscall.Openat(dir, seg, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
			must(err)
			syscall.Close(dir)
			dir = next
		}
		fd, err := syscall.Openat(dir, "leaf", syscall.O_WRONLY|syscall.O_CREAT, 0o644)
		must(err)
		_, err = syscall.Write(fd, []byte("deep"))
		must(err)
		must(syscall.Close(fd))
		syscall.Close(dir)
		waitFor(t, 5*time.Second, "the deep file on peer 2", func() bool {
			dir, err := syscall.Open(b, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
			if err != nil {
				return false
			}
			defer func() { syscall.Close(dir) }()
			for i := 0; i < 30; i++ {
				next, err := syscall.Openat(dir, seg, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
				if err != nil {
					return false
				}
				syscall.Close(dir)
				dir = next
			}
			fd, err := syscall.Openat(dir, "leaf", syscall.O_RDONLY, 0)
			if err != nil {
				return false
			}
			defer syscall.Close(fd)
			buf := make([]byte, 16)
			n, _ := syscall.Read(fd, buf)
			return string(buf[:n]) == "deep"
		})
	})

	t.Run("two-descriptors", func(t *testing.T) {
		p := filepath.Join(a, "shared")
		w, err := os.Create(p)
		must(err)
		defer w.Close()
		r, err := os.Open(p)
		must(err)
		defer r.Close()
		_, err = w.WriteAt([]byte("seen at once"), 0)
		must(err)
		got := make([]byte, 12)
		if _, err := r.ReadAt(got, 0); err != nil || string(got) != "seen at once" {
			t.Fatalf("second descriptor read %q, %v", got, err)
		}
	})

	t.Run("unlinked-open", func(t *testing.T) {
		p := filepath.Join(a, "tmpfile")
		f, err := os.Create(p)
		must(err)
		defer f.Close()
		_, err = f.WriteString("before")
		must(err)
		must(os.Remove(p))
		_, err = f.WriteAt([]byte("AFTER"), 6)
		must(err)
		got := make([]byte, 11)
		if _, err := f.ReadAt(got, 0); err != nil || string(got) != "beforeAFTER" {
			t.Fatalf("unlinked file through its descriptor: %q, %v", got, err)
		}
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("unlinked name still there: %v", err)
		}
		var st syscall.Stat_t
		must(syscall.Fstat(int(f.Fd()), &st))
		if st.Nlink != 0 {
			t.Errorf("nlink of an unlinked open file = %d", st.Nlink)
		}
	})

	t.Run("utimes-racing-close", func(t *testing.T) {
		// Setting times takes the same locks as publishing on close; done
		// at once on one file, neither may wait for the other forever.
		p := filepath.Join(a, "busy")
		must(os.WriteFile(p, []byte("x"), 0o644))
		done := make(chan error, 2)
		go func() {
			for i := 0; i < 200; i++ {
				ts := time.Unix(int64(1_600_000_000+i), 0)
				if err := os.Chtimes(p, ts, ts); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		go func() {
			for i := 0; i < 200; i++ {
				if err := os.WriteFile(p, []byte(strings.Repeat("y", i)), 0o644); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		for i := 0; i < 2; i++ {
			select {
			case err := <-done:
				must(err)
			case <-time.After(60 * time.Second):
				t.Fatal("utimes and close on one file did not finish: deadlock")
			}
		}
	})

	t.Run("mmap-shared", func(t *testing.T) {
		p := filepath.Join(a, "mapped")
		must(os.WriteFile(p, bytes.Repeat([]byte{'.'}, 8192), 0o644))
		// The mapping must live in another process: a page fault on a
		// mount served by this very process can deadlock it (go-fuse).
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), mmapHelperEnv+"="+p)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mmap helper: %v\n%s", err, out)
		}
		want := bytes.Repeat([]byte{'.'}, 8192)
		copy(want[5000:], "mapped write")
		waitContent(t, filepath.Join(b, "mapped"), want)
	})
}

// mmapHelperEnv makes the test binary, started again, map the named file
// MAP_SHARED, write through the mapping, msync and exit (see TestMain).
const mmapHelperEnv = "OASHARE_TEST_MMAP_WRITE"

func TestMain(m *testing.M) {
	if p := os.Getenv(mmapAfterCloseEnv); p != "" {
		if err := mmapAfterClose(p); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if p := os.Getenv(mmapHelperEnv); p != "" {
		if err := mmapWrite(p); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func mmapWrite(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := syscall.Mmap(int(f.Fd()), 0, 8192, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return err
	}
	if string(m[0:3]) != "..." {
		return fmt.Errorf("mapped read: %q", m[0:3])
	}
	copy(m[5000:], "mapped write")
	if err := msync(m); err != nil {
		return err
	}
	if err := syscall.Munmap(m); err != nil {
		return err
	}
	return f.Sync()
}

func msync(b []byte) error {
	_, _, errno := syscall.Syscall(syscall.SYS_MSYNC, uintptr(unsafePointer(b)), uintptr(len(b)), syscall.MS_SYNC)
	if errno != 0 {
		return errno
	}
	return nil
}

// TestReadUpdatesAtime: reading a file moves its access time on the peer
// that read it.
func TestReadUpdatesAtime(t *testing.T) {
	peers := startCluster(t, 2, 2)
	p := filepath.Join(peers[0].mnt, "read-me")
	if err := os.WriteFile(p, []byte("content"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Unix(1_000_000_000, 0)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if _, err := os.ReadFile(p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "atime after a read", func() bool {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			return false
		}
		return time.Unix(st.Atim.Unix()).After(before.Add(-time.Second)) && st.Mtim.Sec == old.Unix()
	})
}

// TestTruncateHuge: sizes above the largest file oashare supports are
// EFBIG at once, as ext4 answers above 16 TiB; every size up to it is a
// hole that costs nothing: truncate, a write at the far end, a read in the
// middle and the same file on another peer all return at once (the
// test's deadline is what would catch a request that walks the size).
func TestTruncateHuge(t *testing.T) {
	peers := startCluster(t, 2, 2)
	a, b := peers[0].mnt, peers[1].mnt
	const maxSize = int64(tree.MaxFileSize)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, size := range []int64{1<<63 - 1, maxSize + 1} {
			p := filepath.Join(a, fmt.Sprintf("big-%d", size))
			if err := os.WriteFile(p, []byte("head"), 0o644); err != nil {
				t.Error(err)
				return
			}
			if err := os.Truncate(p, size); !errors.Is(err, syscall.EFBIG) {
				t.Errorf("truncate to %d: %v, want EFBIG", size, err)
			}
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := f.WriteAt([]byte("x"), maxSize); !errors.Is(err, syscall.EFBIG) {
				t.Errorf("write at %d: %v, want EFBIG", maxSize, err)
			}
			f.Close()
			if st, err := os.Stat(p); err != nil || st.Size() != 4 {
				t.Errorf("after the refused truncate: %v, %v; want 4 bytes", st, err)
			}
		}
		for _, size := range []int64{1 << 50, maxSize} {
			name := fmt.Sprintf("sparse-%d", size)
			p := filepath.Join(a, name)
			if err := os.WriteFile(p, []byte("head"), 0o644); err != nil {
				t.Error(err)
				return
			}
			if err := os.Truncate(p, size); err != nil {
				t.Errorf("truncate to %d: %v", size, err)
				return
			}
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := f.WriteAt([]byte("tail"), size-4); err != nil {
				t.Errorf("write at the end of %d bytes: %v", size, err)
			}
			if err := f.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
			for _, mnt := range []string{a, b} {
				q := filepath.Join(mnt, name)
				waitFor(t, 5*time.Second, "the file's last version on "+mnt, func() bool {
					st, serr := os.Stat(q)
					if serr != nil || st.Size() != size {
						return false
					}
					f, err := os.Open(q)
					if err != nil {
						return false
					}
					defer f.Close()
					tail := make([]byte, 4)
					_, err = f.ReadAt(tail, size-4)
					return (err == nil || errors.Is(err, io.EOF)) && string(tail) == "tail"
				})
				f, err := os.Open(q)
				if err != nil {
					t.Error(err)
					return
				}
				for _, c := range []struct {
					off  int64
					want string
				}{{0, "head\x00\x00"}, {size / 3, "\x00\x00\x00\x00\x00\x00"}, {size - 6, "\x00\x00tail"}} {
					buf := make([]byte, len(c.want))
					if _, err := f.ReadAt(buf, c.off); err != nil && !errors.Is(err, io.EOF) {
						t.Errorf("%s: read at %d: %v", q, c.off, err)
					} else if string(buf) != c.want {
						t.Errorf("%s: at %d read %q, want %q", q, c.off, buf, c.want)
					}
				}
				f.Close()
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("huge truncates are still running after 2 minutes")
	}
}
