package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/oashare/oashare/index/format"
)

// History pruning: what Prune deletes, and why no peer can miss it. See
// doc.go, section History pruning, for the rules; the argument is here.
//
// Stable. The caller (chunknet's garbage collector) gives, per origin, a
// sequence number S[o] such that every member has applied o's records up
// to S[o], and this node has applied every record any member had made
// when it said so. A version is STABLE when the record that made it is
// at or below S of its origin: as a record's versions carry its clock
// value (ownStamps) and an origin's records carry increasing clock values,
// that is version <= the clock value of record S[o] (stableClock). Every
// version made without seeing a stable version V was made before its
// maker applied V, so before it answered, so it is applied here already.
//
// 1. Log. Records at or below S[o] are deleted: every member has them.
// The origin's floor ("f" key) remembers where its log now starts;
// LogSince refuses to serve from below it (ErrPruned), and the asker
// takes a snapshot (ns_snapshot.go).
//
// 2. Versions that are not heads. A version some received version names
// (as base or in Supersedes, for an entry as base) is no head, and never
// becomes one again: the heads, the winner, the "d" key and the conflict
// copies are a function of the heads, so deleting a non-head changes no
// view, here or anywhere. It can never be applied again: its record is
// counted in the version vector (and in the vector of a snapshot made
// from this state). So a non-head is deleted, with its "named" mark and
// conflict-copy key, once the oldest version naming it is older than the
// cutoff (the restore window: `oashare versions` lists what is left).
//
// 3. Dead names. A name all of whose heads are tombstones, none shadowed,
// each stable and older than the cutoff, shows nothing and will not show
// anything again through a version already made: the only versions that
// could change that (an update of the child racing the delete, which
// shadows a tombstone; a create racing it) were made without seeing the
// tombstone, so before it was stable: they are applied here and the heads
// already account for them. Every key of the name goes. A version made
// later knows the tombstone, names it as base, and is a head like any.
//
// 4. Unnamed inodes. An inode that no remaining entry version names (its
// names died in 3 or were replaced), that is not the root, not in the
// pending journal, not in use here (open), with every head stable and
// older than the cutoff, goes whole. A directory goes only once no entry
// is left under it.
//
// A member away longer than --forget-after is not waited for (the caller
// leaves it out of S); if it comes back, its records made before it left
// that others lack are merged as any late record is, and it takes a
// snapshot for the rest.

// ErrPruned is returned by LogSince when records after the asked sequence
// number were pruned: the asker needs a snapshot.
var ErrPruned = errors.New("index: records pruned: a snapshot is needed")

const prefixFloor = 'f'

func floorKey(origin format.NodeID) []byte { return append([]byte{prefixFloor}, origin[:]...) }

// floor is where an origin's log starts: every record at or below seq
// is pruned; hlc is the clock value of record seq.
type floor struct{ seq, hlc uint64 }

func (db *DB) floorOf(r pebble.Reader, origin format.NodeID) (floor, error) {
	v, c, err := r.Get(floorKey(origin))
	if errors.Is(err, pebble.ErrNotFound) {
		return floor{}, nil
	}
	if err != nil {
		return floor{}, err
	}
	defer c.Close()
	if len(v) != 16 {
		return floor{}, fmt.Errorf("%w: log floor of %s has %d bytes", ErrCorrupt, origin.Short(), len(v))
	}
	return floor{binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])}, nil
}

func (f floor) encode() []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, f.seq), f.hlc)
}

// Floors returns, per origin, the sequence number its log starts after.
func (db *DB) Floors() (map[format.NodeID]uint64, error) {
	lo := []byte{prefixFloor}
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	out := make(map[format.NodeID]uint64)
	for it.First(); it.Valid(); it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != 17 || len(v) != 16 {
			return nil, fmt.Errorf("%w: log floor %x", ErrCorrupt, k)
		}
		out[format.NodeID(k[1:])] = binary.BigEndian.Uint64(v)
	}
	return out, it.Error()
}

// PruneStat says what one Prune deleted.
type PruneStat struct {
	Records  int // log records
	Versions int // inode and entry versions that were no heads
	Names    int // dead names
	Inodes   int // unnamed inodes
}

// pruneBatch bounds the deletions made under writeMu at a time.
const pruneBatch = 512

// Prune deletes the history no peer can need (see the top of this file):
// records every member has, versions superseded before cutoff, names
// deleted and inodes left unnamed before cutoff with stable heads. stable
// gives S per origin; inUse reports the inodes this node's file system
// still uses (nil: none). Commits and applies go on meanwhile: the scan
// reads a snapshot, and each deletion is checked again under the write
// lock.
func (db *DB) Prune(stable map[format.NodeID]uint64, cutoff time.Time, inUse func(id uint64) bool) (PruneStat, error) {
	var st PruneStat
	if db.closed.Load() {
		return st, ErrClosed
	}
	cut := uint64(0)
	if ms := cutoff.UnixMilli(); ms > 0 {
		cut = uint64(ms) << 16
	}
	db.writeMu.Lock()
	clocks, err := db.pruneLog(stable, &st)
	db.writeMu.Unlock()
	if err != nil {
		return st, err
	}
	isStable := func(r VersionRef) bool { return r.Version <= clocks[r.Origin] }

	snap := db.pdb.NewSnapshot()
	defer snap.Close()
	if err := loadingIn(snap); err != nil {
		return st, err
	}
	names, oldEntries, prunedEntries, named, err := pruneScanEntries(snap, cut, isStable)
	if err != nil {
		return st, err
	}
	oldInodes, inodes, err := pruneScanInodes(snap, cut, isStable, named, inUse)
	if err != nil {
		return st, err
	}

	// Non-heads stay non-heads: delete them without looking again.
	del := func(keys [][]byte) error {
		for len(keys) > 0 {
			n := min(len(keys), pruneBatch*4)
			b := db.pdb.NewBatch()
			for _, k := range keys[:n] {
				if err := b.Delete(k, nil); err != nil {
					b.Close()
					return err
				}
			}
			err := b.Commit(pebble.NoSync)
			b.Close()
			if err != nil {
				return err
			}
			keys = keys[n:]
		}
		return nil
	}
	if err := del(oldEntries); err != nil {
		return st, err
	}
	if err := del(oldInodes); err != nil {
		return st, err
	}
	st.Versions = prunedEntries + len(oldInodes)/3

	for len(names) > 0 {
		n, err := db.pruneNames(names[:min(len(names), pruneBatch)])
		if err != nil {
			return st, err
		}
		st.Names += n
		names = names[min(len(names), pruneBatch):]
	}
	for len(inodes) > 0 {
		n, err := db.pruneInodes(inodes[:min(len(inodes), pruneBatch)], inUse)
		if err != nil {
			return st, err
		}
		st.Inodes += n
		inodes = inodes[min(len(inodes), pruneBatch):]
	}
	if st != (PruneStat{}) {
		db.log.Debug("history pruned", "records", st.Records, "versions", st.Versions,
			"names", st.Names, "inodes", st.Inodes)
	}
	return st, nil
}

// pruneLog deletes the records at or below stable (capped by what is
// applied here) and returns, per origin, the clock value of its stable
// record: versions of that origin at or below it are stable.
func (db *DB) pruneLog(stable map[format.NodeID]uint64, st *PruneStat) (map[format.NodeID]uint64, error) {
	if err := loadingIn(db.pdb); err != nil {
		return nil, err
	}
	clocks := make(map[format.NodeID]uint64, len(stable))
	vv := db.VersionVector()
	for o, s := range stable {
		s = min(s, vv[o])
		if s == 0 {
			continue
		}
		f, err := db.floorOf(db.pdb, o)
		if err != nil {
			return nil, err
		}
		if s <= f.seq {
			if s == f.seq {
				clocks[o] = f.hlc
			}
			continue // older than what was pruned: its clock is not known
		}
		v, c, err := db.pdb.Get(logKey(o, s))
		if err != nil {
			return nil, fmt.Errorf("index: prune: record %s/%d: %w", o.Short(), s, err)
		}
		hlc, err := recordClock(v)
		c.Close()
		if err != nil {
			return nil, fmt.Errorf("index: prune: record %s/%d: %w", o.Short(), s, err)
		}
		b := db.pdb.NewBatch()
		err = b.DeleteRange(logKey(o, f.seq+1), logKey(o, s+1), nil)
		if err == nil {
			err = b.Set(floorKey(o), floor{s, hlc}.encode(), nil)
		}
		if err == nil {
			err = b.Commit(pebble.NoSync)
		}
		b.Close()
		if err != nil {
			return nil, err
		}
		st.Records += int(s - f.seq)
		clocks[o] = hlc
	}
	return clocks, nil
}

// recordClock reads the clock value of a stored record (a record's
// encoding, then maybe a signature): format[1] origin[16] seq:uv hlc:uv.
func recordClock(v []byte) (uint64, error) {
	if len(v) < 1+16+1 || v[0] != formatV1 {
		return 0, fmt.Errorf("%w: stored record of %d bytes", ErrCorrupt, len(v))
	}
	p := v[17:]
	_, n := binary.Uvarint(p)
	if n <= 0 {
		return 0, fmt.Errorf("%w: stored record's seq", ErrCorrupt)
	}
	hlc, m := binary.Uvarint(p[n:])
	if m <= 0 {
		return 0, fmt.Errorf("%w: stored record's clock", ErrCorrupt)
	}
	return hlc, nil
}

// deadName is a name whose heads were all old, stable, unshadowed
// tombstones in the scan.
type deadName struct {
	parent uint64
	name   string
	heads  []VersionRef
}

// headCursor walks the head keys ("H" or "E") of a snapshot alongside a
// walk of the matching history keys ("h" or "e"): both are in the same
// order after their prefix byte.
type headCursor struct {
	it *pebble.Iterator
	ok bool
}

func newHeadCursor(r pebble.Reader, p byte) (*headCursor, error) {
	lo := []byte{p}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, err
	}
	return &headCursor{it: it, ok: it.First()}, nil
}

// heads returns the heads under group (a history key's prefix without its
// prefix byte: id[8], or parent[8] name 0), which must come in order.
func (c *headCursor) heads(group []byte) (map[VersionRef]bool, error) {
	out := make(map[VersionRef]bool, 1)
	for ; c.ok; c.ok = c.it.Next() {
		k := c.it.Key()[1:]
		if bytes.HasPrefix(k, group) {
			ref := k[len(group):]
			if len(ref) != 8+16 {
				return nil, fmt.Errorf("%w: head key of %d bytes", ErrCorrupt, len(k)+1)
			}
			out[VersionRef{Version: binary.BigEndian.Uint64(ref), Origin: format.NodeID(ref[8:])}] = true
			continue
		}
		if bytes.Compare(k, group) > 0 {
			break
		}
	}
	return out, c.it.Error()
}

// pruneScanEntries reads every entry version of snapshot r and returns
// the dead names, the keys of the entry versions to delete (history and
// named mark, and the link keys of children no version left names), how
// many versions those are, and the inodes the remaining versions name.
func pruneScanEntries(r pebble.Reader, cut uint64, isStable func(VersionRef) bool) (deadNames []deadName, keys [][]byte, pruned int, named map[uint64]bool, err error) {
	named = make(map[uint64]bool)
	lo := []byte{prefixEntryHist}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, nil, 0, nil, err
	}
	defer it.Close()
	hc, err := newHeadCursor(r, prefixEntryHead)
	if err != nil {
		return nil, nil, 0, nil, err
	}
	defer hc.it.Close()
	var versions []Dirent
	flush := func() error {
		if len(versions) == 0 {
			return nil
		}
		defer func() { versions = versions[:0] }()
		p, name := versions[0].Parent, versions[0].Name
		isHead, err := hc.heads(entryNamePrefix(prefixEntryHead, p, name)[1:])
		if err != nil {
			return err
		}
		// Superseding time: the oldest version received naming it. A
		// version that is no head and that nothing left names was named
		// by a version pruned already, so older than the cutoff.
		by := make(map[VersionRef]uint64, len(versions))
		for i := range versions {
			de := &versions[i]
			if b := de.Base(); !b.IsZero() {
				if t, ok := by[b]; !ok || de.Version < t {
					by[b] = de.Version
				}
			}
		}
		var heads []VersionRef
		dead := true
		for i := range versions {
			de := &versions[i]
			if !isHead[de.Ref()] {
				continue
			}
			heads = append(heads, de.Ref())
			if !de.Deleted || de.Version >= cut || !isStable(de.Ref()) {
				dead = false
				continue
			}
			vis, err := visible(r, de)
			if err != nil {
				return err
			}
			if vis {
				dead = false
			}
		}
		if dead && len(heads) > 0 {
			deadNames = append(deadNames, deadName{p, name, heads})
			return nil
		}
		kept := make(map[uint64]bool, 1) // children of the versions kept
		var gone []uint64                // children of the versions pruned
		for i := range versions {
			de := &versions[i]
			if !isHead[de.Ref()] {
				if t, ok := by[de.Ref()]; !ok || t < cut {
					keys = append(keys, entryVerKey(prefixEntryHist, p, name, de.Ref()),
						entryVerKey(prefixEntryNamed, p, name, de.Ref()))
					pruned++
					gone = append(gone, de.Child)
					continue
				}
			}
			if de.Child != 0 {
				named[de.Child] = true
				kept[de.Child] = true
			}
		}
		// The name no longer names a child none of its versions left
		// names: its link key goes.
		for _, c := range gone {
			if c != 0 && !kept[c] {
				keys = append(keys, linkKey(c, p, name))
				kept[c] = true // once
			}
		}
		return nil
	}
	for ok := it.First(); ok; ok = it.Next() {
		de, err := entryVersionAt(it.Key(), it.Value())
		if err != nil {
			return nil, nil, 0, nil, err
		}
		if len(versions) > 0 && (versions[0].Parent != de.Parent || versions[0].Name != de.Name) {
			if err := flush(); err != nil {
				return nil, nil, 0, nil, err
			}
		}
		versions = append(versions, de)
	}
	if err := it.Error(); err != nil {
		return nil, nil, 0, nil, err
	}
	if err := flush(); err != nil {
		return nil, nil, 0, nil, err
	}
	return deadNames, keys, pruned, named, nil
}

// entryVersionAt decodes an "e" key and its value.
func entryVersionAt(k, v []byte) (Dirent, error) {
	end := -1
	if len(k) > 9 {
		end = bytes.IndexByte(k[9:], 0)
	}
	if end < 0 || len(k) != 9+end+1+8+16 {
		return Dirent{}, fmt.Errorf("%w: entry version key of %d bytes", ErrCorrupt, len(k))
	}
	de := Dirent{Parent: binary.BigEndian.Uint64(k[1:9]), Name: string(k[9 : 9+end])}
	if err := decodeDirentValue(v, &de); err != nil {
		return Dirent{}, fmt.Errorf("index: entry version %d/%q: %w", de.Parent, de.Name, err)
	}
	return de, nil
}

// unnamedInode is an inode the scan found unnamed, with its heads then.
type unnamedInode struct {
	id    uint64
	heads []VersionRef
}

// pruneScanInodes reads every inode version of snapshot r and returns the
// keys of the versions to delete (history, named mark and conflict-copy
// key) and the unnamed inodes to delete.
func pruneScanInodes(r pebble.Reader, cut uint64, isStable func(VersionRef) bool, named map[uint64]bool, inUse func(uint64) bool) (keys [][]byte, gone []unnamedInode, err error) {
	lo := []byte{prefixHistory}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, nil, err
	}
	defer it.Close()
	hc, err := newHeadCursor(r, prefixHead)
	if err != nil {
		return nil, nil, err
	}
	defer hc.it.Close()
	var versions []Inode
	flush := func() error {
		if len(versions) == 0 {
			return nil
		}
		defer func() { versions = versions[:0] }()
		id := versions[0].ID
		isHead, err := hc.heads(headPrefix(id)[1:])
		if err != nil {
			return err
		}
		by := make(map[VersionRef]uint64, len(versions))
		for i := range versions {
			v := &versions[i]
			for _, ref := range append([]VersionRef{v.Base()}, v.Supersedes...) {
				if ref.IsZero() {
					continue
				}
				if t, ok := by[ref]; !ok || v.Version < t {
					by[ref] = v.Version
				}
			}
		}
		whole := id != RootID && !named[id] && (inUse == nil || !inUse(id))
		var heads []VersionRef
		for i := range versions {
			v := &versions[i]
			if !isHead[v.Ref()] {
				continue
			}
			heads = append(heads, v.Ref())
			if v.Version >= cut || !isStable(v.Ref()) {
				whole = false
			}
		}
		whole = whole && len(heads) > 0
		if whole && versions[0].Type == TypeDir {
			n, err := countUnder(r, direntHistPrefix(id), 1)
			if err != nil {
				return err
			}
			whole = n == 0
		}
		if whole {
			pending, err := has(r, pendingKey(id))
			if err != nil {
				return err
			}
			if !pending {
				gone = append(gone, unnamedInode{id, heads})
				return nil
			}
		}
		for i := range versions {
			v := &versions[i]
			if isHead[v.Ref()] {
				continue
			}
			if t, ok := by[v.Ref()]; !ok || t < cut {
				keys = append(keys, histKey(id, v.Ref()), namedKey(id, v.Ref()),
					derivedKey(conflictID(id, v.Ref())))
			}
		}
		return nil
	}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) != 1+8+8+16 {
			return nil, nil, fmt.Errorf("%w: inode version key of %d bytes", ErrCorrupt, len(k))
		}
		id := binary.BigEndian.Uint64(k[1:9])
		if len(versions) > 0 && versions[0].ID != id {
			if err := flush(); err != nil {
				return nil, nil, err
			}
		}
		in, err := decodeInodeValue(it.Value())
		if err != nil {
			return nil, nil, fmt.Errorf("index: version of inode %d: %w", id, err)
		}
		versions = append(versions, in)
	}
	if err := it.Error(); err != nil {
		return nil, nil, err
	}
	if err := flush(); err != nil {
		return nil, nil, err
	}
	return keys, gone, nil
}

// eachEntryVersion calls fn with every stored version of (parent, name).
func eachEntryVersion(r pebble.Reader, parent uint64, name string, fn func(*Dirent) error) error {
	pre := entryNamePrefix(prefixEntryHist, parent, name)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: pre, UpperBound: prefixEnd(pre)})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		de, err := entryVersionAt(it.Key(), it.Value())
		if err != nil {
			return err
		}
		if err := fn(&de); err != nil {
			return err
		}
	}
	return it.Error()
}

// direntHistPrefix is the start of every entry version under parent.
func direntHistPrefix(parent uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixEntryHist}, parent)
}

// sameRefs reports whether a and b hold the same versions in the same
// order (both read in key order).
func sameRefs(a, b []VersionRef) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// pruneNames deletes every key of the dead names whose heads have not
// changed since the scan.
func (db *DB) pruneNames(names []deadName) (int, error) {
	db.writeMu.Lock()
	defer db.writeMu.Unlock()
	b := db.pdb.NewBatch()
	defer b.Close()
	n := 0
	for _, d := range names {
		heads, err := entryHeadRefs(db.pdb, d.parent, d.name)
		if err != nil {
			return 0, err
		}
		if !sameRefs(heads, d.heads) {
			continue // a version arrived since
		}
		// The link keys of every child the name's versions named.
		if err := eachEntryVersion(db.pdb, d.parent, d.name, func(de *Dirent) error {
			if de.Child == 0 {
				return nil
			}
			return b.Delete(linkKey(de.Child, d.parent, d.name), nil)
		}); err != nil {
			return 0, err
		}
		for _, p := range []byte{prefixEntryHist, prefixEntryHead, prefixEntryNamed} {
			pre := entryNamePrefix(p, d.parent, d.name)
			if err := b.DeleteRange(pre, prefixEnd(pre), nil); err != nil {
				return 0, err
			}
		}
		if err := b.Delete(conflictedKey(d.parent, d.name), nil); err != nil {
			return 0, err
		}
		if err := b.Delete(direntKey(d.parent, d.name), nil); err != nil {
			return 0, err
		}
		n++
	}
	return n, b.Commit(pebble.NoSync)
}

// pruneInodes deletes every key of the unnamed inodes whose heads have
// not changed since the scan and that are still neither pending nor used.
func (db *DB) pruneInodes(inodes []unnamedInode, inUse func(uint64) bool) (int, error) {
	db.writeMu.Lock()
	defer db.writeMu.Unlock()
	b := db.pdb.NewBatch()
	defer b.Close()
	var ids []uint64
	for _, u := range inodes {
		heads, err := headRefs(db.pdb, u.id)
		if err != nil {
			return 0, err
		}
		if !sameRefs(heads, u.heads) || (inUse != nil && inUse(u.id)) {
			continue
		}
		if pending, err := has(db.pdb, pendingKey(u.id)); err != nil || pending {
			if err != nil {
				return 0, err
			}
			continue
		}
		// The conflict-copy key of every version: read the versions.
		hist := refKey([]byte{prefixHistory}, u.id, VersionRef{})[:9]
		refs, err := refsUnder(db.pdb, hist, func() string { return fmt.Sprintf("inode %d", u.id) })
		if err != nil {
			return 0, err
		}
		for _, r := range refs {
			if err := b.Delete(derivedKey(conflictID(u.id, r)), nil); err != nil {
				return 0, err
			}
		}
		for _, p := range []byte{prefixHistory, prefixHead, prefixNamed} {
			pre := refKey([]byte{p}, u.id, VersionRef{})[:9]
			if err := b.DeleteRange(pre, prefixEnd(pre), nil); err != nil {
				return 0, err
			}
		}
		if err := b.Delete(inodeKey(u.id), nil); err != nil {
			return 0, err
		}
		if err := b.Delete(subdirsKey(u.id), nil); err != nil {
			return 0, err
		}
		if err := b.Delete(linkCountKey(u.id), nil); err != nil {
			return 0, err
		}
		ids = append(ids, u.id)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return 0, err
	}
	for _, id := range ids {
		delete(db.headsCache, id)
	}
	return len(ids), nil
}
