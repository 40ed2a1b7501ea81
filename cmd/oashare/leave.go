package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
)

func newLeaveCmd() *cobra.Command {
	var data string
	var force bool
	cmd := &cobra.Command{
		Use:   "leave [MOUNTPOINT]",
		Short: "Move this node's copies to the other peers, then unmount and stop it",
		Long: `Copy every group and tree node the node stores that the other live peers do
not hold --replicas times (or as many times as there are of them) to them,
showing progress (items and bytes moved, rate, time left), then unmount and
stop the node. The node is found from MOUNTPOINT, or --data.
If no other peer is up, or they have less free space than what must move, or
file versions written on this node are not published yet, leave says so and
the node keeps running; --force leaves anyway.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dataDir := data
			if len(args) == 1 && !cmd.Flags().Changed("data") {
				_, dd, err := mountPointOf(args[0])
				if err != nil {
					return err
				}
				dataDir = dd
			}
			arg := ""
			if force {
				arg = "force"
			}
			return leave(dataDir, arg)
		},
	}
	cmd.Flags().StringVar(&data, "data", defaultDataDir(), "data directory of the node (default with MOUNTPOINT: the node serving it)")
	cmd.Flags().BoolVar(&force, "force", false, "leave even if the other peers cannot take every copy")
	return cmd
}

// leave asks the node of dataDir to drain and stop, printing its progress.
func leave(dataDir, arg string) error {
	conn, dec, err := askStream(dataDir, "leave", arg)
	if err != nil {
		return err
	}
	defer conn.Close()
	live := newLiveLine(os.Stdout)
	for {
		var l leaveJSON
		if err := dec.Decode(&l); err != nil {
			live.end()
			return fmt.Errorf("the node stopped answering during the leave: %v", err)
		}
		switch {
		case l.Error != "":
			live.end()
			return errors.New(l.Error)
		case l.Progress != nil:
			p := l.Progress
			line := fmt.Sprintf("moved %d/%d groups and tree nodes to %d peers, %s/%s, %s/s",
				p.ItemsDone, p.Items, p.Peers, mib(p.BytesDone), mib(p.Bytes), mib(int64(p.Rate)))
			if p.Left > 0 {
				line += fmt.Sprintf(", %s left", p.Left.Round(time.Second))
			}
			live.print(line)
		case l.Done:
			live.end()
			// The node unmounts and exits now; wait for it.
			path := filepath.Join(dataDir, controlSocketName)
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			fmt.Println("left: every copy this node held is on the other peers; the node is stopped")
			return nil
		}
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// isTerminal reports whether f is a terminal (a character device).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// writesToTerminal reports whether out is a terminal.
func writesToTerminal(out io.Writer) bool {
	f, ok := out.(*os.File)
	return ok && isTerminal(f)
}

// liveLine prints progress: one line rewritten in place on a terminal, a
// line per update otherwise.
type liveLine struct {
	out       io.Writer
	tty, open bool
}

func newLiveLine(out io.Writer) *liveLine {
	return &liveLine{out: out, tty: writesToTerminal(out)}
}

func (l *liveLine) print(s string) {
	if l.tty {
		fmt.Fprintf(l.out, "\r\033[K%s", s)
		l.open = true
	} else {
		fmt.Fprintln(l.out, s)
	}
}

// end finishes a line left open on a terminal.
func (l *liveLine) end() {
	if l.open {
		fmt.Fprintln(l.out)
		l.open = false
	}
}
