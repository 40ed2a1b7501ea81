package index

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// openDirect opens path for writes that bypass the page cache (O_DIRECT):
// the chunk log writes large batches this way (see appendDirect).
func openDirect(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|syscall.O_DIRECT, 0)
}

// fdatasync flushes f's data (not its other metadata) to the disk.
func fdatasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

// pwritev writes iovs back to back at off of the file fd, with one system
// call, and returns how many bytes it wrote.
func pwritev(fd uintptr, iovs [][]byte, off int64) (int, error) {
	return unix.Pwritev(int(fd), iovs, off)
}

// errNoPunch: the file system cannot punch holes.
var errNoPunch = errors.New("punching holes is not supported here")

// punchHole gives back the blocks of n bytes at off of the file fd,
// keeping its size: reads there return zeros.
func punchHole(fd uintptr, off, n int64) error {
	err := unix.Fallocate(int(fd), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return errNoPunch
	}
	return err
}
