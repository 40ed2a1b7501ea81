package index

import (
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
