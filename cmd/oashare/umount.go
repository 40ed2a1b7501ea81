package main

import (
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newUmountCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "umount MOUNTPOINT",
		Aliases: []string{"unmount"},
		Short:   "Stop the node serving MOUNTPOINT cleanly: publish what is pending, unmount, exit",
		Long: `Stop the node serving MOUNTPOINT: first wait until every file version written
on it is published (a close or fsync that failed left it pending until its
copies could be made), showing how many are left, then unmount the folder;
the node exits. Ctrl-C while it waits leaves the node running.
If a program still has a file open in the folder, umount says so and the
node keeps running. --force stops at once: pending versions stay in the
node's journal and are published when it mounts again, and a busy folder
is detached (programs using it get errors).
A folder whose node is gone (killed) is unmounted as it is.`,
		Example: `  oashare umount ~/net`,
		Args:    exactArgs(1, "MOUNTPOINT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			point, dataDir, err := mountPointOf(args[0])
			if err != nil {
				return err
			}
			return umount(cmd.OutOrStdout(), point, dataDir, force)
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "stop now: leave pending versions for the next mount, detach a busy folder")
	return cmd
}

// umount asks the node of dataDir to stop and waits until mnt is
// unmounted, printing progress to out: one line rewritten in place on a
// terminal, a line per update otherwise.
func umount(out io.Writer, mnt, dataDir string, force bool) error {
	arg := ""
	if force {
		arg = "force"
	}
	conn, dec, err := askStream(dataDir, "umount", arg)
	if errors.Is(err, errNoNode) {
		// The mount is there but no node answers: it was killed.
		flag := "-u"
		if force {
			flag = "-uz"
		}
		if b, err := exec.Command("fusermount3", flag, mnt).CombinedOutput(); err != nil {
			return fmt.Errorf("no node serves %s any more, and unmounting it failed: %s (a program may have it open: close it, or use --force)", mnt, strings.TrimSpace(string(b)))
		}
		fmt.Fprintf(out, "unmounted %s (no node was serving it any more)\n", mnt)
		return nil
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	live := newLiveLine(out)
	for {
		var u umountJSON
		if err := dec.Decode(&u); err != nil {
			live.end()
			return fmt.Errorf("the node stopped answering: %v", err)
		}
		switch {
		case u.Error != "":
			live.end()
			return errors.New(u.Error)
		case u.Pending > 0:
			live.print(fmt.Sprintf("publishing %d file versions written here (their copies need peers with room; Ctrl-C keeps the node running, --force stops it anyway)", u.Pending))
		case u.Done:
			live.end()
			deadline := time.Now().Add(30 * time.Second)
			for {
				_, mounted := mountAt(mnt)
				if !mounted {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("the node unmounted %s but it is still in the mount table after 30 s", mnt)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if force {
				fmt.Fprintf(out, "unmounted %s; the node is stopped (anything left pending is published when it mounts again)\n", mnt)
			} else {
				fmt.Fprintf(out, "unmounted %s; no file version was left unpublished; the node is stopped\n", mnt)
			}
			return nil
		}
	}
}
