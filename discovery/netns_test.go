package discovery

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The mDNS test runs real multicast, so it must never run in the machine's
// own network namespace. It builds a private LAN out of namespaces:
//
//	oasdisc-br-<pid>: bridge br0, ports p1..pN
//	oasdisc-<x>-<pid>: lo, oas0 (veth to pN), 10.231.0.N/24,
//	                   route 224.0.0.0/4 dev oas0, no default route
//
// Each node is this test binary re-executed under nsenter with
// helperEnv set; TestMain turns it into a small program that runs MDNS and
// writes one JSON line per event and per log record to stdout, until its
// stdin is closed. Running each node as its own process puts every socket
// and every goroutine zeroconf starts inside the node's namespace, with no
// thread-pinning tricks. The helper also refuses to start in the namespace
// of the test process itself.

const (
	helperEnv      = "OASDISC_HELPER" // "mdns" in a helper process
	helperHostNet  = "OASDISC_HOST_NETNS"
	helperID       = "OASDISC_ID"
	helperNetwork  = "OASDISC_NETWORK"
	helperVersion  = "OASDISC_VERSION"
	helperPort     = "OASDISC_PORT"
	helperIfaces   = "OASDISC_IFACES"
	labIface       = "oas0"
	labDeadline    = 20 * time.Second
	helperStopWait = 10 * time.Second
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode))
	}
	os.Exit(m.Run())
}

// helperLine is one line of helper output: an event or a log record.
type helperLine struct {
	Ev    *Event `json:"ev,omitempty"`
	Msg   string `json:"msg,omitempty"`
	Level string `json:"level,omitempty"`
	Peer  string `json:"peer,omitempty"`
}

// lockedWriter serialises writes of whole lines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// netnsID identifies the network namespace of this process.
func netnsID() (string, error) {
	fi, err := os.Stat("/proc/self/ns/net")
	if err != nil {
		return "", err
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino), nil
}

// helperMain is the node program; it returns the exit code.
func helperMain(mode string) int {
	if mode != "mdns" {
		fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
		return 2
	}
	// Safety belt: never announce in the test's own namespace.
	self, err := netnsID()
	if err != nil || self == os.Getenv(helperHostNet) {
		fmt.Fprintf(os.Stderr, "refusing to run mDNS outside a private network namespace (%s, %v)\n", self, err)
		return 3
	}
	version, _ := strconv.Atoi(os.Getenv(helperVersion))
	port, _ := strconv.Atoi(os.Getenv(helperPort))
	out := &lockedWriter{w: os.Stdout}
	m := MDNS{
		ID:      os.Getenv(helperID),
		Network: os.Getenv(helperNetwork),
		Version: version,
		Port:    port,
		Logger:  slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug})),
		// Short sessions: a node that restarts on another port (below) is
		// reported again within one session even if a stale answer hid it.
		Rebrowse: 3 * time.Second,
	}
	if s := os.Getenv(helperIfaces); s != "" {
		m.Ifaces = strings.Split(s, ",")
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		io.Copy(io.Discard, os.Stdin) // until the test closes our stdin
		cancel()
	}()
	enc := json.NewEncoder(out)
	err = m.Run(ctx, func(e Event) {
		if err := enc.Encode(helperLine{Ev: &e}); err != nil {
			fmt.Fprintln(os.Stderr, "writing event:", err)
		}
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "Run:", err)
		return 1
	}
	return 0
}

// lab is a private LAN of network namespaces.
type lab struct {
	t      *testing.T
	suffix string
	bridge string
	nodes  map[string]string // node name → namespace
	addrs  map[string]string // node name → IPv4 address
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// addNetns creates a namespace and schedules its deletion.
func addNetns(t *testing.T, name string) {
	t.Helper()
	ipCmd(t, "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
		if _, err := os.Stat("/run/netns/" + name); err == nil {
			t.Errorf("namespace %s left behind", name)
		}
	})
}

func newLab(t *testing.T, names ...string) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the mDNS test needs root to build private network namespaces")
	}
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the mDNS test needs %s: %v", tool, err)
		}
	}
	l := &lab{
		t:      t,
		suffix: strconv.Itoa(os.Getpid()),
		nodes:  make(map[string]string),
		addrs:  make(map[string]string),
	}
	l.bridge = "oasdisc-br-" + l.suffix
	addNetns(t, l.bridge)
	ipCmd(t, "-n", l.bridge, "link", "set", "lo", "up")
	ipCmd(t, "-n", l.bridge, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
	ipCmd(t, "-n", l.bridge, "link", "set", "br0", "up")
	for i, name := range names {
		ns := "oasdisc-" + name + "-" + l.suffix
		port := "p" + strconv.Itoa(i+1)
		addr := "10.231.0." + strconv.Itoa(i+1)
		addNetns(t, ns)
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
		// Both ends are created inside the lab: oas0 in the node's
		// namespace, its peer directly in the bridge's.
		ipCmd(t, "-n", ns, "link", "add", labIface, "type", "veth", "peer", "name", port, "netns", l.bridge)
		ipCmd(t, "-n", l.bridge, "link", "set", port, "master", "br0")
		ipCmd(t, "-n", l.bridge, "link", "set", port, "up")
		ipCmd(t, "-n", ns, "addr", "add", addr+"/24", "dev", labIface)
		ipCmd(t, "-n", ns, "link", "set", labIface, "up")
		ipCmd(t, "-n", ns, "route", "add", "224.0.0.0/4", "dev", labIface)
		l.nodes[name] = ns
		l.addrs[name] = addr
	}
	return l
}

// node is one running helper process.
type node struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser

	mu      sync.Mutex
	lines   []helperLine
	changed chan struct{}
	stderr  bytes.Buffer // guarded by mu (through lockedWriter)
	done    chan struct{}
	waitErr error // set before done is closed
}

// start runs MDNS as a helper inside the named lab node's namespace.
func (l *lab) start(name string, m MDNS) *node {
	t := l.t
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	host, err := netnsID()
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, name: name, changed: make(chan struct{}, 1), done: make(chan struct{})}
	n.cmd = exec.Command("nsenter", "--net=/run/netns/"+l.nodes[name], "--", exe)
	n.cmd.Env = append(os.Environ(),
		helperEnv+"=mdns",
		helperHostNet+"="+host,
		helperID+"="+m.ID,
		helperNetwork+"="+m.Network,
		helperVersion+"="+strconv.Itoa(m.Version),
		helperPort+"="+strconv.Itoa(m.Port),
		helperIfaces+"="+strings.Join(m.Ifaces, ","),
		// Under -race, exit at once rather than after the race runtime's
		// default one-second pause; reports still fail the test.
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"),
	)
	n.cmd.Stderr = &lockedWriter{w: &n.stderr}
	stdout, err := n.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if n.stdin, err = n.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go n.read(stdout)
	t.Cleanup(func() {
		select {
		case <-n.done:
		default:
			n.cmd.Process.Kill()
			<-n.done
		}
		if t.Failed() {
			n.mu.Lock()
			t.Logf("node %s (pid %d) stderr:\n%s", name, n.cmd.Process.Pid, n.stderr.String())
			n.mu.Unlock()
		}
	})
	return n
}

// read collects the helper's output, then waits for it to exit.
func (n *node) read(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		var hl helperLine
		if err := json.Unmarshal(sc.Bytes(), &hl); err != nil {
			hl = helperLine{Msg: "unparsed: " + sc.Text()}
		}
		n.mu.Lock()
		n.lines = append(n.lines, hl)
		n.mu.Unlock()
		select {
		case n.changed <- struct{}{}:
		default:
		}
	}
	n.waitErr = n.cmd.Wait()
	close(n.done)
}

func (n *node) snapshot() []helperLine {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]helperLine(nil), n.lines...)
}

// events returns the events the node has emitted so far.
func (n *node) events() []Event {
	var evs []Event
	for _, hl := range n.snapshot() {
		if hl.Ev != nil {
			evs = append(evs, *hl.Ev)
		}
	}
	return evs
}

// waitFor waits until some output line satisfies match.
func (n *node) waitFor(what string, match func(helperLine) bool) helperLine {
	n.t.Helper()
	timer := time.NewTimer(labDeadline)
	defer timer.Stop()
	for {
		for _, hl := range n.snapshot() {
			if match(hl) {
				return hl
			}
		}
		select {
		case <-n.changed:
		case <-n.done:
			// Check the last lines once more, then give up.
			for _, hl := range n.snapshot() {
				if match(hl) {
					return hl
				}
			}
			n.t.Fatalf("node %s exited (%v) before %s", n.name, n.waitErr, what)
		case <-timer.C:
			var out strings.Builder
			for _, hl := range n.snapshot() {
				if hl.Ev != nil {
					fmt.Fprintf(&out, "\n\tevent %+v", *hl.Ev)
				} else {
					fmt.Fprintf(&out, "\n\t%s %s %s", hl.Level, hl.Msg, hl.Peer)
				}
			}
			n.t.Fatalf("node %s: timed out after %v waiting for %s; output:%s", n.name, labDeadline, what, out.String())
		}
	}
}

// waitEvent waits for an event equal to want.
func (n *node) waitEvent(want Event) {
	n.t.Helper()
	n.waitFor(fmt.Sprintf("event %+v", want), func(hl helperLine) bool { return hl.Ev != nil && *hl.Ev == want })
}

// waitLog waits for a log record about peer whose message contains msg.
func (n *node) waitLog(level, msg, peer string) {
	n.t.Helper()
	n.waitFor(fmt.Sprintf("%s log %q about %s", level, msg, peer), func(hl helperLine) bool {
		return hl.Level == level && hl.Peer == peer && strings.Contains(hl.Msg, msg)
	})
}

// stop cancels the node's Run (by closing its stdin) and checks that it
// returned cleanly.
func (n *node) stop() {
	n.t.Helper()
	n.stdin.Close()
	select {
	case <-n.done:
	case <-time.After(helperStopWait):
		n.t.Fatalf("node %s did not stop within %v", n.name, helperStopWait)
	}
	n.mu.Lock()
	stderr := n.stderr.String()
	n.mu.Unlock()
	if n.waitErr != nil {
		n.t.Fatalf("node %s: %v\n%s", n.name, n.waitErr, stderr)
	}
	if strings.Contains(stderr, "DATA RACE") {
		n.t.Fatalf("node %s: data race\n%s", n.name, stderr)
	}
}

func TestMDNSInNamespaces(t *testing.T) {
	l := newLab(t, "a", "b", "c", "d")

	const (
		idA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		idB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
		idC = "cccccccccccccccccccccccccccccccc"
		idD = "dddddddddddddddddddddddddddddddd"
	)
	// A uses the default interface selection, B names its interface.
	mA := MDNS{ID: idA, Network: "lab", Version: 1, Port: 7001}
	mB := MDNS{ID: idB, Network: "lab", Version: 1, Port: 7002, Ifaces: []string{labIface}}
	mC := MDNS{ID: idC, Network: "elsewhere", Version: 1, Port: 7003}
	mD := MDNS{ID: idD, Network: "lab", Version: 2, Port: 7004}

	a := l.start("a", mA)
	b := l.start("b", mB)
	c := l.start("c", mC)
	d := l.start("d", mD)

	// A and B see each other, with what they announced.
	b.waitEvent(Event{ID: idA, Addr: l.addrs["a"] + ":7001", Network: "lab", Version: 1, Source: SourceMDNS})
	a.waitEvent(Event{ID: idB, Addr: l.addrs["b"] + ":7002", Network: "lab", Version: 1, Source: SourceMDNS})

	// C (another network) and D (another version) reach B and are refused;
	// C in turn refuses B.
	b.waitLog("DEBUG", "ignoring node of another network", idC)
	b.waitLog("WARN", "peer "+idD+" speaks protocol v2, we speak v1", idD)
	c.waitLog("DEBUG", "ignoring node of another network", idB)
	for _, n := range []*node{a, b} {
		for _, e := range n.events() {
			if e.ID == idC || e.ID == idD {
				t.Errorf("node %s reported a stranger: %+v", n.name, e)
			}
		}
	}
	if evs := c.events(); len(evs) != 0 {
		t.Errorf("node c of another network reported %+v", evs)
	}

	// Nobody reports itself.
	for n, id := range map[*node]string{a: idA, b: idB, c: idC, d: idD} {
		for _, e := range n.events() {
			if e.ID == id {
				t.Errorf("node %s reported itself: %+v", n.name, e)
			}
		}
	}

	// A leaves: Run returns and sends its goodbye. zeroconf v1.0.0 does not
	// pass goodbyes on, but it does forget A on receiving one, so when A
	// comes back on another port, B reports the new address at once (with
	// no goodbye, B's browse would stay silent about A until it restarts).
	a.stop()
	mA.Port = 7011
	a2 := l.start("a", mA)
	b.waitEvent(Event{ID: idA, Addr: l.addrs["a"] + ":7011", Network: "lab", Version: 1, Source: SourceMDNS})
	for _, e := range b.events() {
		if e.Gone {
			t.Errorf("zeroconf v1.0.0 delivered a goodbye after all: %+v; document and test Gone", e)
		}
	}

	for _, n := range []*node{a2, b, c, d} {
		n.stop()
	}
}

func TestHelperRefusesHostNamespace(t *testing.T) {
	// The helper's safety belt: started in the test's own namespace, it
	// must exit before opening any socket. (It is given no node ID, so even
	// a broken belt would stop at Run's validation.)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	host, err := netnsID()
	if err != nil {
		t.Skipf("cannot identify the network namespace: %v", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), helperEnv+"=mdns", helperHostNet+"="+host)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("helper in the host namespace: %v, want exit status 3\n%s", err, out)
	}
	if !strings.Contains(string(out), "refusing to run mDNS") {
		t.Errorf("helper output %q", out)
	}
}

// TestMDNSFollowsNetworkChanges: a node started while its only interface
// is down waits for it instead of giving up, and finds its peer once the
// interface comes up; when its address changes, the peer learns the new
// one without a restart.
func TestMDNSFollowsNetworkChanges(t *testing.T) {
	l := newLab(t, "a", "b")
	const (
		idA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		idB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	)
	ipCmd(t, "-n", l.nodes["a"], "link", "set", labIface, "down")
	a := l.start("a", MDNS{ID: idA, Network: "lab", Version: 1, Port: 7001})
	b := l.start("b", MDNS{ID: idB, Network: "lab", Version: 1, Port: 7002})
	a.waitLog("WARN", "waiting for a network interface to come up", "")

	ipCmd(t, "-n", l.nodes["a"], "link", "set", labIface, "up")
	// The multicast route went with the link; put it back, as a DHCP
	// client or NetworkManager would set the link up with its routes.
	exec.Command("ip", "-n", l.nodes["a"], "route", "replace", "224.0.0.0/4", "dev", labIface).Run()
	a.waitEvent(Event{ID: idB, Addr: l.addrs["b"] + ":7002", Network: "lab", Version: 1, Source: SourceMDNS})
	b.waitEvent(Event{ID: idA, Addr: l.addrs["a"] + ":7001", Network: "lab", Version: 1, Source: SourceMDNS})

	// A new address (a new DHCP lease, another network).
	// (Deleting the old one first: Linux deletes the secondary addresses
	// of a subnet with its primary one.)
	ipCmd(t, "-n", l.nodes["a"], "addr", "del", l.addrs["a"]+"/24", "dev", labIface)
	ipCmd(t, "-n", l.nodes["a"], "addr", "add", "10.231.0.101/24", "dev", labIface)
	exec.Command("ip", "-n", l.nodes["a"], "route", "replace", "224.0.0.0/4", "dev", labIface).Run()
	b.waitEvent(Event{ID: idA, Addr: "10.231.0.101:7001", Network: "lab", Version: 1, Source: SourceMDNS})
	a.stop()
	b.stop()
}
