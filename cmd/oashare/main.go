// Command oashare turns a folder into a disk shared by every oashare peer
// on the local network.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// defaultMemLimit is the Go heap's soft limit unless GOMEMLIMIT says
// otherwise: the node's own structures are bounded (chunk cache, upload
// window, request concurrency), so a limit keeps garbage from doubling the
// resident size between collections.
const defaultMemLimit = 160 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemLimit)
	}
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "oashare:", err)
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(int(ee))
		}
		os.Exit(1)
	}
}

// exitError carries a specific exit code through cobra.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "oashare",
		Short: "A folder shared by every oashare peer on the local network",
		Long: `oashare turns a folder into a disk shared by every oashare peer on the local
network. Files are cut into chunks of at most 512 bytes named by their SHA-256,
stored on several peers, and read back verified. Peers find each other by mDNS.

  oashare mount ~/net          share ~/net with the LAN (Ctrl-C to stop)
  oashare invite ~/net         a join code for one more machine
  oashare mount ~/net --join CODE   on that machine: join and share
  oashare members ~/net        who is in the network; oashare remove NODE revokes one
  oashare umount ~/net         publish what is pending, unmount, stop
  oashare status [~/net]       this node, its peers, the share's health (--watch)
  oashare where ~/net/FILE     which peers hold which parts of FILE
  oashare pin ~/net/DIR        keep a full copy here, for offline use (unpin undoes it)
  oashare fsck [~/net/DIR]     are all copies there? (--repair: make them now)
  oashare leave ~/net          move this node's copies to the others, then stop
  oashare ui                   the link to the dashboard in a browser
  oashare version              version, commit, protocol`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.Version = versionInfo().short()
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%v (see '%s --help')", err, c.CommandPath())
	})
	root.AddCommand(newMountCmd(), newStatusCmd(), newWhereCmd(), newFsckCmd(), newLeaveCmd(), newVersionsCmd(), newRestoreCmd(), newVersionCmd(), newUmountCmd(), newPinCmd(), newUnpinCmd(), newUICmd())
	if !plainNodes {
		root.AddCommand(newInviteCmd(), newMembersCmd(), newRemoveCmd())
	}
	return root
}
