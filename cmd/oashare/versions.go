package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/oashare/oashare/fusefs"
)

// versionsJSON answers the control command "versions".
type versionsJSON struct {
	Path     string           `json:"path"`
	Versions []fusefs.Version `json:"versions"`
}

// restoreArg is the argument of the control command "restore".
type restoreArg struct {
	Path    string `json:"path"`
	Version int    `json:"version"` // 0: the newest that is not the current content
	To      string `json:"to,omitempty"`
}

type restoreJSON struct {
	Version fusefs.Version `json:"version"`
	Path    string         `json:"path"`
}

func (c *control) versions(rel string) (versionsJSON, error) {
	vs, err := c.fsys.Versions(rel)
	return versionsJSON{Path: rel, Versions: vs}, err
}

func (c *control) restore(arg string) (restoreJSON, error) {
	var a restoreArg
	if err := json.Unmarshal([]byte(arg), &a); err != nil {
		return restoreJSON{}, fmt.Errorf("restore: bad request: %v", err)
	}
	v, at, err := c.fsys.Restore(a.Path, a.Version, a.To)
	return restoreJSON{Version: v, Path: at}, err
}

func newVersionsCmd() *cobra.Command {
	var data string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "versions PATH",
		Short: "List the earlier contents of a file in the mount, deleted files included",
		Long: `List every content the file at PATH has had, oldest first: its number (for
'oashare restore --version'), when and on which node it was written, its size,
and which one is current. A file deleted or replaced since is listed by the path
it had. The node serving the mount is found from the mount table; --data
overrides it.`,
		Args: exactArgs(1, "PATH"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dataDir, rel, err := inMount(args[0], data, cmd.Flags().Changed("data"))
			if err != nil {
				return err
			}
			var vj versionsJSON
			if err := ask(dataDir, "versions", rel, &vj); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(vj)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "VERSION\tWRITTEN (UTC)\tSIZE\tNODE\n")
			for _, v := range vj.Versions {
				cur := ""
				if v.Current {
					cur = "\tcurrent"
				}
				fmt.Fprintf(w, "%d\t%s\t%d\t%s%s\n", v.N, v.Time.UTC().Format(time.DateTime), v.Size, v.Node, cur)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "data directory of the node to ask (default: the node serving the mount)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func newRestoreCmd() *cobra.Command {
	var data, to string
	var version int
	cmd := &cobra.Command{
		Use:   "restore PATH",
		Short: "Bring back an earlier content of a file in the mount",
		Long: `Bring back version --version (a number 'oashare versions PATH' lists; default:
the newest that is not the current content) of the file at PATH: as a new
version of the file there (the content it replaces stays listed), as the file
again if it was deleted, or as a new file at --to NEWPATH. Every peer sees it at
once; no byte is copied (the chunks are still held, named by their hashes).`,
		Args: exactArgs(1, "PATH"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if version < 0 {
				return fmt.Errorf("--version %d: versions are numbered from 1 ('oashare versions PATH' lists them)", version)
			}
			dataDir, rel, err := inMount(args[0], data, cmd.Flags().Changed("data"))
			if err != nil {
				return err
			}
			a := restoreArg{Path: rel, Version: version}
			if to != "" {
				toDir, toRel, err := inMount(to, data, cmd.Flags().Changed("data"))
				if err != nil {
					return fmt.Errorf("--to: %v", err)
				}
				if toDir != dataDir {
					return fmt.Errorf("--to %s is in another mount than %s", to, args[0])
				}
				a.To = toRel
			}
			arg, _ := json.Marshal(a)
			var rj restoreJSON
			if err := ask(dataDir, "restore", string(arg), &rj); err != nil {
				return err
			}
			at := args[0]
			if to != "" {
				at = to
			}
			fmt.Printf("restored version %d (%d bytes, written %s UTC on %s) at %s\n",
				rj.Version.N, rj.Version.Size, rj.Version.Time.UTC().Format(time.DateTime), rj.Version.Node, at)
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "data directory of the node to ask (default: the node serving the mount)")
	cmd.Flags().IntVar(&version, "version", 0, "the version to bring back, as 'oashare versions' numbers them (default: the newest but the current)")
	cmd.Flags().StringVar(&to, "to", "", "restore as a new file at this path in the mount instead")
	return cmd
}
