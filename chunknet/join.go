package chunknet

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// Joining. A member issues a join code (Node.Invite): the first bytes of
// its own node ID, a random secret token it stores (index.Invite, with an
// expiry), and a check against typos. The joiner finds the inviter by its ID
// (discovery, or a given address), opens TLS with its own key, checks the
// server's key against the ID in the code, and proves it knows the token
// without sending it: it sends
//
//	HMAC-SHA256(token, "oashare join v1" || exporter || joiner ID)
//
// where exporter is 32 bytes of keying material exported from this TLS
// session (RFC 8446 section 7.5, label "oashare join"). The proof is worth
// nothing on another connection (another session exports other bytes), so
// a captured or relayed one grants nothing; the token never travels. The
// inviter marks the code used (once), commits the joiner's member entry,
// and answers with the network's description; from then on the joiner
// connects as a member. A code used, expired or unknown is refused with a
// message that says which.

// Join code layout: inviter ID prefix, token, two check bytes; 20 bytes,
// 32 characters of base32 after "oa1-". The token's 80 bits are guessed
// only online, one TLS handshake per guess, against a code that lives a
// day and is used once.
const (
	codePrefixLen = 8
	codeTokenLen  = 10
	codeCheckLen  = 2
	codePrefix    = "oa1-"
)

var codeEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// JoinCode is an invitation to join a network.
type JoinCode struct {
	Inviter [codePrefixLen]byte // the first bytes of the inviter's node ID
	Token   [codeTokenLen]byte
}

func (c JoinCode) bytes() []byte {
	b := append(append(make([]byte, 0, codePrefixLen+codeTokenLen+codeCheckLen), c.Inviter[:]...), c.Token[:]...)
	return append(b, codeCheck(b)...)
}

func codeCheck(b []byte) []byte {
	h := sha256.Sum256(append([]byte("oashare code"), b...))
	return h[:codeCheckLen]
}

// String returns the code as users type it: "oa1-" and four groups of
// eight characters.
func (c JoinCode) String() string {
	s := codeEncoding.EncodeToString(c.bytes())
	return codePrefix + s[0:8] + "-" + s[8:16] + "-" + s[16:24] + "-" + s[24:32]
}

// InviterPrefix returns the inviter's node ID prefix in hex, as discovery
// lists IDs.
func (c JoinCode) InviterPrefix() string { return hex.EncodeToString(c.Inviter[:]) }

// IsInviter reports whether id is the node that issued c.
func (c JoinCode) IsInviter(id format.NodeID) bool {
	return bytes.Equal(id[:codePrefixLen], c.Inviter[:])
}

// ParseJoinCode parses a code as String writes it; case, spaces and
// dashes do not matter.
func ParseJoinCode(s string) (JoinCode, error) {
	var c JoinCode
	t := strings.ToUpper(strings.ReplaceAll(strings.Join(strings.Fields(s), ""), "-", ""))
	if !strings.HasPrefix(t, "OA1") {
		return c, fmt.Errorf("join code %q: it starts with %q; copy it whole from the output of 'oashare invite'", s, codePrefix)
	}
	t = t[len("OA1"):]
	b, err := codeEncoding.DecodeString(t)
	if err != nil || len(b) != codePrefixLen+codeTokenLen+codeCheckLen {
		return c, fmt.Errorf("join code %q: not a join code (32 letters and digits after %q); copy it whole from the output of 'oashare invite'", s, codePrefix)
	}
	if n := len(b) - codeCheckLen; !bytes.Equal(codeCheck(b[:n]), b[n:]) {
		return c, fmt.Errorf("join code %q: mistyped (its check does not match); copy it again from the output of 'oashare invite'", s)
	}
	copy(c.Inviter[:], b)
	copy(c.Token[:], b[codePrefixLen:])
	return c, nil
}

// joinProof is what a joiner sends to prove it holds token, bound to one
// TLS session (exporter) and to its own ID.
func joinProof(token []byte, exporter []byte, joiner format.NodeID) [wire.JoinMACSize]byte {
	m := hmac.New(sha256.New, token)
	m.Write([]byte("oashare join v1"))
	m.Write(exporter)
	m.Write(joiner[:])
	var out [wire.JoinMACSize]byte
	copy(out[:], m.Sum(nil))
	return out
}

func exportJoin(tc *tls.Conn) ([]byte, error) {
	st := tc.ConnectionState()
	return st.ExportKeyingMaterial("oashare join", nil, 32)
}

// DefaultInviteTTL is how long a join code is valid unless told otherwise.
const DefaultInviteTTL = 24 * time.Hour

// Invite issues a single-use join code valid for ttl.
func (n *Node) Invite(ttl time.Duration) (JoinCode, time.Time, error) {
	if !n.secure() {
		return JoinCode{}, time.Time{}, errors.New("this node has no identity: there is no network to join")
	}
	var c JoinCode
	copy(c.Inviter[:], n.self[:])
	if _, err := rand.Read(c.Token[:]); err != nil {
		return JoinCode{}, time.Time{}, err
	}
	exp := time.Now().Add(ttl)
	if err := n.db.AddInvite(index.Invite{Token: c.Token[:], ExpiresMs: exp.UnixMilli()}); err != nil {
		return JoinCode{}, time.Time{}, err
	}
	n.log.Info("issued a join code", "expires", exp.Format(time.RFC3339))
	return c, exp, nil
}

// serveJoin serves a connection from a node that is not a member: it may
// send one Join frame within handshakeTimeout, and is then disconnected.
func (n *Node) serveJoin(tc *tls.Conn, id format.NodeID, pub ed25519.PublicKey) {
	tc.SetDeadline(time.Now().Add(handshakeTimeout))
	rd := wire.NewReader(tc, 256)
	f, err := rd.Next()
	if err != nil || f.Type != wire.TypeJoin {
		n.log.Info("refused a connection: not a member", "node", id.Short(), "remote", tc.RemoteAddr())
		return
	}
	mac, name, err := wire.DecodeJoin(f.Payload)
	if err != nil {
		n.log.Info("refused a join: malformed request", "node", id.Short(), "remote", tc.RemoteAddr(), "err", err)
		return
	}
	var reply []byte
	network, why := n.admitJoiner(tc, id, pub, mac, name)
	if why != "" {
		n.log.Warn("refused a join", "node", id.Short(), "remote", tc.RemoteAddr(), "why", why)
		reply = wire.AppendError(nil, f.ReqID, wire.CodeJoinRefused, why)
	} else {
		n.log.Info("a node joined the network", "node", id.Short(), "name", name, "remote", tc.RemoteAddr())
		reply = wire.AppendJoinResult(nil, f.ReqID, network)
	}
	tc.Write(reply)
}

// admitJoiner checks a join proof against this node's invitations; if one
// matches and is valid, it marks it used and commits the joiner's entry.
// It returns the network's description for the joiner, or why not.
func (n *Node) admitJoiner(tc *tls.Conn, id format.NodeID, pub ed25519.PublicKey, mac [wire.JoinMACSize]byte, name string) ([]byte, string) {
	exporter, err := exportJoin(tc)
	if err != nil {
		return nil, "the TLS session exports no keying material"
	}
	n.joinMu.Lock() // one use of a code at a time
	defer n.joinMu.Unlock()
	invites, err := n.db.Invites()
	if err != nil {
		n.log.Error("reading invitations", "err", err)
		return nil, "the inviting node failed to read its invitations"
	}
	for _, inv := range invites {
		want := joinProof(inv.Token, exporter, id)
		if !hmac.Equal(want[:], mac[:]) {
			continue
		}
		now := time.Now()
		switch {
		case inv.UsedMs != 0:
			return nil, fmt.Sprintf("this join code was used already, on %s by node %s; ask a member for a new one ('oashare invite')",
				time.UnixMilli(inv.UsedMs).Format(time.RFC3339), inv.UsedBy.Short())
		case now.UnixMilli() > inv.ExpiresMs:
			return nil, fmt.Sprintf("this join code expired on %s; ask a member for a new one ('oashare invite')",
				time.UnixMilli(inv.ExpiresMs).Format(time.RFC3339))
		}
		inv.UsedMs, inv.UsedBy = now.UnixMilli(), id
		if err := n.db.AddInvite(inv); err != nil {
			n.log.Error("marking a join code used", "err", err)
			return nil, "the inviting node failed to record the join"
		}
		m := index.Member{ID: id, Name: name}
		copy(m.Key[:], pub)
		if _, err := n.Publish([]index.Op{{Member: &m}}, Synced); err != nil {
			n.log.Error("adding a member", "node", id.Short(), "err", err)
			return nil, "the inviting node failed to add the member: " + err.Error()
		}
		net, _ := n.db.Network()
		net.Sponsor = n.self
		copy(net.SponsorKey[:], n.cfg.Identity.Public().(ed25519.PublicKey))
		return index.EncodeNetwork(&net), ""
	}
	return nil, "this join code was not issued by this node (mistyped, or meant for another network)"
}

// JoinConfig is what Join needs.
type JoinConfig struct {
	Identity  ed25519.PrivateKey
	Code      JoinCode
	Name      string    // the name the joiner is listed under (its host name)
	Transport Transport // nil = TCP
	Logger    *slog.Logger
	// Addrs delivers addresses where the inviter may listen (discovery,
	// --peer); Join tries each as it comes.
	Addrs <-chan string
}

// ErrJoinRefused wraps the inviter's refusal of a join code.
var ErrJoinRefused = errors.New("join refused")

// Join joins the network of the node that issued cfg.Code: it tries the
// addresses cfg.Addrs delivers until the inviter answers, and returns the
// network's description (for index.DB.JoinNetwork). It returns an error
// wrapping ErrJoinRefused if the inviter refused the code, or ctx's error
// if no inviter answered in time.
func Join(ctx context.Context, cfg JoinConfig) (index.Network, error) {
	if cfg.Transport == nil {
		cfg.Transport = TCP{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cert, err := selfCert(cfg.Identity)
	if err != nil {
		return index.Network{}, err
	}
	self := format.NodeIDOf(cfg.Identity.Public().(ed25519.PublicKey))
	tried := map[string]bool{}
	for {
		var addr string
		select {
		case <-ctx.Done():
			return index.Network{}, ctx.Err()
		case a, ok := <-cfg.Addrs:
			if !ok {
				return index.Network{}, fmt.Errorf("no node with ID %s… answered at the addresses given", cfg.Code.InviterPrefix())
			}
			addr = a
		}
		if tried[addr] {
			continue
		}
		tried[addr] = true
		netw, err := joinAt(ctx, cfg, cert, self, addr)
		switch {
		case err == nil:
			return netw, nil
		case errors.Is(err, ErrJoinRefused):
			return index.Network{}, err
		default:
			cfg.Logger.Debug("not the inviting node", "addr", addr, "err", err)
			delete(tried, addr) // it may be the inviter, not up yet
		}
	}
}

func joinAt(ctx context.Context, cfg JoinConfig, cert tls.Certificate, self format.NodeID, addr string) (index.Network, error) {
	dctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	conn, err := cfg.Transport.Dial(dctx, addr)
	if err != nil {
		return index.Network{}, err
	}
	defer conn.Close()
	tc, inviter, pub, err := secureClient(dctx, conn, cert, func(id format.NodeID) error {
		if !cfg.Code.IsInviter(id) {
			return fmt.Errorf("node %s did not issue the code", id.Short())
		}
		return nil
	})
	if err != nil {
		return index.Network{}, err
	}
	exporter, err := exportJoin(tc)
	if err != nil {
		return index.Network{}, err
	}
	tc.SetDeadline(time.Now().Add(handshakeTimeout))
	if _, err := tc.Write(wire.AppendJoin(nil, 1, joinProof(cfg.Code.Token[:], exporter, self), cfg.Name)); err != nil {
		return index.Network{}, err
	}
	f, err := wire.NewReader(tc, max(4+wire.MaxErrorMsg, 2+wire.MaxJoinResult)).Next()
	if err != nil {
		return index.Network{}, fmt.Errorf("reading the answer to the join: %w", err)
	}
	switch f.Type {
	case wire.TypeError:
		_, msg, err := wire.DecodeError(f.Payload)
		if err != nil {
			return index.Network{}, err
		}
		return index.Network{}, fmt.Errorf("%w by node %s: %s", ErrJoinRefused, inviter.Short(), msg)
	case wire.TypeJoinResult:
	default:
		return index.Network{}, fmt.Errorf("%w: answer of type %v to a join", wire.ErrBadFrame, f.Type)
	}
	b, err := wire.DecodeJoinResult(f.Payload)
	if err != nil {
		return index.Network{}, err
	}
	netw, err := index.DecodeNetwork(b)
	if err != nil {
		return index.Network{}, err
	}
	// The network must come from the inviter, as its sponsor.
	if netw.Sponsor != inviter || !bytes.Equal(netw.SponsorKey[:], pub) {
		return index.Network{}, fmt.Errorf("node %s answered the join for another sponsor", inviter.Short())
	}
	return netw, nil
}

// NetworkTag returns the opaque value mDNS announces for network id: it
// lets members skip nodes of other networks and tells outsiders nothing.
func NetworkTag(id [16]byte) string {
	h := sha256.Sum256(append([]byte("oashare mdns v1"), id[:]...))
	return hex.EncodeToString(h[:8])
}
