package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/oashare/oashare/index"
)

// The local dashboard (mount --ui): a page that shows the node's peers,
// transfers, health and a file's chunk map, updated live by server-sent
// events, and /metrics in Prometheus's format. Everything it serves is
// embedded in the binary. It listens on loopback only and answers only
// requests that carry its token (a cookie set by the link 'oashare ui'
// prints, or "Authorization: Bearer TOKEN" for /metrics), come for its
// own host name and, from a browser, from its own origin: other users of
// the machine and other web sites get nothing.

//go:embed ui
var uiFiles embed.FS

// uiDefault is where the dashboard listens unless --ui says otherwise.
const uiDefault = "127.0.0.1:7734"

const (
	uiTokenFile  = "ui.token"
	uiCookieName = "oashare_ui"
)

type uiServer struct {
	c     *control
	log   *slog.Logger
	ln    net.Listener
	srv   *http.Server
	token string
	reg   *prometheus.Registry
}

// checkUIAddr checks a --ui value: "off", or a loopback HOST:PORT.
func checkUIAddr(addr string) error {
	if addr == "off" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--ui %q: want 127.0.0.1:PORT (or off): %v", addr, err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("--ui %q: bad port %q", addr, port)
	}
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--ui %s: the dashboard listens on loopback only (127.0.0.1 or ::1): it shows file names and has no login beyond its token", addr)
	}
	return nil
}

// uiToken reads the dashboard's token from the data dir, making one (128
// random bits, 0600) the first time.
func uiToken(dataDir string) (string, error) {
	p := filepath.Join(dataDir, uiTokenFile)
	if b, err := os.ReadFile(p); err == nil && len(strings.TrimSpace(string(b))) == 32 {
		return strings.TrimSpace(string(b)), nil
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(raw[:])
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		return "", err
	}
	return tok, nil
}

// startUI serves the dashboard of c on addr.
func startUI(addr, dataDir string, c *control, log *slog.Logger) (*uiServer, error) {
	tok, err := uiToken(dataDir)
	if err != nil {
		return nil, fmt.Errorf("dashboard token: %v", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	u := &uiServer{c: c, log: log, ln: ln, token: tok, reg: prometheus.NewRegistry()}
	u.registerMetrics()
	static, _ := fs.Sub(uiFiles, "ui")
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", u.page(static))
	mux.Handle("GET /app.js", http.FileServerFS(static))
	mux.Handle("GET /style.css", http.FileServerFS(static))
	mux.HandleFunc("GET /events", u.events)
	mux.HandleFunc("GET /api/status", u.apiStatus)
	mux.HandleFunc("GET /api/where", u.apiWhere)
	mux.HandleFunc("GET /api/ls", u.apiList)
	mux.Handle("GET /metrics", promhttp.HandlerFor(u.reg, promhttp.HandlerOpts{}))
	u.srv = &http.Server{Handler: u.guard(mux), ReadHeaderTimeout: 5 * time.Second}
	go u.srv.Serve(ln)
	return u, nil
}

// URL is the link that opens the dashboard (and sets its cookie).
func (u *uiServer) URL() string {
	return "http://" + u.ln.Addr().String() + "/?token=" + u.token
}

func (u *uiServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	u.srv.Shutdown(ctx)
}

// guard refuses what is not the dashboard's own: another Host (a DNS
// rebinding), another origin, a request without the token.
func (u *uiServer) guard(next http.Handler) http.Handler {
	_, port, _ := net.SplitHostPort(u.ln.Addr().String())
	hosts := map[string]bool{u.ln.Addr().String(): true, "localhost:" + port: true, "127.0.0.1:" + port: true, "[::1]:" + port: true}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		switch {
		case !hosts[r.Host]:
			http.Error(w, "refused: the dashboard answers for "+u.ln.Addr().String()+" only", http.StatusForbidden)
			return
		case r.Header.Get("Origin") != "" && r.Header.Get("Origin") != "http://"+r.Host:
			http.Error(w, "refused: request from another origin", http.StatusForbidden)
			return
		}
		if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
			http.Error(w, "refused: request from another site", http.StatusForbidden)
			return
		}
		if q := r.URL.Query().Get("token"); q != "" && r.URL.Path == "/" {
			if !u.tokenOK(q) {
				http.Error(w, "refused: wrong token (run 'oashare ui' for the link)", http.StatusForbidden)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: uiCookieName, Value: u.token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		ok := false
		if c, err := r.Cookie(uiCookieName); err == nil {
			ok = u.tokenOK(c.Value)
		}
		if b, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); found {
			ok = ok || u.tokenOK(b)
		}
		if !ok {
			http.Error(w, "refused: no token; open the link 'oashare ui' prints", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (u *uiServer) tokenOK(t string) bool {
	return subtle.ConstantTimeCompare([]byte(t), []byte(u.token)) == 1
}

func (u *uiServer) page(static fs.FS) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := fs.ReadFile(static, "index.html")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(b)
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (u *uiServer) apiStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, u.c.status())
}

// uiEvery is how often the dashboard's event stream sends the status.
const uiEvery = time.Second

// events streams the status as server-sent events, one a second.
func (u *uiServer) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	t := time.NewTicker(uiEvery)
	defer t.Stop()
	for {
		b, err := json.Marshal(u.c.status())
		if err != nil {
			return
		}
		if _, err := fmt.Fprintf(w, "event: status\ndata: %s\n\n", b); err != nil {
			return
		}
		fl.Flush()
		select {
		case <-r.Context().Done():
			return
		case <-u.c.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// uiWhere is the chunk map of one file: its chunks' live holders and the
// replica target.
type uiWhere struct {
	*whereJSON
	Replicas int `json:"replicas"`
	Live     int `json:"live_nodes"`
}

func (u *uiServer) apiWhere(w http.ResponseWriter, r *http.Request) {
	rel := strings.Trim(r.URL.Query().Get("path"), "/")
	wj, err := u.c.where(rel)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	writeJSON(w, uiWhere{whereJSON: wj, Replicas: u.c.node.Replicas(), Live: len(u.c.node.Peers()) + 1})
}

// uiEntry is one name of a directory listing.
type uiEntry struct {
	Name string `json:"name"`
	Dir  bool   `json:"dir"`
	Size uint64 `json:"size"`
}

func (u *uiServer) apiList(w http.ResponseWriter, r *http.Request) {
	rel := strings.Trim(r.URL.Query().Get("path"), "/")
	db := u.c.node.DB()
	id, typ, err := resolve(db, rel)
	if err == nil && typ != index.TypeDir {
		err = errors.New(rel + ": not a directory")
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	ents, err := db.ReadDir(id)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	out := []uiEntry{}
	for _, e := range ents {
		ent := uiEntry{Name: e.Name, Dir: e.Type == index.TypeDir}
		if ino, ok, err := db.GetInode(e.Child); err == nil && ok {
			ent.Size = ino.Size
		}
		out = append(out, ent)
	}
	writeJSON(w, out)
}

// registerMetrics registers the node's figures with u's registry.
func (u *uiServer) registerMetrics() {
	c := u.c
	m := c.node.Metrics()
	counters := c.fsys.Counters()
	counter := func(name, help string, f func() float64) {
		u.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "oashare", Name: name, Help: help}, f))
	}
	gauge := func(name, help string, f func() float64) {
		u.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "oashare", Name: name, Help: help}, f))
	}
	counter("read_bytes_total", "Bytes programs read through the mount.", func() float64 { return float64(counters.BytesRead.Load()) })
	counter("written_bytes_total", "Bytes programs wrote through the mount.", func() float64 { return float64(counters.BytesWritten.Load()) })
	counter("chunks_fetched_total", "Chunks received from peers that matched their names.", func() float64 { return float64(m.ChunksFetched.Load()) })
	counter("fetched_bytes_total", "Bytes of the chunks received from peers.", func() float64 { return float64(m.BytesFetched.Load()) })
	counter("verify_failures_total", "Chunks whose bytes did not match their names (replaced from another copy or reported).", func() float64 { return float64(m.VerifyFailures.Load()) })
	counter("unavailable_total", "Operations on the mount that failed because no live peer served a chunk.", func() float64 { return float64(counters.Unavailable.Load()) })
	counter("repair_copied_bytes_total", "Bytes of copies repair made on other peers.", func() float64 { return float64(c.node.RepairStats().CopiedBytes) })
	gauge("peers", "Live peers connected to this node.", func() float64 { return float64(len(c.node.Peers())) })
	gauge("members", "Members of the network, this node included, removed ones not.", func() float64 {
		n := 0
		for _, mem := range c.node.DB().Members() {
			if !mem.Removed {
				n++
			}
		}
		return float64(n)
	})
	gauge("groups_below_target", "Groups this node wrote that have fewer copies than the replica target.", func() float64 {
		g, _, _ := c.node.DB().UnderTarget()
		return float64(g)
	})
	gauge("pending_versions", "File versions written here and not yet published.", func() float64 {
		ps, _ := c.node.DB().Pendings()
		return float64(len(ps))
	})
	gauge("stored_bytes", "Bytes of chunks in this node's store.", func() float64 {
		_, b := c.node.DB().ChunkStats()
		return float64(b)
	})
	lat := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "oashare", Name: "peer_request_duration_seconds",
		Help: "Time peers took to answer this node's read requests.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)})
	u.reg.MustRegister(lat, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.OnLatency(func(d time.Duration) { lat.Observe(d.Seconds()) })
}

func newUICmd() *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:   "ui [MOUNTPOINT]",
		Short: "Print the link that opens the node's dashboard in a browser",
		Long: `Print the link to the dashboard of the node serving MOUNTPOINT (or running
with --data): peers, transfers, health and a file's chunk map, live. The link
carries the dashboard's token (kept in the data dir, readable by this user
only); opening it once sets a cookie, and later visits need no token.
/metrics on the same address serves Prometheus metrics to a scraper that
sends "Authorization: Bearer TOKEN".`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := dataDirArg(cmd, args, data)
			if err != nil {
				return err
			}
			var s statusJSON
			if err := ask(dir, "status", "", &s); err != nil {
				return err
			}
			if s.UI == "" {
				return fmt.Errorf("the node serves no dashboard (mounted with --ui off, or its address was taken: see its log)")
			}
			fmt.Fprintln(cmd.OutOrStdout(), s.UI)
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", defaultDataDir(), "data directory of the node to ask (default with MOUNTPOINT: the node serving it)")
	return cmd
}
