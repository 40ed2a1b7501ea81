package index

import (
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oashare/oashare/index/format"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name.golden, a hex dump, or rewrites the
// file under -update. A difference means an encoding on disk and on the
// wire changed: records travel between peers and stay in every peer's log,
// so such a change needs a new format byte (see doc.go), and then
// go test ./index -run Golden -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	dump := hex.Dump(got)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(dump), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if dump != string(want) {
		t.Errorf("%s: the encoding changed; this changes the record format.\ngot:\n%s\nwant:\n%s", path, dump, want)
	}
}

// TestGoldenEncodings pins the bytes of a record (every op kind and field,
// limits included), of the stored inode and dirent values, of a pending
// version, and of a chunk log batch header and the chunk log state.
func TestGoldenEncodings(t *testing.T) {
	rec := sampleRecord()
	golden(t, "record", EncodeRecord(rec))
	golden(t, "record_small", EncodeRecord(&Record{Origin: format.NodeID{1}, Seq: 1, HLC: 2, Ops: []Op{fileDirent(RootID, "a", 2)}}))
	golden(t, "inode_value", encodeInodeValue(rec.Ops[0].Inode))
	golden(t, "dirent_value", encodeDirentValue(rec.Ops[5].Dirent))
	golden(t, "pending", encodePending(&Pending{ID: 42, Size: 1000, Root: format.Sum([]byte("new")), Depth: 1,
		OrigSize: 3, OrigRoot: format.Sum([]byte("old")), Base: VersionRef{Version: 77, Origin: format.NodeID{1, 2}},
		MtimeNs: -5, ContentChanged: true, AttrChange: AttrChange{SetMode: true, Mode: 0o640, SetGID: true, Gid: 1000,
			SetMtime: true, AtimeNs: 9, CtimeNs: 11}}))
	golden(t, "chunk_log_state", logState{first: 1, seg: 3, off: 1 << 33}.encode())
	golden(t, "group_location", encodeGroupLoc(nil, 7, 4096, 131072))
	golden(t, "chunk_location", location{seg: 2, off: 512, n: 8192}.encode(nil))
	m := memberOf(keyOf(1), "alpha")
	m.Member.Removed, m.Member.UntilSeq, m.Member.Version, m.Member.Origin = true, 9, 300, format.NodeID{3}
	golden(t, "record_member", EncodeRecord(&Record{Origin: format.NodeID{3}, Seq: 4, HLC: 300, Ops: []Op{m}}))
	golden(t, "member_value", encodeMemberValue(m.Member))
	n := Network{ID: [16]byte{1, 2}, Name: "home", Founder: m.Member.ID, FounderKey: m.Member.Key}
	golden(t, "network", encodeNetwork(&n))
	x := &Inode{ID: 7, Type: TypeFile, Mode: 0o644, Version: 9, Origin: format.NodeID{0xbb},
		Xattrs: []Xattr{{Name: "trusted.t", Value: []byte{}}, {Name: "user.a", Value: []byte("v")}}}
	golden(t, "record_xattrs", EncodeRecord(&Record{Origin: format.NodeID{0xbb}, Seq: 1, HLC: 9, Ops: []Op{{Inode: x}}}))
	golden(t, "inode_value_xattrs", encodeInodeValue(x))
}

// TestGoldenDecode: the pinned bytes decode to the values they were made
// from, so old logs stay readable.
func TestGoldenDecode(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "record.golden"))
	if err != nil {
		t.Fatal(err)
	}
	raw := undump(t, string(b))
	got, err := DecodeRecord(raw)
	if err != nil {
		t.Fatalf("the golden record does not decode: %v", err)
	}
	if string(EncodeRecord(got)) != string(raw) {
		t.Fatal("the golden record re-encodes to other bytes")
	}
}

// undump parses a hex.Dump back into bytes.
func undump(t *testing.T, dump string) []byte {
	t.Helper()
	var out []byte
	for _, line := range strings.Split(dump, "\n") {
		if len(line) < 10 {
			continue
		}
		for _, f := range strings.Fields(line[10:min(len(line), 58)]) {
			b, err := hex.DecodeString(f)
			if err != nil {
				t.Fatalf("bad dump line %q: %v", line, err)
			}
			out = append(out, b...)
		}
	}
	return out
}
