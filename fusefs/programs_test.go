package fusefs

// Real programs against the mounts of an in-process cluster: each test
// runs a common tool (sqlite3, git, tar, rsync, sed) as a separate process
// on one peer's mount and checks the result with the same or another tool
// on a second peer. The binaries come from the host, never from a mount:
// the test process serves the mounts, and executing or mapping a binary
// it serves itself can deadlock.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// programTimeout bounds one run of a program; a FUSE operation that never
// answers shows as a killed program instead of a hung test.
const programTimeout = 5 * time.Minute

// lookProgram returns the path of a host program, or skips the test.
func lookProgram(t *testing.T, name, deb string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s missing: apt-get install %s", name, deb)
	}
	return path
}

// runProgram runs a program to completion and returns its standard
// output; the error carries the exit status and standard error.
func runProgram(t *testing.T, env []string, stdin io.Reader, prog string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), programTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	// The working directory stays outside the mounts; programs get
	// absolute paths.
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\nstderr: %s", filepath.Base(prog), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// mustRun is runProgram that fails the test on any error.
func mustRun(t *testing.T, env []string, stdin io.Reader, prog string, args ...string) string {
	t.Helper()
	out, err := runProgram(t, env, stdin, prog, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitProgram reruns a program until check accepts its output or the
// deadline passes; then it fails with the last output and error.
func waitProgram(t *testing.T, d time.Duration, what string, check func(out string, err error) bool, prog string, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		out, err := runProgram(t, nil, nil, prog, args...)
		if check(out, err) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last run: err=%v\nstdout: %.4000s", d, what, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitDiffClean waits until `diff -r want got` reports no difference.
func waitDiffClean(t *testing.T, d time.Duration, want, got string) {
	t.Helper()
	diff := lookProgram(t, "diff", "diffutils")
	waitProgram(t, d, "diff -r "+want+" "+got+" to be clean", func(out string, err error) bool {
		return err == nil && out == ""
	}, diff, "-r", want, got)
}

// makeTree writes n files of 0..maxSize random bytes in nested
// directories below dir and returns the number of bytes written.
func makeTree(t *testing.T, rng *rand.Rand, dir string, n, maxSize int) int64 {
	t.Helper()
	var total int64
	for i := range n {
		sub := filepath.Join(dir, fmt.Sprintf("d%d", i%7), fmt.Sprintf("e%d", i%13))
		if i%5 == 0 {
			sub = filepath.Join(dir, fmt.Sprintf("d%d", i%7))
		}
		if i%11 == 0 {
			sub = dir
		}
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		data := make([]byte, rng.IntN(maxSize+1))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		total += int64(len(data))
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%04d.bin", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return total
}

// seededRand returns a generator whose seed is logged, so that a failing
// tree or text can be made again.
func seededRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// TestProgramSQLite fills a database with sqlite3 on one peer (rollback
// journal, fcntl locks, pwrite, fsync, truncate and unlink of the journal)
// and reads it with sqlite3 on another.
func TestProgramSQLite(t *testing.T) {
	sqlite := lookProgram(t, "sqlite3", "sqlite3")
	start := time.Now()
	peers := startCluster(t, 3, 2)
	a, b := peers[0].mnt, peers[2].mnt

	var script strings.Builder
	script.WriteString("CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER NOT NULL, s TEXT NOT NULL);\n")
	var sum int64
	for tx := range 10 {
		script.WriteString("BEGIN;\n")
		for i := range 1000 {
			x := int64(tx*1000+i)*7919%100003 - 50000
			sum += x
			fmt.Fprintf(&script, "INSERT INTO t(x, s) VALUES(%d, 'row %d of transaction %d');\n", x, i, tx)
		}
		script.WriteString("COMMIT;\n")
	}
	script.WriteString("PRAGMA integrity_check;\nSELECT count(*), sum(x) FROM t;\n")
	want := fmt.Sprintf("ok\n10000|%d\n", sum)

	dbA := filepath.Join(a, "db.sqlite")
	out := mustRun(t, nil, strings.NewReader(script.String()), sqlite, "-bail", dbA)
	if out != want {
		t.Fatalf("sqlite3 on peer 1 printed %q, want %q", out, want)
	}
	st, err := os.Stat(dbA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dbA + "-journal"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("journal left behind on peer 1: %v", err)
	}
	t.Logf("peer 1: database of %d bytes in %v", st.Size(), time.Since(start))

	// sqlite3 creates a database it does not find, so it only runs on
	// peer 3 once the whole file is there.
	dbB := filepath.Join(b, "db.sqlite")
	waitFor(t, 30*time.Second, "db.sqlite with its final size on peer 3", func() bool {
		st2, err := os.Stat(dbB)
		return err == nil && st2.Size() == st.Size()
	})
	wantB := fmt.Sprintf("10000|%d\nok\n", sum)
	waitProgram(t, 30*time.Second, "the database on peer 3", func(out string, err error) bool {
		return err == nil && out == wantB
	}, sqlite, dbB, "select count(*), sum(x) from t; PRAGMA integrity_check;")
	t.Logf("total %v", time.Since(start))
}

// TestProgramGit commits a repository with git on one peer and clones it
// from another peer, both to a local disk and into the mount.
func TestProgramGit(t *testing.T) {
	git := lookProgram(t, "git", "git")
	start := time.Now()
	peers := startCluster(t, 3, 2)
	a, b := peers[0].mnt, peers[2].mnt
	env := []string{
		"GIT_CONFIG_NOSYSTEM=1",
		"HOME=" + t.TempDir(),
		"GIT_TERMINAL_PROMPT=0",
		"LC_ALL=C",
	}
	g := func(args ...string) string {
		t.Helper()
		return mustRun(t, env, nil, git, args...)
	}

	repoA := filepath.Join(a, "repo")
	g("init", "-q", "-b", "main", repoA)
	g("-C", repoA, "config", "user.name", "oashare test")
	g("-C", repoA, "config", "user.email", "test@oashare.invalid")
	rng := seededRand(t)
	for i := range 50 {
		dir := repoA
		switch i % 3 {
		case 1:
			dir = filepath.Join(repoA, "src", fmt.Sprintf("pkg%d", i%4))
		case 2:
			dir = filepath.Join(repoA, "docs", "deep", "er")
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var body strings.Builder
		for l := range 1 + rng.IntN(200) {
			fmt.Fprintf(&body, "file %d line %d %x\n", i, l, rng.Uint64())
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("file%02d.txt", i)), []byte(body.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g("-C", repoA, "add", "-A")
	g("-C", repoA, "commit", "-q", "-m", "fifty files")
	if out := g("-C", repoA, "fsck", "--full", "--strict"); out != "" {
		t.Errorf("git fsck on peer 1: %s", out)
	}
	head := strings.TrimSpace(g("-C", repoA, "rev-parse", "HEAD"))
	if n := strings.Count(g("-C", repoA, "ls-files"), "\n"); n != 50 {
		t.Errorf("git ls-files on peer 1: %d files, want 50", n)
	}
	t.Logf("peer 1: commit %s in %v", head, time.Since(start))

	repoB := filepath.Join(b, "repo")
	waitFor(t, 30*time.Second, "HEAD of the repository on peer 3", func() bool {
		out, err := runProgram(t, env, nil, git, "-C", repoB, "rev-parse", "HEAD")
		return err == nil && strings.TrimSpace(out) == head
	})
	clones := map[string]string{
		"local disk":   filepath.Join(t.TempDir(), "clone"),
		"peer 3 mount": filepath.Join(b, "clone"),
	}
	for where, dst := range clones {
		if out, err := runProgram(t, env, nil, git, "clone", "-q", repoB, dst); err != nil {
			t.Errorf("clone to %s: %v\n%s", where, err, out)
			continue
		}
		if out, err := runProgram(t, env, nil, git, "-C", dst, "fsck", "--full", "--strict"); err != nil || out != "" {
			t.Errorf("git fsck of the clone on %s: %v\n%s", where, err, out)
		}
		out, err := runProgram(t, env, nil, git, "-C", dst, "log", "--format=%H")
		if err != nil {
			t.Errorf("git log of the clone on %s: %v", where, err)
		} else if strings.TrimSpace(out) != head {
			t.Errorf("git log of the clone on %s: %q, want %s", where, out, head)
		}
		if out, err := runProgram(t, env, nil, git, "-C", dst, "status", "--porcelain"); err != nil || out != "" {
			t.Errorf("git status of the clone on %s: %v\n%s", where, err, out)
		}
	}
	t.Logf("total %v", time.Since(start))
}

// TestProgramTar unpacks an archive of many small files into one peer and
// compares the tree on another with diff -r.
func TestProgramTar(t *testing.T) {
	tarProg := lookProgram(t, "tar", "tar")
	lookProgram(t, "diff", "diffutils")
	start := time.Now()
	peers := startCluster(t, 3, 2)
	a, b := peers[0].mnt, peers[2].mnt

	work := t.TempDir()
	src := filepath.Join(work, "src")
	bytesWritten := makeTree(t, seededRand(t), src, 2000, 8<<10)
	archive := filepath.Join(t.TempDir(), "src.tar")
	mustRun(t, nil, nil, tarProg, "-C", work, "-cf", archive, "src")

	t0 := time.Now()
	mustRun(t, nil, nil, tarProg, "-xf", archive, "-C", a)
	t.Logf("tar -x of 2000 files (%d bytes) into peer 1: %v", bytesWritten, time.Since(t0))
	waitDiffClean(t, 30*time.Second, src, filepath.Join(a, "src"))
	t0 = time.Now()
	waitDiffClean(t, 30*time.Second, src, filepath.Join(b, "src"))
	t.Logf("diff clean on peer 3 after %v; total %v", time.Since(t0), time.Since(start))
}

// TestProgramRsync copies a tree with rsync -a (temporary names, rename,
// utimensat, chmod) and checks that a second identical run finds nothing
// to transfer, which needs sizes and mtimes to survive exactly.
func TestProgramRsync(t *testing.T) {
	rsync := lookProgram(t, "rsync", "rsync")
	lookProgram(t, "diff", "diffutils")
	start := time.Now()
	peers := startCluster(t, 3, 2)
	a, b := peers[0].mnt, peers[2].mnt

	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, seededRand(t), src, 300, 16<<10)
	dstA := filepath.Join(a, "dst")
	mustRun(t, nil, nil, rsync, "-a", src+"/", dstA+"/")
	waitDiffClean(t, 30*time.Second, src, dstA)
	waitDiffClean(t, 30*time.Second, src, filepath.Join(b, "dst"))

	out := mustRun(t, nil, nil, rsync, "-a", "--stats", src+"/", dstA+"/")
	m := regexp.MustCompile(`Number of regular files transferred: ([0-9,]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no transfer count in rsync --stats output:\n%s", out)
	}
	if n, _ := strconv.Atoi(strings.ReplaceAll(m[1], ",", "")); n != 0 {
		itemized, _ := runProgram(t, nil, nil, rsync, "-a", "-n", "-i", src+"/", dstA+"/")
		t.Errorf("second rsync transferred %d regular files, want 0\nrsync -n -i says:\n%.3000s", n, itemized)
	}
	t.Logf("total %v", time.Since(start))
}

// TestProgramEditorSave saves a file the way editors do (write a
// temporary file, fsync, rename it over the old name), by hand and with
// sed -i, while another peer reads it in a loop: every read must return
// one whole version.
func TestProgramEditorSave(t *testing.T) {
	sed := lookProgram(t, "sed", "sed")
	start := time.Now()
	peers := startCluster(t, 3, 2)
	a, b := peers[0].mnt, peers[2].mnt
	fA, fB := filepath.Join(a, "f.txt"), filepath.Join(b, "f.txt")
	rng := seededRand(t)

	// Versions are lines of text, so that sed can rewrite them too.
	textOf := func(size int) []byte {
		var buf bytes.Buffer
		for buf.Len() < size {
			fmt.Fprintf(&buf, "%016x %d\n", rng.Uint64(), buf.Len())
		}
		return buf.Bytes()
	}
	var mu sync.Mutex
	versions := map[[32]byte]int{} // content hash → save number
	addVersion := func(n int, data []byte) {
		mu.Lock()
		versions[sha256.Sum256(data)] = n
		mu.Unlock()
	}
	saveByHand := func(data []byte) error {
		tmp := fA + ".tmp"
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		if _, err := f.Write(data); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("fsync %s: %w", tmp, err)
		}
		if err := f.Close(); err != nil {
			return err
		}
		return os.Rename(tmp, fA)
	}

	cur := textOf(1000)
	addVersion(0, cur)
	if err := saveByHand(cur); err != nil {
		t.Fatal(err)
	}
	waitContent(t, fB, cur)

	// The reader on peer 3 runs until the last save is done, or the test
	// ends early.
	done := make(chan struct{})
	var wg sync.WaitGroup
	stopReader := sync.OnceFunc(func() { close(done); wg.Wait() })
	defer stopReader()
	var reads, bad int
	seen := map[int]bool{} // save numbers peer 3 has read
	var firstBad string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			got, err := os.ReadFile(fB)
			mu.Lock()
			reads++
			n, known := versions[sha256.Sum256(got)]
			if err == nil && known {
				seen[n] = true
			}
			if err != nil || !known {
				bad++
				if firstBad == "" {
					if err != nil {
						firstBad = fmt.Sprintf("read %d: %v", reads, err)
					} else {
						firstBad = fmt.Sprintf("read %d: %d bytes that are no version written (starts %q)", reads, len(got), got[:min(len(got), 40)])
					}
				}
			}
			mu.Unlock()
		}
	}()

	// Each save waits until the reader on peer 3 has seen it, so that
	// every replacement happens under a reader.
	sizes := []int{1, 100, 511, 512, 513, 4095, 4096, 4097, 20000, 65536, 200000, 1 << 20, 3000, 50, 777, 123456, 9, 700000, 8192, 2048}
	for i, size := range sizes {
		n := i + 1
		if i%2 == 0 {
			cur = textOf(size)
			addVersion(n, cur)
			if err := saveByHand(cur); err != nil {
				t.Fatalf("save %d by hand: %v", n, err)
			}
		} else {
			// sed -i writes a temporary file in the same directory and
			// renames it over the old one; this substitution changes every
			// line.
			cur = prefixLines(cur, fmt.Sprintf("s%d:", n))
			addVersion(n, cur)
			if _, err := runProgram(t, nil, nil, sed, "-i", fmt.Sprintf("s/^/s%d:/", n), fA); err != nil {
				t.Fatalf("save %d with sed: %v", n, err)
			}
			if got, err := os.ReadFile(fA); err != nil || !bytes.Equal(got, cur) {
				t.Fatalf("after sed save %d peer 1 reads %d bytes (err %v), want %d", n, len(got), err, len(cur))
			}
		}
		waitFor(t, 10*time.Second, fmt.Sprintf("save %d read on peer 3", n), func() bool {
			mu.Lock()
			defer mu.Unlock()
			return seen[n]
		})
	}
	stopReader()
	t.Logf("%d reads on peer 3 during %d saves saw %d versions, %d reads bad; total %v", reads, len(sizes), len(seen), bad, time.Since(start))
	if bad > 0 {
		t.Errorf("%d of %d reads on peer 3 returned no whole version; first: %s", bad, reads, firstBad)
	}
	waitContent(t, fB, cur)
}

// prefixLines puts prefix before every line of text, as sed 's/^/prefix/'.
func prefixLines(text []byte, prefix string) []byte {
	var out bytes.Buffer
	for line := range bytes.Lines(text) {
		out.WriteString(prefix)
		out.Write(line)
	}
	return out.Bytes()
}
