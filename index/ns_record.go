package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/oashare/oashare/index/format"
)

// EntryType is the kind of a namespace entry.
type EntryType uint8

const (
	TypeFile    EntryType = 1
	TypeDir     EntryType = 2
	TypeSymlink EntryType = 3
	// Special files: metadata only, no content.
	TypeFifo    EntryType = 4
	TypeSocket  EntryType = 5
	TypeCharDev EntryType = 6
	TypeBlkDev  EntryType = 7
)

func (t EntryType) String() string {
	switch t {
	case TypeFile:
		return "file"
	case TypeDir:
		return "dir"
	case TypeSymlink:
		return "symlink"
	case TypeFifo:
		return "fifo"
	case TypeSocket:
		return "socket"
	case TypeCharDev:
		return "chardev"
	case TypeBlkDev:
		return "blkdev"
	}
	return fmt.Sprintf("EntryType(%d)", uint8(t))
}

func (t EntryType) valid() bool { return t >= TypeFile && t <= TypeBlkDev }

// RootID is the inode ID of the root directory. GetInode(RootID) returns a
// directory with mode 0o755 until a root inode has been committed.
const RootID uint64 = 1

// Inode is the metadata of one file, directory or symlink.
type Inode struct {
	ID      uint64
	Type    EntryType
	Mode    uint32 // permission bits only (mask 0o7777)
	Size    uint64
	MtimeNs int64
	CtimeNs int64
	Root    format.Hash // root of the file's content tree; opaque to index
	Depth   uint8       // depth of that tree; opaque to index
	Target  string      // symlink target, at most MaxTargetLen bytes
	Uid     uint32      // owner
	Gid     uint32      // group
	Rdev    uint32      // device number of a device node
	AtimeNs int64

	Version uint64        // stamp: the HLC of the commit that made it
	Origin  format.NodeID // stamp: the node that made it

	// BaseVersion and BaseOrigin name the version of this inode the change
	// was made on (zero for a new inode); Supersedes names further versions
	// it replaces (a merge, at most MaxSupersedes). See "Versions, heads
	// and conflict copies" in doc.go.
	BaseVersion uint64
	BaseOrigin  format.NodeID
	Supersedes  []VersionRef

	// Xattrs are the inode's extended attributes, sorted by name, each
	// name once (see Validate for the limits).
	Xattrs []Xattr
}

// Xattr is one extended attribute: a name with its namespace prefix
// ("user.mime_type") and a value of any bytes.
type Xattr struct {
	Name  string
	Value []byte
}

// Xattr returns the value of the attribute called name.
func (in *Inode) Xattr(name string) ([]byte, bool) {
	i, ok := in.xattrIndex(name)
	if !ok {
		return nil, false
	}
	return in.Xattrs[i].Value, true
}

func (in *Inode) xattrIndex(name string) (int, bool) {
	return slices.BinarySearchFunc(in.Xattrs, name, func(x Xattr, name string) int {
		return strings.Compare(x.Name, name)
	})
}

// SetXattr sets attribute name to a copy of value, keeping Xattrs sorted.
// The Xattrs slice is copied first, so inodes that shared it (a copy of
// in made before) keep theirs.
func (in *Inode) SetXattr(name string, value []byte) {
	i, ok := in.xattrIndex(name)
	xs := slices.Clone(in.Xattrs)
	x := Xattr{Name: name, Value: bytes.Clone(value)}
	if x.Value == nil {
		x.Value = []byte{}
	}
	if ok {
		xs[i] = x
	} else {
		xs = slices.Insert(xs, i, x)
	}
	in.Xattrs = xs
}

// RemoveXattr removes attribute name and reports whether it was there,
// copying Xattrs as SetXattr does.
func (in *Inode) RemoveXattr(name string) bool {
	i, ok := in.xattrIndex(name)
	if !ok {
		return false
	}
	in.Xattrs = slices.Delete(slices.Clone(in.Xattrs), i, i+1)
	if len(in.Xattrs) == 0 {
		in.Xattrs = nil
	}
	return true
}

// XattrBytes returns the bytes the attributes take against MaxXattrBytes:
// each name and value, plus one byte per name (the NUL that ends it in
// a listxattr answer).
func (in *Inode) XattrBytes() int {
	n := 0
	for _, x := range in.Xattrs {
		n += len(x.Name) + 1 + len(x.Value)
	}
	return n
}

// XattrListBytes returns the size of a listxattr answer listing every
// attribute's name, against MaxXattrList.
func (in *Inode) XattrListBytes() int {
	n := 0
	for _, x := range in.Xattrs {
		n += len(x.Name) + 1
	}
	return n
}

// VersionRef names one version of an inode or of a directory entry by its
// stamp.
type VersionRef struct {
	Version uint64
	Origin  format.NodeID
}

// IsZero reports whether r names no version.
func (r VersionRef) IsZero() bool { return r.Version == 0 && r.Origin.IsZero() }

// Ref returns the stamp of in.
func (in *Inode) Ref() VersionRef { return VersionRef{in.Version, in.Origin} }

// Base returns the version in was made on.
func (in *Inode) Base() VersionRef { return VersionRef{in.BaseVersion, in.BaseOrigin} }

// Dirent is one name in a directory. A Deleted dirent is a tombstone.
type Dirent struct {
	Parent  uint64
	Name    string
	Child   uint64
	Type    EntryType
	Deleted bool

	// Moved marks the tombstone a rename leaves at the old name: it never
	// comes back (see doc.go). Only meaningful with Deleted.
	Moved bool
	// ChildVersion and ChildOrigin, on a tombstone, name the version of
	// the child the deleter saw: an update the deleter had not seen keeps
	// the entry visible (see doc.go).
	ChildVersion uint64
	ChildOrigin  format.NodeID

	Version uint64        // stamp: the HLC of the commit that made it
	Origin  format.NodeID // stamp: the node that made it

	// BaseChild, BaseVersion and BaseOrigin name the entry version of the
	// same (Parent, Name) this one replaces: the entry the writer saw
	// (its Child and stamp), zero when it believed the name free. A
	// version no received version names is a head (see doc.go).
	BaseChild   uint64
	BaseVersion uint64
	BaseOrigin  format.NodeID
}

// Ref returns the stamp of entry version de.
func (de *Dirent) Ref() VersionRef { return VersionRef{de.Version, de.Origin} }

// Base returns the entry version de replaces (zero if none).
func (de *Dirent) Base() VersionRef { return VersionRef{de.BaseVersion, de.BaseOrigin} }

// Op is one change in a Record: exactly one of Inode, Dirent and Member
// is set. A record's ops are all Member ops (a membership change, see
// ns_members.go) or none.
type Op struct {
	Inode  *Inode
	Dirent *Dirent
	Member *Member
}

// Record is one atomic namespace change made by node Origin: its Seq-th
// change, made at hybrid logical clock HLC.
type Record struct {
	Origin format.NodeID
	Seq    uint64
	HLC    uint64
	Ops    []Op

	// Wire is the record as logged and sent to peers, set by Commit and
	// Receive: its encoding (EncodeRecord) followed, on a DB with an
	// identity, by its origin's signature (see ns_members.go).
	Wire []byte
}

// Limits on records; DecodeRecord and Validate enforce them.
const (
	MaxRecordOps   = 1024
	MaxNameLen     = 255
	MaxTargetLen   = 4096
	MaxRecordBytes = 1 << 20
	MaxSupersedes  = 8

	// MaxXattrName and MaxXattrValue are Linux's own limits on an
	// extended attribute's name and value (XATTR_NAME_MAX and
	// XATTR_SIZE_MAX); MaxXattrBytes bounds an inode's attributes
	// together (Inode.XattrBytes), so that a record touching a few
	// inodes stays far below MaxRecordBytes.
	// MaxXattrList is Linux's limit on the names of an inode's
	// attributes together, each with its NUL (XATTR_LIST_MAX).
	MaxXattrName  = 255
	MaxXattrValue = 64 << 10
	MaxXattrBytes = 128 << 10
	MaxXattrList  = 64 << 10
)

// ErrInvalid wraps every error about an op or record that breaks the rules
// of Validate.
var ErrInvalid = errors.New("index: invalid op")

// Validate checks op against the namespace rules: exactly one of Inode and
// Dirent; a type in 1..7 (a tombstone may carry type 0); names non-empty, at
// most MaxNameLen bytes, without '/' or NUL, not "." or ".."; Dirent.Parent
// not 0; Dirent.Child not 0 unless Deleted; Inode.ID not 0; Inode.Mode
// within 0o7777; a symlink target at most MaxTargetLen bytes.
func (op Op) Validate() error {
	set := 0
	for _, p := range []bool{op.Inode != nil, op.Dirent != nil, op.Member != nil} {
		if p {
			set++
		}
	}
	switch {
	case set == 0:
		return fmt.Errorf("%w: neither inode, dirent nor member", ErrInvalid)
	case set > 1:
		return fmt.Errorf("%w: more than one of inode, dirent and member", ErrInvalid)
	case op.Member != nil:
		return validateMember(op.Member)
	case op.Inode != nil:
		in := op.Inode
		switch {
		case in.ID == 0:
			return fmt.Errorf("%w: inode id 0", ErrInvalid)
		case !in.Type.valid():
			return fmt.Errorf("%w: inode %d: type %d", ErrInvalid, in.ID, in.Type)
		case in.Mode&^0o7777 != 0:
			return fmt.Errorf("%w: inode %d: mode %#o has bits outside 0o7777", ErrInvalid, in.ID, in.Mode)
		case in.ID&ConflictIDBit != 0:
			return fmt.Errorf("%w: inode %d: id has the conflict-copy bit", ErrInvalid, in.ID)
		case len(in.Target) > MaxTargetLen:
			return fmt.Errorf("%w: inode %d: symlink target is %d bytes, limit %d",
				ErrInvalid, in.ID, len(in.Target), MaxTargetLen)
		case len(in.Supersedes) > MaxSupersedes:
			return fmt.Errorf("%w: inode %d: supersedes %d versions, limit %d",
				ErrInvalid, in.ID, len(in.Supersedes), MaxSupersedes)
		}
		for _, r := range in.Supersedes {
			if r.IsZero() {
				return fmt.Errorf("%w: inode %d: supersedes a zero version", ErrInvalid, in.ID)
			}
		}
		return validateXattrs(in)
	default:
		d := op.Dirent
		if err := validName(d.Name); err != nil {
			return fmt.Errorf("%w: dirent in %d: %v", ErrInvalid, d.Parent, err)
		}
		switch {
		case d.Parent == 0:
			return fmt.Errorf("%w: dirent %q: parent 0", ErrInvalid, d.Name)
		case d.Child == 0 && !d.Deleted:
			return fmt.Errorf("%w: dirent %q: child 0", ErrInvalid, d.Name)
		case d.Child&ConflictIDBit != 0:
			return fmt.Errorf("%w: dirent %q: child %d has the conflict-copy bit", ErrInvalid, d.Name, d.Child)
		case d.BaseChild&ConflictIDBit != 0:
			return fmt.Errorf("%w: dirent %q: base child %d has the conflict-copy bit", ErrInvalid, d.Name, d.BaseChild)
		case d.Moved && !d.Deleted:
			return fmt.Errorf("%w: dirent %q: moved but not deleted", ErrInvalid, d.Name)
		case !d.Type.valid() && !(d.Deleted && d.Type == 0):
			return fmt.Errorf("%w: dirent %q: type %d", ErrInvalid, d.Name, d.Type)
		}
		return nil
	}
}

// validateXattrs checks an inode's extended attributes: names non-empty,
// at most MaxXattrName bytes, without NUL, strictly increasing; values at
// most MaxXattrValue bytes; XattrBytes at most MaxXattrBytes and
// XattrListBytes at most MaxXattrList.
func validateXattrs(in *Inode) error {
	for i, x := range in.Xattrs {
		switch {
		case x.Name == "" || len(x.Name) > MaxXattrName || strings.IndexByte(x.Name, 0) >= 0:
			return fmt.Errorf("%w: inode %d: xattr name %q: want 1..%d bytes without NUL",
				ErrInvalid, in.ID, x.Name, MaxXattrName)
		case len(x.Value) > MaxXattrValue:
			return fmt.Errorf("%w: inode %d: xattr %q is %d bytes, limit %d",
				ErrInvalid, in.ID, x.Name, len(x.Value), MaxXattrValue)
		case i > 0 && in.Xattrs[i-1].Name >= x.Name:
			return fmt.Errorf("%w: inode %d: xattr names not sorted or repeated at %q",
				ErrInvalid, in.ID, x.Name)
		}
	}
	if n := in.XattrBytes(); n > MaxXattrBytes {
		return fmt.Errorf("%w: inode %d: xattrs take %d bytes, limit %d",
			ErrInvalid, in.ID, n, MaxXattrBytes)
	}
	if n := in.XattrListBytes(); n > MaxXattrList {
		return fmt.Errorf("%w: inode %d: xattr names take %d bytes, limit %d",
			ErrInvalid, in.ID, n, MaxXattrList)
	}
	return nil
}

func validName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > MaxNameLen:
		return fmt.Errorf("name is %d bytes, limit %d", len(name), MaxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("name %q", name)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("name %q contains '/' or NUL", name)
	}
	return nil
}

// opKey identifies what an op writes, to find two ops of one record on the
// same key.
type opKey struct {
	dirent bool
	id     uint64
	name   string
	member format.NodeID
}

// validateOps checks a record's ops: 1..MaxRecordOps of them, each valid,
// no two on the same key (so the outcome never depends on op order).
func validateOps(ops []Op) error {
	if len(ops) == 0 {
		return fmt.Errorf("%w: record has no ops", ErrInvalid)
	}
	if len(ops) > MaxRecordOps {
		return fmt.Errorf("%w: record has %d ops, limit %d", ErrInvalid, len(ops), MaxRecordOps)
	}
	seen := make(map[opKey]struct{}, len(ops))
	for i, op := range ops {
		if err := op.Validate(); err != nil {
			return fmt.Errorf("op %d: %w", i, err)
		}
		if (op.Member != nil) != (ops[0].Member != nil) {
			return fmt.Errorf("%w: op %d: a record mixes member ops with others", ErrInvalid, i)
		}
		k := opKey{dirent: op.Dirent != nil}
		switch {
		case op.Member != nil:
			k.member = op.Member.ID
		case op.Inode != nil:
			k.id = op.Inode.ID
		default:
			k.id, k.name = op.Dirent.Parent, op.Dirent.Name
		}
		if _, dup := seen[k]; dup {
			return fmt.Errorf("%w: op %d: writes the same key as an earlier op", ErrInvalid, i)
		}
		seen[k] = struct{}{}
	}
	return nil
}

// validateRecord checks everything Apply and Commit need of a record.
func validateRecord(r *Record) error {
	if r.Origin.IsZero() {
		return fmt.Errorf("%w: record origin is zero", ErrInvalid)
	}
	if r.Seq == 0 {
		return fmt.Errorf("%w: record seq 0", ErrInvalid)
	}
	if err := validateOps(r.Ops); err != nil {
		return err
	}
	return validateStamps(r.Ops)
}

// ownStamps checks that every version a received record makes carries
// the record's own clock value and origin, as Commit stamps them: a
// member cannot stamp a version as another's, and a version's stamp says
// which record of its origin made it, which history pruning relies on
// (ns_prune.go).
func ownStamps(r *Record) error {
	for i, op := range r.Ops {
		var v uint64
		var o format.NodeID
		switch {
		case op.Member != nil:
			v, o = op.Member.Version, op.Member.Origin
		case op.Inode != nil:
			v, o = op.Inode.Version, op.Inode.Origin
		default:
			v, o = op.Dirent.Version, op.Dirent.Origin
		}
		if v != r.HLC || o != r.Origin {
			return fmt.Errorf("%w: op %d: stamped %d by %s, not the record's %d by %s",
				ErrInvalid, i, v, o.Short(), r.HLC, r.Origin.Short())
		}
	}
	return nil
}

// validateStamps checks that every version an op names (its base and, for
// an inode, what it supersedes) is older than the op itself, so the version
// graph of an inode or an entry has no cycles and its newest version is
// always a head.
func validateStamps(ops []Op) error {
	for i, op := range ops {
		in := op.Inode
		if op.Member != nil {
			continue // a member entry names no earlier version
		}
		if de := op.Dirent; de != nil {
			if b := de.Base(); !b.IsZero() && !newer(de.Version, de.Origin, b.Version, b.Origin) {
				return fmt.Errorf("%w: op %d: dirent %q: base %d is not older than version %d",
					ErrInvalid, i, de.Name, b.Version, de.Version)
			}
			continue
		}
		if b := in.Base(); !b.IsZero() && !newer(in.Version, in.Origin, b.Version, b.Origin) {
			return fmt.Errorf("%w: op %d: inode %d: base %d is not older than version %d",
				ErrInvalid, i, in.ID, b.Version, in.Version)
		}
		for _, r := range in.Supersedes {
			if !newer(in.Version, in.Origin, r.Version, r.Origin) {
				return fmt.Errorf("%w: op %d: inode %d: superseded %d is not older than version %d",
					ErrInvalid, i, in.ID, r.Version, in.Version)
			}
		}
	}
	return nil
}

// Encoding; the layout is documented in doc.go.

// formatV1 starts records and values; formatV2 starts an inode value with
// extended attributes (inode-body xattrs).
const (
	formatV1 = 1
	formatV2 = 2
)

const (
	opKindInode  = 1
	opKindDirent = 2
	opKindMember = 3
	// opKindInodeX is an inode with extended attributes: inode-body
	// xattrs. An inode without any is written as opKindInode, so records
	// without attributes are the same bytes as before they existed.
	opKindInodeX = 4
)

// EncodeRecord returns the binary form of r (see doc.go). It does not
// validate r; DecodeRecord will refuse a record that breaks the rules.
func EncodeRecord(r *Record) []byte {
	b := make([]byte, 0, 64+len(r.Ops)*64)
	b = append(b, formatV1)
	b = append(b, r.Origin[:]...)
	b = binary.AppendUvarint(b, r.Seq)
	b = binary.AppendUvarint(b, r.HLC)
	b = binary.AppendUvarint(b, uint64(len(r.Ops)))
	for _, op := range r.Ops {
		switch {
		case op.Inode != nil && len(op.Inode.Xattrs) > 0:
			b = append(b, opKindInodeX)
			b = appendXattrs(appendInode(b, op.Inode), op.Inode.Xattrs)
		case op.Inode != nil:
			b = append(b, opKindInode)
			b = appendInode(b, op.Inode)
		case op.Dirent != nil:
			b = append(b, opKindDirent)
			b = appendDirentKey(b, op.Dirent)
			b = appendDirentVal(b, op.Dirent)
		case op.Member != nil:
			b = append(b, opKindMember)
			b = append(b, op.Member.ID[:]...)
			b = appendMember(b, op.Member)
		default:
			b = append(b, 0) // an empty op; DecodeRecord rejects it
		}
	}
	return b
}

func appendInode(b []byte, in *Inode) []byte {
	b = binary.AppendUvarint(b, in.ID)
	b = append(b, byte(in.Type))
	b = binary.AppendUvarint(b, uint64(in.Mode))
	b = binary.AppendUvarint(b, in.Size)
	b = binary.AppendVarint(b, in.MtimeNs)
	b = binary.AppendVarint(b, in.CtimeNs)
	b = append(b, in.Root[:]...)
	b = append(b, in.Depth)
	b = binary.AppendUvarint(b, uint64(len(in.Target)))
	b = append(b, in.Target...)
	b = binary.AppendUvarint(b, uint64(in.Uid))
	b = binary.AppendUvarint(b, uint64(in.Gid))
	b = binary.AppendUvarint(b, uint64(in.Rdev))
	b = binary.AppendVarint(b, in.AtimeNs)
	b = binary.AppendUvarint(b, in.Version)
	b = append(b, in.Origin[:]...)
	b = binary.AppendUvarint(b, in.BaseVersion)
	b = append(b, in.BaseOrigin[:]...)
	b = binary.AppendUvarint(b, uint64(len(in.Supersedes)))
	for _, r := range in.Supersedes {
		b = binary.AppendUvarint(b, r.Version)
		b = append(b, r.Origin[:]...)
	}
	return b
}

func appendXattrs(b []byte, xs []Xattr) []byte {
	b = binary.AppendUvarint(b, uint64(len(xs)))
	for _, x := range xs {
		b = binary.AppendUvarint(b, uint64(len(x.Name)))
		b = append(b, x.Name...)
		b = binary.AppendUvarint(b, uint64(len(x.Value)))
		b = append(b, x.Value...)
	}
	return b
}

// appendMember appends a member entry but its ID (which, in a record,
// precedes it and, stored, is the key).
func appendMember(b []byte, m *Member) []byte {
	b = append(b, m.Key[:]...)
	b = binary.AppendUvarint(b, uint64(len(m.Name)))
	b = append(b, m.Name...)
	var flags byte
	if m.Removed {
		flags |= memberRemoved
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, m.UntilSeq)
	b = binary.AppendUvarint(b, m.Version)
	return append(b, m.Origin[:]...)
}

// Member flag bits.
const memberRemoved = 1 << 0

func appendDirentKey(b []byte, d *Dirent) []byte {
	b = binary.AppendUvarint(b, d.Parent)
	b = binary.AppendUvarint(b, uint64(len(d.Name)))
	return append(b, d.Name...)
}

func appendDirentVal(b []byte, d *Dirent) []byte {
	b = binary.AppendUvarint(b, d.Child)
	b = append(b, byte(d.Type))
	var flags byte
	if d.Deleted {
		flags |= direntDeleted
	}
	if d.Moved {
		flags |= direntMoved
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, d.Version)
	b = append(b, d.Origin[:]...)
	b = binary.AppendUvarint(b, d.ChildVersion)
	b = append(b, d.ChildOrigin[:]...)
	b = binary.AppendUvarint(b, d.BaseChild)
	b = binary.AppendUvarint(b, d.BaseVersion)
	return append(b, d.BaseOrigin[:]...)
}

// Dirent flag bits.
const (
	direntDeleted = 1 << 0
	direntMoved   = 1 << 1
)

// DecodeRecord parses bytes made by EncodeRecord, typically received from a
// peer. It checks every length against its limit and the bytes left before
// allocating, and returns an error wrapping ErrCorrupt for truncated,
// oversized or malformed input, or ErrInvalid for a well-formed record that
// breaks the rules of Validate.
func DecodeRecord(b []byte) (*Record, error) {
	if len(b) > MaxRecordBytes {
		return nil, fmt.Errorf("%w: record is %d bytes, limit %d", ErrCorrupt, len(b), MaxRecordBytes)
	}
	d := decoder{b: b, what: "record"}
	d.format()
	r := &Record{}
	copy(r.Origin[:], d.fixed(len(r.Origin), "origin"))
	r.Seq = d.uvarint("seq")
	r.HLC = d.uvarint("hlc")
	n := d.uvarint("op count")
	if d.err == nil && (n == 0 || n > MaxRecordOps) {
		d.fail("op count %d, want 1..%d", n, MaxRecordOps)
	}
	if d.err != nil {
		return nil, d.err
	}
	r.Ops = make([]Op, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		switch kind := d.u8("op kind"); {
		case d.err != nil:
		case kind == opKindInode, kind == opKindInodeX:
			in := &Inode{}
			d.inode(in)
			if kind == opKindInodeX {
				d.xattrs(in)
			}
			r.Ops = append(r.Ops, Op{Inode: in})
		case kind == opKindDirent:
			de := &Dirent{}
			de.Parent = d.uvarint("dirent parent")
			de.Name = d.str(MaxNameLen, "dirent name")
			d.direntVal(de)
			r.Ops = append(r.Ops, Op{Dirent: de})
		case kind == opKindMember:
			m := &Member{}
			copy(m.ID[:], d.fixed(len(m.ID), "member id"))
			d.member(m)
			r.Ops = append(r.Ops, Op{Member: m})
		default:
			d.fail("op %d: unknown kind %d", i, kind)
		}
	}
	d.end()
	if d.err != nil {
		return nil, d.err
	}
	if err := validateRecord(r); err != nil {
		return nil, err
	}
	return r, nil
}

func encodeInodeValue(in *Inode) []byte {
	if len(in.Xattrs) > 0 {
		b := make([]byte, 0, 96+len(in.Target)+in.XattrBytes()+4*len(in.Xattrs))
		return appendXattrs(appendInode(append(b, formatV2), in), in.Xattrs)
	}
	return appendInode(append(make([]byte, 0, 96+len(in.Target)), formatV1), in)
}

func decodeInodeValue(v []byte) (Inode, error) {
	d := decoder{b: v, what: "inode value"}
	f := d.u8("format")
	if d.err == nil && f != formatV1 && f != formatV2 {
		d.fail("unknown format %d", f)
	}
	var in Inode
	d.inode(&in)
	if f == formatV2 {
		d.xattrs(&in)
		if d.err == nil && len(in.Xattrs) == 0 {
			d.fail("format 2 without xattrs")
		}
	}
	d.end()
	if d.err == nil {
		if err := validateXattrs(&in); err != nil {
			return in, fmt.Errorf("%w: inode value: %v", ErrCorrupt, err)
		}
	}
	return in, d.err
}

func encodeDirentValue(de *Dirent) []byte {
	return appendDirentVal(append(make([]byte, 0, 80), formatV1), de)
}

// decodeDirentValue fills the stored fields of de (all but Parent and Name,
// which live in the key).
func decodeDirentValue(v []byte, de *Dirent) error {
	d := decoder{b: v, what: "dirent value"}
	d.format()
	d.direntVal(de)
	d.end()
	return d.err
}

// decoder reads fields from b, remembering the first error; after an error
// every read returns a zero value.
type decoder struct {
	b    []byte
	what string
	err  error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s: %s", ErrCorrupt, d.what, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) format() {
	if f := d.u8("format"); d.err == nil && f != formatV1 {
		d.fail("unknown format %d", f)
	}
}

func (d *decoder) end() {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
}

func (d *decoder) u8(field string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail("truncated at %s", field)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) fixed(n int, field string) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.fail("truncated at %s", field)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint(field string) uint64 {
	return readVarint(d, field, binary.Uvarint)
}

func (d *decoder) varint(field string) int64 {
	return readVarint(d, field, binary.Varint)
}

// readVarint reads one varint with read (binary.Uvarint or binary.Varint).
func readVarint[T int64 | uint64](d *decoder, field string, read func([]byte) (T, int)) T {
	if d.err != nil {
		return 0
	}
	v, n := read(d.b)
	if n <= 0 {
		if n == 0 {
			d.fail("truncated at %s", field)
		} else {
			d.fail("%s overflows 64 bits", field)
		}
		return 0
	}
	d.b = d.b[n:]
	return v
}

// str reads a uvarint length and that many bytes, checking the length
// against max and against the bytes left before allocating.
func (d *decoder) str(max int, field string) string {
	n := d.uvarint(field + " length")
	if d.err != nil {
		return ""
	}
	if n > uint64(max) {
		d.fail("%s is %d bytes, limit %d", field, n, max)
		return ""
	}
	return string(d.fixed(int(n), field))
}

func (d *decoder) inode(in *Inode) {
	in.ID = d.uvarint("inode id")
	in.Type = EntryType(d.u8("inode type"))
	mode := d.uvarint("inode mode")
	if d.err == nil && mode > 0o7777 {
		d.fail("inode mode %#o", mode)
	}
	in.Mode = uint32(mode)
	in.Size = d.uvarint("inode size")
	in.MtimeNs = d.varint("inode mtime")
	in.CtimeNs = d.varint("inode ctime")
	copy(in.Root[:], d.fixed(len(in.Root), "inode root"))
	in.Depth = d.u8("inode depth")
	in.Target = d.str(MaxTargetLen, "symlink target")
	in.Uid = d.u32("inode uid")
	in.Gid = d.u32("inode gid")
	in.Rdev = d.u32("inode rdev")
	in.AtimeNs = d.varint("inode atime")
	in.Version = d.uvarint("inode version")
	copy(in.Origin[:], d.fixed(len(in.Origin), "inode origin"))
	in.BaseVersion = d.uvarint("inode base version")
	copy(in.BaseOrigin[:], d.fixed(len(in.BaseOrigin), "inode base origin"))
	n := d.uvarint("inode supersedes count")
	if d.err == nil && n > MaxSupersedes {
		d.fail("inode supersedes %d versions, limit %d", n, MaxSupersedes)
	}
	if d.err != nil || n == 0 {
		return
	}
	in.Supersedes = make([]VersionRef, n)
	for i := range in.Supersedes {
		in.Supersedes[i].Version = d.uvarint("superseded version")
		copy(in.Supersedes[i].Origin[:], d.fixed(len(in.Supersedes[i].Origin), "superseded origin"))
	}
}

// xattrs reads an xattr list into in.Xattrs, checking the count and
// every length against its limit and the bytes left before allocating;
// the values are copied out of d's buffer. Validate checks the order.
func (d *decoder) xattrs(in *Inode) {
	n := d.uvarint("xattr count")
	if d.err == nil && (n == 0 || n > uint64(len(d.b))/2 || n > MaxXattrBytes/2) {
		d.fail("xattr count %d with %d bytes left", n, len(d.b))
	}
	if d.err != nil {
		return
	}
	in.Xattrs = make([]Xattr, n)
	total := 0
	for i := range in.Xattrs {
		x := &in.Xattrs[i]
		x.Name = d.str(MaxXattrName, "xattr name")
		vn := d.uvarint("xattr value length")
		if d.err == nil && vn > MaxXattrValue {
			d.fail("xattr value is %d bytes, limit %d", vn, MaxXattrValue)
		}
		x.Value = bytes.Clone(d.fixed(int(vn), "xattr value"))
		if x.Value == nil {
			x.Value = []byte{}
		}
		if total += len(x.Name) + 1 + len(x.Value); d.err == nil && total > MaxXattrBytes {
			d.fail("xattrs take more than %d bytes", MaxXattrBytes)
		}
		if d.err != nil {
			in.Xattrs = nil
			return
		}
	}
}

func (d *decoder) direntVal(de *Dirent) {
	de.Child = d.uvarint("dirent child")
	de.Type = EntryType(d.u8("dirent type"))
	switch flags := d.u8("dirent flags"); {
	case d.err != nil:
	case flags&^(direntDeleted|direntMoved) != 0:
		d.fail("dirent flags %#x", flags)
	default:
		de.Deleted = flags&direntDeleted != 0
		de.Moved = flags&direntMoved != 0
	}
	de.Version = d.uvarint("dirent version")
	copy(de.Origin[:], d.fixed(len(de.Origin), "dirent origin"))
	de.ChildVersion = d.uvarint("dirent child version")
	copy(de.ChildOrigin[:], d.fixed(len(de.ChildOrigin), "dirent child origin"))
	de.BaseChild = d.uvarint("dirent base child")
	de.BaseVersion = d.uvarint("dirent base version")
	copy(de.BaseOrigin[:], d.fixed(len(de.BaseOrigin), "dirent base origin"))
}

func (d *decoder) member(m *Member) {
	copy(m.Key[:], d.fixed(len(m.Key), "member key"))
	m.Name = d.str(MaxMemberName, "member name")
	switch flags := d.u8("member flags"); {
	case d.err != nil:
	case flags&^memberRemoved != 0:
		d.fail("member flags %#x", flags)
	default:
		m.Removed = flags&memberRemoved != 0
	}
	m.UntilSeq = d.uvarint("member until-seq")
	m.Version = d.uvarint("member version")
	copy(m.Origin[:], d.fixed(len(m.Origin), "member origin"))
}

// u32 reads a uvarint that must fit 32 bits.
func (d *decoder) u32(field string) uint32 {
	v := d.uvarint(field)
	if d.err == nil && v > 1<<32-1 {
		d.fail("%s %d exceeds 32 bits", field, v)
	}
	return uint32(v)
}
