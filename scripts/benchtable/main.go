// Command oashare-benchtable turns the raw measurements of scripts/bench
// into the tables it prints: medians over runs, ratios computed within each
// run (then their median), and the targets, each marked met or not.
//
//	oashare-benchtable -raw raw.csv -machine machine.txt -out DIR
//
// It writes DIR/table.md and DIR/table.csv.
package main

import (
	"encoding/csv"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Systems in the order of the table's columns; oashare is compared with
// each of the others. "before" is oashare built from an earlier commit
// (scripts/bench's BENCH_BEFORE); "plain" is the same code built with
// -tags oashare_plain: anonymous nodes on plain TCP, no signed records.
// Both are shown only when measured.
var systems = []string{"local", "loopback", "sshfs", "before", "plain", "oashare"}

// systemNames are the column heads.
var systemNames = map[string]string{"local": "local disk", "loopback": "FUSE loopback", "sshfs": "sshfs",
	"before": "oashare before", "plain": "oashare, no members", "oashare": "oashare"}

// visRows are the rows of the visibility table (scripts/visdelay): metric
// and what it says.
var visRows = []struct{ metric, name string }{
	{"vis_close_now", "seen by the first read right after close (%)"},
	{"vis_close_p50", "close → seen on peer 4, p50 (ms)"},
	{"vis_close_p99", "close → seen on peer 4, p99 (ms)"},
	{"vis_close_max", "close → seen on peer 4, max (ms)"},
	{"vis_close_op_p50", "open, write, close on peer 1, p50 (ms)"},
	{"vis_fsync_now", "seen by the first read right after fsync, close (%)"},
	{"vis_fsync_p99", "fsync, close → seen on peer 4, p99 (ms)"},
	{"vis_fsync_op_p50", "open, write, fsync, close on peer 1, p50 (ms)"},
	{"vis_fsync_op_p99", "open, write, fsync, close on peer 1, p99 (ms)"},
}

// repairRows are the rows of the repair table (scripts/bench's repair).
var repairRows = []struct{ metric, name string }{
	{"repair_restore", "kill → fsck clean on peer 1, --repair-after 5s (s)"},
	{"repair_copied", "copies restored (MiB)"},
	{"repair_fg_write", "256 MiB write into peer 1 while repair runs, ÷ before the kill"},
	{"repair_fg_read", "256 MiB cold read on peer 4 while repair runs, ÷ before the kill"},
}

// joinRows are the rows of the join table (scripts/bench's join: Go
// benchmarks of chunknet on loopback TCP with a synthetic namespace).
var joinRows = []struct{ metric, name string }{
	{"join_snapshot", "join a share of 1 000 000 files whose history was pruned: snapshot (s)"},
	{"join_replay", "join a share of 100 000 files by replaying one record per file (s)"},
}

// membersRows are the rows of the members-only table (scripts/bench's
// members_bench: the same code with and without members, ratios).
var membersRows = []struct{ metric, name string }{
	{"members_write", "sequential write into peer 1 (64 MiB files, fsync)"},
	{"members_read", "cold read on peer 4 (64 MiB, no cache)"},
	{"members_small", "tar x of small files (0-8 KiB) into peer 1"},
}

// workload is one row of the main table.
type workload struct {
	metric, name string
}

var workloads = []workload{
	{"seq_write", "sequential write, 1 file (dd bs=1M conv=fsync) into peer 1"},
	{"seq_read", "sequential read on peer 4, caches dropped"},
	{"rand_read_4k", "random 4 KiB reads on peer 4 (fio, psync, 1 job)"},
	{"tar_x_small", "tar x of small files (0-8 KiB) into peer 1"},
	{"read_small", "reading the small files on peer 4, caches dropped"},
	{"tar_x_tree", "tar x of a tree of empty files into peer 1"},
	{"ls_lR", "ls -lR of the tree on peer 4, caches dropped"},
}

// target is a goal from the issue tracker: oashare's figure compared with
// another system's (ratio), or an absolute bound on a per-node figure.
type target struct {
	metric string
	vs     string  // system the ratio is against; "" for an absolute bound
	min    float64 // ratio ≥ min (vs set), or oashare's figure ≥ min (vs empty)
	max    float64 // value ≤ max (vs empty, min 0): the worst node counts
	text   string
}

var targets = []target{
	{metric: "seq_write", vs: "sshfs", min: 1.0, text: "sequential write ≥ 1.0× sshfs"},
	{metric: "seq_write", vs: "loopback", min: 0.4, text: "sequential write ≥ 0.4× FUSE loopback"},
	{metric: "seq_read", vs: "sshfs", min: 1.0, text: "cold sequential read on another peer ≥ 1.0× sshfs"},
	{metric: "tar_x_small", vs: "sshfs", min: 1.0, text: "tar x of small files ≥ 1.0× sshfs"},
	{metric: "read_small", vs: "sshfs", min: 1.0, text: "reading the small files back ≥ 1.0× sshfs"},
	{metric: "seq_write", vs: "plain", min: 0.9, text: "members only: sequential write ≥ 0.9× the same code without members"},
	{metric: "seq_read", vs: "plain", min: 0.9, text: "members only: cold sequential read ≥ 0.9× the same code without members"},
	{metric: "tar_x_small", vs: "plain", min: 0.9, text: "members only: tar x of small files ≥ 0.9× the same code without members"},
	{metric: "seq_write", vs: "before", min: 0.9, text: "sequential write ≥ 0.9× before (every change since counts)"},
	{metric: "seq_read", vs: "before", min: 0.9, text: "cold sequential read ≥ 0.9× before (every change since counts)"},
	{metric: "tar_x_small", vs: "before", min: 0.9, text: "tar x of small files ≥ 0.9× before (every change since counts)"},
	{metric: "members_write", min: 0.9, text: "members only, same code: write ≥ 0.9× plain TCP"},
	{metric: "members_read", min: 0.9, text: "members only, same code: cold read ≥ 0.9× plain TCP"},
	{metric: "members_small", min: 0.9, text: "members only, same code: tar x of small files ≥ 0.9× plain TCP"},
	{metric: "repair_fg_write", min: 0.7, text: "a write while repair runs ≥ 0.7× without"},
	{metric: "repair_fg_read", min: 0.7, text: "a read while repair runs ≥ 0.7× without"},
	{metric: "rss_write", max: 256, text: "a node's peak RSS during the write ≤ 256 MiB"},
	{metric: "disk_per_chunk_byte", max: 1.15, text: "bytes on disk per node ≤ 1.15× the chunk bytes it holds"},
	{metric: "join_snapshot", max: 60, text: "joining a 1 000 000-file share takes seconds, not minutes (≤ 60 s)"},
}

// sample is one line of raw.csv.
type sample struct {
	run    int
	system string
	metric string
	value  float64
	unit   string
}

func main() {
	rawPath := flag.String("raw", "", "raw measurements (run,system,metric,value,unit)")
	machine := flag.String("machine", "", "file with the machine's details")
	out := flag.String("out", "", "directory for table.md and table.csv")
	flag.Parse()
	if *rawPath == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "oashare-benchtable: -raw and -out are required (see -help)")
		os.Exit(2)
	}
	if err := run(*rawPath, *machine, *out); err != nil {
		fmt.Fprintln(os.Stderr, "oashare-benchtable:", err)
		os.Exit(1)
	}
}

func run(rawPath, machinePath, out string) error {
	f, err := os.Open(rawPath)
	if err != nil {
		return err
	}
	defer f.Close()
	samples, err := readRaw(f)
	if err != nil {
		return fmt.Errorf("%s: %w", rawPath, err)
	}
	var machine string
	if machinePath != "" {
		b, err := os.ReadFile(machinePath)
		if err != nil {
			return err
		}
		machine = string(b)
	}
	t := summarize(samples)
	if err := os.WriteFile(filepath.Join(out, "table.md"), []byte(t.markdown(machine)), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "table.csv"), []byte(t.csv()), 0o644)
}

func readRaw(r io.Reader) ([]sample, error) {
	rows, err := csv.NewReader(r).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 || strings.Join(rows[0], ",") != "run,system,metric,value,unit" {
		return nil, fmt.Errorf("want the header run,system,metric,value,unit")
	}
	var out []sample
	for i, row := range rows[1:] {
		if len(row) != 5 {
			return nil, fmt.Errorf("line %d: %d fields, want 5", i+2, len(row))
		}
		run, err := strconv.Atoi(row[0])
		if err != nil {
			return nil, fmt.Errorf("line %d: run %q: %v", i+2, row[0], err)
		}
		v, err := strconv.ParseFloat(row[3], 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("line %d: value %q is not a number", i+2, row[3])
		}
		out = append(out, sample{run, row[1], row[2], v, row[4]})
	}
	return out, nil
}

// median of vs; NaN when vs is empty.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

type key struct{ system, metric string }

// table holds medians, per-run ratios and the number of runs.
type table struct {
	runs   int
	values map[key][]float64       // every run's value
	byRun  map[key]map[int]float64 // run → value
	units  map[string]string
	nodes  []int // oashare peers with per-node figures
}

func summarize(samples []sample) *table {
	t := &table{values: map[key][]float64{}, byRun: map[key]map[int]float64{}, units: map[string]string{}}
	peers := map[int]bool{}
	for _, s := range samples {
		k := key{s.system, s.metric}
		t.values[k] = append(t.values[k], s.value)
		if t.byRun[k] == nil {
			t.byRun[k] = map[int]float64{}
		}
		t.byRun[k][s.run] = s.value
		t.units[s.metric] = s.unit
		if !strings.HasPrefix(s.metric, "members_") { // rounds of a Go benchmark, not runs
			t.runs = max(t.runs, s.run)
		}
		if p, ok := peerOf(s.metric); ok {
			peers[p] = true
		}
	}
	for p := range peers {
		t.nodes = append(t.nodes, p)
	}
	slices.Sort(t.nodes)
	return t
}

// nodeMetrics are the per-node figures, recorded as metric_pK for peer K.
var nodeMetrics = []string{"rss_write", "cpu_per_gib", "disk_per_chunk_byte"}

// peerOf returns K for a per-node metric (one of nodeMetrics) ending in
// _pK.
func peerOf(metric string) (int, bool) {
	i := strings.LastIndex(metric, "_p")
	if i < 0 || !slices.Contains(nodeMetrics, metric[:i]) {
		return 0, false
	}
	k, err := strconv.Atoi(metric[i+2:])
	return k, err == nil
}

func (t *table) median(system, metric string) float64 {
	return median(t.values[key{system, metric}])
}

// ratio is the median over runs of oashare's figure divided by system's
// figure in the same run.
func (t *table) ratio(metric, system string) float64 {
	a, b := t.byRun[key{"oashare", metric}], t.byRun[key{system, metric}]
	var rs []float64
	for run, va := range a {
		if vb, ok := b[run]; ok && vb > 0 {
			rs = append(rs, va/vb)
		}
	}
	return median(rs)
}

// worst is the largest per-node median of metric_pK (a bound applies to
// every node).
func (t *table) worst(metric string) (float64, int) {
	w, at := math.NaN(), 0
	for _, p := range t.nodes {
		v := t.median("oashare", fmt.Sprintf("%s_p%d", metric, p))
		if !math.IsNaN(v) && (math.IsNaN(w) || v > w) {
			w, at = v, p
		}
	}
	return w, at
}

// met evaluates a target: the figure, and whether it is met; ok is false
// when the run has no figure for it.
func (t *table) met(g target) (fig float64, met, ok bool) {
	if g.vs != "" {
		fig = t.ratio(g.metric, g.vs)
		return fig, fig >= g.min, !math.IsNaN(fig)
	}
	if g.min > 0 { // a figure of oashare's own, at least min
		fig = t.median("oashare", g.metric)
		return fig, fig >= g.min, !math.IsNaN(fig)
	}
	fig, _ = t.worst(g.metric)
	if math.IsNaN(fig) { // a figure of oashare's own, not per node
		fig = t.median("oashare", g.metric)
	}
	return fig, fig <= g.max, !math.IsNaN(fig)
}

func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func ratioText(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + "×"
}

// shown returns the systems of the table's columns: those measured, in
// the order of systems, and the ones oashare is compared with.
func (t *table) shown() (cols, vs []string) {
	for _, s := range systems {
		if (s == "before" || s == "plain") && !t.has(s) {
			continue
		}
		cols = append(cols, s)
		if s != "oashare" {
			vs = append(vs, s)
		}
	}
	return cols, vs
}

// has reports whether any figure of system was measured.
func (t *table) has(system string) bool {
	for k := range t.values {
		if k.system == system {
			return true
		}
	}
	return false
}

func (t *table) markdown(machine string) string {
	var b strings.Builder
	cols, vs := t.shown()
	fmt.Fprintf(&b, "Each figure is the median of %d runs; each ratio is oashare's figure over the other system's in the same run, median over runs. Higher is better.\n\n", t.runs)
	b.WriteString("| workload | unit |")
	for _, s := range cols {
		fmt.Fprintf(&b, " %s |", systemNames[s])
	}
	for _, s := range vs {
		fmt.Fprintf(&b, " vs %s |", strings.TrimPrefix(systemNames[s], "oashare "))
	}
	b.WriteString("\n|---|---|" + strings.Repeat("--:|", len(cols)+len(vs)) + "\n")
	for _, w := range workloads {
		fmt.Fprintf(&b, "| %s | %s |", w.name, t.units[w.metric])
		for _, s := range cols {
			fmt.Fprintf(&b, " %s |", num(t.median(s, w.metric)))
		}
		for _, s := range vs {
			fmt.Fprintf(&b, " %s |", ratioText(t.ratio(w.metric, s)))
		}
		b.WriteString("\n")
	}
	var vis []string // the oashare systems with visibility figures
	for _, s := range []string{"before", "plain", "oashare"} {
		if !math.IsNaN(t.median(s, "vis_close_p50")) {
			vis = append(vis, s)
		}
	}
	if len(vis) > 0 {
		b.WriteString("\nVisibility of a change made on peer 1, read on peer 4 (a 4 KiB file overwritten again and again; median of runs of each figure):\n\n| |")
		for _, s := range vis {
			fmt.Fprintf(&b, " %s |", systemNames[s])
		}
		b.WriteString("\n|---|" + strings.Repeat("--:|", len(vis)) + "\n")
		for _, r := range visRows {
			fmt.Fprintf(&b, "| %s |", r.name)
			for _, s := range vis {
				fmt.Fprintf(&b, " %s |", num(t.median(s, r.metric)))
			}
			b.WriteString("\n")
		}
	}
	if len(t.nodes) > 0 {
		b.WriteString("\noashare, per node (median of runs):\n\n| node |")
		for _, p := range t.nodes {
			fmt.Fprintf(&b, " peer %d |", p)
		}
		b.WriteString("\n|---|" + strings.Repeat("--:|", len(t.nodes)) + "\n")
		for _, row := range []struct{ metric, name string }{
			{"rss_write", "peak RSS during the write (MiB)"},
			{"cpu_per_gib", "CPU seconds per GiB written"},
			{"disk_per_chunk_byte", "bytes on disk per chunk byte held"},
		} {
			fmt.Fprintf(&b, "| %s |", row.name)
			for _, p := range t.nodes {
				fmt.Fprintf(&b, " %s |", num(t.median("oashare", fmt.Sprintf("%s_p%d", row.metric, p))))
			}
			b.WriteString("\n")
		}
		if v := t.median("oashare", "cpu_per_gib_all"); !math.IsNaN(v) {
			fmt.Fprintf(&b, "\nAll four nodes together: %s CPU seconds per GiB written.\n", num(v))
		}
	}
	if v := t.median("oashare", "repair_restore"); !math.IsNaN(v) {
		b.WriteString("\nRepair: peer 2 of the 4 is killed with everything above on the share (median of runs):\n\n| | oashare |\n|---|--:|\n")
		for _, r := range repairRows {
			fmt.Fprintf(&b, "| %s | %s |\n", r.name, num(t.median("oashare", r.metric)))
		}
	}
	if v := t.median("oashare", "join_snapshot"); !math.IsNaN(v) {
		b.WriteString("\nJoining: a new node gets the namespace from one peer (go test -bench Join ./chunknet, loopback TCP):\n\n| | oashare |\n|---|--:|\n")
		for _, r := range joinRows {
			fmt.Fprintf(&b, "| %s | %s |\n", r.name, num(t.median("oashare", r.metric)))
		}
	}
	if v := t.median("oashare", "members_write"); !math.IsNaN(v) {
		b.WriteString("\nMembers only, alone: today's code with members (keys, signed records, TLS and sealed records) against the same code between anonymous nodes on plain TCP (go test -bench MembersCost ./fusefs: 4 peers, replicas 3, real FUSE mounts, loopback TCP, fresh bytes in every file; the two take turns, median of 3 rounds). Throughput is members ÷ plain, CPU (of all peers, per op) members ÷ plain:\n\n| | throughput | CPU |\n|---|--:|--:|\n")
		for _, r := range membersRows {
			fmt.Fprintf(&b, "| %s | %s× | %s× |\n", r.name, num(t.median("oashare", r.metric)), num(t.median("oashare", r.metric+"_cpu")))
		}
	}
	b.WriteString("\nTargets:\n\n| target | measured | met |\n|---|--:|---|\n")
	for _, g := range targets {
		fig, met, ok := t.met(g)
		if !ok && (g.vs == "before" || g.vs == "plain") {
			continue // no such build in these runs
		}
		m := "no"
		switch {
		case !ok:
			m = "not measured"
		case met:
			m = "yes"
		}
		f := num(fig)
		if g.vs != "" {
			f = ratioText(fig)
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", g.text, f, m)
	}
	if machine != "" {
		b.WriteString("\nMachine and run:\n\n```\n" + strings.TrimRight(machine, "\n") + "\n```\n")
	}
	return b.String()
}

func (t *table) csv() string {
	var b strings.Builder
	w := csv.NewWriter(&b)
	cols, vs := t.shown()
	head := []string{"metric", "unit"}
	head = append(head, cols...)
	for _, s := range vs {
		head = append(head, "oashare_vs_"+s)
	}
	w.Write(head)
	f := func(v float64) string {
		if math.IsNaN(v) {
			return ""
		}
		return strconv.FormatFloat(v, 'g', 6, 64)
	}
	for _, wl := range workloads {
		row := []string{wl.metric, t.units[wl.metric]}
		for _, s := range cols {
			row = append(row, f(t.median(s, wl.metric)))
		}
		for _, s := range vs {
			row = append(row, f(t.ratio(wl.metric, s)))
		}
		w.Write(row)
	}
	for _, r := range visRows {
		row := []string{r.metric, t.units[r.metric]}
		for _, s := range cols {
			row = append(row, f(t.median(s, r.metric)))
		}
		w.Write(append(row, make([]string, len(vs))...))
	}
	var node []string
	for k := range t.values {
		if k.system == "oashare" && !slices.Contains(node, k.metric) {
			if _, ok := peerOf(k.metric); ok || k.metric == "cpu_per_gib_all" {
				node = append(node, k.metric)
			}
		}
	}
	slices.Sort(node)
	for _, m := range node {
		row := []string{m, t.units[m]}
		for _, s := range cols {
			if s == "oashare" {
				row = append(row, f(t.median(s, m)))
			} else {
				row = append(row, "")
			}
		}
		w.Write(append(row, make([]string, len(vs))...))
	}
	w.Flush()
	return b.String()
}
