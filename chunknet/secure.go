package chunknet

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"slices"
	"time"

	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// Members only. A node with an identity (Config.Identity, an Ed25519 key;
// its node ID is derived from it, format.NodeIDOf) talks only to the
// members of its network (index.DB's member list), and only over TLS 1.3:
//
//   - Each node presents a self-signed certificate of its key; the CA
//     system plays no part. Both sides check the other's key: the server
//     asks for a client certificate, and each side derives the peer's
//     node ID from its key and checks it against the member list before
//     a byte of our protocol moves. The hello inside must name that
//     node (else VerdictImpostor). Resumption is off, so every
//     connection proves its key afresh.
//   - Everything after the TLS handshake is encrypted and authenticated:
//     the hello and verdict by TLS, the frames after them by sealed
//     records under keys exported from the TLS session (record.go). An
//     outsider learns a node's certificate (its ID) and nothing else: not
//     the network, its name, its members, nor our protocol version (ALPN
//     names "oashare/4", which only outsiders that speak it use).
//   - A client that is not a member may send one Join frame (join.go),
//     within handshakeTimeout, and is then disconnected.
//
// crypto/tls is the standard library's, maintained with Go itself and
// audited; a Noise handshake would need a third-party library and gives
// nothing TLS 1.3 with pinned keys does not. Without an identity (tests
// of logic) connections are plain TCP and every node is a member.

// alpn is the protocol name offered and required in the TLS handshake.
const alpn = "oashare/4"

// ErrNotMember: the peer's key is not a member's.
var ErrNotMember = errors.New("not a member of this network")

// selfCert returns a self-signed certificate of key, valid for a century:
// the key is what peers check, not the dates.
func selfCert(key ed25519.PrivateKey) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "oashare"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(100, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// certKey returns the Ed25519 key of the certificate a TLS peer presented
// and the node ID derived from it. The certificate's own signature and
// dates do not matter: TLS 1.3 makes the peer prove it holds the key
// (CertificateVerify), and the key is what identifies it.
func certKey(raw [][]byte) (format.NodeID, ed25519.PublicKey, error) {
	if len(raw) != 1 {
		return format.NodeID{}, nil, fmt.Errorf("peer presented %d certificates, want 1", len(raw))
	}
	cert, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return format.NodeID{}, nil, fmt.Errorf("peer certificate: %v", err)
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return format.NodeID{}, nil, errors.New("peer certificate: not an Ed25519 key")
	}
	return format.NodeIDOf(pub), pub, nil
}

// tlsConfig returns the TLS configuration of one side. check decides on
// the peer's node ID once its key is proven.
func tlsConfig(cert tls.Certificate, server bool, check func(format.NodeID) error) *tls.Config {
	c := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{alpn},
		// Keys are pinned by the member list, not by a CA: the peer's
		// certificate is checked here, by its key.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, _, err := certKey(raw)
			if err != nil {
				return err
			}
			return check(id)
		},
		SessionTicketsDisabled: true,
	}
	if server {
		c.ClientAuth = tls.RequireAnyClientCert
	}
	return c
}

// secureClient runs the client side of the TLS handshake on conn; check
// decides on the server's node ID.
func secureClient(ctx context.Context, conn net.Conn, cert tls.Certificate, check func(format.NodeID) error) (*tls.Conn, format.NodeID, ed25519.PublicKey, error) {
	tc := tls.Client(newBufConn(conn), tlsConfig(cert, false, check))
	return finishTLS(ctx, tc)
}

// secureServer runs the server side; check decides on the client's ID.
func secureServer(ctx context.Context, conn net.Conn, cert tls.Certificate, check func(format.NodeID) error) (*tls.Conn, format.NodeID, ed25519.PublicKey, error) {
	tc := tls.Server(newBufConn(conn), tlsConfig(cert, true, check))
	return finishTLS(ctx, tc)
}

// bufConn sits between TLS and TCP while TLS runs (the handshake, the
// hello and verdict, a join). It reads through a buffer, so TLS's small
// reads cost no system call each, but hands TLS no byte past the end of
// the TLS record it is reading: when a member's connection moves on to
// records (sealConn), every byte after TLS's last one is still here.
type bufConn struct {
	net.Conn
	r    *bufio.Reader
	hdr  [tlsHeader]byte
	got  int // bytes of the next TLS record's header read so far
	left int // bytes of the current TLS record not yet read
}

const (
	tlsHeader = 5
	// bufConnSize holds a whole TLS record with its overhead.
	bufConnSize = tlsHeader + 16<<10 + 256
)

func newBufConn(c net.Conn) *bufConn {
	return &bufConn{Conn: c, r: bufio.NewReaderSize(c, bufConnSize)}
}

func (c *bufConn) Read(p []byte) (int, error) {
	if c.left == 0 {
		n, err := c.r.Read(p[:min(len(p), tlsHeader-c.got)])
		copy(c.hdr[c.got:], p[:n])
		if c.got += n; c.got == tlsHeader {
			c.left, c.got = int(binary.BigEndian.Uint16(c.hdr[3:])), 0
		}
		return n, err
	}
	n, err := c.r.Read(p[:min(len(p), c.left)])
	c.left -= n
	return n, err
}

// leftover returns what was read past TLS's last record.
func (c *bufConn) leftover() io.Reader {
	b, _ := c.r.Peek(c.r.Buffered())
	return bytes.NewReader(bytes.Clone(b))
}

// toRecords moves a member's connection, its TLS handshake and hello
// done, on to records (record.go); a plain TCP connection (no identity)
// stays as it is.
func toRecords(conn net.Conn, client bool) (net.Conn, error) {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return conn, nil
	}
	bc, ok := tc.NetConn().(*bufConn)
	if !ok {
		return nil, errors.New("TLS connection without its record reader")
	}
	return sealConn(tc, bc, client, defaultRekey)
}

func finishTLS(ctx context.Context, tc *tls.Conn) (*tls.Conn, format.NodeID, ed25519.PublicKey, error) {
	ctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, format.NodeID{}, nil, fmt.Errorf("TLS handshake: %w", err)
	}
	st := tc.ConnectionState()
	if st.NegotiatedProtocol != alpn {
		return nil, format.NodeID{}, nil, fmt.Errorf("TLS handshake: peer speaks %q, not %s", st.NegotiatedProtocol, alpn)
	}
	raw := make([][]byte, len(st.PeerCertificates))
	for i, c := range st.PeerCertificates {
		raw[i] = c.Raw
	}
	id, pub, err := certKey(raw)
	if err != nil {
		return nil, format.NodeID{}, nil, err
	}
	return tc, id, pub, nil
}

// memberCheck accepts members only (the check of connections we dial).
func (n *Node) memberCheck(id format.NodeID) error {
	if !n.db.IsMember(id) {
		return fmt.Errorf("node %s: %w", id.Short(), ErrNotMember)
	}
	return nil
}

// secure reports whether the node has an identity (TLS, members only).
func (n *Node) secure() bool { return n.cfg.Identity != nil }

// enforceMembers closes every connection of a node that is no longer a
// member (removed): its outbound peer and its inbound connections. New
// connections of it are refused by the TLS checks.
func (n *Node) enforceMembers() {
	n.mu.Lock()
	var drop []*peer
	for id, p := range n.peers {
		if !n.db.IsMember(id) {
			drop = append(drop, p)
		}
	}
	var cut []*serverConn
	for sc := range n.inbound {
		if !n.db.IsMember(sc.peer.Node) {
			cut = append(cut, sc)
		}
	}
	n.mu.Unlock()
	for _, p := range drop {
		n.log.Warn("dropping a removed member", "peer", p.id.Short(), "addr", p.addr)
		p.cc.close(fmt.Errorf("%w: %s was removed", ErrClosed, p.id.Short()))
	}
	for _, sc := range cut {
		n.log.Warn("closing the connection of a removed member", "peer", sc.peer.Node.Short(), "remote", sc.conn.RemoteAddr())
		sc.conn.Close()
	}
}

// membersLoop acts on changes of the member list: a removed member's
// connections close, and the copies it held are made again elsewhere.
func (n *Node) membersLoop() {
	defer n.wg.Done()
	removed := n.removedSet()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.membersKick:
		}
		n.enforceMembers()
		now := n.removedSet()
		var gone []format.NodeID
		for id := range now {
			if !removed[id] {
				gone = append(gone, id)
			}
		}
		removed = now
		if now[n.self] {
			n.log.Error("this node was removed from the network: no member accepts it any more")
			continue
		}
		if len(gone) > 0 {
			if err := n.repairAfterRemoval(n.ctx, gone); err != nil && n.ctx.Err() == nil {
				n.log.Error("listing the copies a removed member held", "err", err)
			}
		}
	}
}

func (n *Node) removedSet() map[format.NodeID]bool {
	out := make(map[format.NodeID]bool)
	for _, m := range n.db.Members() {
		if m.Removed {
			out[m.ID] = true
		}
	}
	return out
}

// kickMembers wakes membersLoop; index.DB calls it with its write lock
// held, so it only signals.
func (n *Node) kickMembers() {
	select {
	case n.membersKick <- struct{}{}:
	default:
	}
}

// repairAfterRemoval lists in the under-target set the items of this
// node's store that had a copy on a removed node (gone) by placement, and
// wakes the top-up loop to make those copies again on live nodes. Of the
// nodes that should hold an item, the best-ranked one still a member does
// it, so one node copies each item.
func (n *Node) repairAfterRemoval(ctx context.Context, gone []format.NodeID) error {
	ids, _ := n.members()
	all := append(slices.Clone(ids), gone...)
	r := newRanker(all)
	isGone := make(map[int]bool, len(gone))
	for i := len(ids); i < len(all); i++ {
		isGone[i] = true
	}
	k := min(n.cfg.Replicas, len(all))
	var items []index.Item
	err := n.db.ForEachStored(func(it index.Item) bool {
		lost, first := false, -1
		for _, i := range r.top(it.Hash, k) {
			if isGone[i] {
				lost = true
			} else if first < 0 {
				first = i
			}
		}
		if lost && first >= 0 && all[first] == n.self {
			items = append(items, it)
		}
		return ctx.Err() == nil
	})
	if err != nil || len(items) == 0 {
		return err
	}
	copies := make([]int, len(items))
	for i := range copies {
		copies[i] = 1 // this node's; the top-up counts the others
	}
	if err := n.db.SetCopies(items, copies, n.cfg.Replicas); err != nil {
		return err
	}
	n.log.Info("making again the copies a removed member held", "items", len(items))
	n.kickTopUp()
	return nil
}

// RemoveMember revokes member id: the removal is committed and sent to
// every peer, which then refuse its connections and its later records.
func (n *Node) RemoveMember(id format.NodeID) error {
	if !n.secure() {
		return errors.New("this node has no identity: it has no member list")
	}
	if id == n.self {
		return errors.New("a node cannot remove itself; remove it from another member")
	}
	op, err := n.db.Removal(id)
	if err != nil {
		return err
	}
	_, err = n.Publish([]index.Op{op}, Synced)
	return err
}
