package main

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
)

// The loopback must hand every file to the daemon: a file handle it
// returns declines kernel passthrough.
func TestFilesDeclinePassthrough(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	fh := wrap(fs.NewLoopbackFile(fd))
	p, ok := fh.(fs.FilePassthroughFder)
	if !ok {
		t.Fatal("wrapped file does not implement PassthroughFd at all")
	}
	if fd, use := p.PassthroughFd(); use {
		t.Fatalf("PassthroughFd = %d, true; want passthrough declined", fd)
	}
	if _, ok := fh.(fs.FileReader); !ok {
		t.Fatal("wrapped file lost its Read method")
	}
}

// A real mount: what is written through it lands in the directory, what is
// in the directory reads back through it, byte for byte.
func TestMountRoundTrip(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("mounting FUSE needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse on this machine")
	}
	dir, mnt := t.TempDir(), t.TempDir()
	srv, err := Mount(dir, mnt, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Error(err)
		}
	})
	want := bytes.Repeat([]byte("oashare "), 300000) // 2.4 MB, several requests
	if err := os.MkdirAll(filepath.Join(mnt, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "d", "f"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "d", "f"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("directory holds %d bytes (err %v), want the %d written through the mount", len(got), err, len(want))
	}
	if err := os.WriteFile(filepath.Join(dir, "g"), []byte("from the directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err = os.ReadFile(filepath.Join(mnt, "g"))
	if err != nil || string(got) != "from the directory" {
		t.Fatalf("mount reads %q (err %v)", got, err)
	}
}
