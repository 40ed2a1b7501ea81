package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/index"
)

// fsckFileJSON is one file's count of stored items (groups and tree nodes)
// by their copies on live nodes.
type fsckFileJSON struct {
	Path        string `json:"path"`
	Full        int    `json:"full"`
	Below       int    `json:"below_target"`
	Unavailable int    `json:"unavailable"`
}

type fsckJSON struct {
	Path        string         `json:"path"`
	Repaired    bool           `json:"repaired"`
	Replicas    int            `json:"replicas"`
	LiveNodes   int            `json:"live_nodes"`
	Files       int            `json:"files"`
	Full        int            `json:"full"`
	Below       int            `json:"below_target"`
	Unavailable int            `json:"unavailable"`
	PerFile     []fsckFileJSON `json:"per_file"`
}

// fsck walks the files under rel (a path inside the share, "" for all of
// it) and counts each one's items by their live copies, repairing first
// those below target when repair is set.
func (c *control) fsck(rel string, repair bool) (*fsckJSON, error) {
	db := c.node.DB()
	id, typ, err := resolve(db, rel)
	if err != nil {
		return nil, err
	}
	ctx := c.node.Context()
	out := &fsckJSON{Path: "/" + rel, Repaired: repair, Replicas: c.node.Replicas(), LiveNodes: len(c.node.Peers()) + 1, PerFile: []fsckFileJSON{}}
	var walk func(id uint64, typ index.EntryType, p string) error
	walk = func(id uint64, typ index.EntryType, p string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch typ {
		case index.TypeDir:
			ents, err := db.ReadDir(id)
			if err != nil {
				return err
			}
			for _, e := range ents {
				if err := walk(e.Child, e.Type, path.Join(p, e.Name)); err != nil {
					return err
				}
			}
		case index.TypeFile:
			ino, ok, err := db.GetInode(id)
			if err != nil || !ok {
				return err // gone meanwhile: nothing to check
			}
			h, err := c.node.Check(ctx, tree.Version{Size: ino.Size, Root: ino.Root, Depth: ino.Depth}, repair)
			if err != nil {
				return fmt.Errorf("%s: %v", p, err)
			}
			out.Files++
			out.Full += h.Full
			out.Below += h.Below
			out.Unavailable += h.Unavailable
			out.PerFile = append(out.PerFile, fsckFileJSON{Path: p, Full: h.Full, Below: h.Below, Unavailable: h.Unavailable})
		}
		return nil
	}
	if err := walk(id, typ, "/"+rel); err != nil {
		return nil, err
	}
	return out, nil
}

// resolve finds the inode and type of rel, a slash-separated path inside
// the share ("" is its root).
func resolve(db *index.DB, rel string) (uint64, index.EntryType, error) {
	id, typ := index.RootID, index.TypeDir
	for _, name := range strings.Split(rel, "/") {
		if name == "" || name == "." {
			continue
		}
		de, ok, err := db.LookupDirent(id, name)
		if err != nil {
			return 0, 0, err
		}
		if !ok {
			return 0, 0, fmt.Errorf("%s: no such file or directory in the shared folder", rel)
		}
		id, typ = de.Child, de.Type
	}
	return id, typ, nil
}

// Exit statuses of fsck.
const (
	fsckBelowTarget = 1
	fsckUnavailable = 2
)

func newFsckCmd() *cobra.Command {
	var data string
	var asJSON, repair bool
	cmd := &cobra.Command{
		Use:   "fsck [PATH]",
		Short: "Check that every file under PATH has its copies on live peers",
		Long: `Walk every file under PATH (a file or directory inside an oashare mount;
default: the whole share of the node with data directory --data), ask the live
peers which of its groups and tree nodes they hold, and report per file and in
total how many are at full count (min(--replicas, live peers) copies), below
target, and unavailable (no copy on any live peer).
With --repair, items below target are copied to their best-ranked peers now,
without waiting for --repair-after, and the report is of the state after.
Exit status: 0 everything at full count, 1 something below target,
2 something unavailable.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dataDir, rel := data, ""
			if len(args) == 1 {
				var err error
				dataDir, rel, err = inMount(args[0], data, cmd.Flags().Changed("data"))
				if err != nil {
					return err
				}
			}
			arg := "-" + rel
			if repair {
				arg = "r" + rel
			}
			var f fsckJSON
			if err := ask(dataDir, "fsck", arg, &f); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(f); err != nil {
					return err
				}
			} else {
				w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				bad := 0
				for _, p := range f.PerFile {
					if p.Below+p.Unavailable == 0 {
						continue
					}
					if bad == 0 {
						fmt.Fprintf(w, "FILE\tFULL\tBELOW TARGET\tUNAVAILABLE\n")
					}
					bad++
					fmt.Fprintf(w, "%s\t%d\t%d\t%d\n", p.Path, p.Full, p.Below, p.Unavailable)
				}
				w.Flush()
				what := "checked"
				if f.Repaired {
					what = "checked after repair"
				}
				fmt.Printf("%s %s: %d files, %d with missing copies; groups and tree nodes: %d at full count (%d copies on %d live peers), %d below target, %d unavailable\n",
					f.Path, what, f.Files, bad, f.Full, min(f.Replicas, f.LiveNodes), f.LiveNodes, f.Below, f.Unavailable)
			}
			switch {
			case f.Unavailable > 0:
				return exitError(fsckUnavailable)
			case f.Below > 0:
				return exitError(fsckBelowTarget)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", defaultDataDir(), "data directory of the node to ask (default with PATH: the node serving its mount)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	cmd.Flags().BoolVar(&repair, "repair", false, "copy what is below target now, then report")
	return cmd
}

// inMount resolves p, a path inside an oashare mount, to the data
// directory of the node serving it (data instead, if set) and the path
// inside the share.
func inMount(p, data string, dataSet bool) (dataDir, rel string, err error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", "", err
	}
	point, dataDir, err := oashareMountOf(abs)
	if dataSet {
		dataDir = data
		if err != nil {
			var s statusJSON
			if err := ask(dataDir, "status", "", &s); err != nil {
				return "", "", err
			}
			point, err = s.Mountpoint, nil
		}
	}
	if err != nil {
		return "", "", err
	}
	rel, err = filepath.Rel(point, abs)
	if err != nil || rel == ".." || filepath.IsAbs(rel) || strings.HasPrefix(rel, "../") {
		return "", "", fmt.Errorf("%s is not inside the mount %s", abs, point)
	}
	if rel == "." {
		rel = ""
	}
	return dataDir, filepath.ToSlash(rel), nil
}
