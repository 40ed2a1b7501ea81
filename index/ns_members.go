package index

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"unicode/utf8"

	"github.com/cockroachdb/pebble"

	"github.com/oashare/oashare/index/format"
)

// Membership. A DB opened with an identity (Options.Identity) belongs to
// one network, made by its founder (CreateNetwork) or joined through a
// member (JoinNetwork), and keeps the network's member list: who may
// connect, and whose records count. The list is replicated like the
// namespace, as Member ops in records, and every record is signed by its
// origin:
//
//   - A record is stored and sent as its encoding followed by the
//     Ed25519 signature of its origin over "oashare record v1" and the
//     encoding (Record.Wire). Receive verifies it with the origin's key
//     before anything else: a relay cannot alter a record, nor a member
//     make one in another's name.
//   - A node's ID is derived from its key (format.NodeIDOf), and a Member
//     op names both, so an entry cannot pair a node with another's key.
//   - The founder's key is in the network's description (Network), which
//     every member holds; so is the key of the member that admitted this
//     node (the sponsor). Every other key comes from a Member op in a
//     record signed by a member: the list is a chain of signatures from
//     the founder, and a record whose origin is not in it yet is refused
//     with ErrUnknownOrigin and taken again once it is.
//   - A removal is final. It names the last record of the removed node
//     that stays valid (UntilSeq: what the remover had applied); its
//     records after that are refused (ErrRevoked) on every node, whatever
//     clock they claim. Of two entries for one node, a removal wins over
//     an addition, then the newer stamp; so every node ends with the same
//     list whatever order records arrive in.
//
// A DB opened without an identity has no network: records carry no
// signature and any origin is accepted. Tests of logic use it.
//
//	"M" id[16] → member value (the op encoding below, after a format byte)
//	"m/network" → network value
//	"m/invite/" id[8] → invite value

// MaxMemberName bounds a member's name (its host name), in bytes.
const MaxMemberName = 64

// Member is one entry of the member list.
type Member struct {
	ID   format.NodeID
	Key  [ed25519.PublicKeySize]byte
	Name string
	// Removed marks a revoked member; UntilSeq is then the last of its
	// records that stays valid.
	Removed  bool
	UntilSeq uint64

	Version uint64        // stamp: the HLC of the commit that made it
	Origin  format.NodeID // stamp: the member that made it
}

// PublicKey returns m's key.
func (m *Member) PublicKey() ed25519.PublicKey { return ed25519.PublicKey(m.Key[:]) }

// Network describes the network a DB belongs to.
type Network struct {
	ID   [16]byte // random, made by the founder; only members know it
	Name string   // the founder's label for it
	// Founder and its key; the list starts with it.
	Founder    format.NodeID
	FounderKey [ed25519.PublicKeySize]byte
	// Sponsor is the member that admitted this node (zero for the
	// founder): a member before its entry has reached this node.
	Sponsor    format.NodeID
	SponsorKey [ed25519.PublicKeySize]byte
}

// Errors of membership.
var (
	// ErrNoNetwork: the DB has an identity but belongs to no network yet.
	ErrNoNetwork = errors.New("index: this node belongs to no network yet")
	// ErrUnknownOrigin: a record's origin is not in the member list (yet).
	ErrUnknownOrigin = errors.New("origin is not a member")
	// ErrBadSignature: a record's signature does not verify.
	ErrBadSignature = errors.New("bad record signature")
	// ErrRevoked: the record's origin was removed before it made it, or
	// this node was removed and can make no more changes.
	ErrRevoked = errors.New("member removed")
)

var keyNetwork = []byte("m/network")

const invitePrefix = "m/invite/"

const sigContext = "oashare record v1"

// signedBytes is what a record's signature covers.
func signedBytes(enc []byte) []byte {
	return append([]byte(sigContext), enc...)
}

func memberKey(id format.NodeID) []byte { return append([]byte{prefixMember}, id[:]...) }

// validateMember checks a Member op: a non-zero ID, the key it is derived
// from, a name of at most MaxMemberName bytes of UTF-8.
func validateMember(m *Member) error {
	switch {
	case m.ID.IsZero():
		return fmt.Errorf("%w: member id is zero", ErrInvalid)
	case format.NodeIDOf(m.PublicKey()) != m.ID:
		return fmt.Errorf("%w: member %s: the key is not the node's", ErrInvalid, m.ID.Short())
	case len(m.Name) > MaxMemberName || !utf8.ValidString(m.Name):
		return fmt.Errorf("%w: member %s: name must be at most %d bytes of UTF-8", ErrInvalid, m.ID.Short(), MaxMemberName)
	case !m.Removed && m.UntilSeq != 0:
		return fmt.Errorf("%w: member %s: until-seq on an addition", ErrInvalid, m.ID.Short())
	}
	return nil
}

// memberWins reports whether entry m replaces stored entry old: a removal
// wins over an addition, then the newer stamp.
func memberWins(m, old *Member) bool {
	if m.Removed != old.Removed {
		return m.Removed
	}
	return newer(m.Version, m.Origin, old.Version, old.Origin)
}

func encodeMemberValue(m *Member) []byte {
	return appendMember(append(make([]byte, 0, 96+len(m.Name)), formatV1), m)
}

func decodeMemberValue(v []byte) (Member, error) {
	d := decoder{b: v, what: "member value"}
	d.format()
	var m Member
	d.member(&m)
	d.end()
	return m, d.err
}

// applyMember adds member op m to b if it wins over the stored entry, and
// notes it for the in-memory list (settled by commitRecord).
func (db *DB) applyMember(b *pebble.Batch, m *Member) (bool, error) {
	old, ok, err := db.storedMember(m.ID)
	if err != nil {
		return false, err
	}
	if ok && !memberWins(m, &old) {
		return false, nil
	}
	if err := b.Set(memberKey(m.ID), encodeMemberValue(m), nil); err != nil {
		return false, err
	}
	db.membersPending = append(db.membersPending, *m)
	return true, nil
}

func (db *DB) storedMember(id format.NodeID) (Member, bool, error) {
	v, ok, err := db.getMeta(memberKey(id))
	if err != nil || !ok {
		return Member{}, false, err
	}
	m, err := decodeMemberValue(v)
	if err != nil {
		return Member{}, false, err
	}
	m.ID = id
	return m, true, nil
}

// loadMembers reads the network and the member list at open.
func (db *DB) loadMembers() error {
	v, ok, err := db.getMeta(keyNetwork)
	if err != nil {
		return err
	}
	if ok {
		n, err := decodeNetwork(v)
		if err != nil {
			return err
		}
		db.network = &n
	}
	lo := []byte{prefixMember}
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		m, err := decodeMemberValue(it.Value())
		if err == nil && len(k) != 1+len(m.ID) {
			err = fmt.Errorf("%w: member key %x", ErrCorrupt, k)
		}
		if err != nil {
			return err
		}
		copy(m.ID[:], k[1:])
		db.members[m.ID] = m
	}
	return it.Error()
}

// Network returns the network this DB belongs to.
func (db *DB) Network() (Network, bool) {
	db.stateMu.RLock()
	defer db.stateMu.RUnlock()
	if db.network == nil {
		return Network{}, false
	}
	return *db.network, true
}

// Signed reports whether the DB has an identity: its records are signed,
// and those of others verified against the member list.
func (db *DB) Signed() bool { return db.identity != nil }

// CreateNetwork makes this node the founder of a new network named name
// and its first member. It fails if the DB has no identity or already
// belongs to a network.
func (db *DB) CreateNetwork(name, self string) (Network, error) {
	if db.identity == nil {
		return Network{}, errors.New("index: a network needs an identity (Options.Identity)")
	}
	if len(name) > MaxMemberName || !utf8.ValidString(name) {
		return Network{}, fmt.Errorf("index: network name must be at most %d bytes of UTF-8", MaxMemberName)
	}
	n := Network{Name: name, Founder: db.self}
	if _, err := rand.Read(n.ID[:]); err != nil {
		return Network{}, err
	}
	copy(n.FounderKey[:], db.identity.Public().(ed25519.PublicKey))
	if err := db.setNetwork(n); err != nil {
		return Network{}, err
	}
	add := db.SelfMember(self)
	if _, err := db.Commit([]Op{{Member: &add}}, Synced); err != nil {
		return Network{}, err
	}
	return n, nil
}

// JoinNetwork records the network this node was admitted to (by n's
// Sponsor). The member list arrives with the records of its members.
func (db *DB) JoinNetwork(n Network) error {
	if db.identity == nil {
		return errors.New("index: a network needs an identity (Options.Identity)")
	}
	if format.NodeIDOf(n.FounderKey[:]) != n.Founder || format.NodeIDOf(n.SponsorKey[:]) != n.Sponsor {
		return fmt.Errorf("%w: network description: a key is not its node's", ErrInvalid)
	}
	return db.setNetwork(n)
}

func (db *DB) setNetwork(n Network) error {
	db.writeMu.Lock()
	defer db.writeMu.Unlock()
	if _, ok := db.Network(); ok {
		return errors.New("index: this node already belongs to a network")
	}
	if err := db.pdb.Set(keyNetwork, encodeNetwork(&n), pebble.Sync); err != nil {
		return fmt.Errorf("index: store network: %w", err)
	}
	db.stateMu.Lock()
	db.network = &n
	db.stateMu.Unlock()
	return nil
}

// SelfMember returns this node's own member entry, named name, for the
// Member op that adds it (CreateNetwork) or that an inviter commits.
func (db *DB) SelfMember(name string) Member {
	m := Member{ID: db.self, Name: name}
	if db.identity != nil {
		copy(m.Key[:], db.identity.Public().(ed25519.PublicKey))
	}
	return m
}

// Removal returns the Member op that removes member id: its records up to
// the last this node has applied stay valid.
func (db *DB) Removal(id format.NodeID) (Op, error) {
	ms := db.Members()
	for _, m := range ms {
		if m.ID != id {
			continue
		}
		if m.Removed {
			return Op{}, fmt.Errorf("node %s was removed already", id)
		}
		m.Removed, m.UntilSeq = true, db.applied(id)
		m.Version, m.Origin = 0, format.NodeID{}
		return Op{Member: &m}, nil
	}
	return Op{}, fmt.Errorf("node %s is not a member", id)
}

// Members returns the member list, removed members included, ordered by
// ID. The founder and the sponsor are listed before their entries arrive.
func (db *DB) Members() []Member {
	db.stateMu.RLock()
	out := make([]Member, 0, len(db.members)+2)
	for _, m := range db.members {
		out = append(out, m)
	}
	if n := db.network; n != nil {
		for _, k := range []struct {
			id  format.NodeID
			key [ed25519.PublicKeySize]byte
		}{{n.Founder, n.FounderKey}, {n.Sponsor, n.SponsorKey}} {
			if _, ok := db.members[k.id]; !ok && !k.id.IsZero() {
				out = append(out, Member{ID: k.id, Key: k.key})
			}
		}
	}
	db.stateMu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID.Compare(out[j].ID) < 0 })
	// The founder may also be the sponsor.
	out = compactMembers(out)
	return out
}

func compactMembers(ms []Member) []Member {
	out := ms[:0]
	for i, m := range ms {
		if i > 0 && m.ID == ms[i-1].ID {
			continue
		}
		out = append(out, m)
	}
	return out
}

// memberKeyOf returns the key of id and whether id is known, and its
// entry if it has one.
func (db *DB) memberKeyOf(id format.NodeID) (ed25519.PublicKey, *Member) {
	db.stateMu.RLock()
	defer db.stateMu.RUnlock()
	if m, ok := db.members[id]; ok {
		return m.PublicKey(), &m
	}
	if n := db.network; n != nil {
		switch id {
		case n.Founder:
			return ed25519.PublicKey(n.FounderKey[:]), nil
		case n.Sponsor:
			return ed25519.PublicKey(n.SponsorKey[:]), nil
		}
	}
	return nil, nil
}

// IsMember reports whether id is a member in good standing: listed and
// not removed. Without an identity every node is.
func (db *DB) IsMember(id format.NodeID) bool {
	if db.identity == nil {
		return true
	}
	key, m := db.memberKeyOf(id)
	return key != nil && (m == nil || !m.Removed)
}

// verify checks rec's signature sig against its origin's key (unless
// direct: it came from its origin over an authenticated connection), and
// that the origin may have made it.
func (db *DB) verify(rec *Record, enc, sig []byte, direct bool) error {
	if _, ok := db.Network(); !ok {
		return ErrNoNetwork
	}
	key, m := db.memberKeyOf(rec.Origin)
	if key == nil {
		return ErrUnknownOrigin
	}
	if !direct && !ed25519.Verify(key, signedBytes(enc), sig) {
		return ErrBadSignature
	}
	if m != nil && m.Removed && rec.Seq > m.UntilSeq {
		return fmt.Errorf("%w: record %d is past its last valid one, %d", ErrRevoked, rec.Seq, m.UntilSeq)
	}
	return nil
}

// settleMembers moves the entries of a committed batch into the list and
// tells OnMembers.
func (db *DB) settleMembers(ok bool) {
	ms := db.membersPending
	db.membersPending = nil
	if !ok || len(ms) == 0 {
		return
	}
	db.stateMu.Lock()
	for _, m := range ms {
		db.members[m.ID] = m
	}
	db.stateMu.Unlock()
	if f := db.onMembers.Load(); f != nil {
		(*f)()
	}
}

// SetOnMembers sets the function called after the member list changed.
// It runs with the index's write lock held: it must not call the DB, only
// signal whoever acts on the change.
func (db *DB) SetOnMembers(f func()) { db.onMembers.Store(&f) }

func encodeNetwork(n *Network) []byte {
	b := []byte{formatV1}
	b = append(b, n.ID[:]...)
	b = appendStr(b, n.Name)
	b = append(b, n.Founder[:]...)
	b = append(b, n.FounderKey[:]...)
	b = append(b, n.Sponsor[:]...)
	return append(b, n.SponsorKey[:]...)
}

func decodeNetwork(v []byte) (Network, error) {
	d := decoder{b: v, what: "network"}
	d.format()
	var n Network
	copy(n.ID[:], d.fixed(len(n.ID), "network id"))
	n.Name = d.str(MaxMemberName, "network name")
	copy(n.Founder[:], d.fixed(len(n.Founder), "founder"))
	copy(n.FounderKey[:], d.fixed(len(n.FounderKey), "founder key"))
	copy(n.Sponsor[:], d.fixed(len(n.Sponsor), "sponsor"))
	copy(n.SponsorKey[:], d.fixed(len(n.SponsorKey), "sponsor key"))
	d.end()
	return n, d.err
}

// EncodeNetwork and DecodeNetwork give a Network's binary form, for the
// join protocol.
func EncodeNetwork(n *Network) []byte { return encodeNetwork(n) }

// DecodeNetwork parses EncodeNetwork's bytes.
func DecodeNetwork(b []byte) (Network, error) { return decodeNetwork(b) }

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// Invites. An invitation is a secret token this node issued (AddInvite)
// and a member-to-be proves it knows (see chunknet's join protocol). It is
// this node's alone, not replicated; used once (UseInvite), it stays
// listed as used, so that a second use is told so.

// Invite is one invitation this node issued.
type Invite struct {
	Token     []byte
	ExpiresMs int64
	UsedMs    int64         // 0 while unused
	UsedBy    format.NodeID // who used it
}

func inviteKey(token []byte) []byte {
	h := sha256.Sum256(token)
	return append([]byte(invitePrefix), h[:8]...)
}

// AddInvite stores a new invitation, synced.
func (db *DB) AddInvite(inv Invite) error {
	b := []byte{formatV1}
	b = appendStr(b, string(inv.Token))
	b = binary.AppendUvarint(b, uint64(inv.ExpiresMs))
	b = binary.AppendUvarint(b, uint64(inv.UsedMs))
	b = append(b, inv.UsedBy[:]...)
	return db.pdb.Set(inviteKey(inv.Token), b, pebble.Sync)
}

// Invites returns every invitation this node issued and still lists.
func (db *DB) Invites() ([]Invite, error) {
	lo := []byte(invitePrefix)
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []Invite
	for it.First(); it.Valid(); it.Next() {
		d := decoder{b: it.Value(), what: "invite"}
		d.format()
		var inv Invite
		inv.Token = []byte(d.str(64, "invite token"))
		inv.ExpiresMs = int64(d.uvarint("invite expiry"))
		inv.UsedMs = int64(d.uvarint("invite use"))
		copy(inv.UsedBy[:], d.fixed(len(inv.UsedBy), "invite user"))
		d.end()
		if d.err != nil {
			return nil, d.err
		}
		out = append(out, inv)
	}
	return out, it.Error()
}

// DropInvite forgets an invitation (an expired one, long after).
func (db *DB) DropInvite(token []byte) error {
	return db.pdb.Delete(inviteKey(token), pebble.Sync)
}

// Usage. The bytes each member had this node store for it (new chunks and
// groups it sent; what was stored already costs nothing) are counted
// under "q" id[16] → bytes[8], for chunknet's per-member quota. Counts
// are written without a sync: a crash loses the last few, at the
// member's benefit.

func usageKey(id format.NodeID) []byte { return append([]byte{prefixUsage}, id[:]...) }

// Usage returns the bytes this node stored for member id. Counts are
// kept in memory once read: a node checks one before every put it
// serves, and a read of the index per put showed in its profile.
func (db *DB) Usage(id format.NodeID) (int64, error) {
	db.usageMu.Lock()
	defer db.usageMu.Unlock()
	return db.usageLocked(id)
}

func (db *DB) usageLocked(id format.NodeID) (int64, error) {
	if n, ok := db.usage[id]; ok {
		return n, nil
	}
	n, err := db.readUsage(id)
	if err != nil {
		return 0, err
	}
	if db.usage == nil {
		db.usage = make(map[format.NodeID]int64)
	}
	db.usage[id] = n
	return n, nil
}

func (db *DB) readUsage(id format.NodeID) (int64, error) {
	v, ok, err := db.getMeta(usageKey(id))
	if err != nil || !ok {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: usage of %s is %d bytes", ErrCorrupt, id.Short(), len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// AddUsage adds n bytes to member id's usage and returns the new total.
func (db *DB) AddUsage(id format.NodeID, n int64) (int64, error) {
	db.usageMu.Lock()
	defer db.usageMu.Unlock()
	cur, err := db.usageLocked(id)
	if err != nil {
		return 0, err
	}
	cur += n
	if err := db.pdb.Set(usageKey(id), binary.BigEndian.AppendUint64(nil, uint64(cur)), pebble.NoSync); err != nil {
		return 0, err
	}
	db.usage[id] = cur
	return cur, nil
}
