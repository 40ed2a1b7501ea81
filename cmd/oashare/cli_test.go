package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// These tests run the built oashare binary the way a user does and check
// exit status, stderr, stdout and what is left on disk and in the mount
// table. Every node they start uses --no-mdns and listens on 127.0.0.1
// only; peers are given with --peer.

var (
	cliBinOnce sync.Once
	cliBinDir  string
	cliBinPath string
	cliBinErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if cliBinDir != "" {
		os.RemoveAll(cliBinDir)
	}
	os.Exit(code)
}

// cliBinary builds oashare once per test process and returns its path.
func cliBinary(t *testing.T) string {
	t.Helper()
	cliBinOnce.Do(func() {
		cliBinDir, cliBinErr = os.MkdirTemp("", "oashare-cli-")
		if cliBinErr != nil {
			return
		}
		bin := filepath.Join(cliBinDir, "oashare")
		cmd := exec.Command("go", "build", "-o", bin, ".")
		cmd.Dir = filepath.Join(repoRoot(t), "cmd", "oashare")
		if out, err := cmd.CombinedOutput(); err != nil {
			cliBinErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		cliBinPath = bin
	})
	if cliBinErr != nil {
		t.Fatal(cliBinErr)
	}
	return cliBinPath
}

// needFUSE skips tests that mount (or get as far as the mount point
// checks, which come after the FUSE checks).
func needFUSE(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root to mount FUSE filesystems")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse (modprobe fuse)")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("fusermount3 missing (apt-get install fuse3)")
	}
}

// cliEnv is the environment of every command: the default data directory
// points into xdg, so a command that wrongly falls back to it is caught.
func cliEnv(xdg string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "XDG_DATA_HOME=") {
			env = append(env, kv)
		}
	}
	return append(env, "XDG_DATA_HOME="+xdg)
}

type cliResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs one short-lived command (argv[0] is the program) and
// returns its exit code and output; it is killed after 30 seconds.
func runCLI(t *testing.T, dir string, env []string, argv ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = dir, env
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := cliResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("%s: %v", strings.Join(argv, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s did not exit within 30s\nstderr: %s", strings.Join(argv, " "), r.stderr)
	}
	return r
}

// wantOneLineError checks a failed command: non-zero exit, nothing on
// stdout, and exactly one line on stderr, "oashare: ..." containing phrase.
func wantOneLineError(t *testing.T, r cliResult, phrase string) {
	t.Helper()
	if r.code == 0 {
		t.Errorf("exit status 0, want non-zero")
	}
	if r.stdout != "" {
		t.Errorf("stdout not empty: %q", r.stdout)
	}
	if !strings.HasSuffix(r.stderr, "\n") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("stderr is not exactly one line: %q", r.stderr)
	}
	if !strings.HasPrefix(r.stderr, "oashare: ") {
		t.Errorf("stderr does not start with %q: %q", "oashare: ", r.stderr)
	}
	if !strings.Contains(r.stderr, phrase) {
		t.Errorf("stderr does not mention %q: %q", phrase, r.stderr)
	}
}

// procMounts returns the mount points listed in /proc/mounts.
func procMounts(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 {
			out = append(out, unescapeMount(f[1]))
		}
	}
	return out
}

// mountsUnder returns the mount points at or below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, p := range procMounts(t) {
		if p == dir || strings.HasPrefix(p, dir+"/") {
			out = append(out, p)
		}
	}
	return out
}

// countMounts returns how many times dir is a mount point.
func countMounts(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	for _, p := range procMounts(t) {
		if p == dir {
			n++
		}
	}
	return n
}

// snapshot describes every entry under root (type, permissions, size,
// modification time, content hash), so that any change shows.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(root, p)
		if err != nil {
			out[rel] = "error: " + err.Error()
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			out[rel] = "error: " + err.Error()
			return nil
		}
		desc := fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				desc += " error: " + err.Error()
			}
			desc += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		out[rel] = desc
		return nil
	})
	return out
}

func diffSnapshots(before, after map[string]string) string {
	var lines []string
	for p, a := range after {
		if b, ok := before[p]; !ok {
			lines = append(lines, "created "+p)
		} else if a != b {
			lines = append(lines, fmt.Sprintf("changed %s: %s -> %s", p, b, a))
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			lines = append(lines, "removed "+p)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// wantUnchanged checks that nothing under root changed since before and
// that nothing is mounted there.
func wantUnchanged(t *testing.T, root string, before map[string]string) {
	t.Helper()
	if m := mountsUnder(t, root); len(m) > 0 {
		t.Errorf("mounts appeared: %v", m)
		for _, p := range m {
			exec.Command("fusermount3", "-u", "-z", p).Run()
		}
	}
	if d := diffSnapshots(before, snapshot(t, root)); d != "" {
		t.Errorf("files changed:\n%s", d)
	}
}

// freeMountDir returns a new empty directory to mount on.
func freeMountDir(t *testing.T, parent, name string) string {
	t.Helper()
	p := filepath.Join(parent, name)
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCLIErrors runs commands that must fail before doing anything: each
// exits non-zero with one "oashare: ..." line on stderr and leaves its
// scratch directory (mount point, --data target, default data directory)
// exactly as it was, with nothing mounted.
//
// In args, $MNT is an existing empty directory, $DATA a data directory
// that does not exist yet and $S the scratch directory.
func TestCLIErrors(t *testing.T) {
	bin := cliBinary(t)
	safe := []string{"--no-mdns", "--listen", "127.0.0.1:0", "--data", "$DATA"}
	mount := func(extra ...string) []string {
		return append(append([]string{"mount", "$MNT"}, safe...), extra...)
	}
	cases := []struct {
		name   string
		args   []string
		setup  func(t *testing.T, s string)
		phrase string
		fuse   bool // gets past the FUSE checks, so needs FUSE
		netns  bool // runs in a network namespace of its own
	}{
		{name: "unknown flag", args: append([]string{"mount", "--bogus", "x"}, safe...), phrase: "unknown flag: --bogus"},
		{name: "missing argument", args: append([]string{"mount"}, safe...), phrase: "takes MOUNTPOINT (got 0 arguments"},
		{name: "extra arguments", args: append([]string{"mount", "$MNT", "$S/other"}, safe...), phrase: "takes MOUNTPOINT (got 2 arguments"},
		{name: "replicas 0", args: mount("--replicas", "0"), phrase: "--replicas 0: must be at least 1"},
		{name: "replicas -1", args: mount("--replicas", "-1"), phrase: "--replicas -1: must be at least 1"},
		{name: "empty network", args: mount("--network", ""), phrase: `--network "": must be 1 to 64 bytes`},
		{name: "65-byte network", args: mount("--network", strings.Repeat("n", 65)), phrase: "must be 1 to 64 bytes"},
		{name: "listen without port", args: []string{"mount", "$MNT", "--no-mdns", "--data", "$DATA", "--listen", "127.0.0.1"}, phrase: `--listen "127.0.0.1": want HOST:PORT`},
		{name: "listen port 70000", args: []string{"mount", "$MNT", "--no-mdns", "--data", "$DATA", "--listen", "127.0.0.1:70000"}, phrase: "port must be a number from 0 to 65535"},
		{name: "peer without port", args: mount("--peer", "127.0.0.1"), phrase: `--peer "127.0.0.1": want HOST:PORT`},
		{name: "iface with no-mdns", args: mount("--iface", "lo"), phrase: "--iface selects mDNS interfaces and makes no sense with --no-mdns"},
		// Without --no-mdns: the interface must be rejected while checking
		// flags, before anything starts. The command runs in an empty
		// network namespace so that it could never reach the real LAN.
		{name: "unknown iface", args: []string{"mount", "$MNT", "--listen", "127.0.0.1:0", "--data", "$DATA", "--iface", "nosuchif0"}, phrase: "interface nosuchif0 not found", netns: true},
		{name: "bad log level", args: mount("--log-level", "loud"), phrase: `--log-level "loud": want debug, info, warn or error`},
		{name: "negative cache", args: mount("--cache-mb", "-1"), phrase: "--cache-mb -1: must be from 0 to"},
		{name: "reclaim at once", args: mount("--reclaim-after", "0s"), phrase: "--reclaim-after 0s: must be from 1s to 8760h"},
		{name: "negative restore window", args: mount("--keep-versions", "-1h"), phrase: "--keep-versions -1h0m0s: must be 0 (none) or up to 87600h"},
		{name: "forget at once", args: mount("--forget-after", "1s"), phrase: "--forget-after 1s: must be from 1m to 87600h"},
		{
			name: "mount point missing", fuse: true,
			args:   append([]string{"mount", "$S/nosuchdir"}, safe...),
			phrase: "does not exist: create it with mkdir -p",
		},
		{
			name: "mount point is a file", fuse: true,
			setup: func(t *testing.T, s string) {
				if err := os.WriteFile(filepath.Join(s, "file"), []byte("keep me\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			args:   append([]string{"mount", "$S/file"}, safe...),
			phrase: "is not a directory",
		},
		{
			name: "mount point not empty", fuse: true,
			setup: func(t *testing.T, s string) {
				if err := os.WriteFile(filepath.Join(s, "mnt", "inside"), []byte("keep me\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			args:   mount(),
			phrase: "is not empty",
		},
		{name: "status without node", args: []string{"status", "--data", "$MNT"}, phrase: "no oashare node is running with data dir"},
		{name: "status extra argument", args: []string{"status", "--data", "$MNT", "x", "y"}, phrase: "accepts at most 1 arg(s), received 2"},
		{name: "status of a folder that is not a mount", args: []string{"status", "$S"}, phrase: "is not inside an oashare mount"},
		{name: "status watch and json", args: []string{"status", "--watch", "--json"}, phrase: "--watch and --json: choose one"},
		{name: "status watch interval", args: []string{"status", "--watch", "--interval", "0s"}, phrase: "--interval 0s: must be positive"},
		{name: "log file in a missing directory", args: mount("--log-file", "$S/none/node.log"), phrase: "/none/node.log: no such file or directory: give a file in a directory this user can write"},
		{name: "umount without mount point", args: []string{"umount"}, phrase: "takes MOUNTPOINT (got 0 arguments"},
		{name: "umount of a folder that is not a mount", args: []string{"umount", "$S"}, phrase: "is not inside an oashare mount"},
		{name: "version with an argument", args: []string{"version", "x"}, phrase: "takes no arguments (got 1 arguments"},
		{
			name: "where outside a mount",
			setup: func(t *testing.T, s string) {
				if err := os.WriteFile(filepath.Join(s, "file"), []byte("plain\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			args:   []string{"where", "$S/file"},
			phrase: "is not inside an oashare mount",
		},
		{name: "where without path", args: []string{"where"}, phrase: "takes PATH (got 0 arguments"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.fuse {
				needFUSE(t)
			}
			argv := []string{bin}
			if tc.netns {
				if os.Getuid() != 0 {
					t.Skip("needs root for a network namespace of its own (unshare --net)")
				}
				unshare, err := exec.LookPath("unshare")
				if err != nil {
					t.Skip("unshare missing (apt-get install util-linux)")
				}
				argv = []string{unshare, "--net", "--", bin}
			}
			s := t.TempDir()
			freeMountDir(t, s, "mnt")
			if tc.setup != nil {
				tc.setup(t, s)
			}
			repl := strings.NewReplacer("$MNT", filepath.Join(s, "mnt"), "$DATA", filepath.Join(s, "data"), "$S", s)
			for _, a := range tc.args {
				argv = append(argv, repl.Replace(a))
			}
			before := snapshot(t, s)
			r := runCLI(t, s, cliEnv(filepath.Join(s, "xdg")), argv...)
			wantOneLineError(t, r, tc.phrase)
			wantUnchanged(t, s, before)
		})
	}
}

// TestCLIHelp checks that --help of every command exits 0 and names each
// of its flags.
func TestCLIHelp(t *testing.T) {
	bin := cliBinary(t)
	cases := []struct {
		args  []string
		cmd   *cobra.Command
		flags []string
	}{
		{[]string{"--help"}, newRootCmd(), []string{"--help", "--version", "mount", "umount", "status", "where", "version"}},
		{[]string{"umount", "--help"}, newUmountCmd(), []string{"--force"}},
		{[]string{"mount", "--help"}, newMountCmd(), []string{"--data", "--listen", "--iface", "--no-mdns", "--peer", "--replicas", "--network", "--log-level", "--cache-mb"}},
		{[]string{"status", "--help"}, newStatusCmd(), []string{"--data", "--json", "--watch", "--interval", "MOUNTPOINT"}},
		{[]string{"where", "--help"}, newWhereCmd(), []string{"--data", "--json", "--chunks"}},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			s := t.TempDir()
			r := runCLI(t, s, cliEnv(filepath.Join(s, "xdg")), append([]string{bin}, tc.args...)...)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			want := append([]string(nil), tc.flags...)
			tc.cmd.Flags().VisitAll(func(f *pflag.Flag) { want = append(want, "--"+f.Name) })
			for _, w := range want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("help does not mention %s:\n%s", w, r.stdout)
				}
			}
			if tc.args[0] == "where" && strings.Contains(r.stdout, `(default "`) {
				// where asks the node serving the mount unless --data is
				// given, so its help shows no default data directory.
				t.Errorf("where --help shows a default --data:\n%s", r.stdout)
			}
		})
	}
}

// cliNode is a running `oashare mount`.
type cliNode struct {
	t        *testing.T
	bin      string
	env      []string
	mnt      string
	data     string
	cmd      *exec.Cmd
	done     chan struct{}
	waitErr  error
	logPath  string
	nodeID   string
	listenAt string
}

// startNode runs `oashare mount mnt --data data --no-mdns --listen listen`
// plus extra, waits until `status` answers, and registers a cleanup that
// stops it and unmounts mnt if it is still mounted.
func startNode(t *testing.T, bin, mnt, data, listen string, extra ...string) *cliNode {
	t.Helper()
	if !strings.HasPrefix(listen, "127.0.0.1:") {
		t.Fatalf("test nodes listen on 127.0.0.1 only, not %s", listen)
	}
	n := &cliNode{t: t, bin: bin, env: cliEnv(filepath.Join(filepath.Dir(data), "xdg")), mnt: mnt, data: data, done: make(chan struct{})}
	n.logPath = filepath.Join(t.TempDir(), "node.log")
	logf, err := os.Create(n.logPath)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"mount", mnt, "--data", data, "--no-mdns", "--listen", listen}, extra...)
	n.cmd = exec.Command(bin, args...)
	n.cmd.Env = n.env
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	go func() {
		n.waitErr = n.cmd.Wait()
		logf.Close()
		close(n.done)
	}()
	t.Cleanup(n.stop)

	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-n.done:
			t.Fatalf("oashare %s exited: %v\n%s", strings.Join(args, " "), n.waitErr, n.log())
		default:
		}
		var s map[string]any
		st := exec.Command(bin, "status", "--json", "--data", data)
		st.Env = n.env
		if out, err := st.Output(); err == nil && json.Unmarshal(out, &s) == nil {
			n.nodeID, _ = s["node_id"].(string)
			n.listenAt, _ = s["listen"].(string)
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("node on %s does not answer status after 20s\n%s", mnt, n.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *cliNode) log() string {
	b, _ := os.ReadFile(n.logPath)
	return string(b)
}

func (n *cliNode) port() string {
	_, p, err := net.SplitHostPort(n.listenAt)
	if err != nil {
		n.t.Fatalf("listen address %q: %v", n.listenAt, err)
	}
	return p
}

// signal sends sig and waits for the process to exit; it returns the
// exit code (-1 when killed by a signal).
func (n *cliNode) signal(sig syscall.Signal, within time.Duration) int {
	n.t.Helper()
	n.cmd.Process.Signal(sig)
	select {
	case <-n.done:
	case <-time.After(within):
		n.t.Fatalf("node did not exit within %v of %v\n%s", within, sig, n.log())
	}
	return n.cmd.ProcessState.ExitCode()
}

// stop ends the node (SIGTERM, then SIGKILL) and unmounts its folder if
// it is still mounted.
func (n *cliNode) stop() {
	select {
	case <-n.done:
	default:
		n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.done:
		case <-time.After(15 * time.Second):
			n.t.Errorf("node on %s ignored SIGTERM; killing it\n%s", n.mnt, n.log())
			n.cmd.Process.Kill()
			<-n.done
		}
	}
	if countMounts(n.t, n.mnt) > 0 {
		exec.Command("fusermount3", "-u", "-z", n.mnt).Run()
	}
}

func (n *cliNode) status(t *testing.T) (statusJSON, map[string]json.RawMessage) {
	t.Helper()
	r := runCLI(t, "/", n.env, n.bin, "status", "--json", "--data", n.data)
	if r.code != 0 {
		t.Fatalf("status --json: exit %d: %s", r.code, r.stderr)
	}
	var s statusJSON
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, r.stdout)
	}
	json.Unmarshal([]byte(r.stdout), &raw)
	return s, raw
}

// whereRow is one data chunk line of `oashare where`.
type whereRow struct {
	index, size int
	hash, peers string
}

// whereRows runs `oashare where --chunks path` and returns its data
// chunk lines (the lines starting with a chunk index).
func (n *cliNode) whereRows(t *testing.T, path string) []whereRow {
	t.Helper()
	r := runCLI(t, "/", n.env, n.bin, "where", "--chunks", path)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("where %s: exit %d: %s", path, r.code, r.stderr)
	}
	var rows []whereRow
	for _, line := range strings.Split(r.stdout, "\n") {
		f := strings.Fields(line)
		if len(f) != 4 {
			continue
		}
		i, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		size, err := strconv.Atoi(f[1])
		if err != nil {
			t.Fatalf("where: bad size in %q", line)
		}
		rows = append(rows, whereRow{i, size, f[2], f[3]})
	}
	return rows
}

// waitHeld waits until `where path` lists every chunk as held by the node
// itself, so that the file is in the node's store.
func (n *cliNode) waitHeld(t *testing.T, path string, chunks int) []whereRow {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		rows := n.whereRows(t, path)
		held := len(rows) == chunks
		for _, r := range rows {
			if !strings.Contains(r.peers, n.nodeID[:8]) {
				held = false
			}
		}
		if held {
			return rows
		}
		if time.Now().After(deadline) {
			t.Fatalf("where %s after 15s: %+v, want %d chunks held by %s", path, rows, chunks, n.nodeID[:8])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCLIRunningNode checks status and where against one running node,
// then that a second mount fails cleanly on its data directory, its mount
// point and its port.
func TestCLIRunningNode(t *testing.T) {
	needFUSE(t)
	bin := cliBinary(t)
	base := t.TempDir()
	mnt := freeMountDir(t, base, "mnt")
	data := filepath.Join(base, "data")
	n := startNode(t, bin, mnt, data, "127.0.0.1:0")

	t.Run("status", func(t *testing.T) {
		r := runCLI(t, "/", n.env, bin, "status", "--data", data)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("status: exit %d: %s", r.code, r.stderr)
		}
		if len(n.nodeID) != 32 || !strings.Contains(r.stdout, n.nodeID) {
			t.Errorf("status does not print the node ID %q:\n%s", n.nodeID, r.stdout)
		}
		// Found from the mount point as well, and printed as a table.
		byMount := runCLI(t, "/", n.env, bin, "status", mnt)
		if byMount.code != 0 || !strings.Contains(byMount.stdout, n.nodeID) {
			t.Fatalf("status %s: exit %d: %s%s", mnt, byMount.code, byMount.stdout, byMount.stderr)
		}
		host, _ := os.Hostname()
		for _, re := range []string{
			`(?m)^node +` + n.nodeID + ` \(` + regexp.QuoteMeta(host) + `\), listening on 127\.0\.0\.1:\d+$`,
			`(?m)^network +[^:]+: 1 members, 3 copies of every file`,
			`(?m)^mount +` + regexp.QuoteMeta(mnt) + `$`,
			`(?m)^PEER +NAME +ADDRESS +STATE +HELD +FREE *$`,
			`(?m)^` + n.nodeID[:8] + ` +` + regexp.QuoteMeta(host) + ` +127\.0\.0\.1:\d+ +this node +[\d.]+ (B|KiB|MiB) +[\d.]+ [KMGT]iB *$`,
			`(?m)^pending uploads +0 file versions`,
			`(?m)^unavailable +0 operations`,
		} {
			if !regexp.MustCompile(re).MatchString(byMount.stdout) {
				t.Errorf("status: no line matching %s in:\n%s", re, byMount.stdout)
			}
		}
		// The columns line up: every row of the table starts its STATE
		// column where the header does.
		lines := strings.Split(byMount.stdout, "\n")
		for i, l := range lines {
			if strings.HasPrefix(l, "PEER ") && i+1 < len(lines) {
				if col := strings.Index(l, "STATE"); strings.Index(lines[i+1], "this node") != col {
					t.Errorf("status table not aligned:\n%s\n%s", l, lines[i+1])
				}
			}
		}
	})

	t.Run("status watch", func(t *testing.T) {
		// Two redraws with rates in between, then stopped as by Ctrl-C.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "status", "--watch", "--interval", "200ms", mnt)
		cmd.Env = n.env
		outPath := filepath.Join(t.TempDir(), "watch.out")
		outFile, err := os.Create(outPath)
		if err != nil {
			t.Fatal(err)
		}
		defer outFile.Close()
		cmd.Stdout = outFile // a file, not a terminal: tables one after another
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		read := func() string { b, _ := os.ReadFile(outPath); return string(b) }
		go func() {
			for i := 0; i < 50; i++ {
				os.ReadFile(filepath.Join(mnt, "f1500"))
				time.Sleep(20 * time.Millisecond)
			}
		}()
		deadline := time.Now().Add(15 * time.Second)
		for strings.Count(read(), "transfers") < 2 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		got := read()
		if n := strings.Count(got, "PEER "); n < 3 {
			t.Fatalf("status --watch drew %d tables; want at least 3:\n%s", n, got)
		}
		if !regexp.MustCompile(`(?m)^transfers +read [\d.]+ (B|KiB|MiB)/s, written [\d.]+ (B|KiB|MiB)/s through the mount; repair copies 0 B/s$`).MatchString(got) {
			t.Errorf("status --watch shows no transfer rates:\n%s", got)
		}
	})

	t.Run("status json", func(t *testing.T) {
		s, raw := n.status(t)
		for _, k := range []string{"node_id", "listen", "peers", "chunks", "bytes", "pending_versions", "groups_below_target", "tree_nodes_below_target"} {
			if _, ok := raw[k]; !ok {
				t.Errorf("status --json has no %q", k)
			}
		}
		var peers []json.RawMessage
		if err := json.Unmarshal(raw["peers"], &peers); err != nil || peers == nil {
			t.Errorf("peers is not a list: %s", raw["peers"])
		}
		for _, k := range []string{"chunks", "bytes"} {
			var v int64
			if err := json.Unmarshal(raw[k], &v); err != nil {
				t.Errorf("%s is not a number: %s", k, raw[k])
			}
		}
		if s.NodeID != n.nodeID || s.Mountpoint != mnt || !strings.HasPrefix(s.Listen, "127.0.0.1:") {
			t.Errorf("status --json: %+v", s)
		}
	})

	t.Run("where", func(t *testing.T) {
		content := randomBytes(t, 1500)
		file := filepath.Join(mnt, "f1500")
		if err := os.WriteFile(file, content, 0o644); err != nil {
			t.Fatal(err)
		}
		rows := n.waitHeld(t, file, 3)
		wantSizes := []int{512, 512, 476}
		for i, r := range rows {
			if r.index != i || r.size != wantSizes[i] {
				t.Errorf("chunk line %d: index %d size %d, want index %d size %d", i, r.index, r.size, i, wantSizes[i])
				continue
			}
			sum := sha256.Sum256(content[i*512 : i*512+r.size])
			if r.hash != hex.EncodeToString(sum[:]) {
				t.Errorf("chunk %d: hash %s, want %x", i, r.hash, sum)
			}
		}
		// Written alone with --replicas 3: one copy, below the target.
		if s, _ := n.status(t); s.GroupsBelow != 1 || s.Pending != 0 {
			t.Errorf("status after writing alone: %d groups below target, %d pending; want 1, 0", s.GroupsBelow, s.Pending)
		}
		r := runCLI(t, "/", n.env, bin, "status", mnt)
		if !regexp.MustCompile(`(?m)^below target +1 groups, 0 tree nodes`).MatchString(r.stdout) {
			t.Errorf("status does not show the group below target:\n%s", r.stdout)
		}
		// The summary: one range of the 1500 bytes, 3 chunks, one copy
		// held by this node; then this node holds all of it.
		r = runCLI(t, "/", n.env, bin, "where", file)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("where: exit %d: %s", r.code, r.stderr)
		}
		id := n.nodeID[:8]
		for _, re := range []string{
			`(?m)^BYTES +CHUNKS +COPIES +HELD BY *$`,
			`(?m)^0-1499 +0-2 +1 +` + id + ` *$`,
			`(?m)^HOLDER +CHUNKS +BYTES +TREE NODES *$`,
			`(?m)^` + id + ` +3 of 3 +1\.5 KiB +\d+ of \d+ *$`,
		} {
			if !regexp.MustCompile(re).MatchString(r.stdout) {
				t.Errorf("where %s: no line matching %s in:\n%s", file, re, r.stdout)
			}
		}
	})

	t.Run("data dir in use", func(t *testing.T) {
		s := t.TempDir()
		other := freeMountDir(t, s, "other")
		lockBefore, _ := os.ReadFile(filepath.Join(data, lockFileName))
		before := snapshot(t, s)
		r := runCLI(t, s, n.env, bin, "mount", other, "--data", data, "--no-mdns", "--listen", "127.0.0.1:0")
		wantOneLineError(t, r, fmt.Sprintf("is in use by a running node (pid %d)", n.cmd.Process.Pid))
		wantUnchanged(t, s, before)
		if lock, _ := os.ReadFile(filepath.Join(data, lockFileName)); !bytes.Equal(lock, lockBefore) {
			t.Errorf("lock file changed: %q -> %q", lockBefore, lock)
		}
	})

	t.Run("already mounted", func(t *testing.T) {
		s := t.TempDir()
		before := snapshot(t, s)
		r := runCLI(t, s, n.env, bin, "mount", mnt, "--data", filepath.Join(s, "data"), "--no-mdns", "--listen", "127.0.0.1:0")
		wantOneLineError(t, r, "is already mounted")
		wantUnchanged(t, s, before)
		if c := countMounts(t, mnt); c != 1 {
			t.Errorf("%s is mounted %d times, want 1", mnt, c)
		}
	})

	t.Run("port taken", func(t *testing.T) {
		s := t.TempDir()
		other := freeMountDir(t, s, "other")
		before := snapshot(t, s)
		r := runCLI(t, s, n.env, bin, "mount", other, "--data", filepath.Join(s, "data"), "--no-mdns", "--listen", "127.0.0.1:"+n.port())
		wantOneLineError(t, r, "port is taken")
		// The port is found taken only after the data directory is
		// locked, so the failed mount creates it and removes it again:
		// only the modification time of its parent may change.
		delete(before, ".")
		after := snapshot(t, s)
		delete(after, ".")
		if d := diffSnapshots(before, after); d != "" {
			t.Errorf("files changed:\n%s", d)
		}
		if m := mountsUnder(t, s); len(m) > 0 {
			t.Errorf("mounts appeared: %v", m)
		}
	})

	// The node is still serving after all of the above.
	if s, _ := n.status(t); s.NodeID != n.nodeID {
		t.Errorf("node ID changed: %s -> %s", n.nodeID, s.NodeID)
	}
}

// TestCLISignals checks that SIGTERM and SIGINT unmount and exit 0.
func TestCLISignals(t *testing.T) {
	needFUSE(t)
	bin := cliBinary(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			base := t.TempDir()
			mnt := freeMountDir(t, base, "mnt")
			n := startNode(t, bin, mnt, filepath.Join(base, "data"), "127.0.0.1:0")
			if countMounts(t, mnt) != 1 {
				t.Fatalf("%s is not in /proc/mounts while the node runs", mnt)
			}
			if code := n.signal(sig, 15*time.Second); code != 0 {
				t.Errorf("exit status %d after %v, want 0\n%s", code, sig, n.log())
			}
			if c := countMounts(t, mnt); c != 0 {
				t.Errorf("%s still in /proc/mounts after %v", mnt, sig)
			}
		})
	}
}

// TestCLIStaleMount kills a node with SIGKILL, which leaves its mount
// dead, and checks that a new node on the same folder and data directory
// cleans it up and serves the file written before.
func TestCLIStaleMount(t *testing.T) {
	needFUSE(t)
	bin := cliBinary(t)
	base := t.TempDir()
	mnt := freeMountDir(t, base, "mnt")
	data := filepath.Join(base, "data")
	n1 := startNode(t, bin, mnt, data, "127.0.0.1:0")
	content := randomBytes(t, 3000)
	file := filepath.Join(mnt, "kept")
	if err := os.WriteFile(file, content, 0o644); err != nil {
		t.Fatal(err)
	}
	n1.waitHeld(t, file, 6)

	n1.signal(syscall.SIGKILL, 10*time.Second)
	_, err := os.Stat(mnt)
	if !errors.Is(err, syscall.ENOTCONN) || !strings.Contains(err.Error(), "transport endpoint is not connected") {
		t.Fatalf("stat of the dead mount: %v, want ENOTCONN", err)
	}
	if countMounts(t, mnt) != 1 {
		t.Fatalf("the dead mount is not in /proc/mounts")
	}

	n2 := startNode(t, bin, mnt, data, "127.0.0.1:0")
	if n2.nodeID != n1.nodeID {
		t.Errorf("node ID changed across the restart: %s -> %s", n1.nodeID, n2.nodeID)
	}
	if c := countMounts(t, mnt); c != 1 {
		t.Errorf("%s is mounted %d times, want 1 (the stale mount cleaned up)", mnt, c)
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("reading the file after the restart: %v", err)
	}
	if !bytes.Equal(got, content) {
		t.Fatalf("the file differs after the restart (%d bytes, want %d)", len(got), len(content))
	}
}

// invite runs `oashare invite` for node n and returns the join code, the
// last line of its output.
func (n *cliNode) invite(t *testing.T, extra ...string) string {
	t.Helper()
	r := runCLI(t, "/", n.env, append([]string{n.bin, "invite", n.mnt}, extra...)...)
	if r.code != 0 {
		t.Fatalf("invite: exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	return lines[len(lines)-1]
}

// members runs `oashare members --json` for node n.
func (n *cliNode) members(t *testing.T) []memberJSON {
	t.Helper()
	r := runCLI(t, "/", n.env, n.bin, "members", "--json", "--data", n.data)
	if r.code != 0 {
		t.Fatalf("members: exit %d: %s", r.code, r.stderr)
	}
	var ms []memberJSON
	if err := json.Unmarshal([]byte(r.stdout), &ms); err != nil {
		t.Fatalf("members --json: %v\n%s", err, r.stdout)
	}
	return ms
}

// TestCLITwoNodes runs two nodes on loopback, the second joining the
// first's network with a code from `oashare invite` and given its address
// with --peer: each lists the other in status and members, and a file
// written in either mount reads back identical in the other. The code
// then grants nothing more, and a removed member is cut off.
// joinedPair starts node a, then node b joining it with an invitation,
// and waits until each lists the other as a peer. It returns a's
// address and the (used) code too.
func joinedPair(t *testing.T, bin, base string, extra ...string) (a, b *cliNode, peerA, code string) {
	t.Helper()
	a = startNode(t, bin, freeMountDir(t, base, "mntA"), filepath.Join(base, "dataA"), "127.0.0.1:0", extra...)
	if s, _ := a.status(t); s.Members != 1 || !strings.Contains(s.Hint, "oashare invite") {
		t.Fatalf("a lone node's status: %d members, hint %q", s.Members, s.Hint)
	}
	code = a.invite(t)
	if !strings.HasPrefix(code, "oa1-") {
		t.Fatalf("invite printed %q as its last line", code)
	}
	peerA = "127.0.0.1:" + a.port()
	b = startNode(t, bin, freeMountDir(t, base, "mntB"), filepath.Join(base, "dataB"), "127.0.0.1:0", append([]string{"--peer", peerA, "--join", code}, extra...)...)
	deadline := time.Now().Add(15 * time.Second)
	for {
		sa, _ := a.status(t)
		sb, _ := b.status(t)
		if len(sa.Peers) == 1 && sa.Peers[0].ID == b.nodeID && len(sb.Peers) == 1 && sb.Peers[0].ID == a.nodeID {
			return a, b, peerA, code
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 15s the nodes do not list each other:\nA %s: %+v\nB %s: %+v", a.nodeID, sa.Peers, b.nodeID, sb.Peers)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCLITwoNodes(t *testing.T) {
	needFUSE(t)
	bin := cliBinary(t)
	base := t.TempDir()
	a, b, peerA, code := joinedPair(t, bin, base)

	for _, dir := range []struct {
		name     string
		from, to *cliNode
		size     int
	}{{"a-to-b", a, b, 5000}, {"b-to-a", b, a, 70 << 10}} {
		content := randomBytes(t, dir.size)
		if err := os.WriteFile(filepath.Join(dir.from.mnt, dir.name), content, 0o644); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			got, err := os.ReadFile(filepath.Join(dir.to.mnt, dir.name))
			if err == nil && bytes.Equal(got, content) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: after 15s the file reads %d bytes (err %v), want the %d bytes written", dir.name, len(got), err, len(content))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, n := range []*cliNode{a, b} {
		ids := map[string]bool{}
		for _, m := range n.members(t) {
			ids[m.ID] = !m.Removed
		}
		if len(ids) != 2 || !ids[a.nodeID] || !ids[b.nodeID] {
			t.Fatalf("members of %s: %v", n.nodeID, ids)
		}
	}

	// The code is used: a third machine gets nothing with it, and says so
	// in one line; the same for a code that expired, and a mistyped one.
	base3 := t.TempDir()
	expired := a.invite(t, "--expires", "1ms")
	for _, tc := range []struct{ code, phrase string }{
		{code, "used already"},
		{expired, "expired"},
		{code[:len(code)-1] + map[bool]string{true: "B", false: "A"}[code[len(code)-1] == 'A'], "mistyped"},
	} {
		r := runCLI(t, "/", cliEnv(filepath.Join(base3, "xdg")), bin, "mount", freeMountDir(t, base3, "mntC"+tc.phrase[:1]),
			"--data", filepath.Join(base3, "dataC"), "--no-mdns", "--listen", "127.0.0.1:0", "--peer", peerA, "--join", tc.code, "--join-wait", "20s")
		// The log may tell of the search first; the error is the last line.
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		last := lines[len(lines)-1]
		if r.code == 0 || !strings.HasPrefix(last, "oashare: ") || !strings.Contains(last, tc.phrase) {
			t.Fatalf("joining with a code %s: exit %d, stderr %q", tc.phrase, r.code, r.stderr)
		}
		if _, err := os.Stat(filepath.Join(base3, "dataC")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a refused join left its data dir behind: %v", err)
		}
	}
	if ms := a.members(t); len(ms) != 2 {
		t.Fatalf("after the refused joins a lists %d members", len(ms))
	}

	// Removal: b is dropped and refused from then on.
	r := runCLI(t, "/", a.env, bin, "remove", b.nodeID[:8], a.mnt) // found from the mount point
	if r.code != 0 || !strings.Contains(r.stdout, "removed "+b.nodeID) {
		t.Fatalf("remove: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		sa, _ := a.status(t)
		sb, _ := b.status(t)
		if len(sa.Peers) == 0 && len(sb.Peers) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s the removed member is still connected: a %+v, b %+v", sa.Peers, sb.Peers)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, m := range a.members(t) {
		if m.ID == b.nodeID && !m.Removed {
			t.Fatalf("a lists the removed member as a member: %+v", m)
		}
	}
}

// TestCLIDataDirPrivate: a data directory that already existed with
// modes open to everyone (0755 directories, 0644 files) is this user's
// only once a node runs on it, and what the node writes there is too.
func TestCLIDataDirPrivate(t *testing.T) {
	needFUSE(t)
	bin := cliBinary(t)
	base := t.TempDir()
	data := filepath.Join(base, "data")
	mnt := freeMountDir(t, base, "mnt")
	// A data dir of a node that ran before, opened to everyone since.
	startNode(t, bin, mnt, data, "127.0.0.1:0").signal(syscall.SIGTERM, 10*time.Second)
	if err := os.WriteFile(filepath.Join(data, "index", "chunks", "leftover"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	filepath.WalkDir(data, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(path, 0o755)
		} else if err == nil && d.Type().IsRegular() {
			os.Chmod(path, 0o644)
		}
		return nil
	})
	n := startNode(t, bin, mnt, data, "127.0.0.1:0")
	if err := os.WriteFile(filepath.Join(n.mnt, "f"), randomBytes(t, 100000), 0o644); err != nil {
		t.Fatal(err)
	}
	n.signal(syscall.SIGTERM, 10*time.Second)
	checked := 0
	filepath.WalkDir(data, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.Type()&os.ModeSymlink != 0 {
			return err
		}
		info, _ := d.Info()
		want := os.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is %v: others can reach it", path, info.Mode().Perm())
		}
		if d.Type().IsRegular() || d.IsDir() {
			checked++
			if info.Mode().Perm() != want {
				t.Errorf("%s is %v, want %v", path, info.Mode().Perm(), want)
			}
		}
		return nil
	})
	if checked < 5 {
		t.Fatalf("only %d entries in the data dir", checked)
	}
	if _, err := os.Stat(filepath.Join(data, identityFileName)); err != nil {
		t.Fatalf("the node's key is not in its data dir: %v", err)
	}
}

// TestCLIOldDataDirRefused: a data dir whose index predates identities is
// refused with one line saying what to do, and left as it was.
func TestCLIOldDataDirRefused(t *testing.T) {
	needFUSE(t)
	bin := cliBinary(t)
	base := t.TempDir()
	data := filepath.Join(base, "data")
	if err := os.MkdirAll(filepath.Join(data, indexDirName), 0o700); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, "/", cliEnv(filepath.Join(base, "xdg")), bin, "mount", freeMountDir(t, base, "mnt"), "--data", data, "--no-mdns", "--listen", "127.0.0.1:0")
	if r.code == 0 || !strings.Contains(r.stderr, "move it away") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("an old data dir: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(data, identityFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a key was added to the refused data dir: %v", err)
	}
}
