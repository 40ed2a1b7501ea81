package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/oashare/oashare/chunknet"
	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/fusefs"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// The control socket is a unix socket in the data directory through which
// local commands (status, where) ask the running node. A request is one
// line: a command word, optionally a tab and an argument. The answer is one
// JSON document. Only processes that can reach the data directory (mode
// 0700) can connect.

type peerJSON struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
	// What the peer said it holds and has free (absent if it did not
	// answer within two seconds).
	Held     *uint64 `json:"bytes_held,omitempty"`
	DiskFree *uint64 `json:"disk_free,omitempty"`
	// Garbage: of the bytes held, those no file version needs any more
	// (deleted after --reclaim-after).
	Garbage *uint64 `json:"bytes_reclaimable,omitempty"`
	// DiskFull: a put found its disk full lately; it gets copies last.
	DiskFull bool `json:"disk_full,omitempty"`
}

type statusJSON struct {
	NodeID     string     `json:"node_id"`
	Listen     string     `json:"listen"`
	Network    string     `json:"network"`
	Mountpoint string     `json:"mountpoint"`
	Replicas   int        `json:"replicas"`
	Peers      []peerJSON `json:"peers"`
	Chunks     int64      `json:"chunks"`
	Bytes      int64      `json:"bytes"`
	// LogDiskBytes is what the chunk log takes on disk; ReclaimedBytes
	// what reclaiming dropped copies gave back since start.
	LogDiskBytes   int64 `json:"log_disk_bytes"`
	ReclaimedBytes int64 `json:"reclaimed_bytes"`
	// DiskFree is the free space of the disk holding the data dir.
	DiskFree uint64 `json:"disk_free"`
	// DiskFullSince is set while this node's disk is full: its last
	// write of chunks failed for want of space; copies go to other peers.
	DiskFullSince string `json:"disk_full_since,omitempty"`
	// Pending counts the file versions whose close or fsync failed and
	// that wait for their copies to be published; BelowTarget the groups
	// (and tree nodes) this node wrote that have fewer copies than
	// --replicas, to be topped up as peers appear.
	Members          int      `json:"members"`
	Distrusted       []string `json:"distrusted,omitempty"`
	Hint             string   `json:"hint,omitempty"`
	Pending          int      `json:"pending_versions"`
	GroupsBelow      int64    `json:"groups_below_target"`
	TreeNodesBelow   int64    `json:"tree_nodes_below_target"`
	StateUnavailable string   `json:"state_error,omitempty"`
	// Name is this node's member name; MemberList every member, this
	// node and removed ones included, with when each was last seen.
	Name       string       `json:"name"`
	MemberList []memberJSON `json:"member_list"`
	// Unavailable counts operations on the mount that failed (EIO)
	// because no live peer served a chunk, since start; BytesRead and
	// BytesWritten what programs read and wrote through the mount.
	Unavailable int64    `json:"unavailable"`
	Pinned      pinStats `json:"pinned"`
	// What reads fetched from peers since start: chunks that matched
	// their names, their bytes, and chunks that did not.
	ChunksFetched  int64 `json:"chunks_fetched"`
	BytesFetched   int64 `json:"bytes_fetched"`
	VerifyFailures int64 `json:"verify_failures"`
	// UI is the link that opens the dashboard ("" when --ui off).
	UI           string `json:"ui,omitempty"`
	BytesRead    int64  `json:"bytes_read"`
	BytesWritten int64  `json:"bytes_written"`
	// At is when these figures were taken (RFC 3339 with nanoseconds),
	// to turn two answers into rates.
	At     string     `json:"at"`
	Repair repairJSON `json:"repair"`
	Scrub  scrubJSON  `json:"scrub"`
	GC     gcJSON     `json:"gc"`
}

// gcJSON is what garbage collection did (see chunknet's gc.go).
type gcJSON struct {
	LastPass string `json:"last_pass,omitempty"`
	Passes   int    `json:"passes"`
	// Versions is how many file versions the last pass kept data for;
	// Reclaimable the items (and their bytes) no version needs, deleted
	// once unneeded for --reclaim-after; Dropped those deleted since
	// start. HeldBack says why the last pass could delete nothing.
	Versions         int    `json:"versions_kept"`
	Reclaimable      int64  `json:"items_reclaimable"`
	ReclaimableBytes int64  `json:"bytes_reclaimable"`
	Dropped          int64  `json:"items_dropped"`
	HeldBack         string `json:"held_back,omitempty"`
	// History pruned since start (index ns_prune.go): log records every
	// member has, superseded versions, deleted names and their inodes;
	// Snapshots the namespace loads from a peer's snapshot.
	PrunedRecords  int `json:"records_pruned"`
	PrunedVersions int `json:"versions_pruned"`
	PrunedNames    int `json:"names_pruned"`
	PrunedInodes   int `json:"inodes_pruned"`
	Snapshots      int `json:"snapshots_loaded"`
}

// scrubJSON counts what scrub found since the node started.
type scrubJSON struct {
	LastPass string `json:"last_pass,omitempty"`
	Passes   int64  `json:"passes"`
	Checked  int64  `json:"checked"`
	Damaged  int64  `json:"damaged"`
	Replaced int64  `json:"replaced"`
}

// repairJSON is what repair knows from this node's store (see chunknet's
// repair.go): the last pass's counts and the totals since start.
type repairJSON struct {
	LastPass    string `json:"last_pass,omitempty"`
	Checked     int64  `json:"checked"`
	Short       int64  `json:"below_target"`
	Waiting     int64  `json:"waiting"`
	Copied      int64  `json:"copies_made"`
	CopiedBytes int64  `json:"copied_bytes"`
	Dropped     int64  `json:"surplus_dropped"`
}

type chunkJSON struct {
	Index   uint64   `json:"index"`
	Size    int      `json:"size"`
	Hash    string   `json:"hash"`
	Holders []string `json:"holders"`
}

type whereJSON struct {
	Path   string      `json:"path"`
	Size   uint64      `json:"size"`
	Root   string      `json:"root,omitempty"`
	Depth  uint8       `json:"depth"`
	Chunks []chunkJSON `json:"chunks"`
	Nodes  []chunkJSON `json:"tree_nodes"`
}

type errorJSON struct {
	Error string `json:"error"`
}

type control struct {
	ln      net.Listener
	node    *chunknet.Node
	fsys    *fusefs.FS
	mnt     string
	network string
	wg      sync.WaitGroup
	once    sync.Once

	left      chan struct{} // closed when a leave drained the node: stop
	leaveOnce sync.Once

	server   interface{ Unmount() error } // the mount, for umount
	detached chan struct{}                // closed when umount --force detached a busy mount: stop

	log     *slog.Logger
	ctx     context.Context // ends at Close: background work of the control (pinKeeper)
	cancel  context.CancelFunc
	pinKick chan struct{} // wakes pinKeeper (pin.go)

	pinMu    sync.Mutex
	pinStats pinStats // of the last keepPins

	ui atomic.Pointer[uiServer] // the dashboard, once started
}

func startControl(dataDir string, node *chunknet.Node, fsys *fusefs.FS, server interface{ Unmount() error }, mnt, network string, log *slog.Logger) (*control, error) {
	path := filepath.Join(dataDir, controlSocketName)
	os.Remove(path) // a leftover of a killed node; we hold the data dir lock
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %v", path, err)
	}
	os.Chmod(path, 0o600)
	c := &control{ln: ln, node: node, fsys: fsys, server: server, mnt: mnt, network: network,
		left: make(chan struct{}), detached: make(chan struct{}), log: log, pinKick: make(chan struct{}, 1)}
	c.ctx, c.cancel = context.WithCancel(node.Context())
	c.wg.Add(2)
	go c.serve()
	go func() {
		defer c.wg.Done()
		c.pinKeeper(c.ctx)
	}()
	return c, nil
}

func (c *control) Close() {
	c.once.Do(func() {
		c.cancel()
		c.ln.Close()
		c.wg.Wait()
	})
}

func (c *control) serve() {
	defer c.wg.Done()
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(2 * time.Minute))
			line, err := bufio.NewReader(io.LimitReader(conn, 8192)).ReadString('\n')
			if err != nil {
				return
			}
			cmd, arg, _ := strings.Cut(strings.TrimSuffix(line, "\n"), "\t")
			var reply any
			switch cmd {
			case "status":
				reply = c.status()
			case "invite":
				reply = orError(c.invite(arg))
			case "members":
				reply = c.members()
			case "remove":
				reply = orError(c.remove(arg))
			case "fsck":
				if len(arg) == 0 {
					reply = errorJSON{"fsck: no mode"}
					break
				}
				conn.SetDeadline(time.Now().Add(24 * time.Hour)) // a big share takes long
				reply = orError(c.fsck(arg[1:], arg[0] == 'r'))
			case "leave":
				conn.SetDeadline(time.Now().Add(30 * 24 * time.Hour)) // as long as the copies take
				c.leave(json.NewEncoder(conn), arg == "force")
				return
			case "umount":
				conn.SetDeadline(time.Now().Add(30 * 24 * time.Hour)) // as long as publishing takes
				c.umount(json.NewEncoder(conn), arg == "force")
				return
			case "pin":
				rels, err := parseRels(arg)
				if err != nil {
					reply = errorJSON{"pin: " + err.Error()}
					break
				}
				conn.SetDeadline(time.Now().Add(30 * 24 * time.Hour)) // as long as fetching takes
				ctx, cancel := context.WithCancel(c.ctx)
				go func() { // the asker going away (Ctrl-C) stops the fetching
					io.Copy(io.Discard, conn)
					cancel()
				}()
				c.pin(ctx, json.NewEncoder(conn), rels)
				cancel()
				return
			case "unpin":
				rels, err := parseRels(arg)
				if err != nil {
					reply = errorJSON{"unpin: " + err.Error()}
					break
				}
				reply = orError(c.unpin(rels))
			case "versions":
				reply = orError(c.versions(arg))
			case "restore":
				reply = orError(c.restore(arg))
			case "where":
				w, err := c.where(arg)
				if err != nil {
					reply = errorJSON{err.Error()}
				} else {
					reply = w
				}
			default:
				reply = errorJSON{"unknown control command " + cmd}
			}
			json.NewEncoder(conn).Encode(reply)
		}()
	}
}

// parseRels reads the paths of pin and unpin: a JSON array of paths
// inside the share.
func parseRels(arg string) ([]string, error) {
	var rels []string
	if err := json.Unmarshal([]byte(arg), &rels); err != nil {
		return nil, fmt.Errorf("bad paths: %v", err)
	}
	return rels, nil
}

// orError is v, or the error as the control socket sends it.
func orError(v any, err error) any {
	if err != nil {
		return errorJSON{err.Error()}
	}
	return v
}

func (c *control) status() statusJSON {
	count, bytes := c.node.DB().ChunkStats()
	s := statusJSON{
		NodeID:     c.node.ID().String(),
		Listen:     c.node.Addr(),
		Network:    c.network,
		Mountpoint: c.mnt,
		Replicas:   c.node.Replicas(),
		Peers:      []peerJSON{},
		Chunks:     count,
		Bytes:      bytes,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	stats := c.node.PeerStats(ctx)
	full := c.node.FullPeers()
	for _, p := range c.node.Peers() {
		pj := peerJSON{ID: p.ID.String(), Addr: p.Addr, DiskFull: slices.Contains(full, p.ID)}
		if st, ok := stats[p.ID]; ok {
			pj.Held, pj.DiskFree, pj.Garbage = &st.ChunkBytes, &st.DiskFree, &st.Garbage
		}
		s.Peers = append(s.Peers, pj)
	}
	s.DiskFree = c.node.LocalStat().DiskFree
	s.MemberList = c.members()
	for _, m := range s.MemberList {
		if m.Self {
			s.Name = m.Name
		}
	}
	cs := c.fsys.Counters()
	s.Unavailable, s.BytesRead, s.BytesWritten = cs.Unavailable.Load(), cs.BytesRead.Load(), cs.BytesWritten.Load()
	s.At = time.Now().UTC().Format(time.RFC3339Nano)
	c.pinMu.Lock()
	s.Pinned = c.pinStats
	c.pinMu.Unlock()
	m := c.node.Metrics()
	s.ChunksFetched, s.BytesFetched, s.VerifyFailures = m.ChunksFetched.Load(), m.BytesFetched.Load(), m.VerifyFailures.Load()
	if u := c.ui.Load(); u != nil {
		s.UI = u.URL()
	}
	if since, full := c.node.DB().DiskFull(); full {
		s.DiskFullSince = since.UTC().Format(time.RFC3339)
	}
	for _, m := range c.node.DB().Members() {
		if !m.Removed {
			s.Members++
		}
	}
	for _, id := range c.node.Distrusted() {
		s.Distrusted = append(s.Distrusted, id.String())
	}
	if s.Members <= 1 {
		s.Hint = addMachineHint(c.mnt)
	}
	s.LogDiskBytes, _ = c.node.DB().DiskUsage()
	s.ReclaimedBytes = c.node.DB().Reclaimed()
	rs := c.node.RepairStats()
	s.Repair = repairJSON{Checked: rs.Checked, Short: rs.Short, Waiting: rs.Waiting, Copied: rs.Copied, CopiedBytes: rs.CopiedBytes, Dropped: rs.Dropped}
	if !rs.LastPass.IsZero() {
		s.Repair.LastPass = rs.LastPass.UTC().Format(time.RFC3339)
	}
	gs := c.node.GCStat()
	s.GC = gcJSON{Passes: gs.Passes, Versions: gs.Roots, Dropped: gs.Dropped, HeldBack: gs.HeldBack,
		PrunedRecords: gs.Pruned.Records, PrunedVersions: gs.Pruned.Versions, PrunedNames: gs.Pruned.Names,
		PrunedInodes: gs.Pruned.Inodes, Snapshots: c.node.SnapshotsLoaded()}
	s.GC.Reclaimable, s.GC.ReclaimableBytes = c.node.DB().GarbageBytes()
	if !gs.Last.IsZero() {
		s.GC.LastPass = gs.Last.UTC().Format(time.RFC3339)
	}
	ss := c.node.ScrubStats()
	s.Scrub = scrubJSON{Passes: ss.Passes, Checked: ss.Items, Damaged: ss.Damaged, Replaced: ss.Replaced}
	if !ss.LastPass.IsZero() {
		s.Scrub.LastPass = ss.LastPass.UTC().Format(time.RFC3339)
	}
	ps, err := c.node.DB().Pendings()
	if err == nil {
		s.Pending = len(ps)
		s.GroupsBelow, s.TreeNodesBelow, err = c.node.DB().UnderTarget()
	}
	if err != nil {
		s.StateUnavailable = err.Error()
	}
	return s
}

// where resolves rel (a path inside the mount) through the index and
// reports every chunk of the file and who holds it.
func (c *control) where(rel string) (*whereJSON, error) {
	db := c.node.DB()
	id := index.RootID
	for _, name := range strings.Split(rel, "/") {
		if name == "" || name == "." {
			continue
		}
		de, ok, err := db.LookupDirent(id, name)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%s: no such file in the shared folder", rel)
		}
		id = de.Child
	}
	ino, ok, err := db.GetInode(id)
	if err != nil {
		return nil, err
	}
	if !ok || ino.Type != index.TypeFile {
		return nil, fmt.Errorf("%s is not a regular file", rel)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v := tree.Version{Size: ino.Size, Root: ino.Root, Depth: ino.Depth}
	w := &whereJSON{Path: rel, Size: v.Size, Depth: v.Depth, Chunks: []chunkJSON{}, Nodes: []chunkJSON{}}
	if !v.Root.IsZero() {
		w.Root = v.Root.String()
	}
	// Only groups that store something are listed: holes are not
	// stored, and a sparse file is listed at the cost of what it stores.
	var spans []tree.Span
	var firsts []uint64
	if err := tree.Stored(ctx, c.node, v, func(first uint64, s tree.Span) error {
		spans, firsts = append(spans, s), append(firsts, first)
		return nil
	}); err != nil {
		return nil, err
	}
	// A data chunk is held by the holders of its group.
	groups := make([]format.Hash, len(spans))
	for i, s := range spans {
		groups[i] = s.Group
	}
	groupHolders, err := c.node.GroupHolders(ctx, groups)
	if err != nil {
		return nil, err
	}
	holderStrings := func(ids []format.NodeID) []string {
		out := []string{}
		for _, id := range ids {
			out = append(out, id.String())
		}
		return out
	}
	for k, s := range spans {
		for j, h := range s.Leaves {
			if h.IsZero() {
				continue
			}
			i := firsts[k] + uint64(j)
			w.Chunks = append(w.Chunks, chunkJSON{Index: i, Size: tree.LeafSize(v.Size, i), Hash: h.String(), Holders: holderStrings(groupHolders[k])})
		}
	}
	var nodes []format.Hash
	if err := tree.Nodes(ctx, c.node, v, func(_ uint8, h format.Hash) error { nodes = append(nodes, h); return nil }); err != nil {
		return nil, err
	}
	holders, err := c.node.Holders(ctx, nodes)
	if err != nil {
		return nil, err
	}
	for k, h := range nodes {
		w.Nodes = append(w.Nodes, chunkJSON{Index: uint64(k), Hash: h.String(), Holders: holderStrings(holders[k])})
	}
	return w, nil
}

// errNoNode: no node answers on a data dir's control socket.
var errNoNode = errors.New("no oashare node is running")

// dialControl connects to the control socket of the node owning dataDir;
// its error wraps errNoNode when no node runs there.
func dialControl(dataDir string) (net.Conn, error) {
	path := filepath.Join(dataDir, controlSocketName)
	conn, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w with data dir %s: start one with 'oashare mount' (or pass --data)", errNoNode, dataDir)
		}
		return nil, fmt.Errorf("control socket %s: %v", path, err)
	}
	return conn, nil
}

// askStream sends a control request whose answer is a stream of JSON
// objects (progress, then done or an error: leave, umount, pin) and
// returns the connection, to close when done, and a decoder of the
// stream.
func askStream(dataDir, cmd, arg string) (net.Conn, *json.Decoder, error) {
	conn, err := dialControl(dataDir)
	if err != nil {
		return nil, nil, err
	}
	if _, err := io.WriteString(conn, cmd+"\t"+arg+"\n"); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, json.NewDecoder(bufio.NewReader(conn)), nil
}

// ask sends one control request to the node owning dataDir.
func ask(dataDir, cmd, arg string, out any) error {
	conn, err := dialControl(dataDir)
	if err != nil {
		return err
	}
	defer conn.Close()
	wait := 2 * time.Minute
	if cmd == "fsck" {
		wait = 24 * time.Hour // it asks every peer about every file
	}
	conn.SetDeadline(time.Now().Add(wait))
	line := cmd
	if arg != "" {
		line += "\t" + arg
	}
	if _, err := io.WriteString(conn, line+"\n"); err != nil {
		return err
	}
	raw, err := io.ReadAll(io.LimitReader(conn, 1<<30))
	if err != nil {
		return err
	}
	var e errorJSON
	if json.Unmarshal(raw, &e) == nil && e.Error != "" {
		return errors.New(e.Error)
	}
	return json.Unmarshal(raw, out)
}

// leaveJSON is one line of the answer to leave: progress, then either
// done or an error.
type leaveJSON struct {
	Progress *chunknet.DrainProgress `json:"progress,omitempty"`
	Done     bool                    `json:"done,omitempty"`
	Error    string                  `json:"error,omitempty"`
}

// leave drains this node (see chunknet's Drain), streaming progress to
// enc, and on success makes the node stop (Left is closed).
func (c *control) leave(enc *json.Encoder, force bool) {
	if !force {
		if ps, err := c.node.DB().Pendings(); err != nil {
			enc.Encode(leaveJSON{Error: err.Error()})
			return
		} else if len(ps) > 0 {
			enc.Encode(leaveJSON{Error: fmt.Sprintf("%d file versions written here are not published yet (a close or fsync failed; 'oashare status'): leaving now would lose them; wait until they are, or use --force", len(ps))})
			return
		}
	}
	last := time.Time{}
	err := c.node.Drain(c.node.Context(), force, func(p chunknet.DrainProgress) {
		if time.Since(last) < 500*time.Millisecond && p.ItemsDone < p.Items {
			return
		}
		last = time.Now()
		enc.Encode(leaveJSON{Progress: &p})
	})
	if err != nil {
		msg := err.Error()
		if errors.Is(err, chunknet.ErrCannotDrain) {
			msg += "; the node keeps running (use --force to leave anyway)"
		}
		enc.Encode(leaveJSON{Error: msg})
		return
	}
	enc.Encode(leaveJSON{Done: true})
	c.leaveOnce.Do(func() { close(c.left) })
}

// umountJSON is one line of the answer to umount: progress, then done or
// an error.
type umountJSON struct {
	Pending int    `json:"pending,omitempty"` // file versions written here, not yet published
	Done    bool   `json:"done,omitempty"`
	Error   string `json:"error,omitempty"`
}

// umountBeat is how often umount tells the asker it is still waiting
// (and so finds out the asker went away).
const umountBeat = 2 * time.Second

// umount stops the node cleanly: it waits until every file version
// written here is published (unless force), streaming the count to enc,
// then unmounts; the node stops once the mount is gone. If the asker goes
// away while it waits (Ctrl-C), the node keeps running. A busy mount (a
// program has a file open in it) is an error, unless force, which
// detaches it lazily and stops the node.
func (c *control) umount(enc *json.Encoder, force bool) {
	last, lastSent := -1, time.Time{}
	for !force {
		ps, err := c.node.DB().Pendings()
		if err != nil {
			enc.Encode(umountJSON{Error: err.Error()})
			return
		}
		if len(ps) == 0 {
			break
		}
		if len(ps) != last || time.Since(lastSent) >= umountBeat {
			if enc.Encode(umountJSON{Pending: len(ps)}) != nil {
				return // the asker went away: keep running
			}
			last, lastSent = len(ps), time.Now()
		}
		c.fsys.PublishPending()
		select {
		case <-time.After(100 * time.Millisecond):
		case <-c.node.Context().Done():
			enc.Encode(umountJSON{Error: "the node is stopping"})
			return
		}
	}
	if err := c.server.Unmount(); err != nil {
		if !force {
			enc.Encode(umountJSON{Error: fmt.Sprintf("%s is busy: a program has a file or directory open in it (fuser -vm %s lists them); close it and run umount again, or use --force to detach it now (those programs then get errors)", c.mnt, c.mnt)})
			return
		}
		if out, err := exec.Command("fusermount3", "-u", "-z", c.mnt).CombinedOutput(); err != nil {
			enc.Encode(umountJSON{Error: fmt.Sprintf("detaching %s: %v: %s", c.mnt, err, strings.TrimSpace(string(out)))})
			return
		}
		close(c.detached)
	}
	enc.Encode(umountJSON{Done: true})
}
