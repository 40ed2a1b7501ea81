package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/oashare/oashare/index/format"
)

func sampleRecord() *Record {
	origin := format.NodeID{0xaa, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xff}
	return &Record{
		Origin: origin,
		Seq:    math.MaxUint64,
		HLC:    1_700_000_000_000<<16 | 3,
		Ops: []Op{
			{Inode: &Inode{ID: math.MaxUint64 &^ ConflictIDBit, Type: TypeFile, Mode: 0o7777, Size: 1 << 40,
				MtimeNs: -5, CtimeNs: math.MaxInt64, Root: format.Sum([]byte("root")), Depth: 3,
				Uid: math.MaxUint32, Gid: 100, AtimeNs: -7, Version: 17, Origin: origin,
				BaseVersion: 16, BaseOrigin: format.NodeID{0xff},
				Supersedes: []VersionRef{{1, format.NodeID{1}}, {2, format.NodeID{2}}, {3, format.NodeID{3}}, {4, format.NodeID{4}},
					{5, format.NodeID{5}}, {6, format.NodeID{6}}, {7, format.NodeID{7}}, {17, format.NodeID{0xaa}}}}},
			{Inode: &Inode{ID: 3, Type: TypeCharDev, Mode: 0o600, Rdev: 0x10305}},
			{Inode: &Inode{ID: 2, Type: TypeSymlink, Mode: 0o777, Target: strings.Repeat("t", MaxTargetLen),
				MtimeNs: math.MinInt64}},
			{Dirent: &Dirent{Parent: RootID, Name: "héllo wörld", Child: 2, Type: TypeSymlink,
				Version: 1, Origin: format.NodeID{1}}},
			{Dirent: &Dirent{Parent: 9, Name: strings.Repeat("n", MaxNameLen), Deleted: true}},
			{Dirent: &Dirent{Parent: 9, Name: "gone", Child: 4, Type: TypeFile, Deleted: true, Moved: true,
				ChildVersion: math.MaxUint64, ChildOrigin: format.NodeID{0xee}, Version: 3, Origin: origin,
				BaseChild: 4, BaseVersion: 2, BaseOrigin: format.NodeID{0xdd}}},
		},
	}
}

// xattrRecord is a record with an inode carrying extended attributes at
// their limits: a value of MaxXattrValue bytes, an empty value, a name of
// MaxXattrName bytes.
func xattrRecord() *Record {
	origin := format.NodeID{0xbb, 1}
	return &Record{Origin: origin, Seq: 3, HLC: 9, Ops: []Op{
		{Inode: &Inode{ID: 7, Type: TypeFile, Mode: 0o644, Version: 9, Origin: origin, Xattrs: []Xattr{
			{Name: "security.selinux", Value: []byte("system_u:object_r:user_home_t:s0\x00")},
			{Name: "trusted.x", Value: []byte{}},
			{Name: "user.big", Value: bytes.Repeat([]byte{0xa5}, MaxXattrValue)},
			{Name: "user." + strings.Repeat("n", MaxXattrName-5), Value: []byte{0, 1, 2}},
		}}},
		{Inode: &Inode{ID: 8, Type: TypeDir, Mode: 0o755, Version: 9, Origin: origin}},
	}}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range []*Record{
		sampleRecord(),
		xattrRecord(),
		{Origin: format.NodeID{1}, Seq: 1, Ops: []Op{fileDirent(RootID, "a", 2)}},
	} {
		b := EncodeRecord(r)
		got, err := DecodeRecord(b)
		if err != nil {
			t.Fatalf("DecodeRecord: %v", err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, r)
		}
		if !bytes.Equal(EncodeRecord(got), b) {
			t.Fatal("re-encoding changed the bytes")
		}
	}
}

// recordBytes builds a record by hand, field by field, for malformed inputs.
type recordBytes struct{ b []byte }

func newRecordBytes(nops uint64) *recordBytes {
	r := &recordBytes{b: []byte{formatV1}}
	r.b = append(r.b, make([]byte, 15)...)
	r.b = append(r.b, 1) // origin 00…01
	r.uv(1)              // seq
	r.uv(2)              // hlc
	r.uv(nops)
	return r
}

func (r *recordBytes) uv(v uint64) *recordBytes   { r.b = binary.AppendUvarint(r.b, v); return r }
func (r *recordBytes) raw(p ...byte) *recordBytes { r.b = append(r.b, p...); return r }
func (r *recordBytes) str(s string) *recordBytes  { return r.uv(uint64(len(s))).raw([]byte(s)...) }

// dirent appends a dirent op with the given name and flags, stamped
// version 1 and based on nothing.
func (r *recordBytes) dirent(name string, deleted byte) *recordBytes {
	return r.direntBase(name, deleted, 0)
}

// direntBase appends a dirent op stamped version 1 and based on version
// base (of origin 00…).
func (r *recordBytes) direntBase(name string, deleted byte, base uint64) *recordBytes {
	r.raw(opKindDirent).uv(RootID).str(name).uv(5).raw(byte(TypeFile), deleted).uv(1)
	r.raw(make([]byte, 16)...).uv(0).raw(make([]byte, 16)...)
	return r.uv(5).uv(base).raw(make([]byte, 16)...)
}

// inode appends a file inode op with the given stamp, base and supersedes
// count (each superseded entry is version 1 of origin 00…).
func (r *recordBytes) inode(id, version, base, nsup uint64) *recordBytes {
	return r.inodeOf(opKindInode, id, version, base, nsup)
}

func (r *recordBytes) inodeOf(kind byte, id, version, base, nsup uint64) *recordBytes {
	r.raw(kind).uv(id).raw(byte(TypeFile)).uv(0o644).uv(0).uv(0).uv(0).raw(make([]byte, 33)...).
		uv(0).uv(0).uv(0).uv(0).uv(0).uv(version).raw(make([]byte, 16)...).uv(base).raw(make([]byte, 16)...).uv(nsup)
	for range nsup {
		r.uv(1).raw(make([]byte, 16)...)
	}
	return r
}

// inodeX appends a file inode op with extended attributes, given as
// name, value pairs in the order to write them.
func (r *recordBytes) inodeX(kv ...string) *recordBytes {
	r.inodeOf(opKindInodeX, 5, 9, 1, 0).uv(uint64(len(kv) / 2))
	for i := 0; i+1 < len(kv); i += 2 {
		r.str(kv[i]).str(kv[i+1])
	}
	return r
}

func TestDecodeRecordBad(t *testing.T) {
	valid := EncodeRecord(sampleRecord())
	overflow := bytes.Repeat([]byte{0xff}, 10)
	overflow = append(overflow, 0x01)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrCorrupt},
		{"bad format", append([]byte{2}, valid[1:]...), ErrCorrupt},
		{"format 0", append([]byte{0}, valid[1:]...), ErrCorrupt},
		{"trailing byte", append(append([]byte(nil), valid...), 0), ErrCorrupt},
		{"oversized", make([]byte, MaxRecordBytes+1), ErrCorrupt},
		{"zero ops", newRecordBytes(0).b, ErrCorrupt},
		{"too many ops", newRecordBytes(MaxRecordOps + 1).b, ErrCorrupt},
		{"huge op count", newRecordBytes(math.MaxUint64).b, ErrCorrupt},
		{"ops missing", newRecordBytes(2).dirent("a", 0).b, ErrCorrupt},
		{"seq overflows", append(append([]byte{formatV1}, make([]byte, 16)...), overflow...), ErrCorrupt},
		{"unknown op kind", newRecordBytes(1).raw(3).b, ErrCorrupt},
		{"op kind 0", newRecordBytes(1).raw(0).b, ErrCorrupt},
		{"name too long", newRecordBytes(1).dirent(strings.Repeat("x", MaxNameLen+1), 0).b, ErrCorrupt},
		{"name longer than input", newRecordBytes(1).raw(opKindDirent).uv(RootID).uv(200).raw('a', 'b').b, ErrCorrupt},
		{"name length huge", newRecordBytes(1).raw(opKindDirent).uv(RootID).uv(math.MaxUint64).b, ErrCorrupt},
		{"dirent flags 4", newRecordBytes(1).dirent("a", 4).b, ErrCorrupt},
		{"moved, not deleted", newRecordBytes(1).dirent("a", 2).b, ErrInvalid},
		{"supersedes 9", newRecordBytes(1).inode(5, 9, 1, MaxSupersedes+1).b, ErrCorrupt},
		{"base not older", newRecordBytes(1).inode(5, 9, 9, 0).b, ErrInvalid},
		{"superseded not older", newRecordBytes(1).inode(5, 1, 0, 1).b, ErrInvalid},
		{"conflict-copy id", newRecordBytes(1).inode(ConflictIDBit|5, 9, 1, 0).b, ErrInvalid},
		{"target too long", newRecordBytes(1).raw(opKindInode).uv(5).raw(byte(TypeSymlink)).uv(0o777).uv(0).
			uv(0).uv(0).raw(make([]byte, 33)...).uv(MaxTargetLen + 1).b, ErrCorrupt},
		{"mode too big", newRecordBytes(1).raw(opKindInode).uv(5).raw(byte(TypeFile)).uv(0o10000).b, ErrCorrupt},
		{"invalid name", newRecordBytes(1).dirent("..", 0).b, ErrInvalid},
		{"name with slash", newRecordBytes(1).dirent("a/b", 0).b, ErrInvalid},
		{"dirent base not older", newRecordBytes(1).direntBase("a", 0, 1).b, ErrInvalid},
		{"same key twice", newRecordBytes(2).dirent("a", 0).dirent("a", 1).b, ErrInvalid},
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: oashare\r\n\r\n"), ErrCorrupt},
		{"xattrs unsorted", newRecordBytes(1).inodeX("user.b", "1", "user.a", "2").b, ErrInvalid},
		{"xattr twice", newRecordBytes(1).inodeX("user.a", "1", "user.a", "2").b, ErrInvalid},
		{"xattr empty name", newRecordBytes(1).inodeX("", "1").b, ErrInvalid},
		{"xattr name with NUL", newRecordBytes(1).inodeX("user.a\x00b", "1").b, ErrInvalid},
		{"xattr name too long", newRecordBytes(1).inodeX("user."+strings.Repeat("n", MaxXattrName-4), "1").b, ErrCorrupt},
		{"xattr value too long", newRecordBytes(1).inodeX("user.a", strings.Repeat("v", MaxXattrValue+1)).b, ErrCorrupt},
		{"xattr count 0", newRecordBytes(1).inodeX().b, ErrCorrupt},
		{"xattr count huge", newRecordBytes(1).inodeOf(opKindInodeX, 5, 9, 1, 0).uv(math.MaxUint64).b, ErrCorrupt},
		{"xattr count past input", newRecordBytes(1).inodeOf(opKindInodeX, 5, 9, 1, 0).uv(1000).str("user.a").str("1").b, ErrCorrupt},
		{"xattr value length huge", newRecordBytes(1).inodeOf(opKindInodeX, 5, 9, 1, 0).uv(1).str("user.a").uv(math.MaxUint64).b, ErrCorrupt},
		{"xattrs over the total", newRecordBytes(1).inodeX("user.a", strings.Repeat("v", MaxXattrValue),
			"user.b", strings.Repeat("v", MaxXattrValue)).b, ErrCorrupt},
		{"xattr names over the list limit", newRecordBytes(1).inodeX(manyXattrs(300)...).b, ErrInvalid},
	}
	// Every proper prefix of a valid record is truncated.
	for n := 0; n < len(valid); n++ {
		tests = append(tests, struct {
			name string
			in   []byte
			want error
		}{"truncated", valid[:n], ErrCorrupt})
	}
	for _, tc := range tests {
		r, err := DecodeRecord(tc.in)
		if err == nil || r != nil {
			t.Errorf("%s (%d bytes): DecodeRecord = %v, %v; want error", tc.name, len(tc.in), r, err)
			continue
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("%s (%d bytes): err = %v; want %v", tc.name, len(tc.in), err, tc.want)
		}
	}
	// The hand-built encoder agrees with EncodeRecord on a good record.
	if _, err := DecodeRecord(newRecordBytes(3).dirent("a", 0).dirent("b", 3).inode(5, 9, 8, MaxSupersedes).b); err != nil {
		t.Fatalf("hand-built valid record: %v", err)
	}
	if _, err := DecodeRecord(newRecordBytes(1).inodeX("user.a", "", "user.b", "2").b); err != nil {
		t.Fatalf("hand-built valid record with xattrs: %v", err)
	}
	if _, err := DecodeRecord(newRecordBytes(1).inodeX(manyXattrs(250)...).b); err != nil {
		t.Fatalf("hand-built record with xattr names just within the list limit: %v", err)
	}
}

// manyXattrs returns n attributes with 255-byte names, sorted, values
// empty: 256 bytes each in a listxattr answer.
func manyXattrs(n int) []string {
	var kv []string
	for i := range n {
		name := fmt.Sprintf("user.%04d", i)
		kv = append(kv, name+strings.Repeat("n", MaxXattrName-len(name)), "")
	}
	return kv
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		op   Op
		ok   bool
	}{
		{"file inode", fileInode(5, 10), true},
		{"root inode", Op{Inode: &Inode{ID: RootID, Type: TypeDir, Mode: 0o755}}, true},
		{"symlink", Op{Inode: &Inode{ID: 5, Type: TypeSymlink, Target: strings.Repeat("x", MaxTargetLen)}}, true},
		{"dirent", fileDirent(RootID, "a", 5), true},
		{"max name", fileDirent(RootID, strings.Repeat("n", MaxNameLen), 5), true},
		{"dot prefix", fileDirent(RootID, ".hidden", 5), true},
		{"three dots", fileDirent(RootID, "...", 5), true},
		{"tombstone", Op{Dirent: &Dirent{Parent: RootID, Name: "a", Deleted: true}}, true},
		{"typed tombstone", Op{Dirent: &Dirent{Parent: RootID, Name: "a", Type: TypeDir, Deleted: true}}, true},

		{"empty op", Op{}, false},
		{"both", Op{Inode: fileInode(5, 1).Inode, Dirent: fileDirent(RootID, "a", 5).Dirent}, false},
		{"inode id 0", fileInode(0, 1), false},
		{"inode type 0", Op{Inode: &Inode{ID: 5}}, false},
		{"inode type 8", Op{Inode: &Inode{ID: 5, Type: 8}}, false},
		{"inode type fifo", Op{Inode: &Inode{ID: 5, Type: TypeFifo}}, true},
		{"mode bits", Op{Inode: &Inode{ID: 5, Type: TypeFile, Mode: 0o100644}}, false},
		{"target too long", Op{Inode: &Inode{ID: 5, Type: TypeSymlink, Target: strings.Repeat("x", MaxTargetLen+1)}}, false},
		{"empty name", fileDirent(RootID, "", 5), false},
		{"dot", fileDirent(RootID, ".", 5), false},
		{"dotdot", fileDirent(RootID, "..", 5), false},
		{"slash", fileDirent(RootID, "a/b", 5), false},
		{"nul", fileDirent(RootID, "a\x00b", 5), false},
		{"name too long", fileDirent(RootID, strings.Repeat("n", MaxNameLen+1), 5), false},
		{"parent 0", fileDirent(0, "a", 5), false},
		{"child 0", fileDirent(RootID, "a", 0), false},
		{"dirent type 0", Op{Dirent: &Dirent{Parent: RootID, Name: "a", Child: 5}}, false},
		{"dirent type 9", Op{Dirent: &Dirent{Parent: RootID, Name: "a", Child: 5, Type: 9}}, false},
		{"tombstone type 9", Op{Dirent: &Dirent{Parent: RootID, Name: "a", Type: 9, Deleted: true}}, false},
	}
	for _, tc := range tests {
		err := tc.op.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%s: Validate = %v; want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: error %v does not wrap ErrInvalid", tc.name, err)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(EncodeRecord(sampleRecord()))
	f.Add(EncodeRecord(&Record{Origin: format.NodeID{1}, Seq: 1, HLC: 1, Ops: []Op{fileDirent(RootID, "a", 2)}}))
	f.Add(newRecordBytes(2).dirent("a", 0).dirent("b", 1).b)
	f.Add(newRecordBytes(2).inode(5, 9, 8, 2).dirent("b", 3).b)
	f.Add(newRecordBytes(1).inodeX("user.a", "1", "user.b", "").b)
	f.Add([]byte{formatV1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord(b)
		if err != nil {
			if r != nil {
				t.Fatal("record returned with an error")
			}
			return
		}
		// A decoded record is valid, and survives a round trip unchanged.
		if err := validateRecord(r); err != nil {
			t.Fatalf("decoded an invalid record: %v", err)
		}
		enc := EncodeRecord(r)
		if len(enc) > len(b) {
			t.Fatalf("re-encoding grew from %d to %d bytes", len(b), len(enc))
		}
		r2, err := DecodeRecord(enc)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", r, r2)
		}
	})
}
