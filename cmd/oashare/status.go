package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/oashare/oashare/index/format"
)

func newStatusCmd() *cobra.Command {
	var data string
	var asJSON, watch bool
	var every time.Duration
	cmd := &cobra.Command{
		Use:   "status [MOUNTPOINT]",
		Short: "Show the node, its peers and the share's health at a glance",
		Long: `Ask the node serving MOUNTPOINT (or running with --data) what it sees: this
node, a table of the network's members (name, address, up or when last seen,
bytes each holds and has free), then the health totals: file versions not yet
published (a close or fsync failed; published once their copies are made),
groups this node wrote with fewer copies than --replicas (topped up as peers
appear), operations that found no live copy, and what repair, reclaim and
scrub did.
--watch redraws it every --interval with the rates of reads and writes
through the mount and of repair copies, until Ctrl-C.
With --json the answer is one JSON object; live peers are the list under
"peers", every member under "member_list".`,
		Example: `  oashare status ~/net
  oashare status --watch`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if watch && asJSON {
				return fmt.Errorf("--watch and --json: choose one")
			}
			if every <= 0 {
				return fmt.Errorf("--interval %v: must be positive, e.g. 2s", every)
			}
			dir, err := dataDirArg(cmd, args, data)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			var s statusJSON
			if err := ask(dir, "status", "", &s); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			if !watch {
				return printStatus(out, &s, nil)
			}
			tty := writesToTerminal(out)
			if tty {
				fmt.Fprint(out, "\033[H\033[2J")
			}
			if err := printStatus(out, &s, nil); err != nil {
				return err
			}
			for {
				prev := s
				time.Sleep(every)
				if err := ask(dir, "status", "", &s); err != nil {
					return err
				}
				if tty {
					fmt.Fprint(out, "\033[H\033[2J") // home, clear: redraw in place
				} else {
					fmt.Fprintln(out)
				}
				if err := printStatus(out, &s, &prev); err != nil {
					return err
				}
			}
		},
	}
	cmd.Flags().StringVar(&data, "data", defaultDataDir(), "data directory of the node to ask (default with MOUNTPOINT: the node serving it)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "redraw every --interval, with transfer rates, until Ctrl-C")
	cmd.Flags().DurationVar(&every, "interval", 2*time.Second, "how often --watch redraws")
	return cmd
}

// printStatus prints s as a person reads it: who, the members' table,
// the health totals; with prev (an earlier answer), the rates between
// the two.
func printStatus(out io.Writer, s, prev *statusJSON) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	name := ""
	if s.Name != "" {
		name = " (" + s.Name + ")"
	}
	fmt.Fprintf(w, "node\t%s%s, listening on %s\n", s.NodeID, name, s.Listen)
	fmt.Fprintf(w, "network\t%s: %d members, %d copies of every file (--replicas)\n", s.Network, s.Members, s.Replicas)
	fmt.Fprintf(w, "mount\t%s\n", s.Mountpoint)
	if s.UI != "" {
		fmt.Fprintf(w, "dashboard\t%s\n", s.UI)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out)
	at, _ := time.Parse(time.RFC3339Nano, s.At)
	fmt.Fprintln(w, "PEER\tNAME\tADDRESS\tSTATE\tHELD\tFREE")
	for _, r := range peerRows(s, at) {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.id, r.name, r.addr, r.state, r.held, r.free)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out)
	fmt.Fprintln(w, "HEALTH")
	fmt.Fprintf(w, "pending uploads\t%d file versions (a close or fsync failed; published once their copies are made)\n", s.Pending)
	fmt.Fprintf(w, "below target\t%d groups, %d tree nodes (fewer copies than --replicas; topped up as peers appear)\n", s.GroupsBelow, s.TreeNodesBelow)
	fmt.Fprintf(w, "unavailable\t%d operations found no live copy since start ('oashare fsck' checks every file)\n", s.Unavailable)
	if s.StateUnavailable != "" {
		fmt.Fprintf(w, "error\t%s\n", s.StateUnavailable)
	}
	if prev != nil {
		if d := at.Sub(parseAt(prev.At)).Seconds(); d > 0 {
			rate := func(now, before int64) string { return size(int64(float64(now-before)/d)) + "/s" }
			fmt.Fprintf(w, "transfers\tread %s, written %s through the mount; repair copies %s\n",
				rate(s.BytesRead, prev.BytesRead), rate(s.BytesWritten, prev.BytesWritten), rate(s.Repair.CopiedBytes, prev.Repair.CopiedBytes))
		}
	}
	switch p := s.Pinned; {
	case p.Files == 0:
		fmt.Fprintf(w, "pinned\tnothing ('oashare pin PATH' keeps a full copy here for offline use)\n")
	case p.NotWhole > 0:
		fmt.Fprintf(w, "pinned\t%d files, %s; %d not whole here yet (no live peer has some of their data; fetched when one is back)\n", p.Files, size(p.Bytes), p.NotWhole)
	default:
		fmt.Fprintf(w, "pinned\t%d files, %s, all here (checked %s)\n", p.Files, size(p.Bytes), p.At)
	}
	fmt.Fprintf(w, "stored here\t%d chunks, %s (%s reclaimable); chunk log %s on disk\n", s.Chunks, size(s.Bytes), size(s.GC.ReclaimableBytes), size(s.LogDiskBytes))
	if s.DiskFullSince != "" {
		fmt.Fprintf(w, "disk full\tsince %s: new copies go to other peers until space is freed\n", s.DiskFullSince)
	}
	if r := s.Repair; r.LastPass == "" {
		fmt.Fprintf(w, "repair\tno pass yet (the first runs once peers had time to connect)\n")
	} else {
		fmt.Fprintf(w, "repair\tlast pass %s: %d groups and tree nodes stored here, %d below target, %d waiting for a peer away less than --repair-after\n", r.LastPass, r.Checked, r.Short, r.Waiting)
		fmt.Fprintf(w, "\tsince start: %d copies made (%s), %d surplus copies dropped\n", r.Copied, size(r.CopiedBytes), r.Dropped)
	}
	if g := s.GC; g.LastPass == "" {
		fmt.Fprintf(w, "reclaim\tno garbage collection pass yet (the first runs --reclaim-after/2 after start)\n")
	} else {
		fmt.Fprintf(w, "reclaim\tlast pass %s: data of %d file versions kept; %d items (%s) no version needs, deleted once unneeded for --reclaim-after; %d deleted since start\n", g.LastPass, g.Versions, g.Reclaimable, size(g.ReclaimableBytes), g.Dropped)
		if g.HeldBack != "" {
			fmt.Fprintf(w, "\tnothing deleted in the last pass: %s\n", g.HeldBack)
		}
		fmt.Fprintf(w, "\thistory pruned since start: %d records, %d old versions, %d deleted names, %d inodes; %d snapshots loaded\n",
			g.PrunedRecords, g.PrunedVersions, g.PrunedNames, g.PrunedInodes, g.Snapshots)
	}
	fmt.Fprintf(w, "scrub\t%d passes since start, %d items read back, %d damaged, %d replaced from other peers\n", s.Scrub.Passes, s.Scrub.Checked, s.Scrub.Damaged, s.Scrub.Replaced)
	for _, id := range s.Distrusted {
		fmt.Fprintf(w, "distrusted\t%s (acknowledged a copy it did not keep; gets no copies)\n", id)
	}
	if s.Hint != "" {
		fmt.Fprintf(w, "alone\t%s\n", s.Hint)
	}
	return w.Flush()
}

func parseAt(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

type peerRow struct{ id, name, addr, state, held, free string }

// peerRows is the members' table: this node first, then the others by
// name; removed members are left out (oashare members lists them).
func peerRows(s *statusJSON, at time.Time) []peerRow {
	live := map[string]peerJSON{}
	for _, p := range s.Peers {
		live[p.ID] = p
	}
	var rows []peerRow
	for _, m := range s.MemberList {
		if m.Removed {
			continue
		}
		r := peerRow{id: shortID(m.ID), name: m.Name, addr: m.Addr, held: "-", free: "-"}
		if r.addr == "" {
			r.addr = "-"
		}
		switch p, up := live[m.ID]; {
		case m.Self:
			r.state, r.held, r.free = "this node", size(s.Bytes), size(int64(s.DiskFree))
			if s.DiskFullSince != "" {
				r.state += ", disk full"
			}
		case up:
			r.state = "up"
			if p.Held != nil {
				r.held, r.free = size(int64(*p.Held)), size(int64(*p.DiskFree))
			}
			if p.DiskFull {
				r.state += ", disk full"
			}
		default:
			r.state = "down, " + lastSeen(m.LastSeen, at)
		}
		rows = append(rows, r)
	}
	slices.SortStableFunc(rows, func(a, b peerRow) int {
		if (a.state == "this node") != (b.state == "this node") {
			if a.state == "this node" {
				return -1
			}
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	return rows
}

// lastSeen says how long ago a member was last seen.
func lastSeen(seen string, at time.Time) string {
	t, err := time.Parse(time.RFC3339, seen)
	if err != nil || at.IsZero() {
		return "not seen since this node started"
	}
	return "last seen " + at.Sub(t).Round(time.Second).String() + " ago"
}

// shortID is the first 8 hex digits of a node ID, as where shows them
// (oashare members shows them whole).
func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// size prints a byte count in binary units.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[i])
}

func newWhereCmd() *cobra.Command {
	var data string
	var asJSON, perChunk bool
	cmd := &cobra.Command{
		Use:   "where PATH",
		Short: "Show which peers hold which parts of a file in the mount",
		Long: `For a file inside an oashare mount, print the ranges of the file (bytes and
chunk indexes) with the peers that hold a copy of them right now, then how
much of the file each peer holds. Holes are never stored.
With --chunks, print each stored chunk instead (index, size, SHA-256, peers),
then the file's tree nodes.
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
			if !perChunk {
				return printWhereSummary(os.Stdout, abs, &wj)
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
	cmd.Flags().BoolVar(&perChunk, "chunks", false, "list every chunk and tree node with its holders")
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
		out += shortID(id)
	}
	return out
}

// chunkRange is a run of consecutive stored chunks held by the same
// peers.
type chunkRange struct {
	first, last uint64 // chunk indexes
	from, to    uint64 // bytes [from, to)
	holders     []string
}

// chunkRanges merges the chunks (in index order) into ranges: a hole or
// a change of holders starts a new one.
func chunkRanges(chunks []chunkJSON) []chunkRange {
	var out []chunkRange
	for _, c := range chunks {
		holders := slices.Clone(c.Holders)
		slices.Sort(holders)
		from := c.Index * format.ChunkSize
		if n := len(out); n > 0 && out[n-1].last+1 == c.Index && slices.Equal(out[n-1].holders, holders) {
			out[n-1].last, out[n-1].to = c.Index, from+uint64(c.Size)
			continue
		}
		out = append(out, chunkRange{first: c.Index, last: c.Index, from: from, to: from + uint64(c.Size), holders: holders})
	}
	return out
}

// printWhereSummary prints the ranges of a file with their holders, then
// how much each holder has.
func printWhereSummary(out io.Writer, path string, wj *whereJSON) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(out, "%s: %s, %d chunks stored (holes are not), %d tree nodes\n", path, size(int64(wj.Size)), len(wj.Chunks), len(wj.Nodes))
	if len(wj.Chunks) == 0 {
		return nil
	}
	fmt.Fprintln(w, "BYTES\tCHUNKS\tCOPIES\tHELD BY")
	for _, r := range chunkRanges(wj.Chunks) {
		fmt.Fprintf(w, "%d-%d\t%d-%d\t%d\t%s\n", r.from, r.to-1, r.first, r.last, len(r.holders), shortIDs(r.holders))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	type held struct {
		chunks, nodes int
		bytes         int64
	}
	per := map[string]*held{}
	get := func(id string) *held {
		if per[id] == nil {
			per[id] = &held{}
		}
		return per[id]
	}
	for _, c := range wj.Chunks {
		for _, id := range c.Holders {
			h := get(id)
			h.chunks++
			h.bytes += int64(c.Size)
		}
	}
	for _, n := range wj.Nodes {
		for _, id := range n.Holders {
			get(id).nodes++
		}
	}
	ids := make([]string, 0, len(per))
	for id := range per {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	fmt.Fprintln(out)
	fmt.Fprintln(w, "HOLDER\tCHUNKS\tBYTES\tTREE NODES")
	for _, id := range ids {
		h := per[id]
		fmt.Fprintf(w, "%s\t%d of %d\t%s\t%d of %d\n", shortID(id), h.chunks, len(wj.Chunks), size(h.bytes), h.nodes, len(wj.Nodes))
	}
	return w.Flush()
}
