package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/oashare/oashare/index/format"
)

func TestRootInode(t *testing.T) {
	db := openMem(t, nil)
	in, ok, err := db.GetInode(RootID)
	if err != nil || !ok || in.ID != RootID || in.Type != TypeDir || in.Mode != 0o755 {
		t.Fatalf("GetInode(RootID) = %+v, %v, %v; want synthetic dir 0o755", in, ok, err)
	}
	mustCommit(t, db, Op{Inode: &Inode{ID: RootID, Type: TypeDir, Mode: 0o700}})
	if in, _, _ := db.GetInode(RootID); in.Mode != 0o700 || in.Version == 0 {
		t.Fatalf("stored root = %+v; want mode 0o700, stamped", in)
	}
	if _, ok, err := db.GetInode(99); ok || err != nil {
		t.Fatalf("GetInode(99) = %v, %v; want absent", ok, err)
	}
}

func TestCommitAndRead(t *testing.T) {
	db := openMem(t, nil)
	db.wallMs = func() int64 { return 1000 }
	fileID, dirID := db.NewID(), db.NewID()
	ops := []Op{
		{Inode: &Inode{ID: fileID, Type: TypeFile, Mode: 0o644, Size: 600, MtimeNs: 5, CtimeNs: 6,
			Root: format.Sum([]byte("tree")), Depth: 1}},
		{Inode: &Inode{ID: dirID, Type: TypeDir, Mode: 0o755}},
		{Dirent: &Dirent{Parent: RootID, Name: "notes.txt", Child: fileID, Type: TypeFile}},
		{Dirent: &Dirent{Parent: RootID, Name: "docs", Child: dirID, Type: TypeDir}},
	}
	rec := mustCommit(t, db, ops...)
	if rec.Origin != db.NodeID() || rec.Seq != 1 || rec.HLC != 1000<<16 || len(rec.Ops) != 4 {
		t.Fatalf("record = %+v", rec)
	}
	if ops[0].Inode.Version != 0 || ops[2].Dirent.Version != 0 {
		t.Fatal("Commit modified the caller's ops")
	}
	for i, op := range rec.Ops {
		var v uint64
		var o format.NodeID
		if op.Inode != nil {
			v, o = op.Inode.Version, op.Inode.Origin
		} else {
			v, o = op.Dirent.Version, op.Dirent.Origin
		}
		if v != rec.HLC || o != db.NodeID() {
			t.Errorf("op %d stamped (%d, %s); want (%d, %s)", i, v, o.Short(), rec.HLC, db.NodeID().Short())
		}
	}

	in, ok, err := db.GetInode(fileID)
	if err != nil || !ok || !reflect.DeepEqual(in, *rec.Ops[0].Inode) {
		t.Fatalf("GetInode = %+v, %v, %v; want %+v", in, ok, err, *rec.Ops[0].Inode)
	}
	de, ok, err := db.LookupDirent(RootID, "notes.txt")
	if err != nil || !ok || !reflect.DeepEqual(de, *rec.Ops[2].Dirent) {
		t.Fatalf("LookupDirent = %+v, %v, %v; want %+v", de, ok, err, *rec.Ops[2].Dirent)
	}
	if _, ok, _ := db.LookupDirent(RootID, "notes"); ok {
		t.Fatal("LookupDirent found a prefix of a name")
	}
	if _, ok, _ := db.LookupDirent(dirID, "notes.txt"); ok {
		t.Fatal("LookupDirent found an entry of another directory")
	}
	ents, err := db.ReadDir(RootID)
	if err != nil {
		t.Fatal(err)
	}
	want := []Dirent{*rec.Ops[3].Dirent, *rec.Ops[2].Dirent} // "docs" < "notes.txt"
	if !reflect.DeepEqual(ents, want) {
		t.Fatalf("ReadDir = %+v; want %+v", ents, want)
	}
	if ents, err := db.ReadDir(dirID); err != nil || len(ents) != 0 {
		t.Fatalf("ReadDir(empty) = %v, %v", ents, err)
	}

	rec2 := mustCommit(t, db, fileInode(fileID, 700))
	if rec2.Seq != 2 || rec2.HLC != rec.HLC+1 {
		t.Fatalf("second record seq %d hlc %d; want 2, %d", rec2.Seq, rec2.HLC, rec.HLC+1)
	}
	if in, _, _ := db.GetInode(fileID); in.Size != 700 {
		t.Fatalf("size after update = %d", in.Size)
	}
	if vv := db.VersionVector(); vv[db.NodeID()] != 2 {
		t.Fatalf("VersionVector = %v", vv)
	}
}

func TestCommitInvalid(t *testing.T) {
	db := openMem(t, nil)
	bigTarget := string(make([]byte, MaxTargetLen))
	var huge []Op
	for i := range MaxRecordOps {
		huge = append(huge, Op{Inode: &Inode{ID: uint64(i + 2), Type: TypeSymlink, Target: bigTarget}})
	}
	for name, ops := range map[string][]Op{
		"no ops":       nil,
		"invalid op":   {fileDirent(RootID, "a/b", 5)},
		"same dirent":  {fileDirent(RootID, "a", 5), fileDirent(RootID, "a", 6)},
		"same inode":   {fileInode(5, 1), fileInode(5, 2)},
		"too many ops": append(huge, fileInode(5, 1)),
		"too big":      huge,
	} {
		if _, err := db.Commit(ops, Synced); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Commit err = %v; want ErrInvalid", name, err)
		}
	}
	if vv := db.VersionVector(); len(vv) != 0 {
		t.Fatalf("a failed Commit changed the version vector: %v", vv)
	}
	// The same name in two directories is two keys.
	mustCommit(t, db, fileDirent(RootID, "a", 5), fileDirent(7, "a", 6))
}

func TestReadDirOrder(t *testing.T) {
	db := openMem(t, nil)
	names := []string{"zeta", "b", "a", "B", "aa", "é", "a b", "~", "0", "A"}
	for _, n := range names {
		mustCommit(t, db, fileDirent(RootID, n, 100))
	}
	// Entries of neighbouring directories must not leak in.
	mustCommit(t, db, fileDirent(RootID+1, "x", 100), fileDirent(RootID-1+math.MaxUint64, "y", 100))
	ents, err := db.ReadDir(RootID)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name)
	}
	want := []string{"0", "A", "B", "a", "a b", "aa", "b", "zeta", "~", "é"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ReadDir order = %q; want %q", got, want)
	}
	if ents, _ := db.ReadDir(math.MaxUint64); len(ents) != 1 || ents[0].Name != "y" {
		t.Fatalf("ReadDir(MaxUint64) = %+v", ents)
	}
}

func TestTombstones(t *testing.T) {
	db := openMem(t, nil)
	db.wallMs = func() int64 { return 5000 }
	create := mustCommit(t, db, fileDirent(RootID, "gone", 10), fileDirent(RootID, "kept", 11))
	gone := entryRef(create)
	mustCommit(t, db, Op{Dirent: &Dirent{Parent: RootID, Name: "gone", Deleted: true,
		BaseChild: 10, BaseVersion: gone.Version, BaseOrigin: gone.Origin}})
	if _, ok, err := db.LookupDirent(RootID, "gone"); ok || err != nil {
		t.Fatalf("LookupDirent(deleted) = %v, %v", ok, err)
	}
	ents, _ := db.ReadDir(RootID)
	if len(ents) != 1 || ents[0].Name != "kept" {
		t.Fatalf("ReadDir = %+v; want only kept", ents)
	}

	// A version the tombstone names, arriving after it, must not
	// resurrect the name.
	peer := format.NewNodeID()
	seen := &Record{Origin: peer, Seq: 1, HLC: create.HLC, Ops: []Op{{Dirent: &Dirent{
		Parent: RootID, Name: "other", Child: 12, Type: TypeFile, Version: create.HLC, Origin: peer}}}}
	mustApply(t, db, seen)
	del2 := mustCommit(t, db, Op{Dirent: &Dirent{Parent: RootID, Name: "late", Deleted: true,
		BaseChild: 14, BaseVersion: create.HLC, BaseOrigin: peer}})
	late := &Record{Origin: peer, Seq: 2, HLC: create.HLC, Ops: []Op{{Dirent: &Dirent{
		Parent: RootID, Name: "late", Child: 14, Type: TypeFile, Version: create.HLC, Origin: peer}}}}
	mustApply(t, db, late)
	if _, ok, _ := db.LookupDirent(RootID, "late"); ok {
		t.Fatal("a create the delete had seen resurrected the entry")
	}
	// A create made without seeing the entry (base zero), stamped before
	// the delete, raced it: it is kept.
	racing := &Record{Origin: peer, Seq: 3, HLC: create.HLC + 1, Ops: []Op{{Dirent: &Dirent{
		Parent: RootID, Name: "gone", Child: 15, Type: TypeFile, Version: create.HLC + 1, Origin: peer}}}}
	mustApply(t, db, racing)
	if de, ok, _ := db.LookupDirent(RootID, "gone"); !ok || de.Child != 15 {
		t.Fatalf("racing create: %+v, %v; want child 15 kept", de, ok)
	}
	// A create made on the tombstone (the name looked free) replaces it.
	mustCommit(t, db, Op{Dirent: &Dirent{Parent: RootID, Name: "late", Child: 13, Type: TypeFile,
		BaseVersion: entryRef(del2).Version, BaseOrigin: entryRef(del2).Origin}})
	if de, ok, _ := db.LookupDirent(RootID, "late"); !ok || de.Child != 13 {
		t.Fatalf("re-create: %+v, %v", de, ok)
	}
	if ents, _ := db.ReadDir(RootID); len(ents) != 4 {
		t.Fatalf("ReadDir = %+v; want gone, kept, late, other and no conflict copy", ents)
	}
}

func TestLWW(t *testing.T) {
	db := openMem(t, nil)
	lo, hi := format.NodeID{1}, format.NodeID{2}
	dirent := func(origin format.NodeID, seq, version, child uint64) *Record {
		return &Record{Origin: origin, Seq: seq, HLC: version, Ops: []Op{{Dirent: &Dirent{
			Parent: RootID, Name: "x", Child: child, Type: TypeFile, Version: version, Origin: origin}}}}
	}
	inode := func(origin format.NodeID, seq, version, size uint64) *Record {
		return &Record{Origin: origin, Seq: seq, HLC: version, Ops: []Op{{Inode: &Inode{
			ID: 50, Type: TypeFile, Size: size, Version: version, Origin: origin}}}}
	}
	child := func() uint64 {
		de, ok, err := db.LookupDirent(RootID, "x")
		if err != nil || !ok {
			t.Fatalf("LookupDirent: %v, %v", ok, err)
		}
		return de.Child
	}
	size := func() uint64 {
		in, ok, err := db.GetInode(50)
		if err != nil || !ok {
			t.Fatalf("GetInode: %v, %v", ok, err)
		}
		return in.Size
	}

	mustApply(t, db, dirent(lo, 1, 100, 1))
	mustApply(t, db, inode(lo, 2, 100, 1))
	mustApply(t, db, dirent(hi, 1, 99, 2)) // older version loses
	mustApply(t, db, inode(hi, 2, 99, 2))
	if child() != 1 || size() != 1 {
		t.Fatalf("older version won: child %d size %d", child(), size())
	}
	mustApply(t, db, dirent(hi, 3, 100, 3)) // same version, greater origin wins
	mustApply(t, db, inode(hi, 4, 100, 3))
	if child() != 3 || size() != 3 {
		t.Fatalf("tie not broken by origin: child %d size %d", child(), size())
	}
	mustApply(t, db, dirent(lo, 3, 100, 4)) // same version, smaller origin loses
	mustApply(t, db, inode(lo, 4, 100, 4))
	if child() != 3 || size() != 3 {
		t.Fatalf("smaller origin won a tie: child %d size %d", child(), size())
	}
	mustApply(t, db, dirent(lo, 5, 101, 5)) // newer version wins whatever the origin
	mustApply(t, db, inode(lo, 6, 101, 5))
	if child() != 5 || size() != 5 {
		t.Fatalf("newer version lost: child %d size %d", child(), size())
	}
	// The clock has followed the records: a local change outranks them.
	mustCommit(t, db, fileDirent(RootID, "x", 6))
	if child() != 6 {
		t.Fatalf("local change after remote ones lost: child %d", child())
	}
}

func TestApplySequence(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []uint64
	)
	var db *DB
	early := true
	db = openAt(t, vfs.NewMem(), "db", Options{OnApply: func(rec *Record) {
		// Before the vector counts it: whoever sees Applied reach the
		// record sees what OnApply did (the fsync barrier).
		counted := db.VersionVector()[rec.Origin] >= rec.Seq
		mu.Lock()
		seen = append(seen, rec.Seq)
		early = early && !counted
		mu.Unlock()
	}})
	src := openMem(t, nil)
	var recs []*Record
	for i := range 4 {
		recs = append(recs, mustCommit(t, src, fileDirent(RootID, fmt.Sprint("f", i), uint64(i+10))))
	}
	origin := src.NodeID()

	if ok, err := db.Apply(recs[1]); ok || err != ErrGap {
		t.Fatalf("Apply(seq 2 first) = %v, %v; want false, ErrGap", ok, err)
	}
	mustApply(t, db, recs[0])
	if ok, err := db.Apply(recs[0]); ok || err != nil {
		t.Fatalf("Apply(duplicate) = %v, %v; want false, nil", ok, err)
	}
	if ok, err := db.Apply(recs[3]); ok || !errors.Is(err, ErrGap) {
		t.Fatalf("Apply(seq 4 after 1) = %v, %v; want ErrGap", ok, err)
	}
	mustApply(t, db, recs[1])
	mustApply(t, db, recs[2])
	mustApply(t, db, recs[3])
	if ok, err := db.Apply(recs[2]); ok || err != nil {
		t.Fatalf("Apply(old duplicate) = %v, %v", ok, err)
	}
	if vv := db.VersionVector(); vv[origin] != 4 || len(vv) != 1 {
		t.Fatalf("VersionVector = %v", vv)
	}
	if !reflect.DeepEqual(seen, []uint64{1, 2, 3, 4}) || !early {
		t.Fatalf("OnApply saw %v (before the vector counted each: %v)", seen, early)
	}
	if db.HLCNow() < recs[3].HLC {
		t.Fatalf("clock %d behind applied record %d", db.HLCNow(), recs[3].HLC)
	}
	// The log of a remote origin is served like the local one, byte for byte.
	got, err := db.LogSince(origin, 0, 0, 0)
	if err != nil || len(got) != 4 {
		t.Fatalf("LogSince = %d records, %v", len(got), err)
	}
	for i, b := range got {
		if string(b) != string(EncodeRecord(recs[i])) {
			t.Fatalf("logged record %d differs from the original", i+1)
		}
	}
	if a, b := namespaceDump(t, db), namespaceDump(t, src); a != b {
		t.Fatalf("replica differs from origin:\n%s\nvs\n%s", a, b)
	}
}

func TestApplyInvalid(t *testing.T) {
	db := openMem(t, nil)
	peer := format.NewNodeID()
	good := Op{Dirent: &Dirent{Parent: RootID, Name: "ok", Child: 5, Type: TypeFile, Version: 1, Origin: peer}}
	for name, rec := range map[string]*Record{
		"nil":         nil,
		"zero origin": {Seq: 1, Ops: []Op{good}},
		"seq 0":       {Origin: peer, Ops: []Op{good}},
		"no ops":      {Origin: peer, Seq: 1},
		"bad op":      {Origin: peer, Seq: 1, Ops: []Op{good, {Dirent: &Dirent{Parent: RootID, Name: "..", Child: 5, Type: TypeFile}}}},
		"empty op":    {Origin: peer, Seq: 1, Ops: []Op{good, {}}},
	} {
		if ok, err := db.Apply(rec); ok || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Apply = %v, %v; want ErrInvalid", name, ok, err)
		}
	}
	if _, ok, _ := db.LookupDirent(RootID, "ok"); ok {
		t.Fatal("an invalid record was partly applied")
	}
	if len(db.VersionVector()) != 0 {
		t.Fatal("an invalid record changed the version vector")
	}
}

// TestConvergence has three nodes make conflicting changes to a small
// namespace without seeing each other, then delivers every record to two
// fresh replicas and to the three nodes, each in its own interleaving of
// origins. All five must end with the same namespace.
func TestConvergence(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	fs := vfs.NewMem()
	var origins []*DB
	for i := range 3 {
		db := openAt(t, fs, fmt.Sprint("origin", i), Options{})
		db.wallMs = func() int64 { return 7 } // equal clocks: many ties
		origins = append(origins, db)
	}
	names := []string{"a", "b", "c", "d"}
	ids := []uint64{10, 11, 12}
	logs := make([][]*Record, len(origins))
	for range 60 {
		i := rng.IntN(len(origins))
		var ops []Op
		used := map[string]bool{}
		for n := 1 + rng.IntN(3); len(ops) < n; {
			switch rng.IntN(3) {
			case 0:
				id := ids[rng.IntN(len(ids))]
				if used[fmt.Sprint("i", id)] {
					continue
				}
				used[fmt.Sprint("i", id)] = true
				ops = append(ops, fileInode(id, rng.Uint64N(1000)))
			default:
				name := names[rng.IntN(len(names))]
				if used[name] {
					continue
				}
				used[name] = true
				de := &Dirent{Parent: RootID, Name: name, Child: ids[rng.IntN(len(ids))], Type: TypeFile}
				if rng.IntN(4) == 0 {
					de = &Dirent{Parent: RootID, Name: name, Deleted: true}
				}
				// Most ops name the entry the origin sees, some none.
				if w, ok, _ := origins[i].StoredDirent(RootID, name); ok && rng.IntN(3) != 0 {
					de.BaseChild, de.BaseVersion, de.BaseOrigin = w.Child, w.Version, w.Origin
				}
				ops = append(ops, Op{Dirent: de})
			}
		}
		logs[i] = append(logs[i], mustCommit(t, origins[i], ops...))
	}

	deliver := func(db *DB) {
		next := make([]int, len(logs))
		for {
			var ready []int
			for o := range logs {
				if next[o] < len(logs[o]) {
					ready = append(ready, o)
				}
			}
			if len(ready) == 0 {
				return
			}
			o := ready[rng.IntN(len(ready))]
			rec := logs[o][next[o]]
			next[o]++
			if _, err := db.Apply(rec); err != nil { // own records are duplicates
				t.Fatalf("Apply: %v", err)
			}
		}
	}
	all := append([]*DB{openAt(t, fs, "replica0", Options{}), openAt(t, fs, "replica1", Options{})}, origins...)
	for _, db := range all {
		deliver(db)
	}

	want := namespaceDump(t, all[0])
	wantDir, err := all[0].ReadDir(RootID)
	if err != nil {
		t.Fatal(err)
	}
	for i, db := range all[1:] {
		if got := namespaceDump(t, db); got != want {
			t.Fatalf("node %d diverged:\n%s\nwant\n%s", i+1, got, want)
		}
		if got, _ := db.ReadDir(RootID); !reflect.DeepEqual(got, wantDir) {
			t.Fatalf("node %d ReadDir = %+v; want %+v", i+1, got, wantDir)
		}
		for _, id := range ids {
			a, aok, _ := all[0].GetInode(id)
			b, bok, _ := db.GetInode(id)
			if !reflect.DeepEqual(a, b) || aok != bok {
				t.Fatalf("node %d GetInode(%d) = %+v; want %+v", i+1, id, b, a)
			}
		}
		if !reflect.DeepEqual(db.VersionVector(), all[0].VersionVector()) {
			t.Fatalf("node %d version vector differs", i+1)
		}
	}
}

func TestLogSince(t *testing.T) {
	db := openMem(t, nil)
	self := db.NodeID()
	var encs [][]byte
	for i := range 10 {
		rec := mustCommit(t, db, fileDirent(RootID, fmt.Sprint("file", i), 100))
		encs = append(encs, EncodeRecord(rec))
	}
	seqs := func(recs [][]byte) []uint64 {
		var out []uint64
		for _, b := range recs {
			r, err := DecodeRecord(b)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, r.Seq)
		}
		return out
	}
	for _, tc := range []struct {
		after                uint64
		maxRecords, maxBytes int
		want                 []uint64
	}{
		{0, 3, 0, []uint64{1, 2, 3}},
		{7, 100, 0, []uint64{8, 9, 10}},
		{0, 0, 0, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{0, 0, 1, []uint64{1}}, // at least one record
		{2, 0, len(encs[2]) + len(encs[3]), []uint64{3, 4}},
		{2, 0, len(encs[2]) + len(encs[3]) + 1, []uint64{3, 4}},
		{2, 1, 1 << 20, []uint64{3}},
		{10, 5, 0, nil},
		{math.MaxUint64, 5, 0, nil},
	} {
		got, err := db.LogSince(self, tc.after, tc.maxRecords, tc.maxBytes)
		if err != nil {
			t.Fatal(err)
		}
		if s := seqs(got); !reflect.DeepEqual(s, tc.want) {
			t.Errorf("LogSince(after %d, %d recs, %d bytes) = %v; want %v",
				tc.after, tc.maxRecords, tc.maxBytes, s, tc.want)
		}
	}
	if got, err := db.LogSince(format.NewNodeID(), 0, 10, 0); err != nil || len(got) != 0 {
		t.Fatalf("LogSince(unknown origin) = %d, %v", len(got), err)
	}
}

func TestHLC(t *testing.T) {
	fs := vfs.NewMem()
	db := openAt(t, fs, "db", Options{})
	wall := int64(1000)
	db.wallMs = func() int64 { return wall }
	r1 := mustCommit(t, db, fileInode(5, 1))
	r2 := mustCommit(t, db, fileInode(5, 2))
	if r1.HLC != 1000<<16 || r2.HLC != r1.HLC+1 {
		t.Fatalf("HLCs %d, %d; want %d, +1", r1.HLC, r2.HLC, 1000<<16)
	}
	wall = 2000
	if r := mustCommit(t, db, fileInode(5, 3)); r.HLC != 2000<<16 {
		t.Fatalf("HLC after wall clock moved = %d; want %d", r.HLC, 2000<<16)
	}
	wall = 10 // the wall clock went back
	r4 := mustCommit(t, db, fileInode(5, 4))
	if r4.HLC != 2000<<16+1 {
		t.Fatalf("HLC after wall clock went back = %d", r4.HLC)
	}
	// A record from a peer with a clock ahead pulls ours forward.
	peer := format.NewNodeID()
	ahead := uint64(5000) << 16
	mustApply(t, db, &Record{Origin: peer, Seq: 1, HLC: ahead, Ops: []Op{{Inode: &Inode{
		ID: 6, Type: TypeFile, Version: ahead, Origin: peer}}}})
	if db.HLCNow() != ahead {
		t.Fatalf("HLCNow after Apply = %d; want %d", db.HLCNow(), ahead)
	}
	if r := mustCommit(t, db, fileInode(6, 9)); r.HLC != ahead+1 {
		t.Fatalf("HLC after Apply = %d; want %d", r.HLC, ahead+1)
	}
	if db.HLCNow() != ahead+1 {
		t.Fatal("HLCNow does not show the last value used")
	}
	last := db.HLCNow()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = openAt(t, fs, "db", Options{})
	db.wallMs = func() int64 { return 10 }
	if db.HLCNow() != last {
		t.Fatalf("HLCNow after reopen = %d; want %d", db.HLCNow(), last)
	}
	if r := mustCommit(t, db, fileInode(5, 5)); r.HLC != last+1 {
		t.Fatalf("HLC after reopen = %d; want %d", r.HLC, last+1)
	}
}

func TestNewID(t *testing.T) {
	db := openMem(t, nil)
	seen := map[uint64]bool{}
	for range 1000 {
		id := db.NewID()
		if id == 0 || id == RootID || seen[id] {
			t.Fatalf("NewID = %d", id)
		}
		seen[id] = true
	}
}

// TestConcurrentUse runs writers and readers of every kind at once; run it
// with -race.
func TestConcurrentUse(t *testing.T) {
	db := openMem(t, nil)
	peerDB := openMem(t, nil)
	var remote []*Record
	for i := range 20 {
		remote = append(remote, mustCommit(t, peerDB, fileDirent(RootID, fmt.Sprint("r", i), 9)))
	}
	var wg sync.WaitGroup
	const workers = 4
	for w := range workers {
		wg.Go(func() {
			for i := range 20 {
				if _, err := db.PutChunks(chunkSeq(w*1000+i*10, 10, 64)); err != nil {
					t.Error(err)
				}
				if _, err := db.Commit([]Op{fileDirent(RootID, fmt.Sprint("w", w, "-", i), 9)}, Synced); err != nil {
					t.Error(err)
				}
				if _, err := db.Apply(remote[i]); err != nil && !errors.Is(err, ErrGap) {
					t.Error(err)
				}
				if _, err := db.ReadDir(RootID); err != nil {
					t.Error(err)
				}
				if _, err := db.LogSince(db.NodeID(), 0, 5, 0); err != nil {
					t.Error(err)
				}
				db.VersionVector()
				db.ChunkStats()
				db.HLCNow()
			}
		})
	}
	wg.Wait()
	if n, _ := db.ChunkStats(); n != workers*20*10 {
		t.Fatalf("chunk count %d; want %d", n, workers*20*10)
	}
	if vv := db.VersionVector(); vv[db.NodeID()] != workers*20 {
		t.Fatalf("own seq %d; want %d", vv[db.NodeID()], workers*20)
	}
}

// TestCommitUnsyncedDurability: an unsynced commit is in the index at once; a crash
// before the next sync loses it (and its sequence number is used again),
// a Sync or a synced Commit makes it durable.
func TestCommitUnsyncedDurability(t *testing.T) {
	fs := vfs.NewStrictMem()
	db := openAt(t, fs, "/db", Options{Logger: quietLogger})
	root := Op{Inode: &Inode{ID: RootID, Type: TypeDir, Mode: 0o755}}
	if _, err := db.Commit([]Op{root}, Synced); err != nil {
		t.Fatal(err)
	}
	lazy := func(id uint64) *Record {
		t.Helper()
		rec, err := db.Commit([]Op{{Inode: &Inode{ID: id, Type: TypeFile, Mode: 0o644}}}, Unsynced)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := db.GetInode(id); !ok {
			t.Fatalf("inode %d not visible after an unsynced Commit", id)
		}
		return rec
	}
	crash := func() {
		t.Helper()
		fs.SetIgnoreSyncs(true)
		db.Close()
		fs.ResetToSyncedState()
		fs.SetIgnoreSyncs(false)
		db = openAt(t, fs, "/db", Options{Logger: quietLogger})
	}
	r := lazy(10)
	if db.DurableSeq() != r.Seq-1 {
		t.Fatalf("DurableSeq %d after a lazy commit of %d", db.DurableSeq(), r.Seq)
	}
	crash()
	if _, ok, _ := db.GetInode(10); ok {
		t.Fatal("an unsynced lazy commit survived the crash")
	}
	if got := db.VersionVector()[db.NodeID()]; got != r.Seq-1 || db.DurableSeq() != got {
		t.Fatalf("after the crash: seq %d, durable %d; want %d", got, db.DurableSeq(), r.Seq-1)
	}
	r = lazy(11)
	if err := db.Sync(); err != nil || db.DurableSeq() != r.Seq {
		t.Fatalf("Sync: %v, durable %d, want %d", err, db.DurableSeq(), r.Seq)
	}
	lazy(12)
	if _, err := db.Commit([]Op{{Inode: &Inode{ID: 13, Type: TypeFile}}}, Synced); err != nil {
		t.Fatal(err)
	}
	crash()
	for _, id := range []uint64{11, 12, 13} {
		if _, ok, _ := db.GetInode(id); !ok {
			t.Fatalf("inode %d lost though synced", id)
		}
	}
}

// TestApplyRefusesFarFutureClocks: a record whose clock (or an op's
// version) is more than MaxClockAheadMs ahead of the wall clock is
// refused, so one record stamped 2^64-1 cannot drag this node's clock
// there (and make every later local change impossible); once the wall
// clock catches up, the same record applies.
func TestApplyRefusesFarFutureClocks(t *testing.T) {
	db := openMem(t, nil)
	now := int64(1_800_000_000_000)
	db.wallMs = func() int64 { return now }
	peer := format.NodeID{7}
	mk := func(seq, hlc, version uint64) *Record {
		in := fileInode(uint64(100+seq), 1)
		in.Inode.Version, in.Inode.Origin = version, peer
		return &Record{Origin: peer, Seq: seq, HLC: hlc, Ops: []Op{in}}
	}
	for _, rec := range []*Record{
		mk(1, math.MaxUint64, math.MaxUint64),
		mk(1, uint64(now)<<16, math.MaxUint64), // the clock is fine, an op's version is not
		mk(1, uint64(now+MaxClockAheadMs+1)<<16, uint64(now)<<16),
	} {
		if ok, err := db.Apply(rec); ok || !errors.Is(err, ErrClockAhead) {
			t.Fatalf("Apply of a record %d ms ahead = %v, %v; want ErrClockAhead", int64(rec.HLC>>16)-now, ok, err)
		}
	}
	if db.HLCNow() > uint64(now)<<16 || db.Applied(peer) != 0 {
		t.Fatalf("a refused record moved the clock (%d) or the vector (%d)", db.HLCNow(), db.Applied(peer))
	}
	// Within the bound: applied, and the clock follows.
	ahead := mk(1, uint64(now+MaxClockAheadMs-1000)<<16, uint64(now+MaxClockAheadMs-1000)<<16)
	mustApply(t, db, ahead)
	// Local changes still work, after it.
	rec := mustCommit(t, db, fileInode(5, 1))
	if rec.HLC <= ahead.HLC {
		t.Fatalf("a local change at %d does not outrank the record at %d", rec.HLC, ahead.HLC)
	}
	// Later, a record refused before applies.
	late := mk(2, uint64(now+2*MaxClockAheadMs)<<16, uint64(now+2*MaxClockAheadMs)<<16)
	if _, err := db.Apply(late); !errors.Is(err, ErrClockAhead) {
		t.Fatalf("Apply = %v, want ErrClockAhead", err)
	}
	now += 2 * MaxClockAheadMs
	mustApply(t, db, late)
}

// TestApplyBoundsOrigins: records from more than MaxOrigins origins are
// refused, so the version vector always fits a Pull frame; known origins
// go on being applied.
func TestApplyBoundsOrigins(t *testing.T) {
	db := openMem(t, nil)
	rec := func(origin format.NodeID, seq uint64) *Record {
		op := fileInode(binary.BigEndian.Uint64(origin[:])<<8|seq, 1)
		op.Inode.Version, op.Inode.Origin = 1<<20+seq, origin
		return &Record{Origin: origin, Seq: seq, HLC: 1<<20 + seq, Ops: []Op{op}}
	}
	for i := range MaxOrigins - 1 { // the node's own origin is one
		var o format.NodeID
		binary.BigEndian.PutUint64(o[:], uint64(i)+1)
		mustApply(t, db, rec(o, 1))
	}
	mustCommit(t, db, fileInode(3, 1)) // the node's own origin
	if n := len(db.VersionVector()); n != MaxOrigins {
		t.Fatalf("%d origins, want %d", n, MaxOrigins)
	}
	if _, err := db.Apply(rec(format.NodeID{0xff}, 1)); !errors.Is(err, ErrTooManyOrigins) {
		t.Fatalf("Apply from one origin too many = %v, want ErrTooManyOrigins", err)
	}
	var known format.NodeID
	binary.BigEndian.PutUint64(known[:], 1)
	mustApply(t, db, rec(known, 2))
}

// TestHistories: History lists every version of an inode and
// EntryHistory every version of a name, tombstones included, oldest
// first, whatever the winner is now.
func TestHistories(t *testing.T) {
	db := openMem(t, nil)
	mustCommit(t, db, fileInode(7, 1), fileDirent(RootID, "f", 7))
	for _, size := range []uint64{2, 3} {
		in, _, err := db.GetInode(7)
		if err != nil {
			t.Fatal(err)
		}
		op := fileInode(7, size)
		op.Inode.BaseVersion, op.Inode.BaseOrigin = in.Version, in.Origin
		mustCommit(t, db, op)
	}
	de, _, err := db.StoredDirent(RootID, "f")
	if err != nil {
		t.Fatal(err)
	}
	gone := Dirent{Parent: RootID, Name: "f", Child: 7, Type: TypeFile, Deleted: true,
		BaseVersion: de.Version, BaseOrigin: de.Origin, BaseChild: 7}
	mustCommit(t, db, Op{Dirent: &gone})
	hist, err := db.History(7)
	if err != nil || len(hist) != 3 {
		t.Fatalf("History(7) = %d versions, %v; want 3", len(hist), err)
	}
	for i, in := range hist {
		if in.Size != uint64(i+1) || in.ID != 7 || (i > 0 && in.Version <= hist[i-1].Version) {
			t.Fatalf("version %d: size %d, id %d, stamp %d", i, in.Size, in.ID, in.Version)
		}
	}
	ents, err := db.EntryHistory(RootID, "f")
	if err != nil || len(ents) != 2 || ents[0].Deleted || !ents[1].Deleted || ents[0].Child != 7 {
		t.Fatalf("EntryHistory = %+v, %v; want the entry then its tombstone", ents, err)
	}
	if _, ok, _ := db.LookupDirent(RootID, "f"); ok {
		t.Fatal("the deleted name still resolves")
	}
	if h, err := db.History(8); err != nil || len(h) != 0 {
		t.Fatalf("History of an inode never seen: %v, %v", h, err)
	}
}
