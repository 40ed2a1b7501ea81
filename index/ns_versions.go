package index

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/cockroachdb/pebble"
)

// Versions, heads and conflict copies; the rules are in doc.go.

// ConflictIDBit is set in the derived inode ID of every conflict copy and in
// no other inode ID (NewID clears it, Validate refuses it in ops).
const ConflictIDBit uint64 = 1 << 63

// IsConflictID reports whether id names a conflict copy.
func IsConflictID(id uint64) bool { return id&ConflictIDBit != 0 }

// ConflictSep separates a name from the suffix of its conflict copies
// (ConflictName).
const ConflictSep = ".conflict-"

// conflictID is the derived inode ID of version r of inode id: the first 8
// bytes of SHA-256(id[8] version[8] origin[16]) with ConflictIDBit set.
func conflictID(id uint64, r VersionRef) uint64 {
	h := sha256.Sum256(refKey(nil, id, r))
	return binary.BigEndian.Uint64(h[:8]) | ConflictIDBit
}

// ConflictName is the name under which version h of the entry name is
// shown as a conflict copy: name + ".conflict-" + h.Origin.Short() + "-" +
// h.Version (decimal). If that is longer than MaxNameLen, name is cut to
// fit (bytewise).
func ConflictName(name string, h VersionRef) string {
	suffix := fmt.Sprintf("%s%s-%d", ConflictSep, h.Origin.Short(), h.Version)
	if len(name)+len(suffix) > MaxNameLen {
		name = name[:MaxNameLen-len(suffix)]
	}
	return name + suffix
}

// refKey appends id[8] version[8] origin[16] to b.
func refKey(b []byte, id uint64, r VersionRef) []byte {
	b = binary.BigEndian.AppendUint64(b, id)
	b = binary.BigEndian.AppendUint64(b, r.Version)
	return append(b, r.Origin[:]...)
}

func histKey(id uint64, r VersionRef) []byte  { return refKey([]byte{prefixHistory}, id, r) }
func headKey(id uint64, r VersionRef) []byte  { return refKey([]byte{prefixHead}, id, r) }
func namedKey(id uint64, r VersionRef) []byte { return refKey([]byte{prefixNamed}, id, r) }
func headPrefix(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixHead}, id)
}
func derivedKey(cid uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixDerived}, cid)
}

func has(r pebble.Reader, key []byte) (bool, error) {
	_, c, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	c.Close()
	return true, nil
}

func getInodeFrom(r pebble.Reader, key []byte) (Inode, bool, error) {
	v, c, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return Inode{}, false, nil
	}
	if err != nil {
		return Inode{}, false, err
	}
	defer c.Close()
	in, err := decodeInodeValue(v)
	if err != nil {
		return Inode{}, false, err
	}
	return in, true, nil
}

// headRefs returns the heads of inode id in ascending stamp order (key
// order is stamp order: version big endian, then origin bytewise).
func headRefs(r pebble.Reader, id uint64) ([]VersionRef, error) {
	return refsUnder(r, headPrefix(id), func() string { return fmt.Sprintf("inode %d", id) })
}

// refsUnder reads the version references that end the keys under prefix
// (version[8] origin[16] each), in key order, which is stamp order. what
// names the owner for errors.
func refsUnder(r pebble.Reader, prefix []byte, what func() string) ([]VersionRef, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []VersionRef
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()[len(prefix):]
		if len(k) != 8+16 {
			return nil, fmt.Errorf("%w: head key of %s has %d bytes", ErrCorrupt, what(), len(k))
		}
		var ref VersionRef
		ref.Version = binary.BigEndian.Uint64(k)
		copy(ref.Origin[:], k[8:])
		out = append(out, ref)
	}
	return out, it.Error()
}

// countUnder counts the keys under prefix, up to limit.
func countUnder(r pebble.Reader, prefix []byte, limit int) (int, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	n := 0
	for it.First(); it.Valid() && n < limit; it.Next() {
		n++
	}
	return n, it.Error()
}

// applyInode adds version in of its inode to b, unless it was received
// before: it stores the version in the history, marks the versions it
// names (base, Supersedes) as replaced, makes it a head unless a version
// received earlier names it, and stores the winning head under the "i"
// key. It reports whether the version was new.
func (db *DB) applyInode(b *pebble.Batch, in *Inode, fresh bool) (bool, error) {
	r := db.pdb
	self := in.Ref()
	if !fresh {
		if seen, err := has(r, histKey(in.ID, self)); err != nil || seen {
			return false, err
		}
	}
	enc := encodeInodeValue(in)
	if err := b.Set(histKey(in.ID, self), enc, nil); err != nil {
		return false, err
	}
	cid := conflictID(in.ID, self)
	if err := b.Set(derivedKey(cid), refKey(nil, in.ID, self), nil); err != nil {
		return false, err
	}
	replaced := make(map[VersionRef]bool, 1+len(in.Supersedes))
	for _, ref := range append([]VersionRef{in.Base()}, in.Supersedes...) {
		if ref.IsZero() || replaced[ref] {
			continue
		}
		replaced[ref] = true
		if err := b.Set(namedKey(in.ID, ref), nil, nil); err != nil {
			return false, err
		}
		if err := b.Delete(headKey(in.ID, ref), nil); err != nil {
			return false, err
		}
	}
	named := false
	if !fresh {
		var err error
		if named, err = has(r, namedKey(in.ID, self)); err != nil {
			return false, err
		}
	}
	if !named {
		if err := b.Set(headKey(in.ID, self), nil, nil); err != nil {
			return false, err
		}
	}
	heads, err := db.writerHeads(in.ID)
	if err != nil {
		return false, err
	}
	next := make([]VersionRef, 0, len(heads)+1)
	for _, h := range heads {
		if !replaced[h] && h != self {
			next = append(next, h)
		}
	}
	if !named {
		next = append(next, self)
	}
	db.headsPending[in.ID] = next
	var win VersionRef
	if !named {
		win = self
	}
	for _, h := range heads {
		if !replaced[h] && newer(h.Version, h.Origin, win.Version, win.Origin) {
			win = h
		}
	}
	cur, ok, err := db.getInode(inodeKey(in.ID))
	if err != nil {
		return false, err
	}
	switch {
	case win.IsZero():
		// Cannot happen: the newest version received is always a head.
		return false, fmt.Errorf("%w: inode %d has no head", ErrCorrupt, in.ID)
	case ok && cur.Ref() == win:
	case win == self:
		if err := b.Set(inodeKey(in.ID), enc, nil); err != nil {
			return false, err
		}
	default:
		v, c, err := r.Get(histKey(in.ID, win))
		if err != nil {
			return false, fmt.Errorf("inode %d head %d: %w", in.ID, win.Version, err)
		}
		err = b.Set(inodeKey(in.ID), v, nil)
		c.Close()
		if err != nil {
			return false, err
		}
	}
	return true, nil
}

// headsCacheMax bounds the inodes whose heads the writer keeps in memory.
const headsCacheMax = 4096

// writerHeads returns the heads of inode id as committed, for Commit and
// Apply (the caller holds writeMu). Reading them from Pebble iterates over
// the head keys of every version the inode ever had (deleted keys stay
// until a compaction drops them), and a directory gets a version with
// every entry created in it: so the heads of the inodes written lately are
// kept in memory, updated by every committed batch (see commitRecord).
func (db *DB) writerHeads(id uint64) ([]VersionRef, error) {
	if h, ok := db.headsCache[id]; ok {
		return h, nil
	}
	return headRefs(db.pdb, id)
}

// settleHeads records in the cache the heads the batch just built gives,
// once it is committed (ok), or forgets them (the batch failed).
func (db *DB) settleHeads(ok bool) {
	if ok {
		if len(db.headsCache)+len(db.headsPending) > headsCacheMax {
			clear(db.headsCache)
		}
		for id, h := range db.headsPending {
			db.headsCache[id] = h
		}
	}
	clear(db.headsPending)
}

// Heads returns the versions of inode id that no received version replaces:
// the winner (what GetInode returns) first, then the others, which are
// shown as conflict copies, by descending stamp. An inode never committed
// has no heads.
func (db *DB) Heads(id uint64) ([]Inode, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	snap := db.pdb.NewSnapshot()
	defer snap.Close()
	out, err := heads(snap, id)
	if err != nil {
		return nil, fmt.Errorf("index: heads of %d: %w", id, err)
	}
	return out, nil
}

// heads returns the head records of id, newest (the winner) first.
func heads(r pebble.Reader, id uint64) ([]Inode, error) {
	refs, err := headRefs(r, id)
	if err != nil {
		return nil, err
	}
	out := make([]Inode, 0, len(refs))
	for i := len(refs) - 1; i >= 0; i-- {
		in, ok, err := getInodeFrom(r, histKey(id, refs[i]))
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%w: head %d of inode %d not in history", ErrCorrupt, refs[i].Version, id)
		}
		out = append(out, in)
	}
	return out, nil
}

// ConflictOf returns the inode and the version a conflict copy ID stands
// for (a version that was received; it may have been resolved since).
func (db *DB) ConflictOf(cid uint64) (id uint64, ref VersionRef, ok bool, err error) {
	if db.closed.Load() {
		return 0, ref, false, ErrClosed
	}
	id, ref, ok, err = conflictRef(db.pdb, cid)
	if err != nil {
		err = fmt.Errorf("index: conflict %d: %w", cid, err)
	}
	return id, ref, ok, err
}

func conflictRef(r pebble.Reader, cid uint64) (uint64, VersionRef, bool, error) {
	var ref VersionRef
	if !IsConflictID(cid) {
		return 0, ref, false, nil
	}
	v, c, err := r.Get(derivedKey(cid))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, ref, false, nil
	}
	if err != nil {
		return 0, ref, false, err
	}
	defer c.Close()
	if len(v) != 8+8+16 {
		return 0, ref, false, fmt.Errorf("%w: derived id value of %d bytes", ErrCorrupt, len(v))
	}
	id := binary.BigEndian.Uint64(v)
	ref.Version = binary.BigEndian.Uint64(v[8:])
	copy(ref.Origin[:], v[16:])
	return id, ref, true, nil
}

// conflictInode returns the version a conflict copy ID stands for, with
// that ID.
func (db *DB) conflictInode(r pebble.Reader, cid uint64) (Inode, bool, error) {
	id, ref, ok, err := conflictRef(r, cid)
	if err != nil || !ok {
		return Inode{}, false, err
	}
	in, ok, err := getInodeFrom(r, histKey(id, ref))
	if err != nil || !ok {
		return Inode{}, false, err
	}
	in.ID = cid
	return in, true, nil
}

// visible reports whether stored dirent de shows in the namespace: a live
// entry always; a tombstone only when it is shadowed: not Moved, with a
// child and a child version, and the child's winner is newer than the
// version the deleter saw (an update the deleter had not seen).
func visible(r pebble.Reader, de *Dirent) (bool, error) {
	if !de.Deleted {
		return true, nil
	}
	if de.Moved || de.Child == 0 || de.ChildVersion == 0 {
		return false, nil
	}
	w, ok, err := getInodeFrom(r, inodeKey(de.Child))
	if err != nil || !ok {
		return false, err
	}
	return newer(w.Version, w.Origin, de.ChildVersion, de.ChildOrigin), nil
}

// readDir returns the view of directory parent (see doc.go).
func readDir(r pebble.Reader, parent uint64) ([]Dirent, error) {
	ves, err := dirView(r, parent)
	if err != nil {
		return nil, err
	}
	out := make([]Dirent, len(ves))
	for i := range ves {
		out[i] = ves[i].Dirent
	}
	return out, nil
}

// dirView returns the view of directory parent (see doc.go): what every
// entry shows under its own name, its entry conflict copies, and the inode
// conflict copies of every child shown, in bytewise name order.
func dirView(r pebble.Reader, parent uint64) ([]viewEntry, error) {
	conflicted, err := conflictedNames(r, parent)
	if err != nil {
		return nil, err
	}
	lo := direntPrefix(parent)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out, copies []viewEntry
	addInodeCopies := func(de *Dirent) error {
		if de.Type == TypeDir {
			return nil
		}
		cs, err := conflictEntries(r, de)
		for _, c := range cs {
			copies = append(copies, viewEntry{Dirent: c})
		}
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		w := Dirent{Parent: parent, Name: string(it.Key()[len(lo):])}
		if err := decodeDirentValue(it.Value(), &w); err != nil {
			return nil, fmt.Errorf("entry %q: %w", w.Name, err)
		}
		de, ok, ecs, err := nameView(r, &w, conflicted[w.Name])
		if err != nil {
			return nil, fmt.Errorf("entry %q: %w", w.Name, err)
		}
		if ok {
			out = append(out, viewEntry{Dirent: de})
			if err := addInodeCopies(&de); err != nil {
				return nil, fmt.Errorf("entry %q: %w", w.Name, err)
			}
		}
		for i := range ecs {
			copies = append(copies, ecs[i])
			if err := addInodeCopies(&ecs[i].Dirent); err != nil {
				return nil, fmt.Errorf("entry %q: %w", ecs[i].Name, err)
			}
		}
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	if len(copies) == 0 {
		return out, nil
	}
	// A real entry hides a conflict copy of the same name; of two copies
	// of the same name the one with the smaller Child is shown.
	taken := make(map[string]bool, len(out)+len(copies))
	for _, de := range out {
		taken[de.Name] = true
	}
	sort.Slice(copies, func(i, j int) bool {
		if copies[i].Name != copies[j].Name {
			return copies[i].Name < copies[j].Name
		}
		return copies[i].Child < copies[j].Child
	})
	for _, c := range copies {
		if !taken[c.Name] {
			taken[c.Name] = true
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// sameData reports whether two versions of a file hold the same bytes.
func sameData(a, b *Inode) bool {
	return a.Type == b.Type && a.Size == b.Size && a.Root == b.Root && a.Depth == b.Depth &&
		a.Target == b.Target && a.Rdev == b.Rdev
}

// conflictEntries returns the conflict copies of live entry de: one per
// losing head of its child that is not a directory and whose content
// differs from the winner's.
func conflictEntries(r pebble.Reader, de *Dirent) ([]Dirent, error) {
	refs, err := headRefs(r, de.Child)
	if err != nil || len(refs) < 2 {
		return nil, err
	}
	var out []Dirent
	win, _, err := getInodeFrom(r, histKey(de.Child, refs[len(refs)-1])) // the last one is the winner
	if err != nil {
		return nil, err
	}
	for _, ref := range refs[:len(refs)-1] {
		h, ok, err := getInodeFrom(r, histKey(de.Child, ref))
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%w: head %d of inode %d not in history", ErrCorrupt, ref.Version, de.Child)
		}
		if h.Type == TypeDir || sameData(&h, &win) {
			// A losing head that differs from the winner in metadata
			// only (two peers linking a file at once, each moving its
			// ctime) is no copy worth showing: the winner's metadata
			// stands, as for a directory.
			continue
		}
		out = append(out, Dirent{
			Parent:  de.Parent,
			Name:    ConflictName(de.Name, ref),
			Child:   conflictID(de.Child, ref),
			Type:    h.Type,
			Version: h.Version,
			Origin:  h.Origin,
		})
	}
	return out, nil
}

// LookupDirent returns the entry name in directory parent as ReadDir shows
// it: a visible entry (a shadowed tombstone is returned live) or a
// conflict copy.
func (db *DB) LookupDirent(parent uint64, name string) (Dirent, bool, error) {
	if db.closed.Load() {
		return Dirent{}, false, ErrClosed
	}
	snap := db.pdb.NewSnapshot()
	defer snap.Close()
	de, ok, err := lookupDirent(snap, parent, name)
	if err != nil {
		return Dirent{}, false, fmt.Errorf("index: dirent %d/%q: %w", parent, name, err)
	}
	return de, ok, nil
}

func lookupDirent(r pebble.Reader, parent uint64, name string) (Dirent, bool, error) {
	w := Dirent{Parent: parent, Name: name}
	v, c, err := r.Get(direntKey(parent, name))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return Dirent{}, false, err
	default:
		err = decodeDirentValue(v, &w)
		c.Close()
		if err != nil {
			return Dirent{}, false, err
		}
		conflicted, err := has(r, conflictedKey(parent, name))
		if err != nil {
			return Dirent{}, false, err
		}
		de, ok, _, err := nameView(r, &w, conflicted)
		if err != nil || ok {
			return de, ok, err
		}
	}
	if !strings.Contains(name, ConflictSep) {
		return Dirent{}, false, nil
	}
	// A conflict copy: rare, so find it in the directory's view, which
	// keeps lookups and listings identical by construction.
	des, err := readDir(r, parent)
	if err != nil {
		return Dirent{}, false, err
	}
	i := sort.Search(len(des), func(i int) bool { return des[i].Name >= name })
	if i < len(des) && des[i].Name == name {
		return des[i], true, nil
	}
	return Dirent{}, false, nil
}

// ReadDir returns the view of directory parent, bytewise by name: every
// visible entry (live, or a shadowed tombstone shown live) and the conflict
// copies of their children (see doc.go).
func (db *DB) ReadDir(parent uint64) ([]Dirent, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	snap := db.pdb.NewSnapshot()
	defer snap.Close()
	out, err := readDir(snap, parent)
	if err != nil {
		return nil, fmt.Errorf("index: readdir %d: %w", parent, err)
	}
	return out, nil
}

// History returns every version of inode id this node has received,
// oldest first (stamp order): what `oashare versions` lists.
func (db *DB) History(id uint64) ([]Inode, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	lo := binary.BigEndian.AppendUint64([]byte{prefixHistory}, id)
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, err
	}
	var out []Inode
	for ok := it.First(); ok; ok = it.Next() {
		in, err := decodeInodeValue(it.Value())
		if err != nil {
			it.Close()
			return nil, fmt.Errorf("index: history of inode %d: %w", id, err)
		}
		out = append(out, in)
	}
	return out, it.Close()
}

// CountInodes returns how many inodes the namespace holds (the root
// included; conflict copies, derived, are not counted): what `df -i`
// shows as used. It reads every inode key.
func (db *DB) CountInodes() (int64, error) {
	if db.closed.Load() {
		return 0, ErrClosed
	}
	lo := []byte{prefixInode}
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return 0, err
	}
	var n int64
	root := false
	for ok := it.First(); ok; ok = it.Next() {
		if len(it.Key()) == 9 {
			n++
			root = root || bytes.Equal(it.Key(), inodeKey(RootID))
		}
	}
	if !root {
		n++ // the root is stored at its first change
	}
	return n, it.Close()
}
