// Package discovery finds other oashare nodes and reports them as Events:
// "a node, maybe called ID, of network N speaking protocol version V, can
// be dialled at Addr". It decides nothing: the consumer (chunknet) dedupes
// sightings, dials, and trusts only what the handshake proves. discovery
// knows nothing of the rest of oashare; node IDs are plain strings.
//
// # Discoverers
//
// A Discoverer runs until its ctx is done and calls emit for every sighting.
// There are three:
//
//   - Static reports a fixed address list, at start and again every
//     Interval (default 5s), so that a dialer can retry a peer that was not
//     up yet. Its Events have no ID, Network or Version.
//   - MDNS announces this node with multicast DNS (DNS-SD service Service,
//     "_oashare._tcp") and browses for the other nodes.
//   - Multi runs several Discoverers at once; the first error stops them all.
//
// # Goroutines and ownership
//
// Run blocks; everything it starts belongs to it. Run calls emit from one
// goroutine at a time (Multi serialises the emits of its members with a
// mutex), so emit need not be safe for concurrent use, but it should return
// quickly: a blocked emit stalls that Discoverer.
//
// MDNS.Run owns one announcement (a zeroconf Server) and, one after another,
// browse sessions (a fresh zeroconf Resolver each). zeroconf starts its own
// goroutines for both: receive loops, the announcement's probe, the
// resolver's periodic query. Run cannot join them; they end once their
// sockets are closed (the Server by Shutdown, a Resolver when its session's
// context is done), and Run does both before returning. On return the
// announcement has been withdrawn with a goodbye: every record again, with
// TTL 0.
//
// A browse session lasts MDNS.Rebrowse (30 s by default) and is then started afresh.
// zeroconf reports each instance once per session, until that instance says
// goodbye, so without fresh sessions a node that crashed and came back on
// another port would never be reported again. If zeroconf stops a session on
// its own (its query gives up after about 15 minutes without any answer),
// Run starts another after a short pause.
//
// # The announcement
//
// The instance name is the node ID. The host name is "oashare-<id>.local."
// rather than the machine's, so that two nodes on one machine, or a node and
// the machine's own responder (avahi), never claim the same name. The TXT
// record holds three strings; unknown keys are ignored, so keys can be added:
//
//	id=<node ID, 32 hex digits>
//	v=<protocol version, decimal>
//	net=<network name>
//
// The announced addresses are per interface its IPv4 addresses and its
// global IPv6 addresses (link-local ones if it has no global one). Run
// reads them at start and every two seconds after: when the interfaces or
// their addresses change (a new DHCP lease, Wi-Fi joining another network,
// a cable plugged in), it withdraws the announcement and announces and
// browses again on the new set. A node started before its network is up
// waits for an interface with an address instead of giving up.
//
// # What is reported
//
// Every entry zeroconf delivers becomes one Event with Source "mdns", except:
// our own announcement (TXT id equal to ours), nodes of another network
// (logged at debug level, once per node), nodes of another protocol version
// (logged as a warning, once per node and version) and malformed entries
// (missing TXT keys, an ID that is not 32 hex digits; debug, once). Addr is
// the first IPv4 address with the port, else the first global IPv6 address,
// else a link-local IPv6 address with the interface as zone — the latter
// only when a single interface is in use, because zeroconf does not say
// which interface an answer arrived on.
//
// Goodbyes: zeroconf v1.0.0 does not deliver them. Its browser drops every
// entry with TTL 0 and forgets that it had reported that instance, so the
// next announcement of the same node (after a restart, even on another port)
// is reported again at once. MDNS therefore never sets Event.Gone; a
// consumer learns that a node left from its connection, as it must anyway
// for nodes that crash. The field stays for Discoverers that can see
// departures.
//
// Browsing listens over one IP family (IPv4 if the interfaces have an IPv4
// address, else IPv6), while the announcement goes out over both. zeroconf
// reads the two families in two goroutines into one queue, so listening to
// both lets the IPv6 copy of an announcement overtake the IPv4 copy of a
// later goodbye; the browser would then take a departed node for present
// and say nothing when it comes back on a new port. An answer already in
// flight when a node says goodbye can still do that; the next browse
// session corrects it.
//
// # Interfaces
//
// MDNS.Ifaces names the interfaces to announce and browse on; ValidateIfaces
// checks such names up front and says which one is missing, down or without
// multicast (Run waits for one that is down: ErrIfaceDown). Empty means every interface that is up and multicast-capable,
// except loopback. The choice decides where queries and announcements are
// sent. Receiving is by a socket bound to the wildcard address: if another
// program on the machine has joined the mDNS group on other interfaces,
// answers arriving there can reach us too.
//
// # Testing safely
//
// mDNS is multicast: it reaches every machine on the link. Tests never run
// it in the machine's own network namespace. The mDNS test builds private
// namespaces (a bridge and one namespace per node, linked by veth pairs,
// with no default route and nothing connected to the host), runs each node
// as a re-executed copy of the test binary under nsenter, and deletes the
// namespaces afterwards. It needs root, ip and nsenter, and skips otherwise.
package discovery
