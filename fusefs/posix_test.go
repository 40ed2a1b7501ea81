package fusefs

import (
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// posixSkip lists the cases of go-fuse's POSIX suite that oashare does not
// pass yet, each with its reason. None is a limit of FUSE: each is a
// missing operation of the mount.
var posixSkip = map[string]string{
	"FcntlFlockLocksFile": "expects two descriptors of one process to conflict; POSIX record locks are per process, and oashare (like a local disk) leaves them to the kernel on each peer: they are not shared across peers",
}

// TestPOSIX runs go-fuse's POSIX suite against a mount of a two-node
// cluster.
func TestPOSIX(t *testing.T) {
	peers := startCluster(t, 2, 2)
	for name, fn := range posixtest.All {
		t.Run(name, func(t *testing.T) {
			if why, ok := posixSkip[name]; ok {
				t.Skip(why)
			}
			dir, err := mkTestDir(peers[0].mnt, name)
			if err != nil {
				t.Fatal(err)
			}
			fn(t, dir)
		})
	}
}
