package index

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble"

	"github.com/oashare/oashare/index/format"
)

// A group is the data chunks under one depth-1 node of a file's tree
// (chunknet/tree), stored contiguously and indexed by one key: the hash of
// that node (or, for a file of one chunk, the hash of that chunk). Placing,
// storing and reading a file by groups instead of by chunks costs one
// index entry per 128 KiB instead of one per 512 bytes. The index does not
// know the chunk layout inside a group: it stores and returns byte ranges,
// and the reader verifies every chunk it cuts out of them.

// Group is one stored group: its name and the concatenated bytes of its
// stored chunks.
type Group struct {
	Hash format.Hash
	Data []byte
}

// groupLocSize is the encoded size of a group location: segment[4]
// offset[8] length[4].
const groupLocSize = 4 + 8 + 4

func groupKey(h format.Hash) []byte {
	k := make([]byte, 1+len(h))
	k[0] = prefixGroup
	copy(k[1:], h[:])
	return k
}

func encodeGroupLoc(dst []byte, seg uint32, off uint64, n uint32) []byte {
	dst = binary.BigEndian.AppendUint32(dst, seg)
	dst = binary.BigEndian.AppendUint64(dst, off)
	return binary.BigEndian.AppendUint32(dst, n)
}

func decodeGroupLoc(b []byte) (seg uint32, off uint64, n uint32, err error) {
	if len(b) != groupLocSize {
		return 0, 0, 0, fmt.Errorf("%w: group location is %d bytes, want %d", ErrCorrupt, len(b), groupLocSize)
	}
	seg, off, n = binary.BigEndian.Uint32(b), binary.BigEndian.Uint64(b[4:]), binary.BigEndian.Uint32(b[12:])
	if n == 0 || n > format.MaxGroupData {
		return 0, 0, 0, fmt.Errorf("%w: group length %d outside 1..%d", ErrCorrupt, n, format.MaxGroupData)
	}
	return seg, off, n, nil
}

// PutGroups stores groups durably, together with chunks (tree nodes,
// typically the groups' own depth-1 nodes), in one synced batch: the bytes
// go to the chunk log, one index entry per group and per chunk. Groups and
// chunks already stored intact are skipped; damaged stored copies are
// written again (see PutChunks). The caller has verified every chunk
// of every group and every chunk. If any group is empty or larger than
// MaxGroupData, or any chunk larger than MaxChunkData, it writes nothing
// and returns an error. It returns how many groups were new.
//
// It shares PutChunks' group commit: concurrent calls of either are
// written by one leader in one batch with one sync.
func (db *DB) PutGroups(groups []Group, chunks []Chunk) (added int, err error) {
	st, err := db.Put(groups, chunks)
	return st.Groups, err
}

// checkPut checks the sizes of what a Put stores.
func checkPut(groups []Group, chunks []Chunk) error {
	for i := range groups {
		if n := len(groups[i].Data); n == 0 || n > format.MaxGroupData {
			return fmt.Errorf("index: group %s is %d bytes, want 1..%d",
				groups[i].Hash.Short(), n, format.MaxGroupData)
		}
	}
	return checkChunkSizes(chunks)
}

// GetGroup appends to buf[:0] the bytes [off, off+n) of stored group h,
// cut at the group's end, and returns them; ok is false if the group is
// not stored or off is at or past its end. It does not check hashes: the
// caller cuts the bytes into chunks and verifies each.
func (db *DB) GetGroup(h format.Hash, off, n int, buf []byte) (data []byte, ok bool, err error) {
	if db.closed.Load() {
		return buf[:0], false, ErrClosed
	}
	if off < 0 || n <= 0 {
		return buf[:0], false, fmt.Errorf("index: get group %s: bad range [%d, %d+%d)", h.Short(), off, off, n)
	}
	v, c, err := db.pdb.Get(groupKey(h))
	if errors.Is(err, pebble.ErrNotFound) {
		return buf[:0], false, nil
	}
	if err != nil {
		return buf[:0], false, fmt.Errorf("index: get group %s: %w", h.Short(), err)
	}
	seg, start, size, err := decodeGroupLoc(v)
	c.Close()
	if err != nil {
		return buf[:0], false, fmt.Errorf("index: get group %s: %w", h.Short(), err)
	}
	if off >= int(size) {
		return buf[:0], false, nil
	}
	n = min(n, int(size)-off)
	buf = append(buf[:0], make([]byte, n)...)
	got, err := db.chunks.readSpan(seg, start+uint64(off), buf)
	if err != nil {
		return buf[:0], false, err
	}
	if got < n {
		return buf[:0], false, fmt.Errorf("index: get group %s: %w: segment %d ends before offset %d",
			h.Short(), ErrCorrupt, seg, start+uint64(off)+uint64(n))
	}
	return buf, true, nil
}

// HasGroup reports whether group h is stored.
func (db *DB) HasGroup(h format.Hash) (bool, error) {
	if db.closed.Load() {
		return false, ErrClosed
	}
	return db.has(groupKey(h))
}
