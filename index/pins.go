package index

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble"
)

// Pins are this node's own choice of files and trees to keep whole in
// its store for offline use (oashare pin): the inode IDs of the pinned
// files and directories, a directory standing for everything under it.
// They are local state, like the pending journal: never in a record or
// a snapshot.

func pinKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixPin}, id)
}

// Pin marks inode id pinned, durably.
func (db *DB) Pin(id uint64) error {
	if db.closed.Load() {
		return ErrClosed
	}
	return db.pdb.Set(pinKey(id), nil, pebble.Sync)
}

// Unpin removes the pin of inode id and reports whether there was one.
func (db *DB) Unpin(id uint64) (bool, error) {
	if db.closed.Load() {
		return false, ErrClosed
	}
	ok, err := db.has(pinKey(id))
	if err != nil || !ok {
		return false, err
	}
	return true, db.pdb.Delete(pinKey(id), pebble.Sync)
}

// Pins returns the pinned inode IDs in increasing order.
func (db *DB) Pins() ([]uint64, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	lo := []byte{prefixPin}
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []uint64
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 9 {
			return nil, fmt.Errorf("%w: pin key %x", ErrCorrupt, k)
		}
		out = append(out, binary.BigEndian.Uint64(k[1:]))
	}
	return out, it.Error()
}
