//go:build !linux

package index

import (
	"errors"
	"os"
	"syscall"
)

// errNoDirect is what openDirect answers where O_DIRECT does not exist:
// the chunk log then writes every batch through the page cache, as it
// does on file systems that refuse O_DIRECT.
var errNoDirect = errors.New("index: O_DIRECT writes are Linux-only; the chunk log writes through the page cache")

func openDirect(path string) (*os.File, error) { return nil, errNoDirect }

func fdatasync(f *os.File) error { return f.Sync() }

// pwritev writes iovs one after the other from off.
func pwritev(fd uintptr, iovs [][]byte, off int64) (int, error) {
	total := 0
	for _, b := range iovs {
		n, err := syscall.Pwrite(int(fd), b, off)
		total += n
		off += int64(n)
		if err != nil || n < len(b) {
			return total, err
		}
	}
	return total, nil
}

// errNoPunch: punching holes is Linux-only here.
var errNoPunch = errors.New("punching holes is Linux-only")

func punchHole(fd uintptr, off, n int64) error { return errNoPunch }
