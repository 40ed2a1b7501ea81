package index

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble"

	"github.com/oashare/oashare/index/format"
)

// Entry versions, heads and entry conflict copies; the rules are in doc.go.

// entryNamePrefix is p parent[8] name 0: every key of prefix p about the
// entry versions of (parent, name). Names hold no NUL, so the prefix of one
// name never covers another's keys.
func entryNamePrefix(p byte, parent uint64, name string) []byte {
	k := make([]byte, 0, 1+8+len(name)+1+8+16)
	k = append(k, p)
	k = binary.BigEndian.AppendUint64(k, parent)
	k = append(k, name...)
	return append(k, 0)
}

func entryVerKey(p byte, parent uint64, name string, r VersionRef) []byte {
	k := entryNamePrefix(p, parent, name)
	k = binary.BigEndian.AppendUint64(k, r.Version)
	return append(k, r.Origin[:]...)
}

func conflictedKey(parent uint64, name string) []byte {
	k := binary.BigEndian.AppendUint64([]byte{prefixConflicted}, parent)
	return append(k, name...)
}

// entryHeadRefs returns the heads of entry (parent, name) in ascending
// stamp order.
func entryHeadRefs(r pebble.Reader, parent uint64, name string) ([]VersionRef, error) {
	return refsUnder(r, entryNamePrefix(prefixEntryHead, parent, name), func() string {
		return fmt.Sprintf("entry %d/%q", parent, name)
	})
}

// applyEntry adds entry version de to b, unless it was received before: it
// stores the version in the entry's history, marks its base as replaced,
// makes it a head unless a version received earlier names it, keeps the
// "C" mark iff the entry has two heads or more, and stores the newest
// version received (always a head) under the "d" key. It reports whether
// the version was new.
func (db *DB) applyEntry(b *pebble.Batch, de *Dirent, fresh bool) (bool, error) {
	r := db.pdb
	self := de.Ref()
	if !fresh {
		if seen, err := has(r, entryVerKey(prefixEntryHist, de.Parent, de.Name, self)); err != nil || seen {
			return false, err
		}
	}
	val := encodeDirentValue(de)
	if err := b.Set(entryVerKey(prefixEntryHist, de.Parent, de.Name, self), val, nil); err != nil {
		return false, err
	}
	if de.Child != 0 {
		if err := b.Set(linkKey(de.Child, de.Parent, de.Name), nil, nil); err != nil {
			return false, err
		}
	}
	// Only whether the entry ends with two heads or more matters here:
	// count at most three (an entry with thousands of concurrent versions
	// costs each new one a few reads, not a scan of them all).
	n, err := countUnder(r, entryNamePrefix(prefixEntryHead, de.Parent, de.Name), 3)
	if err != nil {
		return false, err
	}
	if base := de.Base(); !base.IsZero() {
		if err := b.Set(entryVerKey(prefixEntryNamed, de.Parent, de.Name, base), nil, nil); err != nil {
			return false, err
		}
		isHead, err := has(r, entryVerKey(prefixEntryHead, de.Parent, de.Name, base))
		if err != nil {
			return false, err
		}
		if err := b.Delete(entryVerKey(prefixEntryHead, de.Parent, de.Name, base), nil); err != nil {
			return false, err
		}
		if isHead {
			n--
		}
	}
	named := false
	if !fresh {
		if named, err = has(r, entryVerKey(prefixEntryNamed, de.Parent, de.Name, self)); err != nil {
			return false, err
		}
	}
	if !named {
		if err := b.Set(entryVerKey(prefixEntryHead, de.Parent, de.Name, self), nil, nil); err != nil {
			return false, err
		}
		n++
	}
	if n >= 2 {
		err = b.Set(conflictedKey(de.Parent, de.Name), nil, nil)
	} else {
		err = b.Delete(conflictedKey(de.Parent, de.Name), nil)
	}
	if err != nil {
		return false, err
	}
	key := direntKey(de.Parent, de.Name)
	old, ok, err := db.getDirent(key, de.Parent, de.Name)
	if err != nil {
		return false, err
	}
	if !ok || newer(de.Version, de.Origin, old.Version, old.Origin) {
		if err := b.Set(key, val, nil); err != nil {
			return false, err
		}
		db.countChange(&old, ok, de)
	}
	return true, nil
}

// shown returns de as the view shows it: live, without the fields that
// only matter to replication.
func shown(de Dirent) Dirent {
	de.Deleted, de.Moved, de.ChildVersion, de.ChildOrigin = false, false, 0, format.NodeID{}
	de.BaseChild, de.BaseVersion, de.BaseOrigin = 0, 0, format.NodeID{}
	return de
}

// viewEntry is one entry of a directory's view; for an entry conflict
// copy, head is the stored entry version it stands for.
type viewEntry struct {
	Dirent
	head *Dirent
}

// nameView returns what entry (parent, name) shows, given w, its newest
// version received: the entry under its own name (ok), and the entry
// conflict copies. With one head (conflicted false) that is w if it is
// visible. With several: the visible heads (live, or shadowed tombstones),
// newest first; the first is shown under name, and every other one whose
// child is neither that one's nor an earlier one's is shown as a copy
// named ConflictName(name, head), pointing at its own child.
func nameView(r pebble.Reader, w *Dirent, conflicted bool) (Dirent, bool, []viewEntry, error) {
	if !conflicted {
		ok, err := visible(r, w)
		if err != nil || !ok {
			return Dirent{}, false, nil, err
		}
		return shown(*w), true, nil, nil
	}
	refs, err := entryHeadRefs(r, w.Parent, w.Name)
	if err != nil {
		return Dirent{}, false, nil, err
	}
	var prim Dirent
	var ok bool
	var copies []viewEntry
	var children []uint64
	for i := len(refs) - 1; i >= 0; i-- {
		h := Dirent{Parent: w.Parent, Name: w.Name}
		v, c, err := r.Get(entryVerKey(prefixEntryHist, w.Parent, w.Name, refs[i]))
		if err != nil {
			return Dirent{}, false, nil, fmt.Errorf("head %d of entry %q: %w", refs[i].Version, w.Name, err)
		}
		err = decodeDirentValue(v, &h)
		c.Close()
		if err != nil {
			return Dirent{}, false, nil, err
		}
		vis, err := visible(r, &h)
		if err != nil {
			return Dirent{}, false, nil, err
		}
		if !vis || slices.Contains(children, h.Child) {
			continue
		}
		children = append(children, h.Child)
		if !ok {
			prim, ok = shown(h), true
			continue
		}
		cp := shown(h)
		cp.Name = ConflictName(w.Name, h.Ref())
		copies = append(copies, viewEntry{Dirent: cp, head: &h})
	}
	return prim, ok, copies, nil
}

// conflictedNames returns the names in directory parent that have two
// heads or more.
func conflictedNames(r pebble.Reader, parent uint64) (map[string]bool, error) {
	lo := binary.BigEndian.AppendUint64([]byte{prefixConflicted}, parent)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out map[string]bool
	for it.First(); it.Valid(); it.Next() {
		if out == nil {
			out = make(map[string]bool)
		}
		out[string(it.Key()[len(lo):])] = true
	}
	return out, it.Error()
}

// ConflictEntry returns, for a name ReadDir shows as an entry conflict
// copy, the stored entry version it stands for (its Name is the original
// name, its stamp the head's). To resolve the copy, commit a dirent op on
// (Parent, Name) whose base is that version.
func (db *DB) ConflictEntry(parent uint64, name string) (Dirent, bool, error) {
	if db.closed.Load() {
		return Dirent{}, false, ErrClosed
	}
	snap := db.pdb.NewSnapshot()
	defer snap.Close()
	ves, err := dirView(snap, parent)
	if err != nil {
		return Dirent{}, false, fmt.Errorf("index: conflict entry %d/%q: %w", parent, name, err)
	}
	for _, ve := range ves {
		if ve.Name == name && ve.head != nil {
			return *ve.head, true, nil
		}
	}
	return Dirent{}, false, nil
}

// StoredDirent returns the newest version received of entry (parent, name),
// tombstones included, as stored: the base for a new entry under a name
// that shows nothing.
func (db *DB) StoredDirent(parent uint64, name string) (Dirent, bool, error) {
	if db.closed.Load() {
		return Dirent{}, false, ErrClosed
	}
	de, ok, err := db.getDirent(direntKey(parent, name), parent, name)
	if err != nil {
		return Dirent{}, false, fmt.Errorf("index: dirent %d/%q: %w", parent, name, err)
	}
	return de, ok, nil
}

// EntryHistory returns every version of the entry (parent, name) this
// node has received, tombstones included, oldest first: the inodes that
// had that name, so a file deleted or replaced can be found by its path.
func (db *DB) EntryHistory(parent uint64, name string) ([]Dirent, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	lo := entryNamePrefix(prefixEntryHist, parent, name)
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, err
	}
	var out []Dirent
	for ok := it.First(); ok; ok = it.Next() {
		de := Dirent{Parent: parent, Name: name}
		if err := decodeDirentValue(it.Value(), &de); err != nil {
			it.Close()
			return nil, fmt.Errorf("index: history of entry %d/%q: %w", parent, name, err)
		}
		out = append(out, de)
	}
	return out, it.Close()
}
