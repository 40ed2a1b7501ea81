package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// uiLink asks node n for its dashboard link.
func uiLink(t *testing.T, n *cliNode) *url.URL {
	t.Helper()
	r := runCLI(t, "/", n.env, n.bin, "ui", n.mnt)
	if r.code != 0 {
		t.Fatalf("oashare ui: exit %d: %s", r.code, r.stderr)
	}
	u, err := url.Parse(strings.TrimSpace(r.stdout))
	if err != nil || u.Query().Get("token") == "" || u.Hostname() != "127.0.0.1" {
		t.Fatalf("oashare ui printed %q; want http://127.0.0.1:PORT/?token=...", r.stdout)
	}
	return u
}

// TestUIRefusesStrangers: the dashboard answers its own page and API only
// to a request with its token, for its own host name, from its own
// origin; the link sets the cookie; /metrics takes a bearer token.
func TestUIRefusesStrangers(t *testing.T) {
	needFUSE(t)
	bin := cliBinary(t)
	base := t.TempDir()
	n := startNode(t, bin, freeMountDir(t, base, "mnt"), filepath.Join(base, "data"), "127.0.0.1:0", "--ui", "127.0.0.1:0")
	link := uiLink(t, n)
	root := "http://" + link.Host
	get := func(c *http.Client, path string, hdr map[string]string) (int, string) {
		req, _ := http.NewRequest("GET", root+path, nil)
		for k, v := range hdr {
			if k == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, string(b)
	}
	plain := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range []string{"/", "/api/status", "/events", "/metrics", "/app.js"} {
		if code, _ := get(plain, p, nil); code != http.StatusUnauthorized {
			t.Errorf("GET %s without the token: %d; want 401", p, code)
		}
	}
	if code, _ := get(plain, "/?token=00000000000000000000000000000000", nil); code != http.StatusForbidden {
		t.Errorf("a wrong token: %d; want 403", code)
	}
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	if code, body := get(browser, "/?token="+link.Query().Get("token"), nil); code != 200 || !strings.Contains(body, "<title>oashare</title>") {
		t.Fatalf("the link: %d\n%s", code, body)
	}
	if code, body := get(browser, "/api/status", nil); code != 200 || !strings.Contains(body, n.nodeID) {
		t.Errorf("status with the cookie: %d %s", code, body)
	}
	if code, _ := get(browser, "/api/status", map[string]string{"Origin": "http://evil.example"}); code != http.StatusForbidden {
		t.Errorf("another origin: %d; want 403", code)
	}
	if code, _ := get(browser, "/api/status", map[string]string{"Sec-Fetch-Site": "cross-site"}); code != http.StatusForbidden {
		t.Errorf("a cross-site request: %d; want 403", code)
	}
	if code, _ := get(browser, "/api/status", map[string]string{"Host": "evil.example:" + link.Port()}); code != http.StatusForbidden {
		t.Errorf("another host name (DNS rebinding): %d; want 403", code)
	}
	code, body := get(plain, "/metrics", map[string]string{"Authorization": "Bearer " + link.Query().Get("token")})
	if code != 200 {
		t.Fatalf("/metrics with the bearer token: %d", code)
	}
	for _, m := range []string{"oashare_read_bytes_total", "oashare_written_bytes_total", "oashare_chunks_fetched_total",
		"oashare_verify_failures_total", "oashare_peers", "oashare_groups_below_target", "oashare_peer_request_duration_seconds_bucket"} {
		if !strings.Contains(body, "\n"+m) {
			t.Errorf("/metrics has no %s", m)
		}
	}
	// The event stream sends the status at once.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", root+"/events", nil)
	resp, err := browser.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	if !sc.Scan() || sc.Text() != "event: status" || !sc.Scan() || !strings.HasPrefix(sc.Text(), `data: {"node_id":"`+n.nodeID) {
		t.Errorf("/events: %q (%s)", sc.Text(), resp.Header.Get("Content-Type"))
	}
	// Bad --ui values.
	r := runCLI(t, base, n.env, bin, "mount", filepath.Join(base, "x"), "--ui", "0.0.0.0:7734")
	wantOneLineError(t, r, "--ui 0.0.0.0:7734: the dashboard listens on loopback only")
}

// TestTestbedDashboard: the dashboard in a real headless browser
// (Chromium through chromedp) against a 3-peer testbed: the page loads
// with no console error, lists the 3 peers, shows a file's chunk map,
// and marks peer 3 down within seconds of its kill -9. The browser runs
// in peer 1's network namespace, where the dashboard listens on
// loopback: this test starts itself there (TestDashboardInBrowser).
// OASHARE_UI_SCREENSHOT=FILE saves a picture of the page.
func TestTestbedDashboard(t *testing.T) {
	needTestbed(t)
	if browserPath() == "" {
		t.Skip("no Chromium (make deps installs chromium-headless-shell)")
	}
	tb, bin, dir := newTestbed(t)
	tb.run("up", "3")
	tb.run("wait-peers")
	m1 := tb.run("mnt", "1")
	if err := os.WriteFile(filepath.Join(m1, "big"), randomBytes(t, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	data := func(k int) string { return filepath.Join(dir, fmt.Sprintf("p%d", k), "data") }
	out, err := exec.Command(bin, "ui", "--data", data(1)).Output()
	if err != nil {
		t.Fatalf("oashare ui: %v", err)
	}
	s3 := peerStatus(t, bin, dir, 3)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net=/run/netns/oas1", "--", self, "-test.run", "^TestDashboardInBrowser$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "OASHARE_UI_URL="+strings.TrimSpace(string(out)), "OASHARE_UI_FILE=/big", "OASHARE_UI_GROUPS=32", "OASHARE_UI_KILL="+s3.NodeID)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		log.WriteString(line + "\n")
		if line == "KILL PEER 3" {
			tb.run("kill", "3")
			io.WriteString(stdin, "killed\n")
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the browser test in peer 1's namespace failed: %v\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "--- PASS: TestDashboardInBrowser") {
		t.Fatalf("the browser test did not run:\n%s", log.String())
	}
	t.Logf("browser:\n%s", log.String())
}

func browserPath() string {
	for _, name := range []string{"chromium-headless-shell", "chromium", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestDashboardInBrowser is the browser half of TestTestbedDashboard,
// which runs it inside a peer's network namespace with OASHARE_UI_URL
// set; alone, it skips.
func TestDashboardInBrowser(t *testing.T) {
	link := os.Getenv("OASHARE_UI_URL")
	if link == "" {
		t.Skip("run by TestTestbedDashboard inside a peer's network namespace")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browserPath()), chromedp.NoSandbox, chromedp.DisableGPU)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	var mu sync.Mutex
	var problems []string
	err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError {
				problems = append(problems, fmt.Sprintf("console.error: %v", e.Args))
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, fmt.Sprintf("exception: %s at %s:%d", e.ExceptionDetails.Text, e.ExceptionDetails.URL, e.ExceptionDetails.LineNumber))
		case *log.EventEntryAdded:
			if e.Entry.Level == log.EntryLevelError {
				problems = append(problems, "log: "+e.Entry.Text+" "+e.Entry.URL)
			}
		}
	})
	if err != nil {
		t.Fatalf("starting the browser: %v", err)
	}
	count := func(sel string) int {
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel)))
		if err != nil {
			t.Fatalf("evaluate: %v", err)
		}
		return n
	}
	waitFor := func(what string, d time.Duration, ok func() bool) time.Duration {
		start := time.Now()
		for !ok() {
			if time.Since(start) > d {
				html, _ := chromedp.Run(ctx, chromedp.OuterHTML("main"))
				t.Fatalf("after %v: %s\n%s", d, what, html)
			}
			time.Sleep(100 * time.Millisecond)
		}
		return time.Since(start)
	}
	if _, err := chromedp.Call(ctx, log.Enable, cdp.Empty{}); err != nil {
		t.Fatalf("enabling the browser's log: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(link), chromedp.WaitVisible("#peers")); err != nil {
		t.Fatalf("loading %s: %v", link, err)
	}
	waitFor("the page lists 3 peers", 15*time.Second, func() bool { return count("#peers tbody tr") == 3 && count(`#peers tr[data-state="up"]`) == 2 })
	if live, _ := chromedp.Run(ctx, chromedp.Text("#live")); live != "live" {
		t.Errorf("the badge says %q; want live", live)
	}
	if err := chromedp.Do(ctx, chromedp.SetValue("#path", os.Getenv("OASHARE_UI_FILE")), chromedp.Click("#pick button")); err != nil {
		t.Fatal(err)
	}
	groups := os.Getenv("OASHARE_UI_GROUPS")
	waitFor("the chunk map shows "+groups+" groups with enough copies", 15*time.Second, func() bool {
		return fmt.Sprint(count("#map .cell.full")) == groups
	})
	if p := os.Getenv("OASHARE_UI_SCREENSHOT"); p != "" {
		if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
			os.WriteFile(p, png, 0o644)
		}
	}
	fmt.Println("KILL PEER 3")
	if line, _ := bufio.NewReader(os.Stdin).ReadString('\n'); line != "killed\n" {
		t.Fatalf("the test did not kill peer 3: %q", line)
	}
	row := fmt.Sprintf(`#peers tr[data-id=%q][data-state="down"]`, os.Getenv("OASHARE_UI_KILL"))
	took := waitFor("peer 3 shown down", 10*time.Second, func() bool { return count(row) == 1 })
	t.Logf("peer 3 shown down %v after its kill -9", took.Round(100*time.Millisecond))
	waitFor("the chunk map shows every group below target", 15*time.Second, func() bool {
		return fmt.Sprint(count("#map .cell.below")) == groups
	})
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(problems, "\n"))
	}
}
