package main

import (
	"math"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{7}, 7},
	} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing is not NaN")
	}
}

const raw = `run,system,metric,value,unit
1,sshfs,seq_write,100,MiB/s
1,oashare,seq_write,50,MiB/s
2,sshfs,seq_write,10,MiB/s
2,oashare,seq_write,40,MiB/s
3,sshfs,seq_write,50,MiB/s
3,oashare,seq_write,60,MiB/s
1,loopback,seq_write,100,MiB/s
1,oashare,rss_write_p1,100,MiB
2,oashare,rss_write_p1,120,MiB
1,oashare,rss_write_p2,300,MiB
2,oashare,rss_write_p2,280,MiB
1,oashare,disk_per_chunk_byte_p1,1.1,x
`

// Ratios are taken within a run, then the median: runs 1..3 give 0.5,
// 4 and 1.2, so 1.2, which is neither the ratio of medians (50/50 = 1) nor
// any system's median.
func TestRatioWithinRuns(t *testing.T) {
	s, err := readRaw(strings.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	tb := summarize(s)
	if got := tb.ratio("seq_write", "sshfs"); got != 1.2 {
		t.Errorf("ratio vs sshfs = %v, want 1.2", got)
	}
	if got := tb.ratio("seq_write", "loopback"); got != 0.5 {
		t.Errorf("ratio vs loopback (one shared run) = %v, want 0.5", got)
	}
	if got := tb.ratio("seq_read", "sshfs"); !math.IsNaN(got) {
		t.Errorf("ratio of an unmeasured workload = %v, want NaN", got)
	}
}

func TestTargets(t *testing.T) {
	s, err := readRaw(strings.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	tb := summarize(s)
	want := map[string]struct {
		fig      float64
		met, got bool
	}{
		"sequential write ≥ 1.0× sshfs":                           {1.2, true, true},
		"sequential write ≥ 0.4× FUSE loopback":                   {0.5, true, true},
		"cold sequential read on another peer ≥ 1.0× sshfs":       {math.NaN(), false, false},
		"a node's peak RSS during the write ≤ 256 MiB":            {290, false, true}, // peer 2's median is the worst
		"bytes on disk per node ≤ 1.15× the chunk bytes it holds": {1.1, true, true},
	}
	for _, g := range targets {
		w, ok := want[g.text]
		if !ok {
			continue
		}
		fig, met, got := tb.met(g)
		if got != w.got || (got && (met != w.met || math.Abs(fig-w.fig) > 1e-9)) {
			t.Errorf("%s: figure %v met %v measured %v; want %v %v %v", g.text, fig, met, got, w.fig, w.met, w.got)
		}
	}
	md := tb.markdown("cpu: test")
	for _, s := range []string{"| sequential write ≥ 1.0× sshfs | 1.20× | yes |", "| a node's peak RSS during the write ≤ 256 MiB | 290 | no |", "not measured", "cpu: test"} {
		if !strings.Contains(md, s) {
			t.Errorf("markdown lacks %q:\n%s", s, md)
		}
	}
}

func TestReadRawRejects(t *testing.T) {
	for _, bad := range []string{
		"",
		"run,system\n1,local\n",
		"run,system,metric,value,unit\nx,local,seq_write,1,MiB/s\n",
		"run,system,metric,value,unit\n1,local,seq_write,fast,MiB/s\n",
		"run,system,metric,value,unit\n1,local,seq_write,NaN,MiB/s\n",
	} {
		if _, err := readRaw(strings.NewReader(bad)); err == nil {
			t.Errorf("readRaw accepted %q", bad)
		}
	}
}

// With measurements of an earlier build ("before"), the table shows its
// column and oashare's ratio to it, and the visibility figures of both.
func TestBeforeColumnAndVisibility(t *testing.T) {
	s, err := readRaw(strings.NewReader(raw + `1,before,seq_write,25,MiB/s
2,before,seq_write,20,MiB/s
3,before,seq_write,60,MiB/s
1,oashare,vis_close_p50,7.5,ms
1,before,vis_close_p50,9,ms
1,oashare,vis_fsync_now,100,%
1,oashare,vis_close_p99,12,ms
`))
	if err != nil {
		t.Fatal(err)
	}
	tb := summarize(s)
	if got := tb.ratio("seq_write", "before"); got != 2 {
		t.Errorf("ratio vs before = %v, want 2 (runs: 2, 2, 1)", got)
	}
	md := tb.markdown("")
	for _, want := range []string{"| oashare before | oashare |", "vs before", "| 2.00× |",
		"close → seen on peer 4, p50 (ms) | 9.00 | 7.50 |", "right after fsync, close (%) | – | 100 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("the table lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "peer 50") || strings.Contains(md, "peer 99") {
		t.Errorf("quantiles taken for peers:\n%s", md)
	}
	if !strings.Contains(tb.csv(), "oashare_vs_before") {
		t.Error("the CSV has no column for the earlier build")
	}
	// Without it, no such column.
	s, _ = readRaw(strings.NewReader(raw))
	if md := summarize(s).markdown(""); strings.Contains(md, "before") {
		t.Errorf("a table without an earlier build mentions one:\n%s", md)
	}
}

// With measurements of the same code without members ("plain"), the table
// shows its column, oashare's ratio to it, and the members-only targets
// against it; without them, neither.
func TestPlainColumnAndTargets(t *testing.T) {
	s, err := readRaw(strings.NewReader(raw + `1,plain,seq_write,50,MiB/s
2,plain,seq_write,40,MiB/s
3,plain,seq_write,50,MiB/s
`))
	if err != nil {
		t.Fatal(err)
	}
	tb := summarize(s)
	if got := tb.ratio("seq_write", "plain"); got != 1 {
		t.Errorf("ratio vs plain = %v, want 1 (runs: 1, 1, 1.2)", got)
	}
	md := tb.markdown("")
	for _, want := range []string{"| oashare, no members | oashare |", "vs oashare, no members",
		"| members only: sequential write ≥ 0.9× the same code without members |"} {
		if !strings.Contains(md, want) {
			t.Errorf("the table lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "0.9× before") {
		t.Errorf("a table without an earlier build lists targets against one:\n%s", md)
	}
	s, _ = readRaw(strings.NewReader(raw))
	if md := summarize(s).markdown(""); strings.Contains(md, "no members") || strings.Contains(md, "without members") {
		t.Errorf("a table without the plain build mentions it:\n%s", md)
	}
}
