package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newStatusCmd() *cobra.Command {
	var data string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show what the running node sees: its ID, address, live peers, chunks stored, copies missing",
		Long: `Ask the node running with data directory --data (through its control socket)
for its node ID, listen address, live peers, the chunks and bytes it stores,
the groups it wrote that have fewer copies than --replicas (topped up as peers
appear), and the file versions whose close or fsync failed (kept on this node
and published once their copies are made).
With --json the answer is one JSON object; live peers are the list under "peers".`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var s statusJSON
			if err := ask(data, "status", "", &s); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "node:\t%s\n", s.NodeID)
			fmt.Fprintf(w, "listen:\t%s\n", s.Listen)
			fmt.Fprintf(w, "network:\t%s, %d members ('oashare members')\n", s.Network, s.Members)
			fmt.Fprintf(w, "mount:\t%s\n", s.Mountpoint)
			fmt.Fprintf(w, "replicas:\t%d\n", s.Replicas)
			fmt.Fprintf(w, "stored:\t%d chunks, %d bytes (%d live, %d reclaimable)\n", s.Chunks, s.Bytes, s.Bytes-min(s.GC.ReclaimableBytes, s.Bytes), s.GC.ReclaimableBytes)
			fmt.Fprintf(w, "on disk:\t%d bytes of chunk log; %d bytes of dropped copies given back since start; %d bytes free on its disk\n", s.LogDiskBytes, s.ReclaimedBytes, s.DiskFree)
			if s.DiskFullSince != "" {
				fmt.Fprintf(w, "disk full:\tsince %s: new copies go to other peers until space is freed\n", s.DiskFullSince)
			}
			fmt.Fprintf(w, "below target:\t%d groups, %d tree nodes (fewer copies than --replicas; topped up as peers appear)\n", s.GroupsBelow, s.TreeNodesBelow)
			fmt.Fprintf(w, "pending:\t%d file versions (a close or fsync failed; published once their copies are made)\n", s.Pending)
			if r := s.Repair; r.LastPass == "" {
				fmt.Fprintf(w, "repair:\tno pass yet (the first runs once peers had time to connect)\n")
			} else {
				fmt.Fprintf(w, "repair:\tlast pass %s: %d groups and tree nodes stored here, %d below target, %d waiting for a peer away less than --repair-after ('oashare fsck' checks the whole share)\n", r.LastPass, r.Checked, r.Short, r.Waiting)
				fmt.Fprintf(w, "\tsince start: %d copies made (%d bytes), %d surplus copies dropped\n", r.Copied, r.CopiedBytes, r.Dropped)
			}
			if g := s.GC; g.LastPass == "" {
				fmt.Fprintf(w, "reclaim:\tno garbage collection pass yet (the first runs --reclaim-after/2 after start)\n")
			} else {
				fmt.Fprintf(w, "reclaim:\tlast pass %s: data of %d file versions kept; %d items (%d bytes) no version needs, deleted once unneeded for --reclaim-after; %d deleted since start\n", g.LastPass, g.Versions, g.Reclaimable, g.ReclaimableBytes, g.Dropped)
				if g.HeldBack != "" {
					fmt.Fprintf(w, "\tnothing deleted in the last pass: %s\n", g.HeldBack)
				}
				fmt.Fprintf(w, "\thistory pruned since start: %d records, %d old versions, %d deleted names, %d inodes; %d snapshots loaded\n",
					g.PrunedRecords, g.PrunedVersions, g.PrunedNames, g.PrunedInodes, g.Snapshots)
			}
			fmt.Fprintf(w, "scrub:\t%d passes since start, %d items read back, %d damaged, %d replaced from other peers\n", s.Scrub.Passes, s.Scrub.Checked, s.Scrub.Damaged, s.Scrub.Replaced)
			if s.StateUnavailable != "" {
				fmt.Fprintf(w, "error:\t%s\n", s.StateUnavailable)
			}
			fmt.Fprintf(w, "peers:\t%d live\n", len(s.Peers))
			for _, p := range s.Peers {
				if p.Held == nil {
					fmt.Fprintf(w, "  %s\t%s\tdid not say what it holds\n", p.ID, p.Addr)
					continue
				}
				full := ""
				if p.DiskFull {
					full = " (full: it gets copies last)"
				}
				fmt.Fprintf(w, "  %s\t%s\t%d bytes held (%d live, %d reclaimable), %d bytes free on its disk%s\n", p.ID, p.Addr, *p.Held, *p.Held-min(*p.Garbage, *p.Held), *p.Garbage, *p.DiskFree, full)
			}
			for _, id := range s.Distrusted {
				fmt.Fprintf(w, "distrusted:\t%s (acknowledged a copy it did not keep; gets no copies)\n", id)
			}
			if s.Hint != "" {
				fmt.Fprintf(w, "alone:\t%s\n", s.Hint)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&data, "data", defaultDataDir(), "data directory of the node to ask")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func newWhereCmd() *cobra.Command {
	var data string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "where PATH",
		Short: "List each chunk of a file in the mount and the peers holding it",
		Long: `For a file inside an oashare mount, print each stored chunk (index, size,
SHA-256; holes are never stored) and the IDs of the peers that hold a copy right
now, then the file's tree nodes.
The node serving the mount is found from the mount table; --data overrides it.`,
		Args: exactArgs(1, "PATH"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dataDir, rel, err := inMount(args[0], data, cmd.Flags().Changed("data"))
			if err != nil {
				return err
			}
			abs, _ := filepath.Abs(args[0])
			var wj whereJSON
			if err := ask(dataDir, "where", rel, &wj); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(wj)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "%s: %d bytes, %d chunks stored (holes are not), tree depth %d\n", abs, wj.Size, len(wj.Chunks), wj.Depth)
			fmt.Fprintf(w, "CHUNK\tSIZE\tSHA-256\tPEERS\n")
			for _, c := range wj.Chunks {
				fmt.Fprintf(w, "%d\t%d\t%s\t%s\n", c.Index, c.Size, c.Hash, shortIDs(c.Holders))
			}
			for _, c := range wj.Nodes {
				fmt.Fprintf(w, "node %d\t-\t%s\t%s\n", c.Index, c.Hash, shortIDs(c.Holders))
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "data directory of the node to ask (default: the node serving the mount)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func shortIDs(ids []string) string {
	if len(ids) == 0 {
		return "(none)"
	}
	out := ""
	for i, id := range ids {
		if i > 0 {
			out += ","
		}
		if len(id) > 8 {
			id = id[:8]
		}
		out += id
	}
	return out
}
