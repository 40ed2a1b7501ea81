package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble"
)

// Hard links. An inode may be named by several entries; nothing in the
// inode says how many. The "r" keys are the reverse index that finds them:
// "r" child[8] parent[8] name for every (parent, name) some entry version
// of which names child. A name may have named a child once and name
// another now, so Names checks each against the view: an inode's links
// are the names whose shown entry is it. The keys go when the name, or
// its every version naming child, is pruned (ns_prune.go).

const prefixLinks = 'r'

func linkKey(child, parent uint64, name string) []byte {
	k := make([]byte, 0, 1+8+8+len(name))
	k = append(k, prefixLinks)
	k = binary.BigEndian.AppendUint64(k, child)
	k = binary.BigEndian.AppendUint64(k, parent)
	return append(k, name...)
}

var keyLinksIndexed = []byte("m/links")

// Subdirectory counts, for a directory's nlink: "s" parent[8] → the
// number of names in parent whose newest entry version ("d" key) is a
// live directory, kept by applyEntry in the batch that moves a "d" key.
// A shadowed tombstone of a directory and an entry conflict copy of one
// are not counted (both rare, both resolved by a later change).
const prefixSubdirs = 's'

func subdirsKey(parent uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixSubdirs}, parent)
}

// isLiveDir reports whether de, a name's newest entry version, counts as
// a subdirectory.
func isLiveDir(de *Dirent) bool { return !de.Deleted && de.Type == TypeDir }

// Subdirs returns how many subdirectories directory id has.
func (db *DB) Subdirs(id uint64) (uint64, error) { return db.counter(subdirsKey(id)) }

// countChange records in the batch being built (the caller holds
// writeMu) what moving a name's newest entry version from old (if ok) to
// de does to the subdirectory and link counts.
func (db *DB) countChange(old *Dirent, ok bool, de *Dirent) {
	if was, is := ok && isLiveDir(old), isLiveDir(de); was != is {
		if is {
			db.countsPending[string(subdirsKey(de.Parent))]++
		} else {
			db.countsPending[string(subdirsKey(de.Parent))]--
		}
	}
	if ok && isLiveName(old) {
		db.countsPending[string(linkCountKey(old.Child))]--
	}
	if isLiveName(de) {
		db.countsPending[string(linkCountKey(de.Child))]++
	}
}

// addCounts applies the pending count changes of a batch to b (the
// caller holds writeMu).
func (db *DB) addCounts(b *pebble.Batch) error {
	for key, d := range db.countsPending {
		if d == 0 {
			continue
		}
		n, err := db.counter([]byte(key))
		if err != nil {
			return err
		}
		n = uint64(max(int64(n)+d, 0))
		if err := b.Set([]byte(key), putU64(n), nil); err != nil {
			return err
		}
	}
	clear(db.countsPending)
	return nil
}

// countSubdirs writes every directory's subdirectory count and every
// inode's link count, once: an index made before the counts has none.
func (db *DB) countSubdirs() error {
	if done, err := has(db.pdb, keyLinksCounted); err != nil || done {
		return err
	}
	counts := make(map[string]uint64)
	err := eachNewestEntry(db.pdb, func(de *Dirent) error {
		if isLiveDir(de) {
			counts[string(subdirsKey(de.Parent))]++
		}
		if isLiveName(de) {
			counts[string(linkCountKey(de.Child))]++
		}
		return nil
	})
	if err != nil {
		return err
	}
	b := db.pdb.NewBatch()
	defer b.Close()
	for _, p := range []byte{prefixSubdirs, prefixLinkCount} {
		if err := b.DeleteRange([]byte{p}, []byte{p + 1}, nil); err != nil {
			return err
		}
	}
	for k, n := range counts {
		if err := b.Set([]byte(k), putU64(n), nil); err != nil {
			return err
		}
	}
	if err := b.Set(keyLinksCounted, nil, nil); err != nil {
		return err
	}
	return b.Commit(pebble.Sync)
}

// Names returns every entry that shows inode id: its hard links (an
// entry conflict copy of a name is not counted). An inode no name shows
// (deleted, maybe still open) has none.
func (db *DB) Names(id uint64) ([]Dirent, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	snap := db.pdb.NewSnapshot()
	defer snap.Close()
	lo := binary.BigEndian.AppendUint64([]byte{prefixLinks}, id)
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []Dirent
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) <= 1+8+8 {
			return nil, fmt.Errorf("%w: link key of %d bytes", ErrCorrupt, len(k))
		}
		parent, name := binary.BigEndian.Uint64(k[9:17]), string(k[17:])
		de, ok, err := lookupDirent(snap, parent, name)
		if err != nil {
			return nil, fmt.Errorf("index: names of %d: %w", id, err)
		}
		if ok && de.Child == id {
			out = append(out, de)
		}
	}
	return out, it.Error()
}

// Link counts, for a file's nlink at getattr (one read): "k" child[8] →
// the number of names whose newest entry version ("d" key) is a live
// entry naming child, kept like the subdirectory counts. Names gives
// the exact list (a shadowed tombstone or an entry conflict copy shows a
// name the count leaves out).
const prefixLinkCount = 'k'

func linkCountKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixLinkCount}, id)
}

var keyLinksCounted = []byte("m/link-counts")

// LinkCount returns how many names show inode id (see above).
func (db *DB) LinkCount(id uint64) (uint64, error) { return db.counter(linkCountKey(id)) }

// counter reads a count key (0 if absent).
func (db *DB) counter(key []byte) (uint64, error) {
	v, c, err := db.pdb.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: count of %d bytes under %q", ErrCorrupt, len(v), key[0])
	}
	return binary.BigEndian.Uint64(v), nil
}

// isLiveName reports whether de, a name's newest entry version, counts
// as a name of its child.
func isLiveName(de *Dirent) bool { return !de.Deleted && de.Child != 0 }

// indexLinks writes the "r" keys of every entry version, once: an index
// made before hard links has none.
func (db *DB) indexLinks() error {
	if done, err := has(db.pdb, keyLinksIndexed); err != nil || done {
		return err
	}
	lo := []byte{prefixEntryHist}
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return err
	}
	defer it.Close()
	b := db.pdb.NewBatch()
	defer func() { b.Close() }()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		de, err := entryVersionAt(it.Key(), it.Value())
		if err != nil {
			return err
		}
		if de.Child == 0 {
			continue
		}
		if err := b.Set(linkKey(de.Child, de.Parent, de.Name), nil, nil); err != nil {
			return err
		}
		if n++; n%4096 == 0 {
			if err := b.Commit(pebble.NoSync); err != nil {
				return err
			}
			b.Close()
			b = db.pdb.NewBatch()
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	if err := b.Set(keyLinksIndexed, nil, nil); err != nil {
		return err
	}
	return b.Commit(pebble.Sync)
}

// linkKeyName splits an "r" key into child, parent and name.
func linkKeyName(k []byte) (child, parent uint64, name []byte, ok bool) {
	if len(k) <= 1+8+8 || k[0] != prefixLinks {
		return 0, 0, nil, false
	}
	name = k[17:]
	if bytes.IndexByte(name, 0) >= 0 || bytes.IndexByte(name, '/') >= 0 {
		return 0, 0, nil, false
	}
	return binary.BigEndian.Uint64(k[1:9]), binary.BigEndian.Uint64(k[9:17]), name, true
}
