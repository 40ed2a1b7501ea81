package fusefs

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// readAheadKiB is the kernel read-ahead of a mount, in KiB: as much as one
// FUSE read carries (MaxReadAhead, MaxWrite). The kernel gives a FUSE
// mount the default of 128 KiB whatever the mount asks for, so a
// sequential reader waits for one 128 KiB request after another.
const readAheadKiB = 1 << 10

// SetReadAhead sets the kernel read-ahead of the file system mounted on
// mnt to readAheadKiB, through its backing device's sysfs entry (which
// only root may write). Mount calls it; so does the loopback the
// benchmarks compare with, so that both read alike.
func SetReadAhead(mnt string) error {
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		return err
	}
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	return os.WriteFile(path, []byte(fmt.Sprintf("%d\n", readAheadKiB)), 0)
}
