package index

import (
	"strings"

	"github.com/cockroachdb/pebble/vfs"
	"golang.org/x/sys/unix"
)

// walFS gives Pebble write-ahead logs that are written ahead with zeros,
// as the chunk log's segments are (see zeroAhead): every namespace change
// is one small WAL append and, when synced, one fdatasync. Appending to a
// new file makes each of those syncs commit the file's new size (on ext4,
// a journal commit); over zeros already on disk it is a data-only flush.
// Pebble gets the same from a recycled log, but only after its first
// memtable flushes, and a fresh node (or one that flushed little) writes
// every change into a new log.
//
// Pebble reads zeros after a log's last record as the end of the log
// (record.ErrZeroedChunk, as after its own preallocation): the last log
// ends there, and an earlier log ends at the EOF trailer Pebble writes
// and syncs before it starts the next one.
type walFS struct{ vfs.FS }

// walZeroAhead is how far past the end of a log walFile keeps zeros.
const walZeroAhead = 1 << 20

func isWAL(name string) bool { return strings.HasSuffix(name, ".log") }

func (fs walFS) Create(name string) (vfs.File, error) {
	f, err := fs.FS.Create(name)
	if err != nil || !isWAL(name) || f.Fd() == vfs.InvalidFd {
		return f, err
	}
	return &walFile{File: f}, nil
}

func (fs walFS) ReuseForWrite(oldname, newname string) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname)
	if err != nil || !isWAL(newname) || f.Fd() == vfs.InvalidFd {
		return f, err
	}
	st, err := f.Stat()
	if err != nil {
		return f, nil // a log Pebble recycled is fine without zeros
	}
	return &walFile{File: f, zeroedTo: st.Size()}, nil
}

// walFile is a log being written: Pebble writes it in order with Write.
type walFile struct {
	vfs.File
	written  int64 // bytes Pebble wrote
	zeroedTo int64 // the file's size: zeros from written up to it
}

func (f *walFile) Write(p []byte) (int, error) {
	if end := f.written + int64(len(p)); end+walZeroAhead/4 > f.zeroedTo {
		// The next sync of the log makes the zeros durable with it. If
		// they cannot be written, the log grows as it would without.
		from, to := max(f.zeroedTo, f.written), alignUp(end)+walZeroAhead
		if f.zeroFill(from, to) == nil {
			f.zeroedTo = to
		}
	}
	n, err := f.File.Write(p)
	f.written += int64(n)
	return n, err
}

func (f *walFile) zeroFill(from, to int64) error {
	fd := int(f.Fd())
	for from < to {
		n, err := unix.Pwrite(fd, zeroBlock[:min(int64(len(zeroBlock)), to-from)], from)
		if err != nil {
			return err
		}
		from += int64(n)
	}
	return nil
}

// Preallocate does nothing: the zeros written ahead are the allocation,
// and Pebble's (unwritten extents past the end) would cost a conversion
// when written.
func (f *walFile) Preallocate(offset, length int64) error { return nil }
