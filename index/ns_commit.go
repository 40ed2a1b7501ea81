package index

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cockroachdb/pebble"

	"github.com/oashare/oashare/index/format"
)

// ErrGap is returned by Apply for a record whose Seq is beyond the next one
// expected from its origin: the records in between must be applied first.
var ErrGap = errors.New("index: record sequence gap")

func inodeKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixInode}, id)
}

func direntPrefix(parent uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixDirent}, parent)
}

func direntKey(parent uint64, name string) []byte {
	k := make([]byte, 0, 1+8+len(name))
	k = append(k, prefixDirent)
	k = binary.BigEndian.AppendUint64(k, parent)
	return append(k, name...)
}

func logPrefix(origin format.NodeID) []byte {
	return append([]byte{prefixLog}, origin[:]...)
}

func logKey(origin format.NodeID, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(logPrefix(origin), seq)
}

func vvKey(origin format.NodeID) []byte {
	return append([]byte{prefixVV}, origin[:]...)
}

// newer reports whether stamp (v, o) wins over stamp (ov, oo): a greater
// Version, or an equal Version and a greater Origin.
func newer(v uint64, o format.NodeID, ov uint64, oo format.NodeID) bool {
	if v != ov {
		return v > ov
	}
	return o.Compare(oo) > 0
}

// NewID returns a random inode ID, never 0 or RootID, and without
// ConflictIDBit (those IDs name conflict copies).
func (db *DB) NewID() uint64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err) // crypto/rand never fails on Linux
		}
		if id := binary.BigEndian.Uint64(b[:]) &^ ConflictIDBit; id > RootID {
			return id
		}
	}
}

// HLCNow returns the hybrid logical clock without advancing it.
func (db *DB) HLCNow() uint64 { return db.hlc.Load() }

// nextHLC returns the clock value for a local commit: max(wall<<16, last+1).
// The caller holds writeMu and stores the value once it is committed.
func (db *DB) nextHLC() uint64 {
	last := db.hlc.Load()
	next := last + 1
	if last == math.MaxUint64 {
		next = last // saturate rather than wrap to 0
	}
	if ms := db.wallMs(); ms > 0 {
		next = max(next, uint64(ms)<<16)
	}
	return next
}

// VersionVector returns a copy of the version vector: for each origin, the
// highest Seq applied here (this node's own commits included).
func (db *DB) VersionVector() map[format.NodeID]uint64 {
	db.stateMu.RLock()
	defer db.stateMu.RUnlock()
	vv := make(map[format.NodeID]uint64, len(db.vv))
	for k, v := range db.vv {
		vv[k] = v
	}
	return vv
}

// MaxClockAheadMs bounds how far ahead of this node's wall clock the
// clock values of a record from a peer may be (5 minutes): machines on a
// LAN keep their clocks within seconds of each other.
const MaxClockAheadMs = 5 * 60 * 1000

// MaxOrigins bounds the origins whose records a node applies, so that the
// version vector fits a Pull frame (wire.MaxVVEntries).
const MaxOrigins = 4096

// Errors of Apply for records that are valid but refused.
var (
	ErrClockAhead     = errors.New("record clock too far ahead")
	ErrTooManyOrigins = errors.New("too many origins")
)

// origins returns how many origins the version vector counts, this node's
// own always among them (it may not have committed yet).
func (db *DB) origins() int {
	db.stateMu.RLock()
	defer db.stateMu.RUnlock()
	if _, ok := db.vv[db.self]; ok {
		return len(db.vv)
	}
	return len(db.vv) + 1
}

// Applied returns the highest Seq of origin's records applied here.
func (db *DB) Applied(origin format.NodeID) uint64 { return db.applied(origin) }

func (db *DB) applied(origin format.NodeID) uint64 {
	db.stateMu.RLock()
	defer db.stateMu.RUnlock()
	return db.vv[origin]
}

// Durability says whether Commit waits for the disk.
type Durability bool

const (
	// Synced: the change is durable when Commit returns.
	Synced Durability = true
	// Unsynced: the change is in the index at once and durable with the
	// next synced write (a Synced Commit, Sync). DurableSeq says how far
	// this node's records are durable; a record beyond it must not leave
	// the node, since a crash may lose it and its sequence number would
	// be used again.
	Unsynced Durability = false
)

// Commit makes a local change. It stamps a copy of every op with the next
// HLC value and this node's ID, applies the ops (see doc.go), appends the
// record under this node's next Seq and bumps the version vector, all in
// one batch, committed with durability d. It returns the record, for the
// caller to push to peers. The caller's ops are not modified. published
// names the files whose pending versions (PutPending) the ops publish:
// their journal entries are deleted in the same batch.
func (db *DB) Commit(ops []Op, d Durability, published ...uint64) (*Record, error) {
	return db.commit(ops, bool(d), published)
}

// Sync makes every change committed so far durable.
func (db *DB) Sync() error {
	if db.closed.Load() {
		return ErrClosed
	}
	seq := db.applied(db.self)
	if seq <= db.durable.Load() {
		return nil
	}
	// A log-only entry: written to the WAL and synced with everything
	// before it, applied to nothing.
	b := db.pdb.NewBatch()
	defer b.Close()
	if err := b.LogData([]byte("sync"), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("index: sync: %w", err)
	}
	db.raiseDurable(seq)
	return nil
}

// DurableSeq returns the highest sequence number of this node's records
// up to which all are durable.
func (db *DB) DurableSeq() uint64 { return db.durable.Load() }

func (db *DB) raiseDurable(seq uint64) {
	for {
		cur := db.durable.Load()
		if seq <= cur || db.durable.CompareAndSwap(cur, seq) {
			return
		}
	}
}

func (db *DB) commit(ops []Op, sync bool, published []uint64) (*Record, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	if err := validateOps(ops); err != nil {
		return nil, fmt.Errorf("index: commit: %w", err)
	}
	if db.identity != nil {
		if _, ok := db.Network(); !ok {
			return nil, ErrNoNetwork
		}
		if _, m := db.memberKeyOf(db.self); m != nil && m.Removed {
			return nil, fmt.Errorf("index: commit: %w: this node was removed from the network", ErrRevoked)
		}
	}
	db.writeMu.Lock()
	defer db.writeMu.Unlock()

	hlc := db.nextHLC()
	rec := &Record{
		Origin: db.self,
		Seq:    db.applied(db.self) + 1,
		HLC:    hlc,
		Ops:    make([]Op, len(ops)),
	}
	for i, op := range ops {
		switch {
		case op.Member != nil:
			m := *op.Member
			m.Version, m.Origin = hlc, db.self
			rec.Ops[i].Member = &m
		case op.Inode != nil:
			in := *op.Inode
			in.Version, in.Origin = hlc, db.self
			rec.Ops[i].Inode = &in
		default:
			de := *op.Dirent
			de.Version, de.Origin = hlc, db.self
			rec.Ops[i].Dirent = &de
		}
	}
	if err := validateStamps(rec.Ops); err != nil {
		return nil, fmt.Errorf("index: commit: %w", err)
	}
	enc := EncodeRecord(rec)
	if len(enc) > MaxRecordBytes {
		return nil, fmt.Errorf("index: commit: %w: record is %d bytes, limit %d",
			ErrInvalid, len(enc), MaxRecordBytes)
	}
	rec.Wire = enc
	if db.identity != nil {
		rec.Wire = append(enc, ed25519.Sign(db.identity, signedBytes(enc))...)
	}
	opts := pebble.NoSync
	if sync {
		opts = pebble.Sync
	}
	if err := db.commitRecord(rec, rec.Wire, hlc, opts, true, published); err != nil {
		return nil, err
	}
	if sync {
		// Records commit in sequence order under writeMu, and a synced
		// commit syncs every earlier one.
		db.raiseDurable(rec.Seq)
	}
	return rec, nil
}

// Apply applies a record received from a peer, if it is the next one
// expected from its origin (rec.Seq == VersionVector()[rec.Origin]+1): it
// raises the clock to the record's, applies the ops (see doc.go),
// appends the record to the log and advances the version vector, in one
// batch, then calls Options.OnApply. The batch is not synced (see
// doc.go). A record already applied returns (false, nil); one beyond the
// next expected returns (false, ErrGap). An invalid record returns an error wrapping ErrInvalid and
// changes nothing.
//
// Apply is for a DB without an identity; on a network, records arrive
// signed, through Receive.
func (db *DB) Apply(rec *Record) (applied bool, err error) {
	if db.closed.Load() {
		return false, ErrClosed
	}
	if rec == nil {
		return false, fmt.Errorf("index: apply: %w: nil record", ErrInvalid)
	}
	if db.identity != nil {
		return false, fmt.Errorf("index: apply: %w: records of a network arrive signed (Receive)", ErrInvalid)
	}
	if err := validateRecord(rec); err != nil {
		return false, fmt.Errorf("index: apply record %s/%d: %w", rec.Origin.Short(), rec.Seq, err)
	}
	enc := EncodeRecord(rec)
	if len(enc) > MaxRecordBytes {
		return false, fmt.Errorf("index: apply record %s/%d: %w: %d bytes, limit %d",
			rec.Origin.Short(), rec.Seq, ErrInvalid, len(enc), MaxRecordBytes)
	}
	return db.apply(rec, enc)
}

// Receive decodes a record as a peer sent it (Record.Wire bytes) and
// applies it as Apply does. On a DB with an identity it first checks the
// record's signature against its origin's key, and that the origin may
// still make records (see ns_members.go): a record failing either is
// refused with an error wrapping ErrUnknownOrigin, ErrBadSignature or
// ErrRevoked. The record is returned when it decoded.
func (db *DB) Receive(b []byte) (rec *Record, applied bool, err error) {
	return db.ReceiveFrom(b, format.NodeID{})
}

// ReceiveFrom is Receive for bytes that came from node from over a
// connection that authenticated from's key (TLS with pinned keys). A
// record whose origin is from is then the origin's own words: the channel
// authenticates it as its signature would, so the signature is not checked
// again (checking it cost every receiver more CPU than the rest of the
// record). It is kept, and checked by the nodes this one relays the record
// to. Every other record is checked as Receive checks it. An origin that
// signs badly only keeps its own records from travelling through relays;
// it could already show different records to different peers.
func (db *DB) ReceiveFrom(b []byte, from format.NodeID) (rec *Record, applied bool, err error) {
	if db.closed.Load() {
		return nil, false, ErrClosed
	}
	enc, sig := b, []byte(nil)
	if db.identity != nil {
		if len(b) <= ed25519.SignatureSize {
			return nil, false, fmt.Errorf("%w: signed record is %d bytes", ErrCorrupt, len(b))
		}
		enc, sig = b[:len(b)-ed25519.SignatureSize], b[len(b)-ed25519.SignatureSize:]
	}
	rec, err = DecodeRecord(enc)
	if err != nil {
		return nil, false, err
	}
	if rec.Seq <= db.applied(rec.Origin) {
		return rec, false, nil // had it: no need to check it again
	}
	if db.identity != nil {
		direct := !from.IsZero() && from == rec.Origin
		if err := db.verify(rec, enc, sig, direct); err != nil {
			return rec, false, fmt.Errorf("index: record %s/%d: %w", rec.Origin.Short(), rec.Seq, err)
		}
	}
	rec.Wire = b
	applied, err = db.apply(rec, b)
	return rec, applied, err
}

// apply applies a valid record whose log value is stored.
func (db *DB) apply(rec *Record, stored []byte) (applied bool, err error) {

	// The newest clock value the record carries: its HLC and every op's
	// version. One from too far ahead of this node's clock would drag
	// every later local change there (and, at the top of the range, make
	// them impossible): it is refused, and pulled again once the wall
	// clock has caught up with it, if it ever does.
	newest := rec.HLC
	for _, op := range rec.Ops {
		switch {
		case op.Member != nil:
			newest = max(newest, op.Member.Version)
		case op.Inode != nil:
			newest = max(newest, op.Inode.Version)
		default:
			newest = max(newest, op.Dirent.Version)
		}
	}
	if ms := db.wallMs(); ms > 0 && newest > uint64(ms+MaxClockAheadMs)<<16 {
		return false, fmt.Errorf("index: apply record %s/%d: %w: clock %d is %v ahead of this node's",
			rec.Origin.Short(), rec.Seq, ErrClockAhead, newest, time.Duration(int64(newest>>16)-ms)*time.Millisecond)
	}

	if err := ownStamps(rec); err != nil {
		return false, fmt.Errorf("index: apply record %s/%d: %w", rec.Origin.Short(), rec.Seq, err)
	}

	db.writeMu.Lock()
	have := db.applied(rec.Origin)
	if rec.Seq <= have {
		db.writeMu.Unlock()
		return false, nil
	}
	if rec.Seq > have+1 {
		db.writeMu.Unlock()
		return false, ErrGap
	}
	if have == 0 && db.origins() >= MaxOrigins {
		db.writeMu.Unlock()
		return false, fmt.Errorf("index: apply record %s/%d: %w: already %d origins", rec.Origin.Short(), rec.Seq, ErrTooManyOrigins, MaxOrigins)
	}
	// Raise the clock past everything this record carries, so that a later
	// local change outranks it.
	clock := max(db.hlc.Load(), newest)
	// Not synced: the origin synced the record before sending it, and
	// if this node loses it in a crash, its version vector (committed in
	// the same batch) goes back with it, and it pulls the record again.
	err = db.commitRecord(rec, stored, clock, pebble.NoSync, false, nil)
	db.writeMu.Unlock()
	if err != nil {
		return false, err
	}
	return true, nil
}

// commitRecord writes rec (encoded as enc) with its ops applied, the
// version vector entry of its origin and the clock value clock, in one
// batch committed with opts, then updates the in-memory state. The caller holds writeMu and
// has checked that rec.Seq is the next for its origin. fresh says rec is
// this node's own, just made: its versions are stamped with a clock value
// no version stored here has, so nothing stored names them yet. The
// pending versions of the files in published are deleted in the batch.
func (db *DB) commitRecord(rec *Record, enc []byte, clock uint64, opts *pebble.WriteOptions, fresh bool, published []uint64) error {
	b := db.pdb.NewBatch()
	defer b.Close()
	committed := false
	defer func() {
		db.settleHeads(committed)
		db.settleMembers(committed)
		clear(db.countsPending) // spent by addCounts, or dropped with a failed batch
	}()
	skipped := 0
	for i, op := range rec.Ops {
		won, err := db.applyOp(b, op, fresh)
		if err != nil {
			return fmt.Errorf("index: record %s/%d op %d: %w", rec.Origin.Short(), rec.Seq, i, err)
		}
		if !won {
			skipped++
		}
	}
	if err := db.addCounts(b); err != nil {
		return err
	}
	if err := b.Set(logKey(rec.Origin, rec.Seq), enc, nil); err != nil {
		return err
	}
	if err := b.Set(vvKey(rec.Origin), putU64(rec.Seq), nil); err != nil {
		return err
	}
	if err := b.Set(keyHLC, putU64(clock), nil); err != nil {
		return err
	}
	for _, id := range published {
		if err := b.Delete(pendingKey(id), nil); err != nil {
			return err
		}
	}
	if err := b.Commit(opts); err != nil {
		return fmt.Errorf("index: commit record %s/%d: %w", rec.Origin.Short(), rec.Seq, err)
	}
	committed = true
	db.hlc.Store(clock)
	if f := db.onApply.Load(); f != nil && !fresh {
		(*f)(rec) // before the vector counts it (see Options.OnApply)
	}
	db.stateMu.Lock()
	db.vv[rec.Origin] = rec.Seq
	db.stateMu.Unlock()
	db.log.Debug("record committed", "origin", rec.Origin.Short(), "seq", rec.Seq,
		"hlc", rec.HLC, "ops", len(rec.Ops), "superseded", skipped)
	return nil
}

// applyOp adds op to b and reports whether it changed anything: whether
// the version (of an inode or an entry) is new (see applyInode,
// applyEntry). Ops of one record touch distinct keys and inodes, so reading
// the committed state (not b) is enough.
func (db *DB) applyOp(b *pebble.Batch, op Op, fresh bool) (bool, error) {
	if m := op.Member; m != nil {
		return db.applyMember(b, m)
	}
	if in := op.Inode; in != nil {
		return db.applyInode(b, in, fresh)
	}
	return db.applyEntry(b, op.Dirent, fresh)
}

// getInode reads the stored inode under key, if any.
func (db *DB) getInode(key []byte) (Inode, bool, error) {
	return getInodeFrom(db.pdb, key)
}

// getDirent reads the stored dirent (tombstones included) under key.
func (db *DB) getDirent(key []byte, parent uint64, name string) (Dirent, bool, error) {
	v, c, err := db.pdb.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return Dirent{}, false, nil
	}
	if err != nil {
		return Dirent{}, false, err
	}
	defer c.Close()
	de := Dirent{Parent: parent, Name: name}
	if err := decodeDirentValue(v, &de); err != nil {
		return Dirent{}, false, err
	}
	return de, true, nil
}

// GetInode returns inode id. For RootID it returns a directory with mode
// 0o755 if no root inode has been committed.
func (db *DB) GetInode(id uint64) (Inode, bool, error) {
	if db.closed.Load() {
		return Inode{}, false, ErrClosed
	}
	if IsConflictID(id) {
		in, ok, err := db.conflictInode(db.pdb, id)
		if err != nil {
			return Inode{}, false, fmt.Errorf("index: conflict inode %d: %w", id, err)
		}
		return in, ok, nil
	}
	in, ok, err := db.getInode(inodeKey(id))
	if err != nil {
		return Inode{}, false, fmt.Errorf("index: inode %d: %w", id, err)
	}
	if !ok && id == RootID {
		return Inode{ID: RootID, Type: TypeDir, Mode: 0o755}, true, nil
	}
	return in, ok, nil
}

// LogSince returns the encoded records (EncodeRecord bytes, ready for the
// wire) of origin with Seq > after, in Seq order, or an error wrapping
// ErrPruned when some of them were pruned (ns_prune.go). It stops after maxRecords
// records, and before a record that would take the total past maxBytes; the
// first record is returned whatever its size. A limit <= 0 means no limit.
func (db *DB) LogSince(origin format.NodeID, after uint64, maxRecords, maxBytes int) ([][]byte, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	if after == math.MaxUint64 {
		return nil, nil
	}
	it, err := db.pdb.NewIter(&pebble.IterOptions{
		LowerBound: logKey(origin, after+1),
		UpperBound: prefixEnd(logPrefix(origin)),
	})
	if err != nil {
		return nil, fmt.Errorf("index: log of %s: %w", origin.Short(), err)
	}
	defer it.Close()
	var out [][]byte
	total := 0
	for it.First(); it.Valid(); it.Next() {
		if len(out) == 0 {
			// Records after the asked one were pruned (the floor moved
			// past it): the asker needs a snapshot.
			if k := it.Key(); binary.BigEndian.Uint64(k[len(k)-8:]) != after+1 {
				return nil, fmt.Errorf("%w: %s's log starts after %d", ErrPruned, origin.Short(), after)
			}
		}
		v := it.Value()
		if len(out) > 0 && maxBytes > 0 && total+len(v) > maxBytes {
			break
		}
		out = append(out, append([]byte(nil), v...))
		total += len(v)
		if maxRecords > 0 && len(out) >= maxRecords {
			break
		}
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("index: log of %s: %w", origin.Short(), err)
	}
	if len(out) == 0 {
		// Nothing after: either nothing more exists, or it was pruned.
		f, err := db.floorOf(db.pdb, origin)
		if err != nil {
			return nil, err
		}
		if after < f.seq {
			return nil, fmt.Errorf("%w: %s's log starts after %d", ErrPruned, origin.Short(), f.seq)
		}
	}
	return out, nil
}
