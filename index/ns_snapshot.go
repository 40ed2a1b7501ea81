package index

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble"
	"github.com/oashare/oashare/index/format"
)

// Snapshots: the namespace as it stands, for a peer that needs records
// this node's peers pruned (a new peer, or one back from a long absence).
//
// A snapshot is the namespace keys of one Pebble snapshot (snapshotPrefixes:
// winners, entries, every version kept, heads, named marks, conflict-copy
// keys, members) and the version vector that state reflects, with the
// clock value of each origin's last record. It is sent in pages, in key
// order, so neither side holds more than a page.
//
// Loading one (SnapshotLoad) replaces this node's namespace: under the
// write lock, the namespace is wiped and a marker ("m/snapshot") set in
// one synced batch; the pages are written; then, in one synced batch, the
// version vector becomes the snapshot's, each origin's log floor moves to
// it, and the marker goes. Last, every record of this node's log above
// the snapshot's vector (its own changes the snapshot's maker had not
// seen, and whatever else it had applied beyond it) is applied again on
// top, in order, so nothing it had is lost: its own unsent changes merge
// as they would have (conflict copies where needed). A snapshot behind
// this node's floor for some origin is refused (ErrSnapshotBehind): the
// records in between are gone here and missing there.
//
// While the marker is set (a load under way, or one cut short by a crash)
// the namespace is incomplete: NeedsSnapshot says so, RetainedFiles and
// Prune refuse to work from it (ErrSnapshotLoading), and the node's peers
// are asked for a snapshot again.

var (
	// ErrSnapshotBehind: a snapshot lacks records this node pruned.
	ErrSnapshotBehind = errors.New("index: the snapshot is behind this node's log")
	// ErrSnapshotLoading: the namespace is being replaced by a snapshot.
	ErrSnapshotLoading = errors.New("index: the namespace is being loaded from a snapshot")
)

var keySnapshot = []byte("m/snapshot")

// snapshotPrefixes are the key prefixes a snapshot carries, in key order.
var snapshotPrefixes = []byte{prefixConflicted, prefixEntryHead, prefixHead, prefixMember, prefixEntryNamed,
	prefixDirent, prefixEntryHist, prefixHistory, prefixInode, prefixLinkCount, prefixNamed, prefixLinks, prefixSubdirs, prefixDerived}

// MaxSnapshotKey bounds the key of one snapshot item.
const MaxSnapshotKey = 1 + 8 + MaxNameLen + 1 + 8 + 16

// SnapshotItem is one key and value of a snapshot.
type SnapshotItem struct{ Key, Value []byte }

// Position is how far an origin's records are in a snapshot: applied up
// to Seq, the last of which carries clock value HLC.
type Position struct {
	Seq, HLC uint64
}

// Snapshot is a consistent view of the namespace, read in pages.
type Snapshot struct {
	snap *pebble.Snapshot
	VV   map[format.NodeID]Position
	HLC  uint64
}

// Snapshot opens a snapshot of the namespace. Close it when done.
func (db *DB) Snapshot() (*Snapshot, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	// This node's records go out only once durable (as in a pull): sync
	// everything committed before the snapshot.
	db.writeMu.Lock()
	if err := db.Sync(); err != nil {
		db.writeMu.Unlock()
		return nil, err
	}
	snap := db.pdb.NewSnapshot()
	vv := db.VersionVector()
	hlc := db.hlc.Load()
	db.writeMu.Unlock()
	s := &Snapshot{snap: snap, VV: make(map[format.NodeID]Position, len(vv)), HLC: hlc}
	if loading, err := has(snap, keySnapshot); err != nil || loading {
		snap.Close()
		if err == nil {
			err = ErrSnapshotLoading
		}
		return nil, err
	}
	for o, seq := range vv {
		clock, err := recordClockAt(snap, db, o, seq)
		if err != nil {
			snap.Close()
			return nil, err
		}
		s.VV[o] = Position{seq, clock}
	}
	return s, nil
}

// recordClockAt returns the clock value of record o/seq in r: from the
// log, or from the floor when it is the last record pruned; 0 if neither
// knows it (a conservative value: nothing of o is then stable).
func recordClockAt(r pebble.Reader, db *DB, o format.NodeID, seq uint64) (uint64, error) {
	v, c, err := r.Get(logKey(o, seq))
	if err == nil {
		defer c.Close()
		return recordClock(v)
	}
	if !errors.Is(err, pebble.ErrNotFound) {
		return 0, err
	}
	f, err := db.floorOf(r, o)
	if err != nil || f.seq != seq {
		return 0, err
	}
	return f.hlc, nil
}

// Close releases the snapshot.
func (s *Snapshot) Close() { s.snap.Close() }

// Page returns the items after key after (nil: from the start), up to
// about maxBytes of keys and values, and whether they are the last.
func (s *Snapshot) Page(after []byte, maxBytes int) (items []SnapshotItem, done bool, err error) {
	lo := []byte{snapshotPrefixes[0]}
	if after != nil {
		lo = append(bytes.Clone(after), 0) // the next key
	}
	it, err := s.snap.NewIter(&pebble.IterOptions{LowerBound: lo})
	if err != nil {
		return nil, false, err
	}
	defer it.Close()
	size := 0
	for ok := it.First(); ok; {
		k := it.Key()
		i := bytes.IndexByte(snapshotPrefixes, k[0])
		if i < 0 {
			// A prefix not carried: skip to the next one that is.
			j := 0
			for j < len(snapshotPrefixes) && snapshotPrefixes[j] <= k[0] {
				j++
			}
			if j == len(snapshotPrefixes) {
				break
			}
			ok = it.SeekGE([]byte{snapshotPrefixes[j]})
			continue
		}
		if len(items) > 0 && size+len(k)+len(it.Value()) > maxBytes {
			return items, false, it.Error()
		}
		items = append(items, SnapshotItem{bytes.Clone(k), bytes.Clone(it.Value())})
		size += len(k) + len(it.Value())
		ok = it.Next()
	}
	return items, true, it.Error()
}

// NeedsSnapshot reports whether the namespace is incomplete: a snapshot
// load is under way or was cut short (see the top of this file).
func (db *DB) NeedsSnapshot() bool {
	ok, err := has(db.pdb, keySnapshot)
	return ok || err != nil
}

// loadingIn returns ErrSnapshotLoading if r sees a snapshot load.
func loadingIn(r pebble.Reader) error {
	if ok, err := has(r, keySnapshot); err != nil || ok {
		if err == nil {
			err = ErrSnapshotLoading
		}
		return err
	}
	return nil
}

// SnapshotLoad replaces the namespace with a snapshot, page by page (see
// the top of this file). Commit and Apply wait until it ends (Finish or
// Abort).
type SnapshotLoad struct {
	db    *DB
	vv    map[format.NodeID]Position
	hlc   uint64
	items int
	done  bool
	// places: where the files the records applied again touch were
	// named before the load, to name them again if the snapshot lost
	// their name (see relink).
	places map[uint64]place
}

// place is a file's name before a snapshot load.
type place struct {
	parent uint64
	name   string
}

// LoadSnapshot starts replacing the namespace with a snapshot whose
// version vector is vv and clock hlc. It refuses (ErrSnapshotBehind) a
// snapshot that lacks records this node pruned.
func (db *DB) LoadSnapshot(vv map[format.NodeID]Position, hlc uint64) (*SnapshotLoad, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	db.writeMu.Lock()
	floors, err := db.Floors()
	if err != nil {
		db.writeMu.Unlock()
		return nil, err
	}
	for o, f := range floors {
		if vv[o].Seq < f {
			db.writeMu.Unlock()
			return nil, fmt.Errorf("%w: it has %s's records up to %d, this node's log starts after %d",
				ErrSnapshotBehind, o.Short(), vv[o].Seq, f)
		}
	}
	// No origin's position may claim a clock past the snapshot's own
	// (it says which versions are stable, ns_prune.go).
	for o, p := range vv {
		if p.HLC > hlc {
			p.HLC = hlc
			vv[o] = p
		}
	}
	if ms := db.wallMs(); ms > 0 && hlc > uint64(ms+MaxClockAheadMs)<<16 {
		db.writeMu.Unlock()
		return nil, fmt.Errorf("index: snapshot: %w: clock %d", ErrClockAhead, hlc)
	}
	places, err := db.placesOfLaterRecords(vv)
	if err != nil {
		db.writeMu.Unlock()
		return nil, fmt.Errorf("index: snapshot: %w", err)
	}
	b := db.pdb.NewBatch()
	defer b.Close()
	err = b.Set(keySnapshot, nil, nil)
	for _, p := range snapshotPrefixes {
		if err == nil {
			err = b.DeleteRange([]byte{p}, []byte{p + 1}, nil)
		}
	}
	if err == nil {
		err = b.Commit(pebble.Sync)
	}
	if err != nil {
		db.writeMu.Unlock()
		return nil, fmt.Errorf("index: snapshot: %w", err)
	}
	clear(db.headsCache)
	return &SnapshotLoad{db: db, vv: vv, hlc: hlc, places: places}, nil
}

// Add writes one page of items, each checked first: a key of a prefix a
// snapshot does not carry, or a key or value that does not decode, fails
// the load.
func (l *SnapshotLoad) Add(items []SnapshotItem) error {
	if l.done {
		return fmt.Errorf("index: snapshot: %w: load already ended", ErrInvalid)
	}
	b := l.db.pdb.NewBatch()
	defer b.Close()
	for _, it := range items {
		if err := checkSnapshotItem(it.Key, it.Value); err != nil {
			return fmt.Errorf("index: snapshot item %x: %w", it.Key[:min(len(it.Key), 9)], err)
		}
		if err := b.Set(it.Key, it.Value, nil); err != nil {
			return err
		}
	}
	l.items += len(items)
	return b.Commit(pebble.NoSync)
}

// Items is the number of items written so far.
func (l *SnapshotLoad) Items() int { return l.items }

// Abort ends a load that cannot finish: the namespace stays incomplete
// (NeedsSnapshot) until a load finishes.
func (l *SnapshotLoad) Abort() {
	if !l.done {
		l.done = true
		l.db.writeMu.Unlock()
	}
}

// Finish makes the snapshot's version vector this node's, then applies
// again every record of this node's log above it. A file those records
// change that the snapshot no longer names (deleted and pruned by the
// others while this node was away) is named again where it was, as a new
// change of this node (relink): a change is never silently dropped. It
// reports how many records it applied again.
func (l *SnapshotLoad) Finish() (reapplied int, err error) {
	if l.done {
		return 0, fmt.Errorf("index: snapshot: %w: load already ended", ErrInvalid)
	}
	reapplied, err = l.finish()
	l.Abort()
	if err != nil {
		return reapplied, err
	}
	return reapplied, l.db.relink(l.places)
}

func (l *SnapshotLoad) finish() (reapplied int, err error) {
	db := l.db
	floors, err := db.Floors()
	if err != nil {
		return 0, err
	}
	old := db.VersionVector()
	b := db.pdb.NewBatch()
	defer b.Close()
	origins := make(map[format.NodeID]bool, len(old)+len(l.vv))
	for o := range old {
		origins[o] = true
	}
	for o := range l.vv {
		origins[o] = true
	}
	for o := range origins {
		p := l.vv[o]
		if p.Seq > floors[o] {
			if err := b.DeleteRange(logKey(o, floors[o]+1), logKey(o, p.Seq+1), nil); err != nil {
				return 0, err
			}
			if err := b.Set(floorKey(o), floor{p.Seq, p.HLC}.encode(), nil); err != nil {
				return 0, err
			}
		}
		if p.Seq == 0 {
			err = b.Delete(vvKey(o), nil)
		} else {
			err = b.Set(vvKey(o), putU64(p.Seq), nil)
		}
		if err != nil {
			return 0, err
		}
	}
	clock := max(db.hlc.Load(), l.hlc)
	if err := b.Set(keyHLC, putU64(clock), nil); err != nil {
		return 0, err
	}
	if err := b.Delete(keySnapshot, nil); err != nil {
		return 0, err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return 0, err
	}
	db.hlc.Store(clock)
	db.stateMu.Lock()
	clear(db.vv)
	for o, p := range l.vv {
		if p.Seq > 0 {
			db.vv[o] = p.Seq
		}
	}
	db.stateMu.Unlock()
	if err := db.reloadMembers(); err != nil {
		return 0, err
	}

	// This node's records beyond the snapshot, applied again in order.
	snap := db.pdb.NewSnapshot()
	defer snap.Close()
	for o := range origins {
		from := l.vv[o].Seq
		if old[o] <= from {
			continue
		}
		it, err := snap.NewIter(&pebble.IterOptions{LowerBound: logKey(o, from+1), UpperBound: logKey(o, old[o]+1)})
		if err != nil {
			return reapplied, err
		}
		for it.First(); it.Valid(); it.Next() {
			if err := db.applyLogged(o, it.Value(), pebble.NoSync); err != nil {
				it.Close()
				return reapplied, fmt.Errorf("index: snapshot: applying %s's records again: %w", o.Short(), err)
			}
			reapplied++
		}
		if err := it.Close(); err != nil {
			return reapplied, err
		}
	}
	if err := db.pdb.LogData(nil, pebble.Sync); err != nil {
		return reapplied, err
	}
	db.log.Info("namespace loaded from a snapshot", "items", l.items, "reapplied", reapplied)
	return reapplied, nil
}

// recoverOwnRecords applies again this node's own records that its log
// holds beyond its version vector: a crash while a snapshot load applied
// them again (Finish) leaves them so, and the next Commit must not reuse
// their sequence numbers.
func (db *DB) recoverOwnRecords() error {
	have := db.applied(db.self)
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: logKey(db.self, have+1), UpperBound: prefixEnd(logPrefix(db.self))})
	if err != nil {
		return err
	}
	defer it.Close()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		db.writeMu.Lock()
		err := db.applyLogged(db.self, it.Value(), pebble.Sync)
		db.writeMu.Unlock()
		if err != nil {
			return err
		}
		n++
	}
	if n > 0 {
		db.log.Info("own records applied again after an interrupted snapshot load", "records", n)
	}
	return it.Error()
}

// storedRecord decodes a record as the log stores it (its encoding, then
// its signature on a network).
func (db *DB) storedRecord(v []byte) (*Record, error) {
	if db.identity != nil && len(v) > ed25519.SignatureSize {
		v = v[:len(v)-ed25519.SignatureSize]
	}
	return DecodeRecord(v)
}

// applyLogged applies again a record of origin o that the log holds
// (stored bytes), which must be the next of o. The caller holds writeMu.
func (db *DB) applyLogged(o format.NodeID, v []byte, opts *pebble.WriteOptions) error {
	stored := bytes.Clone(v)
	rec, err := db.storedRecord(stored)
	if err != nil {
		return err
	}
	if rec.Seq != db.applied(o)+1 {
		return fmt.Errorf("%w: record %s/%d follows %d", ErrCorrupt, o.Short(), rec.Seq, db.applied(o))
	}
	return db.commitRecord(rec, stored, max(db.hlc.Load(), rec.HLC), opts, false, nil)
}

// placesOfLaterRecords returns, for every file that a record of this
// node's log above vv changes or names, its name in the namespace now.
func (db *DB) placesOfLaterRecords(vv map[format.NodeID]Position) (map[uint64]place, error) {
	ids := make(map[uint64]bool)
	for o, have := range db.VersionVector() {
		from := vv[o].Seq
		if have <= from {
			continue
		}
		it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: logKey(o, from+1), UpperBound: logKey(o, have+1)})
		if err != nil {
			return nil, err
		}
		for it.First(); it.Valid(); it.Next() {
			rec, err := db.storedRecord(it.Value())
			if err != nil {
				it.Close()
				return nil, err
			}
			for _, op := range rec.Ops {
				switch {
				case op.Inode != nil:
					ids[op.Inode.ID] = true
				case op.Dirent != nil && !op.Dirent.Deleted:
					ids[op.Dirent.Child] = true
				}
			}
		}
		if err := it.Close(); err != nil {
			return nil, err
		}
	}
	places := make(map[uint64]place)
	if len(ids) == 0 {
		return places, nil
	}
	err := db.eachShownEntry(func(de *Dirent) {
		if ids[de.Child] {
			places[de.Child] = place{de.Parent, de.Name}
		}
	})
	return places, err
}

// eachShownEntry calls fn with the newest version of every name that
// shows an entry (a live one, or a shadowed tombstone).
func (db *DB) eachShownEntry(fn func(*Dirent)) error {
	return eachNewestEntry(db.pdb, func(de *Dirent) error {
		vis, err := visible(db.pdb, de)
		if err == nil && vis {
			fn(de)
		}
		return err
	})
}

// eachNewestEntry calls fn with the newest version ("d" key) of every
// name of r.
func eachNewestEntry(r pebble.Reader, fn func(*Dirent) error) error {
	lo := []byte{prefixDirent}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) < 10 {
			return fmt.Errorf("%w: entry key of %d bytes", ErrCorrupt, len(k))
		}
		de := Dirent{Parent: binary.BigEndian.Uint64(k[1:9]), Name: string(k[9:])}
		if err := decodeDirentValue(it.Value(), &de); err != nil {
			return err
		}
		if err := fn(&de); err != nil {
			return err
		}
	}
	return it.Error()
}

// relink names again, where they were named before a snapshot load, the
// files of places that exist and that no shown entry names any more: under
// their old name if it is free, else under name.restored-ID; in the root
// if their old directory is gone too.
func (db *DB) relink(places map[uint64]place) error {
	if len(places) == 0 {
		return nil
	}
	named := make(map[uint64]bool)
	if err := db.eachShownEntry(func(de *Dirent) {
		if de.Parent == RootID {
			named[de.Child] = true
			return
		}
		if _, ok := places[de.Child]; ok {
			if _, ok, _ := db.GetInode(de.Parent); ok {
				named[de.Child] = true
			}
		}
	}); err != nil {
		return err
	}
	for id, pl := range places {
		in, ok, err := db.GetInode(id)
		if err != nil {
			return err
		}
		if !ok || named[id] || id == RootID {
			continue
		}
		if dir, ok, err := db.GetInode(pl.parent); err != nil {
			return err
		} else if !ok || dir.Type != TypeDir {
			pl.parent = RootID
		}
		name := pl.name
		if _, taken, err := db.LookupDirent(pl.parent, name); err != nil {
			return err
		} else if taken {
			name = fmt.Sprintf("%s.restored-%x", pl.name, id)
			if len(name) > MaxNameLen {
				name = fmt.Sprintf("restored-%x", id)
			}
		}
		de := Dirent{Parent: pl.parent, Name: name, Child: id, Type: in.Type}
		if old, ok, err := db.StoredDirent(pl.parent, name); err != nil {
			return err
		} else if ok {
			de.BaseChild, de.BaseVersion, de.BaseOrigin = old.Child, old.Version, old.Origin
		}
		if _, err := db.Commit([]Op{{Dirent: &de}}, Synced); err != nil {
			return fmt.Errorf("index: snapshot: naming file %d again: %w", id, err)
		}
		db.log.Warn("a file changed here while away was deleted elsewhere; named again",
			"id", id, "dir", pl.parent, "name", name)
	}
	return nil
}

// reloadMembers reads the member list again (after a snapshot replaced it).
func (db *DB) reloadMembers() error {
	fresh := &DB{pdb: db.pdb, members: make(map[format.NodeID]Member)}
	if err := fresh.loadMembers(); err != nil {
		return err
	}
	db.stateMu.Lock()
	db.members = fresh.members
	db.stateMu.Unlock()
	if f := db.onMembers.Load(); f != nil {
		(*f)()
	}
	return nil
}

// checkSnapshotItem checks that a snapshot key is one a snapshot carries
// and that it and its value decode.
func checkSnapshotItem(k, v []byte) error {
	if len(k) == 0 || len(k) > MaxSnapshotKey {
		return fmt.Errorf("%w: key of %d bytes", ErrInvalid, len(k))
	}
	empty := func() error {
		if len(v) != 0 {
			return fmt.Errorf("%w: a mark with a value", ErrInvalid)
		}
		return nil
	}
	switch k[0] {
	case prefixInode:
		if len(k) != 9 {
			return fmt.Errorf("%w: inode key of %d bytes", ErrInvalid, len(k))
		}
		_, err := decodeInodeValue(v)
		return err
	case prefixHistory:
		if len(k) != 1+8+8+16 {
			return fmt.Errorf("%w: inode version key of %d bytes", ErrInvalid, len(k))
		}
		_, err := decodeInodeValue(v)
		return err
	case prefixHead, prefixNamed:
		if len(k) != 1+8+8+16 {
			return fmt.Errorf("%w: version mark key of %d bytes", ErrInvalid, len(k))
		}
		return empty()
	case prefixDerived:
		if len(k) != 9 || len(v) != 8+8+16 {
			return fmt.Errorf("%w: conflict copy key of %d bytes, value %d", ErrInvalid, len(k), len(v))
		}
		return nil
	case prefixDirent:
		if len(k) < 10 || bytes.IndexByte(k[9:], 0) >= 0 || bytes.IndexByte(k[9:], '/') >= 0 {
			return fmt.Errorf("%w: entry key of %d bytes", ErrInvalid, len(k))
		}
		var de Dirent
		return decodeDirentValue(v, &de)
	case prefixEntryHist:
		_, err := entryVersionAt(k, v)
		return err
	case prefixEntryHead, prefixEntryNamed:
		end := -1
		if len(k) > 9 {
			end = bytes.IndexByte(k[9:], 0)
		}
		if end < 1 || len(k) != 9+end+1+8+16 {
			return fmt.Errorf("%w: entry mark key of %d bytes", ErrInvalid, len(k))
		}
		return empty()
	case prefixSubdirs, prefixLinkCount:
		if len(k) != 9 || len(v) != 8 {
			return fmt.Errorf("%w: count key of %d bytes, value %d", ErrInvalid, len(k), len(v))
		}
		return nil
	case prefixLinks:
		if _, _, _, ok := linkKeyName(k); !ok {
			return fmt.Errorf("%w: link key of %d bytes", ErrInvalid, len(k))
		}
		return empty()
	case prefixConflicted:
		if len(k) < 10 || bytes.IndexByte(k[9:], 0) >= 0 {
			return fmt.Errorf("%w: conflict mark key of %d bytes", ErrInvalid, len(k))
		}
		return empty()
	case prefixMember:
		if len(k) != 1+16 {
			return fmt.Errorf("%w: member key of %d bytes", ErrInvalid, len(k))
		}
		m, err := decodeMemberValue(v)
		if err == nil {
			copy(m.ID[:], k[1:])
			err = validateMember(&m)
		}
		return err
	}
	return fmt.Errorf("%w: key prefix %q is not part of a snapshot", ErrInvalid, k[0])
}
