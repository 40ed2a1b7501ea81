package index

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble"
)

// Which file versions still need their content: the roots that garbage
// collection (chunknet/gc.go) marks from. The rules, applied to one
// snapshot of the namespace, so the same on every peer that applied the
// same records:
//
//   - A file that a name shows (a live entry head, a tombstone head that
//     is shadowed, or an entry conflict copy: every visible head) keeps
//     every head of its inode (the winner and the losing heads shown as
//     conflict copies).
//   - Every version of a file superseded less than the restore window
//     ago (keep) is kept, so `oashare restore` can bring it back: its
//     superseding time is the oldest stamp among the versions that name
//     it as base or in Supersedes.
//   - A file that lost its last name (a tombstone head not shadowed, or
//     an entry version replaced by a rename onto the name) keeps its
//     heads for the window after that: the tombstone's stamp, or the
//     stamp of the entry version that replaced the name.
//   - An inode no entry version names at all keeps its heads (nothing
//     says it is gone).
//
// A version is a stamp, so "ago" is read on the hybrid logical clock:
// cutoff = (now - keep) in the clock's milliseconds.

// RetainedFiles calls fn with every version of a regular file whose
// content must be kept at time now with a restore window of keep, each
// version once. Versions with no content (an empty file) are skipped.
// It reads one snapshot of the index; an error from fn stops the scan.
func (db *DB) RetainedFiles(now time.Time, keep time.Duration, fn func(Inode) error) error {
	if db.closed.Load() {
		return ErrClosed
	}
	snap := db.pdb.NewSnapshot()
	defer snap.Close()
	if err := loadingIn(snap); err != nil {
		return err // an incomplete namespace keeps nothing: wait
	}
	cutoff := uint64(0)
	if ms := now.Add(-keep).UnixMilli(); ms > 0 {
		cutoff = uint64(ms) << 16
	}
	named, retained, err := retainedInodes(snap, cutoff)
	if err != nil {
		return err
	}
	lo := []byte{prefixHistory}
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return err
	}
	defer it.Close()
	var versions []Inode
	flush := func() error {
		if len(versions) == 0 {
			return nil
		}
		id := versions[0].ID
		defer func() { versions = versions[:0] }()
		keepAll, alive := retained[id]
		if !alive && named[id] {
			return nil // gone from every name for longer than the window
		}
		// Superseding time of each version: the oldest stamp naming it.
		by := make(map[VersionRef]uint64, len(versions))
		for i := range versions {
			v := &versions[i]
			mark := func(r VersionRef) {
				if t, ok := by[r]; !ok || v.Version < t {
					by[r] = v.Version
				}
			}
			if v.BaseVersion != 0 {
				mark(VersionRef{v.BaseVersion, v.BaseOrigin})
			}
			for _, s := range v.Supersedes {
				mark(s)
			}
		}
		for i := range versions {
			v := &versions[i]
			t, superseded := by[v.Ref()]
			head := !superseded
			if !(head || (keepAll && t >= cutoff)) {
				continue
			}
			if v.Type != TypeFile || v.Size == 0 {
				continue
			}
			if err := fn(*v); err != nil {
				return err
			}
		}
		return nil
	}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) != 1+8+8+16 {
			return fmt.Errorf("%w: inode version key of %d bytes", ErrCorrupt, len(k))
		}
		id := binary.BigEndian.Uint64(k[1:9])
		if len(versions) > 0 && versions[0].ID != id {
			if err := flush(); err != nil {
				return err
			}
		}
		in, err := decodeInodeValue(it.Value())
		if err != nil {
			return fmt.Errorf("index: version of inode %d: %w", id, err)
		}
		versions = append(versions, in)
	}
	if err := it.Error(); err != nil {
		return err
	}
	return flush()
}

// retainedInodes reads every entry version and says which inodes some
// entry version names (named) and which are kept (retained): the value is
// true when the inode's superseded versions inside the window are kept
// too, which is always the case for a retained inode (a file gone from its
// name keeps its recent history with it).
func retainedInodes(r pebble.Reader, cutoff uint64) (named, retained map[uint64]bool, err error) {
	named = make(map[uint64]bool)
	retained = make(map[uint64]bool)
	lo := []byte{prefixEntryHist}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, nil, err
	}
	defer it.Close()
	var name []byte // parent[8] name of the versions collected
	var versions []Dirent
	flush := func() error {
		defer func() { versions = versions[:0] }()
		by := make(map[VersionRef]uint64, len(versions))
		for i := range versions {
			de := &versions[i]
			if de.BaseVersion != 0 {
				ref := VersionRef{de.BaseVersion, de.BaseOrigin}
				if t, ok := by[ref]; !ok || de.Version < t {
					by[ref] = de.Version
				}
			}
		}
		for i := range versions {
			de := &versions[i]
			if de.Child == 0 {
				continue
			}
			named[de.Child] = true
			t, superseded := by[de.Ref()]
			keep := false
			switch {
			case superseded && de.Deleted:
				// Deleted, then the name reused: kept for the window
				// after the delete.
				keep = de.Version >= cutoff
			case superseded:
				// Replaced: kept for the window after the replacement.
				keep = t >= cutoff
			case !de.Deleted:
				keep = true
			default:
				vis, err := visible(r, de)
				if err != nil {
					return err
				}
				keep = vis || de.Version >= cutoff
			}
			if keep {
				retained[de.Child] = true
			}
		}
		return nil
	}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		end := -1
		if len(k) > 9 {
			end = bytes.IndexByte(k[9:], 0)
		}
		if end < 0 || len(k) != 9+end+1+8+16 {
			return nil, nil, fmt.Errorf("%w: entry version key of %d bytes", ErrCorrupt, len(k))
		}
		key := k[1 : 9+end]
		if len(versions) > 0 && !bytes.Equal(key, name) {
			if err := flush(); err != nil {
				return nil, nil, err
			}
		}
		if len(versions) == 0 {
			name = append(name[:0], key...)
		}
		de := Dirent{Parent: binary.BigEndian.Uint64(key[:8]), Name: string(key[8:])}
		if err := decodeDirentValue(it.Value(), &de); err != nil {
			return nil, nil, fmt.Errorf("index: entry version %d/%q: %w", de.Parent, de.Name, err)
		}
		versions = append(versions, de)
	}
	if err := it.Error(); err != nil {
		return nil, nil, err
	}
	if len(versions) > 0 {
		if err := flush(); err != nil {
			return nil, nil, err
		}
	}
	return named, retained, nil
}
