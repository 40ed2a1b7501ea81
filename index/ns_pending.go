package index

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble"

	"github.com/oashare/oashare/index/format"
)

// The pending journal ("p" keys) holds the file versions this node made
// and could not publish yet: their content is complete and durable in
// this node's store (and on whatever replicas took it), but some of it is
// on fewer than min(replicas, live nodes) nodes, so the close or fsync
// that made it returned EIO. The journal keeps the version across kernel
// forgets, unmounts, crashes and restarts; fusefs retries it in the
// background and publishes it with Commit(ops, Unsynced, id), which deletes the
// entry in the same batch as the record, so a version is never published
// twice nor lost between the two.
//
//	"p" id[8] → pending value (below)
//
//	pending value: format=1 flags[1] size:uv root[32] depth[1]
//	               origsize:uv origroot[32] origdepth[1]
//	               baseversion:uv baseorigin[16] mtime:sv
//	               mode:uv uid:uv gid:uv atime:sv ctime:sv
//	flags: bit 0 content changed, 1 mode set, 2 uid set, 3 gid set,
//	       4 atime set, 5 mtime set; other bits must be 0

// Pending is a file version waiting to be published: the state of the
// file's unpublished changes on this node (fusefs's fileState).
type Pending struct {
	ID uint64
	// The new content, and the content the changes were made on.
	Size      uint64
	Root      format.Hash
	Depth     uint8
	OrigSize  uint64
	OrigRoot  format.Hash
	OrigDepth uint8
	// Base is the inode version the changes were read from.
	Base    VersionRef
	MtimeNs int64
	// ContentChanged: the bytes changed (not only attributes).
	ContentChanged bool
	// Attribute changes made with the content, applied over the inode
	// current when the version is published.
	AttrChange
}

// AttrChange is a set of attribute changes (chmod, chown, utimens) made
// to a file while it has unpublished writes, kept to be published with
// them in one version. SetMtime says the version's MtimeNs was set
// explicitly; CtimeNs is when the last change was made.
type AttrChange struct {
	SetMode, SetUID, SetGID, SetAtime, SetMtime bool
	Mode, Uid, Gid                              uint32
	AtimeNs, CtimeNs                            int64
}

// Changed reports whether any attribute change was made.
func (a *AttrChange) Changed() bool {
	return a.CtimeNs != 0 || a.SetMode || a.SetUID || a.SetGID || a.SetAtime || a.SetMtime
}

// Apply writes the changes into ino (mtime aside: it goes with the
// content), and raises its ctime to CtimeNs.
func (a *AttrChange) Apply(ino *Inode) {
	if !a.Changed() {
		return
	}
	if a.SetMode {
		ino.Mode = a.Mode
	}
	if a.SetUID {
		ino.Uid = a.Uid
	}
	if a.SetGID {
		ino.Gid = a.Gid
	}
	if a.SetAtime {
		ino.AtimeNs = a.AtimeNs
	}
	ino.CtimeNs = max(ino.CtimeNs, a.CtimeNs)
}

const (
	pendContent = 1 << iota
	pendMode
	pendUID
	pendGID
	pendAtime
	pendMtime
	pendAll = pendContent | pendMode | pendUID | pendGID | pendAtime | pendMtime
)

func pendingKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixPending}, id)
}

func encodePending(p *Pending) []byte {
	var flags byte
	for i, set := range []bool{p.ContentChanged, p.SetMode, p.SetUID, p.SetGID, p.SetAtime, p.SetMtime} {
		if set {
			flags |= 1 << i
		}
	}
	b := []byte{formatV1, flags}
	b = binary.AppendUvarint(b, p.Size)
	b = append(b, p.Root[:]...)
	b = append(b, p.Depth)
	b = binary.AppendUvarint(b, p.OrigSize)
	b = append(b, p.OrigRoot[:]...)
	b = append(b, p.OrigDepth)
	b = binary.AppendUvarint(b, p.Base.Version)
	b = append(b, p.Base.Origin[:]...)
	b = binary.AppendVarint(b, p.MtimeNs)
	b = binary.AppendUvarint(b, uint64(p.Mode))
	b = binary.AppendUvarint(b, uint64(p.Uid))
	b = binary.AppendUvarint(b, uint64(p.Gid))
	b = binary.AppendVarint(b, p.AtimeNs)
	return binary.AppendVarint(b, p.CtimeNs)
}

func decodePending(id uint64, v []byte) (Pending, error) {
	d := decoder{b: v, what: "pending version"}
	d.format()
	p := Pending{ID: id}
	flags := d.u8("flags")
	if d.err == nil && flags&^pendAll != 0 {
		d.fail("flags %#x", flags)
	}
	p.ContentChanged, p.SetMode, p.SetUID = flags&pendContent != 0, flags&pendMode != 0, flags&pendUID != 0
	p.SetGID, p.SetAtime, p.SetMtime = flags&pendGID != 0, flags&pendAtime != 0, flags&pendMtime != 0
	p.Size = d.uvarint("size")
	copy(p.Root[:], d.fixed(len(p.Root), "root"))
	p.Depth = d.u8("depth")
	p.OrigSize = d.uvarint("orig size")
	copy(p.OrigRoot[:], d.fixed(len(p.OrigRoot), "orig root"))
	p.OrigDepth = d.u8("orig depth")
	p.Base.Version = d.uvarint("base version")
	copy(p.Base.Origin[:], d.fixed(len(p.Base.Origin), "base origin"))
	p.MtimeNs = d.varint("mtime")
	p.Mode = d.u32("mode")
	p.Uid = d.u32("uid")
	p.Gid = d.u32("gid")
	p.AtimeNs = d.varint("atime")
	p.CtimeNs = d.varint("ctime")
	d.end()
	if d.err == nil && p.Mode > 0o7777 {
		d.fail("mode %#o", p.Mode)
	}
	return p, d.err
}

// PutPending records p durably (a synced write), replacing any entry of
// the same file.
func (db *DB) PutPending(p Pending) error {
	if db.closed.Load() {
		return ErrClosed
	}
	if err := db.pdb.Set(pendingKey(p.ID), encodePending(&p), pebble.Sync); err != nil {
		return fmt.Errorf("index: record pending version of %d: %w", p.ID, err)
	}
	return nil
}

// DeletePending forgets the pending version of file id (synced): the
// file was deleted here, so nothing is left to publish.
func (db *DB) DeletePending(id uint64) error {
	if db.closed.Load() {
		return ErrClosed
	}
	if err := db.pdb.Delete(pendingKey(id), pebble.Sync); err != nil {
		return fmt.Errorf("index: forget pending version of %d: %w", id, err)
	}
	return nil
}

// Pendings returns every pending version, by file ID.
func (db *DB) Pendings() ([]Pending, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	lo := []byte{prefixPending}
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []Pending
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 9 {
			return nil, fmt.Errorf("%w: pending key %x", ErrCorrupt, k)
		}
		p, err := decodePending(binary.BigEndian.Uint64(k[1:]), it.Value())
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, it.Error()
}
