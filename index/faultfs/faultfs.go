// Package faultfs is a vfs.FS for tests whose chunk store fails on
// demand, as a full or failing disk would: writes to the files under a
// directory named "chunks" (the index's chunk log) return an error while
// Fail is set, everything else (Pebble's own files) works. A node whose
// store fails this way refuses what peers send it (StatusStoreError),
// which is how tests make a live replica refuse uploads.
package faultfs

import (
	"errors"
	"strings"
	"sync/atomic"

	"github.com/cockroachdb/pebble/vfs"
)

// ErrInjected is the error failing writes return.
var ErrInjected = errors.New("faultfs: injected write failure (disk full)")

// FS wraps another vfs.FS. The zero Fail lets every write through.
type FS struct {
	vfs.FS
	// Fail makes writes and syncs of chunk store files fail.
	Fail atomic.Bool
	// Failed counts the writes and syncs that failed.
	Failed atomic.Int64
}

// New wraps fs (vfs.Default if nil).
func New(fs vfs.FS) *FS {
	if fs == nil {
		fs = vfs.Default
	}
	return &FS{FS: fs}
}

func isChunkStore(name string) bool { return strings.Contains(name, "/chunks/") }

func (f *FS) wrap(name string, file vfs.File, err error) (vfs.File, error) {
	if err != nil || !isChunkStore(name) {
		return file, err
	}
	return &faultFile{File: file, fs: f}, nil
}

func (f *FS) Create(name string) (vfs.File, error) {
	file, err := f.FS.Create(name)
	return f.wrap(name, file, err)
}

func (f *FS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	file, err := f.FS.Open(name, opts...)
	return f.wrap(name, file, err)
}

func (f *FS) OpenReadWrite(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	file, err := f.FS.OpenReadWrite(name, opts...)
	return f.wrap(name, file, err)
}

type faultFile struct {
	vfs.File
	fs *FS
}

func (f *faultFile) fail() error {
	if f.fs.Fail.Load() {
		f.fs.Failed.Add(1)
		return ErrInjected
	}
	return nil
}

func (f *faultFile) Write(p []byte) (int, error) {
	if err := f.fail(); err != nil {
		return 0, err
	}
	return f.File.Write(p)
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.fail(); err != nil {
		return 0, err
	}
	return f.File.WriteAt(p, off)
}

func (f *faultFile) Sync() error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *faultFile) SyncData() error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.File.SyncData()
}

// Fd hides the descriptor, so that every write goes through WriteAt
// (the chunk log writes with pwritev where it has one).
func (f *faultFile) Fd() uintptr { return vfs.InvalidFd }
