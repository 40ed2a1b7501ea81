package chunknet

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// DefaultPort is the peer protocol's TCP port when --listen names none.
const DefaultPort = 7733

// Config builds a Node. Every node is a value: several live in one test.
type Config struct {
	DB *index.DB
	// Identity is this node's key, the one DB was opened with. With one,
	// the node speaks TLS with members of DB's network only, and Network
	// is that network's ID (see secure.go); without one, plain TCP with
	// any node of the same Network name.
	Identity ed25519.PrivateKey
	Network  string // nodes only talk to nodes of the same network name
	Listen   string // host:port; port 0 picks a free one
	DataDir  string // directory whose disk Stat reports; "" = none
	Replicas int    // copies of each chunk, fewer while fewer nodes are alive

	Transport    Transport     // nil = TCP
	Logger       *slog.Logger  // nil = slog.Default()
	PingInterval time.Duration // 0 = 1s
	DeadAfter    time.Duration // a peer silent this long is dropped; 0 = 5s
	PullInterval time.Duration // anti-entropy period; 0 = 1s
	CacheBytes   int           // verified chunks kept in memory; 0 = 32 MiB, < 0 = none
	// RetryFor is how long a fetch or an upload keeps retrying chunks no
	// live peer could serve or store (peers restarting, a stalled link)
	// before it fails; 0 = 10s, < 0 = no retry.
	RetryFor time.Duration
	// ReadIdle bounds the wait for each frame on a connection, from the
	// end of the last one to the end of this one: a peer pings every
	// PingInterval, so one silent (or trickling a frame) that long is gone
	// or hostile, and its connection is closed. 0 = 60s.
	ReadIdle time.Duration
	// MaxInbound and MaxInboundPerHost cap the inbound connections, in
	// all and per remote host; connections over a cap are closed at once.
	// 0 = 1024 and 64.
	MaxInbound, MaxInboundPerHost int
	// Quota bounds the bytes one member may have this node store for it
	// (see trust.go); 0 = a fair share: the data disk's size divided by
	// the members; < 0 = none.
	Quota int64
	// SpotCheckEvery: one put to a peer in this many is read back from it
	// SpotCheckDelay later (see trust.go); 0 = 32 and 2s, < 0 = never.
	SpotCheckEvery int
	SpotCheckDelay time.Duration
	// TopUpEvery is how often items below the replica target are offered
	// to the live peers again without a wake-up (a peer that joins wakes
	// it at once); 0 = 10s.
	TopUpEvery time.Duration
	// RepairAfter is how long a member may be away before the copies it
	// held are made again elsewhere (repair.go); 0 = 1m. RepairEvery is
	// how often a repair pass runs when nothing wakes one; 0 = 10m.
	// RepairRate paces repair, in bytes per second sent; 0 = 32 MiB/s,
	// < 0 = unpaced. UploadGrace is how long after an item is stored here
	// repair leaves it alone, its writer being still at placing its other
	// copies; 0 = 10s.
	RepairAfter time.Duration
	RepairEvery time.Duration
	RepairRate  int64
	UploadGrace time.Duration
	// ScrubEvery is how often every stored item is read back and checked
	// (scrub.go); 0 = a week, < 0 = never.
	ScrubEvery time.Duration
	// ReclaimEvery is how often, at most, the disk space of dropped
	// copies is given back (reclaim.go); 0 = 1m, or ReclaimAfter if
	// shorter. ReclaimGrace is the
	// wait between finding dead ranges and punching them; 0 = 10s.
	ReclaimEvery time.Duration
	ReclaimGrace time.Duration
	// ReclaimAfter is how long an item no file version needs is kept
	// before it is dropped (gc.go); 0 = 10m. KeepVersions is the restore
	// window: how long a version superseded or deleted keeps its
	// content; 0 = 24h, < 0 = none (dropped as soon as safe).
	ReclaimAfter time.Duration
	KeepVersions time.Duration
	// ForgetAfter: a member not connected for this long (counted from
	// this node's start at most) no longer holds garbage collection back
	// (gc.go); 0 = 30 days.
	ForgetAfter time.Duration
	// PinsFirst says the owner of the node keeps pins (pin.go): repair
	// drops no surplus copy until SetPinned has been called once, so a
	// pinned copy is not dropped before the pins are known.
	PinsFirst bool
}

// Node is one oashare peer on the network: it serves chunks and namespace
// records to peers, keeps an outbound connection to every peer it knows,
// and offers uploads, fetches and publication to the file system above.
type Node struct {
	cfg  Config
	db   *index.DB
	self format.NodeID
	log  *slog.Logger
	tr   Transport
	ln   net.Listener
	port uint16

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	peers      map[format.NodeID]*peer
	seen       map[format.NodeID]PeerInfo // when and where each peer was last connected
	seenAt     map[format.NodeID]time.Time
	dialers    map[string]*dialer
	inbound    map[*serverConn]struct{}
	accepted   int            // inbound connections open (admit)
	acceptedBy map[string]int // of them, per remote host
	capLogged  bool           // the cap was reported since it was last under
	closed     bool

	cache *cache

	flightMu sync.Mutex
	flight   map[format.Hash]chan struct{} // chunks being fetched by name, closed when done
	// groupFlight: groups some of whose chunks are being fetched from
	// peers (FetchSpans), closed when done.
	groupFlight map[format.Hash]chan struct{}

	payloads       payloadPool   // request payload buffers of the servers
	out            outbox        // own records not yet sent to peers
	flushKick      chan struct{} // wakes flushLoop
	flushArmed     atomic.Bool   // a wake-up of flushLoop is due (SyncBatched)
	topUpKick      chan struct{} // wakes topUpLoop
	repair         repairState
	reclaimPending atomic.Bool   // copies were dropped since the last reclaim (reclaim.go)
	gc             gcState       // garbage collection (gc.go)
	snaps          snapshotState // snapshots served and loaded (snapshot.go)
	scrub          scrubState

	distrusted map[format.NodeID]bool      // caught lying about copies (trust.go); guarded by mu
	leaving    map[format.NodeID]bool      // draining (a Leaving frame, drain.go); guarded by mu
	fullPeers  map[format.NodeID]time.Time // when a put last found its disk full (reclaim.go); guarded by mu
	// placementEpoch counts the changes of the set members() returns
	// (peers up and down, draining, distrusted): a spot check spanning
	// one is inconclusive (trust.go).
	placementEpoch atomic.Int64

	metrics     Metrics
	pinMu       sync.Mutex
	pinned      atomic.Pointer[pinSet] // items kept here whatever their placement (pin.go); nil until known
	quotaCache  quotaCache
	quotaLog    everyMinute
	cert        tls.Certificate // of Identity
	joinMu      sync.Mutex      // serializes the use of join codes
	membersKick chan struct{}   // wakes membersLoop

	appliedSig signal                                // notified when records from peers are applied
	visible    atomic.Pointer[func(context.Context)] // see SetVisibleHook
}

type dialer struct {
	addr   string
	cancel context.CancelFunc
}

// PeerInfo describes a live peer.
type PeerInfo struct {
	ID   format.NodeID
	Addr string
}

// New starts a node listening on cfg.Listen. Close stops it.
func New(cfg Config) (*Node, error) {
	if cfg.DB == nil {
		return nil, errors.New("chunknet: Config.DB is nil")
	}
	if cfg.Replicas < 1 {
		return nil, fmt.Errorf("chunknet: replicas must be at least 1, got %d", cfg.Replicas)
	}
	var cert tls.Certificate
	if cfg.Identity != nil {
		netw, ok := cfg.DB.Network()
		switch {
		case !cfg.DB.Signed() || cfg.DB.NodeID() != format.NodeIDOf(cfg.Identity.Public().(ed25519.PublicKey)):
			return nil, errors.New("chunknet: Config.Identity is not the key the index was opened with")
		case !ok:
			return nil, index.ErrNoNetwork
		}
		cfg.Network = hex.EncodeToString(netw.ID[:])
		var err error
		if cert, err = selfCert(cfg.Identity); err != nil {
			return nil, err
		}
	}
	if len(cfg.Network) == 0 || len(cfg.Network) > wire.MaxNetworkName {
		return nil, fmt.Errorf("chunknet: network name must be 1 to %d bytes", wire.MaxNetworkName)
	}
	if cfg.Transport == nil {
		cfg.Transport = TCP{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = time.Second
	}
	if cfg.DeadAfter <= 0 {
		cfg.DeadAfter = 5 * time.Second
	}
	if cfg.PullInterval <= 0 {
		cfg.PullInterval = time.Second
	}
	if cfg.RetryFor == 0 {
		cfg.RetryFor = 10 * time.Second
	}
	if cfg.ReadIdle <= 0 {
		cfg.ReadIdle = 60 * time.Second
	}
	if cfg.MaxInbound <= 0 {
		cfg.MaxInbound = 1024
	}
	if cfg.MaxInboundPerHost <= 0 {
		cfg.MaxInboundPerHost = 64
	}
	if cfg.SpotCheckEvery == 0 {
		cfg.SpotCheckEvery = 32
	}
	if cfg.SpotCheckDelay <= 0 {
		cfg.SpotCheckDelay = 2 * time.Second
	}
	if cfg.TopUpEvery <= 0 {
		cfg.TopUpEvery = 10 * time.Second
	}
	if cfg.RepairAfter <= 0 {
		cfg.RepairAfter = time.Minute
	}
	if cfg.RepairEvery <= 0 {
		cfg.RepairEvery = 10 * time.Minute
	}
	if cfg.RepairRate == 0 {
		cfg.RepairRate = 32 << 20
	}
	if cfg.UploadGrace <= 0 {
		cfg.UploadGrace = 10 * time.Second
	}
	if cfg.ScrubEvery == 0 {
		cfg.ScrubEvery = 7 * 24 * time.Hour
	}
	if cfg.ReclaimAfter <= 0 {
		cfg.ReclaimAfter = 10 * time.Minute
	}
	if cfg.ReclaimEvery <= 0 {
		cfg.ReclaimEvery = min(time.Minute, cfg.ReclaimAfter)
	}
	// A spot check reads an item back before any member could have
	// dropped it as garbage (found unneeded after its put, then kept
	// ReclaimAfter): a miss is then a lie, never a copy rightly deleted.
	cfg.SpotCheckDelay = min(cfg.SpotCheckDelay, cfg.ReclaimAfter/2)
	if cfg.ReclaimGrace <= 0 {
		cfg.ReclaimGrace = 10 * time.Second
	}
	if cfg.ForgetAfter <= 0 {
		cfg.ForgetAfter = 30 * 24 * time.Hour
	}
	switch {
	case cfg.KeepVersions == 0:
		cfg.KeepVersions = 24 * time.Hour
	case cfg.KeepVersions < 0:
		cfg.KeepVersions = 0
	}
	if cfg.CacheBytes == 0 {
		cfg.CacheBytes = 32 << 20
	}
	ln, err := cfg.Transport.Listen(cfg.Listen)
	if err != nil {
		return nil, err
	}
	port := 0
	if ta, ok := ln.Addr().(*net.TCPAddr); ok {
		port = ta.Port
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:         cfg,
		db:          cfg.DB,
		self:        cfg.DB.NodeID(),
		log:         cfg.Logger,
		tr:          cfg.Transport,
		ln:          ln,
		port:        uint16(port),
		ctx:         ctx,
		cancel:      cancel,
		peers:       make(map[format.NodeID]*peer),
		seen:        make(map[format.NodeID]PeerInfo),
		seenAt:      make(map[format.NodeID]time.Time),
		dialers:     make(map[string]*dialer),
		inbound:     make(map[*serverConn]struct{}),
		acceptedBy:  make(map[string]int),
		cache:       newCache(cfg.CacheBytes),
		flight:      make(map[format.Hash]chan struct{}),
		groupFlight: make(map[format.Hash]chan struct{}),

		flushKick: make(chan struct{}, 1),
		topUpKick: make(chan struct{}, 1),

		cert:        cert,
		membersKick: make(chan struct{}, 1),
		distrusted:  make(map[format.NodeID]bool),
		leaving:     make(map[format.NodeID]bool),
		fullPeers:   make(map[format.NodeID]time.Time),
	}
	n.repair.kick = make(chan struct{}, 1)
	n.repair.recvKick = make(chan struct{}, 1)
	n.repair.recv = make(map[index.Item]bool)
	n.repair.started = time.Now()
	if cfg.RepairRate > 0 {
		// A burst of one whole group with its node: the largest item.
		n.repair.limiter = rate.NewLimiter(rate.Limit(cfg.RepairRate), format.MaxGroupData+format.MaxChunkData)
	}
	n.wg.Add(7)
	go n.gcLoop()
	go n.acceptLoop()
	go n.flushLoop()
	go n.topUpLoop()
	go n.membersLoop()
	go n.repairLoop()
	go n.reclaimLoop()
	if cfg.ScrubEvery > 0 {
		n.wg.Add(1)
		go n.scrubLoop()
	}
	if n.secure() {
		n.db.SetOnMembers(n.kickMembers)
	}
	return n, nil
}

// ID returns this node's ID.
func (n *Node) ID() format.NodeID { return n.self }

// Addr returns the address the node listens on.
func (n *Node) Addr() string { return n.ln.Addr().String() }

// Replicas returns the configured replica count.
func (n *Node) Replicas() int { return n.cfg.Replicas }

// Context is cancelled when the node closes. Work that outlives one FUSE
// request (an upload that streams while a program writes) runs under it.
func (n *Node) Context() context.Context { return n.ctx }

// Go runs f in a goroutine that Close waits for; f must return soon after
// ctx is cancelled. It reports false (and runs nothing) once the node is
// closing.
func (n *Node) Go(f func(ctx context.Context)) bool {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return false
	}
	n.wg.Add(1)
	n.mu.Unlock()
	go func() {
		defer n.wg.Done()
		f(n.ctx)
	}()
	return true
}

// Caching reports whether fetched chunks are kept in memory (read-ahead
// is pointless otherwise).
func (n *Node) Caching() bool { return n.cache.max > 0 }

// DB returns the node's index.
func (n *Node) DB() *index.DB { return n.db }

func (n *Node) hello() wire.Hello {
	return wire.Hello{Version: wire.Version, Node: n.self, Network: n.cfg.Network, ListenPort: n.port}
}

// Close says goodbye to every peer, closes every connection and waits for
// every goroutine the node started.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	// Lazily published changes become durable, and go to the peers,
	// before the node leaves.
	if err := n.Sync(); err != nil && !errors.Is(err, index.ErrClosed) {
		n.log.Error("making namespace changes durable", "err", err)
	}
	n.mu.Lock()
	var ins []*serverConn
	for sc := range n.inbound {
		ins = append(ins, sc)
	}
	var outs []*peer
	for _, p := range n.peers {
		outs = append(outs, p)
	}
	n.mu.Unlock()
	for _, sc := range ins {
		sc.w.write(wire.AppendBye(nil, 0))
	}
	for _, p := range outs {
		p.cc.w.write(wire.AppendBye(nil, 0))
	}
	n.cancel()
	err := n.ln.Close()
	for _, sc := range ins {
		sc.conn.Close()
	}
	for _, p := range outs {
		p.cc.close(ErrClosed)
	}
	n.wg.Wait()
	n.closeSnapshots()
	return err
}

// Peers returns the live peers, ordered by ID.
func (n *Node) Peers() []PeerInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]PeerInfo, 0, len(n.peers))
	for _, p := range n.peers {
		out = append(out, PeerInfo{ID: p.id, Addr: p.addr})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID.Compare(out[j].ID) < 0 })
	return out
}

// LastSeen returns when peer id was last connected and at which address
// (zero if not since this node started, or if it is connected now).
func (n *Node) LastSeen(id format.NodeID) (time.Time, string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.seenAt[id], n.seen[id].Addr
}

// members returns this node and every live peer, sorted, plus the peers by
// ID: the set chunk placement is computed over. Peers not trusted with
// copies (removed, distrusted) are left out.
func (n *Node) members() ([]format.NodeID, map[format.NodeID]*peer) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ids := make([]format.NodeID, 0, len(n.peers)+1)
	ids = append(ids, n.self)
	m := make(map[format.NodeID]*peer, len(n.peers))
	for id, p := range n.peers {
		if !n.db.IsMember(id) || n.distrusted[id] || n.leaving[id] {
			continue // removed (its connection is closing), lying about copies, or draining
		}
		ids = append(ids, id)
		m[id] = p
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].Compare(ids[j]) < 0 })
	return ids, m
}

// AddPeerAddr makes the node keep a connection to addr (from discovery or
// a static peer list). Known addresses are ignored, so callers may repeat.
func (n *Node) AddPeerAddr(addr string) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		n.log.Warn("ignoring peer address", "addr", addr, "err", err)
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed || n.dialers[addr] != nil {
		return
	}
	ctx, cancel := context.WithCancel(n.ctx)
	d := &dialer{addr: addr, cancel: cancel}
	n.dialers[addr] = d
	n.wg.Add(1)
	go n.dialLoop(ctx, d)
}

// ForgetAddr stops dialing addr and drops the peer behind it: the node
// there said goodbye.
func (n *Node) ForgetAddr(addr string) {
	n.mu.Lock()
	d := n.dialers[addr]
	delete(n.dialers, addr)
	var drop *peer
	for _, p := range n.peers {
		if p.addr == addr {
			drop = p
		}
	}
	n.mu.Unlock()
	if d != nil {
		d.cancel()
	}
	if drop != nil {
		drop.cc.close(ErrPeerLeft)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// dialLoop keeps one outbound connection to addr alive, redialing with
// backoff, until ctx ends.
func (n *Node) dialLoop(ctx context.Context, d *dialer) {
	defer n.wg.Done()
	backoff := 200 * time.Millisecond
	failures := 0
	for ctx.Err() == nil {
		p, err := n.connect(ctx, d.addr)
		if err != nil {
			failures++
			if errors.Is(err, errSelf) {
				n.log.Debug("address is our own, not dialing it again", "addr", d.addr)
				return
			}
			lvl := slog.LevelDebug
			if failures == 1 || errors.Is(err, wire.ErrRefused) || errors.Is(err, wire.ErrVersion) || errors.Is(err, wire.ErrBadMagic) {
				lvl = slog.LevelInfo
			}
			n.log.Log(ctx, lvl, "cannot connect to peer", "addr", d.addr, "err", err)
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		if p == nil { // the same node is connected through another address
			if !sleepCtx(ctx, 5*time.Second) {
				return
			}
			continue
		}
		failures, backoff = 0, 200*time.Millisecond
		n.runPeer(ctx, p)
		if !sleepCtx(ctx, backoff) {
			return
		}
	}
}

// connect dials addr and runs the handshake. It returns nil, nil when the
// node behind addr is already connected.
func (n *Node) connect(ctx context.Context, addr string) (*peer, error) {
	dctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	conn, err := n.tr.Dial(dctx, addr)
	if err != nil {
		return nil, err
	}
	var want format.NodeID // the node the connection authenticated
	if n.secure() {
		tc, id, _, err := secureClient(dctx, conn, n.cert, n.memberCheck)
		if err != nil {
			conn.Close()
			return nil, err
		}
		conn, want = tc, id
	}
	hello, err := handshake(conn, n.hello(), want)
	if err == nil {
		var rc net.Conn
		if rc, err = toRecords(conn, true); err == nil {
			conn = rc
		}
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	p := &peer{
		id:    hello.Node,
		addr:  addr,
		cc:    newClientConn(conn, hello, addr),
		pushq: make(chan []byte, 4096),
		kick:  make(chan struct{}, 1),
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		conn.Close()
		return nil, ErrClosed
	}
	if _, dup := n.peers[hello.Node]; dup {
		n.mu.Unlock()
		conn.Close()
		return nil, nil
	}
	n.peers[hello.Node] = p
	n.placementEpoch.Add(1)
	n.mu.Unlock()
	n.log.Info("peer up", "peer", hello.Node.Short(), "addr", addr)
	n.kickTopUp()  // items written while it was away may go to it now
	n.kickRepair() // and items it now ranks for (rebalance)
	return p, nil
}

// runPeer runs the goroutines of one live peer and returns when its
// connection ends.
func (n *Node) runPeer(ctx context.Context, p *peer) {
	var wg sync.WaitGroup
	pctx, cancel := context.WithCancel(ctx)
	wg.Add(4)
	go func() { defer wg.Done(); p.cc.readLoop(wire.MaxPayload, n.cfg.ReadIdle) }()
	go func() { defer wg.Done(); n.pingLoop(pctx, p) }()
	go func() { defer wg.Done(); n.pushLoop(pctx, p) }()
	go func() { defer wg.Done(); n.pullLoop(pctx, p) }()
	select {
	case <-p.cc.done:
	case <-ctx.Done():
		p.cc.close(ErrClosed)
	}
	cancel()
	wg.Wait()
	n.mu.Lock()
	if n.peers[p.id] == p {
		delete(n.peers, p.id)
		delete(n.leaving, p.id)
		n.placementEpoch.Add(1)
	}
	n.seen[p.id], n.seenAt[p.id] = PeerInfo{ID: p.id, Addr: p.addr}, time.Now()
	n.mu.Unlock()
	n.kickRepair() // its items wait RepairAfter, then others copy them
	n.log.Info("peer down", "peer", p.id.Short(), "addr", p.addr, "why", p.cc.closedErr())
}

// pingLoop notices a peer that stopped answering.
func (n *Node) pingLoop(ctx context.Context, p *peer) {
	t := time.NewTicker(n.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, n.cfg.DeadAfter)
		typ, _, err := p.cc.call(cctx, wire.AppendPing)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = expect(typ, wire.TypePong)
		}
		// A ping can wait behind a busy peer's other replies; the peer is
		// dead only if nothing at all arrived for DeadAfter.
		if err != nil && (!errors.Is(err, context.DeadlineExceeded) || p.cc.silentFor() >= n.cfg.DeadAfter) {
			p.cc.close(fmt.Errorf("%w: ping: %v", ErrClosed, err))
			return
		}
	}
}

// acceptLoop admits inbound connections.
func (n *Node) acceptLoop() {
	defer n.wg.Done()
	for {
		conn, err := n.ln.Accept()
		if err != nil {
			if n.ctx.Err() != nil {
				return
			}
			n.log.Warn("accept", "err", err)
			if !sleepCtx(n.ctx, 100*time.Millisecond) {
				return
			}
			continue
		}
		if !n.admit(conn) {
			conn.Close()
			continue
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			defer n.release(conn)
			n.serveConn(conn)
		}()
	}
}

// admit counts an accepted connection against the caps on inbound
// connections, in all and per remote host; false means it is over one
// (a flood of connections is refused at once, costing a peer nothing).
func (n *Node) admit(conn net.Conn) bool {
	host := remoteHost(conn)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.accepted >= n.cfg.MaxInbound || n.acceptedBy[host] >= n.cfg.MaxInboundPerHost {
		if !n.capLogged {
			n.capLogged = true
			n.log.Warn("refusing inbound connections over the cap", "remote", conn.RemoteAddr(),
				"open", n.accepted, "from that host", n.acceptedBy[host])
		}
		return false
	}
	n.accepted++
	n.acceptedBy[host]++
	n.capLogged = false
	return true
}

// release uncounts a connection admit counted.
func (n *Node) release(conn net.Conn) {
	host := remoteHost(conn)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.accepted--
	if n.acceptedBy[host]--; n.acceptedBy[host] <= 0 {
		delete(n.acceptedBy, host)
	}
}

func remoteHost(conn net.Conn) string {
	host, _, err := net.SplitHostPort(conn.RemoteAddr().String())
	if err != nil {
		return conn.RemoteAddr().String()
	}
	return host
}

func (n *Node) serveConn(conn net.Conn) {
	var want format.NodeID // the node the connection authenticated
	if n.secure() {
		// Any well-formed key passes TLS; a member's connection goes on,
		// anyone else's may only ask to join.
		tc, id, pub, err := secureServer(n.ctx, conn, n.cert, func(format.NodeID) error { return nil })
		if err != nil {
			n.log.Info("refused inbound connection", "remote", conn.RemoteAddr(), "err", err)
			conn.Close()
			return
		}
		if !n.db.IsMember(id) {
			n.serveJoin(tc, id, pub)
			tc.Close()
			return
		}
		conn, want = tc, id
	}
	hello, err := handshake(conn, n.hello(), want)
	if err == nil {
		var rc net.Conn
		if rc, err = toRecords(conn, false); err == nil {
			conn = rc
		}
	}
	if err != nil {
		if !errors.Is(err, errSelf) {
			n.log.Info("refused inbound connection", "remote", conn.RemoteAddr(), "err", err)
		}
		conn.Close()
		return
	}
	sc := &serverConn{n: n, conn: conn, peer: hello, w: newFrameWriter(conn)}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		conn.Close()
		return
	}
	n.inbound[sc] = struct{}{}
	n.mu.Unlock()
	// Dial back: the peer's listen address is its IP and announced port.
	if host, _, err := net.SplitHostPort(conn.RemoteAddr().String()); err == nil && hello.ListenPort != 0 {
		n.AddPeerAddr(net.JoinHostPort(host, strconv.Itoa(int(hello.ListenPort))))
	}
	sc.serve()
	n.mu.Lock()
	delete(n.inbound, sc)
	n.mu.Unlock()
}

// retry runs attempt until it succeeds, ctx ends, or RetryFor has passed
// since the first failure, pausing with backoff in between. It returns the
// last attempt's error.
func (n *Node) retry(ctx context.Context, attempt func() error) error {
	deadline := time.Now().Add(n.cfg.RetryFor)
	backoff := 100 * time.Millisecond
	for {
		err := attempt()
		if err == nil || ctx.Err() != nil || n.cfg.RetryFor < 0 || time.Now().After(deadline) {
			return err
		}
		if !sleepCtx(ctx, backoff) {
			return err
		}
		backoff = min(2*backoff, time.Second)
	}
}
