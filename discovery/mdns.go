package discovery

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/grandcat/zeroconf"
)

// Service is the DNS-SD service type oashare nodes announce and browse for.
const Service = "_oashare._tcp"

const (
	// mdnsDomain is the mDNS domain. zeroconf wants it without the
	// trailing dot (with one, it mangles host names into "x.local.local.").
	mdnsDomain = "local"

	// browseSession bounds one zeroconf browse. zeroconf reports each
	// instance once per browse (until it says goodbye), so a node that
	// crashed and came back on a new port would stay unreported forever;
	// a fresh browse re-queries and reports every live node again.
	browseSession = 30 * time.Second

	// browseRetry is the pause before browsing again after zeroconf gave
	// up on its own (it stops after about 15 minutes without any answer).
	browseRetry = 2 * time.Second

	// maxLoggedOnce bounds the "logged once" sets, so a LAN full of
	// strangers cannot grow them without limit.
	maxLoggedOnce = 1024
)

// TXT record keys.
const (
	txtID      = "id"
	txtVersion = "v"
	txtNetwork = "net"
)

// MDNS announces this node on the LAN with multicast DNS and browses for
// the other nodes of the same network and protocol version.
type MDNS struct {
	ID      string // this node's ID, 32 hex digits; also the instance name
	Network string // network name or tag; nodes of other networks are ignored
	// IDPrefix, if set, makes Run report the nodes whose ID starts with
	// it (lower-case hex), whatever their network, and no other, and not
	// announce this node: a node joining a network looks for the member
	// that invited it.
	IDPrefix string
	Version  int // protocol version; nodes speaking another one are ignored
	Port     int // the port this node accepts peer connections on

	// Ifaces names the interfaces to announce and browse on. Empty means
	// every interface that is up and multicast-capable, except loopback.
	Ifaces []string

	Logger *slog.Logger // nil discards

	// Rebrowse bounds one browse session (0 = 30s): a node that came back
	// on another address is reported again at the latest when the next
	// session starts.
	Rebrowse time.Duration
}

// Run implements Discoverer. It announces the node, then browses until ctx
// is done; on the way out it withdraws the announcement with a goodbye.
// With no usable interface (none up, or a named one down, or no address
// yet) it waits for one; when the interfaces or their addresses change,
// it announces and browses again on the new set. Only an interface named
// in Ifaces that does not exist, or cannot multicast, is an error.
func (m MDNS) Run(ctx context.Context, emit func(Event)) error {
	log := m.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if !validID(m.ID) {
		return fmt.Errorf("mdns: node id %q: want 32 hex digits", m.ID)
	}
	if (m.Port < 1 || m.Port > 65535) && m.IDPrefix == "" {
		return fmt.Errorf("mdns: port %d out of range", m.Port)
	}
	f := &peerFilter{self: m, log: log, emit: emit}
	waiting := false
	for ctx.Err() == nil {
		ifaces, err := m.interfaces()
		if err != nil && !errors.Is(err, errNoIfaces) && !errors.Is(err, ErrIfaceDown) {
			return fmt.Errorf("mdns: %w", err)
		}
		ips := ifaceIPs(ifaces)
		if err != nil || len(ips) == 0 {
			// Started before the network (a laptop before its Wi-Fi, a
			// cable not yet plugged): wait for it rather than give up.
			if !waiting {
				why := "no IP address on " + ifaceNames(ifaces)
				if err != nil {
					why = err.Error()
				}
				log.Warn("mdns: waiting for a network interface to come up", "why", why, "check every", ifaceWatch)
				waiting = true
			}
			if !sleep(ctx, ifaceWatch) {
				return nil
			}
			continue
		}
		if waiting {
			log.Info("mdns: a network interface is up", "ifaces", ifaceNames(ifaces), "addrs", ips)
			waiting = false
		}
		if err := m.session(ctx, log, f, ifaces, ips); err != nil {
			log.Warn("mdns: announcing or browsing stopped; retrying", "err", err, "in", browseRetry)
			if !sleep(ctx, browseRetry) {
				return nil
			}
		}
	}
	return nil
}

// ifaceWatch is how often Run looks at the interfaces and their
// addresses: when they change, it announces and browses again on the new
// set.
const ifaceWatch = 2 * time.Second

// sleep waits d, or until ctx is done (false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// session announces the node on ifaces (with ips) and browses there until
// ctx is done (nil) or the interfaces or their addresses change (nil: the
// caller starts a new session on the new set), or zeroconf fails.
func (m MDNS) session(ctx context.Context, log *slog.Logger, f *peerFilter, ifaces []net.Interface, ips []string) error {
	if m.IDPrefix == "" {
		// A node looking for its inviter is no member yet: it browses
		// without announcing itself.
		server, err := zeroconf.RegisterProxy(m.ID, Service, mdnsDomain, m.Port,
			hostName(m.ID), ips, m.txt(), ifaces)
		if err != nil {
			return fmt.Errorf("announcing on %s: %w", ifaceNames(ifaces), err)
		}
		// Shutdown sends the goodbye (all records with TTL 0) and closes
		// the announcement's sockets.
		defer server.Shutdown()
		log.Info("mdns: announcing", "service", Service, "ifaces", ifaceNames(ifaces),
			"addrs", ips, "port", m.Port, "network", m.Network, "version", m.Version)
	}
	f.zone = linkLocalZone(ifaces)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changed := make(chan struct{})
	go func() {
		// Watch the interfaces; a change ends the session.
		want := ifaceNames(ifaces) + " " + strings.Join(ips, ",")
		for sleep(sctx, ifaceWatch) {
			now, _ := m.interfaces()
			if got := ifaceNames(now) + " " + strings.Join(ifaceIPs(now), ","); got != want {
				log.Info("mdns: the network changed; announcing again", "was", want, "now", got)
				close(changed)
				cancel()
				return
			}
		}
	}()
	for {
		err := browse(sctx, ifaces, m.rebrowse(), f.handle)
		select {
		case <-changed:
			return nil
		default:
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		// The session ran its course; browse afresh.
	}
}

// interfaces returns the interfaces named by m.Ifaces, or the default set.
func (m MDNS) interfaces() ([]net.Interface, error) {
	if len(m.Ifaces) > 0 {
		return ValidateIfaces(m.Ifaces)
	}
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("listing network interfaces: %w", err)
	}
	ifaces := multicastIfaces(all)
	if len(ifaces) == 0 {
		return nil, errNoIfaces
	}
	return ifaces, nil
}

// txt returns the TXT record strings announcing m.
func (m MDNS) txt() []string {
	return []string{
		txtID + "=" + m.ID,
		txtVersion + "=" + strconv.Itoa(m.Version),
		txtNetwork + "=" + m.Network,
	}
}

// browse runs one browse session on a fresh zeroconf resolver and passes
// every entry to handle, from this goroutine. It returns nil when the
// session ended because ctx was done or browseSession elapsed, and an
// error when zeroconf could not start or stopped on its own.
func browse(ctx context.Context, ifaces []net.Interface, session time.Duration, handle func(*zeroconf.ServiceEntry)) error {
	res, err := newResolver(ifaces)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, session)
	defer cancel()
	entries := make(chan *zeroconf.ServiceEntry)
	// Browse starts zeroconf's receive loop, which closes entries (and the
	// resolver's sockets) once sctx is done, or once Browse or its
	// periodic query failed. Either way, draining entries until it is
	// closed is what lets that loop finish.
	if err := res.Browse(sctx, Service, mdnsDomain, entries); err != nil {
		for range entries {
		}
		return fmt.Errorf("browse: %w", err)
	}
	for e := range entries {
		handle(e)
	}
	if sctx.Err() != nil {
		return nil
	}
	return errors.New("zeroconf stopped browsing")
}

// newResolver opens a resolver on ifaces that listens over one IP family
// only: IPv4 if it is in use on ifaces, else IPv6. zeroconf v1.0.0 reads
// the two families in two goroutines feeding one queue, and an announcer
// sends every message over both, so with both the IPv6 copy of an
// announcement can be processed after the IPv4 copy of a later goodbye:
// the browser then takes a departed node for present and stays silent when
// it comes back on a new address. One family keeps the order the sender
// used, and loses nothing from announcers that send over both.
func newResolver(ifaces []net.Interface) (*zeroconf.Resolver, error) {
	order := []zeroconf.IPType{zeroconf.IPv6, zeroconf.IPv4}
	if hasIPv4(ifaces) {
		order = []zeroconf.IPType{zeroconf.IPv4, zeroconf.IPv6}
	}
	var errs []error
	for _, t := range order {
		r, err := zeroconf.NewResolver(zeroconf.SelectIfaces(ifaces), zeroconf.SelectIPTraffic(t))
		if err == nil {
			return r, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("opening mDNS resolver on %s: %w", ifaceNames(ifaces), errors.Join(errs...))
}

// hasIPv4 reports whether one of ifaces has an IPv4 address.
func hasIPv4(ifaces []net.Interface) bool {
	for _, ifi := range ifaces {
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
				return true
			}
		}
	}
	return false
}

// peerFilter turns zeroconf entries into Events for one Run: it drops our
// own announcement and nodes of other networks or versions, logging each
// stranger once.
type peerFilter struct {
	self MDNS
	zone string // zone for link-local IPv6 addresses, "" if ambiguous
	log  *slog.Logger
	emit func(Event)

	logged map[string]bool // keys of peers already logged as skipped
}

// handle emits e as an Event or says (once) why not.
func (f *peerFilter) handle(e *zeroconf.ServiceEntry) {
	ev, err := parseEntry(e, f.zone)
	switch {
	case err != nil:
		f.once("bad\x00"+e.Instance, func() {
			f.log.Debug("mdns: ignoring malformed announcement", "instance", e.Instance, "err", err)
		})
	case strings.EqualFold(ev.ID, f.self.ID):
		// Our own announcement, looped back.
	case f.self.IDPrefix != "":
		if strings.HasPrefix(strings.ToLower(ev.ID), f.self.IDPrefix) && ev.Version == f.self.Version {
			f.emit(ev)
		}
	case ev.Network != f.self.Network:
		f.once("net\x00"+ev.ID+"\x00"+ev.Network, func() {
			f.log.Debug("mdns: ignoring node of another network",
				"peer", ev.ID, "network", ev.Network, "addr", ev.Addr)
		})
	case ev.Version != f.self.Version:
		f.once("ver\x00"+ev.ID+"\x00"+strconv.Itoa(ev.Version), func() {
			f.log.Warn(fmt.Sprintf("mdns: peer %s speaks protocol v%d, we speak v%d",
				ev.ID, ev.Version, f.self.Version), "peer", ev.ID, "addr", ev.Addr)
		})
	default:
		f.emit(ev)
	}
}

// once runs fn the first time key is seen.
func (f *peerFilter) once(key string, fn func()) {
	if f.logged == nil || len(f.logged) >= maxLoggedOnce {
		f.logged = make(map[string]bool)
	}
	if f.logged[key] {
		return
	}
	f.logged[key] = true
	fn()
}

// parseEntry reads an Event out of a zeroconf entry. zone is used for a
// link-local IPv6 address; "" means such an address cannot be used.
func parseEntry(e *zeroconf.ServiceEntry, zone string) (Event, error) {
	ev := Event{Source: SourceMDNS}
	var haveID, haveVersion, haveNetwork bool
	for _, kv := range e.Text {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		switch k {
		case txtID:
			ev.ID, haveID = v, true
		case txtVersion:
			n, err := strconv.Atoi(v)
			if err != nil {
				return Event{}, fmt.Errorf("TXT %q: bad version", kv)
			}
			ev.Version, haveVersion = n, true
		case txtNetwork:
			ev.Network, haveNetwork = v, true
		}
	}
	switch {
	case !haveID || !haveVersion || !haveNetwork:
		return Event{}, fmt.Errorf("TXT %q: want %s=, %s= and %s=", e.Text, txtID, txtVersion, txtNetwork)
	case !validID(ev.ID):
		return Event{}, fmt.Errorf("TXT id %q: want 32 hex digits", ev.ID)
	case e.Port < 1 || e.Port > 65535:
		return Event{}, fmt.Errorf("port %d out of range", e.Port)
	}
	host := pickHost(e.AddrIPv4, e.AddrIPv6, zone)
	if host == "" {
		return Event{}, fmt.Errorf("no usable address in %v %v", e.AddrIPv4, e.AddrIPv6)
	}
	ev.Addr = net.JoinHostPort(host, strconv.Itoa(e.Port))
	return ev, nil
}

// pickHost returns the first IPv4 address, else the first global IPv6
// address, else the first link-local IPv6 address with zone, else "".
func pickHost(v4, v6 []net.IP, zone string) string {
	for _, ip := range v4 {
		if ip4 := ip.To4(); ip4 != nil && !ip4.IsUnspecified() {
			return ip4.String()
		}
	}
	for _, ip := range v6 {
		if ip.To16() != nil && !ip.IsLinkLocalUnicast() && !ip.IsUnspecified() {
			return ip.String()
		}
	}
	if zone != "" {
		for _, ip := range v6 {
			if ip.IsLinkLocalUnicast() {
				return ip.String() + "%" + zone
			}
		}
	}
	return ""
}

// linkLocalZone is the zone for link-local IPv6 peers: the interface, if
// we use only one; with several, zeroconf does not say which one an
// answer came in on, so there is no safe choice.
func linkLocalZone(ifaces []net.Interface) string {
	if len(ifaces) == 1 {
		return ifaces[0].Name
	}
	return ""
}

// ifaceIPs lists the addresses to announce, in the same way zeroconf's
// Register would: per interface its non-loopback IPv4 addresses and its
// global IPv6 addresses, or its link-local ones if it has no global one.
func ifaceIPs(ifaces []net.Interface) []string {
	var out []string
	seen := make(map[string]bool)
	add := func(ip net.IP) {
		if s := ip.String(); !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, ifi := range ifaces {
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		var v6, v6local []net.IP
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.IsLoopback() {
				continue
			}
			switch ip := ipn.IP; {
			case ip.To4() != nil:
				add(ip)
			case ip.IsGlobalUnicast():
				v6 = append(v6, ip)
			case ip.IsLinkLocalUnicast():
				v6local = append(v6local, ip)
			}
		}
		if len(v6) == 0 {
			v6 = v6local
		}
		for _, ip := range v6 {
			add(ip)
		}
	}
	return out
}

// hostName is the mDNS host name this node announces its addresses under.
// It is derived from the node ID rather than the machine's host name, so
// that two nodes on one machine, or a node and the machine's own mDNS
// responder, never claim the same name.
func hostName(id string) string {
	return "oashare-" + strings.ToLower(id) + "." + mdnsDomain + "."
}

// validID reports whether s is a node ID: 32 hex digits.
func validID(s string) bool {
	if len(s) != 32 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// ifaceNames lists interface names for messages.
func ifaceNames(ifaces []net.Interface) string {
	names := make([]string, len(ifaces))
	for i, ifi := range ifaces {
		names[i] = ifi.Name
	}
	return strings.Join(names, ",")
}

func (m MDNS) rebrowse() time.Duration {
	if m.Rebrowse > 0 {
		return m.Rebrowse
	}
	return browseSession
}
