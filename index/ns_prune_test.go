package index

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
	"github.com/oashare/oashare/index/format"
)

// treeView renders what a reader of db sees: every name reachable from
// the root, recursively, with its child's winner and heads.
func treeView(t testing.TB, db *DB) string {
	t.Helper()
	var b strings.Builder
	var walk func(dir uint64, path string)
	walk = func(dir uint64, path string) {
		ents, err := db.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, de := range ents {
			in, ok, err := db.GetInode(de.Child)
			if err != nil {
				t.Fatal(err)
			}
			heads, err := db.Heads(de.Child)
			if err != nil && !IsConflictID(de.Child) {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s/%s -> %d %v %+v heads=%d\n", path, de.Name, de.Child, ok, in, len(heads))
			if in.Type == TypeDir && ok {
				walk(de.Child, path+"/"+de.Name)
			}
		}
	}
	walk(RootID, "")
	return b.String()
}

// keyCount counts the keys under the namespace and log prefixes.
func keyCount(t testing.TB, db *DB) (n int, bytes int64) {
	t.Helper()
	for _, p := range []byte{prefixInode, prefixDirent, prefixHistory, prefixHead, prefixNamed, prefixDerived,
		prefixEntryHist, prefixEntryHead, prefixEntryNamed, prefixConflicted, prefixLog, prefixFloor, prefixLinks} {
		lo := []byte{p}
		it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
		if err != nil {
			t.Fatal(err)
		}
		for it.First(); it.Valid(); it.Next() {
			n++
			bytes += int64(len(it.Key()) + len(it.Value()))
		}
		it.Close()
	}
	return n, bytes
}

// randomOps makes 1 to 3 ops on db's current view: new files and
// directories, overwrites, deletes, renames of names in a small set, so
// that origins often race on the same names and inodes.
func randomOps(rng *rand.Rand, db *DB, dirs []uint64, next *uint64) []Op {
	names := []string{"a", "b", "c", "d", "e"}
	var ops []Op
	usedName := map[string]bool{}
	usedID := map[uint64]bool{}
	for n := 1 + rng.IntN(3); len(ops) < n; {
		parent := dirs[rng.IntN(len(dirs))]
		name := names[rng.IntN(len(names))]
		key := fmt.Sprint(parent, "/", name)
		if usedName[key] {
			continue
		}
		w, ok, _ := db.StoredDirent(parent, name)
		switch r := rng.IntN(10); {
		case r < 4: // create (or replace) the name with a new file
			*next++
			id := *next
			usedName[key], usedID[id] = true, true
			ops = append(ops, fileInode(id, rng.Uint64N(1000)))
			de := &Dirent{Parent: parent, Name: name, Child: id, Type: TypeFile}
			if ok {
				de.BaseChild, de.BaseVersion, de.BaseOrigin = w.Child, w.Version, w.Origin
			}
			ops = append(ops, Op{Dirent: de})
		case r < 7: // overwrite what the name shows
			if !ok || w.Deleted || usedID[w.Child] {
				continue
			}
			cur, found, _ := db.GetInode(w.Child)
			if !found || cur.Type != TypeFile {
				continue
			}
			usedID[w.Child] = true
			in := cur
			in.Size = rng.Uint64N(1000)
			in.BaseVersion, in.BaseOrigin = cur.Version, cur.Origin
			in.Supersedes = nil
			ops = append(ops, Op{Inode: &in})
		default: // delete the name
			if !ok || w.Deleted {
				continue
			}
			usedName[key] = true
			cur, _, _ := db.GetInode(w.Child)
			ops = append(ops, Op{Dirent: &Dirent{Parent: parent, Name: name, Deleted: true, Child: w.Child,
				ChildVersion: cur.Version, ChildOrigin: cur.Origin,
				BaseChild: w.Child, BaseVersion: w.Version, BaseOrigin: w.Origin}})
		}
	}
	return ops
}

// TestPruneKeepsTheView: three origins race on a few names (creates,
// overwrites, deletes, conflict copies); every node prunes everything
// every member has seen; then the origins go on, naming versions some
// nodes pruned. Every pruning node shows exactly what a node that never
// pruned shows, after each phase, and holds fewer keys.
func TestPruneKeepsTheView(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { pruneKeepsTheView(t, seed) })
	}
}

func pruneKeepsTheView(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	fs := vfs.NewMem()
	var origins []*DB
	for i := range 3 {
		db := openAt(t, fs, fmt.Sprint("origin", i), Options{})
		db.wallMs = func() int64 { return 1_000_000 + int64(rng.IntN(3)) } // close clocks: races
		origins = append(origins, db)
	}
	keeper := openAt(t, fs, "keeper", Options{}) // never prunes
	all := append([]*DB{keeper}, origins...)
	// A directory every origin knows, so that names live in two dirs.
	dir := uint64(1 << 40)
	mk := mustCommit(t, origins[0], Op{Inode: &Inode{ID: dir, Type: TypeDir, Mode: 0o755}},
		Op{Dirent: &Dirent{Parent: RootID, Name: "dir", Child: dir, Type: TypeDir}})
	for _, db := range all[:1] {
		mustApply(t, db, mk)
	}
	for _, db := range origins[1:] {
		mustApply(t, db, mk)
	}
	var logs [][]*Record = make([][]*Record, len(origins))
	next := make([]uint64, len(origins))
	for i := range next {
		next[i] = uint64(i+1) << 32
	}
	sent := make([]int, len(origins)) // records of each origin every node has
	phase := func(rounds int) {
		for range rounds {
			i := rng.IntN(len(origins))
			ops := randomOps(rng, origins[i], []uint64{RootID, dir}, &next[i])
			logs[i] = append(logs[i], mustCommit(t, origins[i], ops...))
			// Deliver some records early, in random interleavings.
			if rng.IntN(3) == 0 {
				deliverAll(t, all, logs, sent)
			}
		}
		deliverAll(t, all, logs, sent)
	}
	check := func(when string) {
		want := treeView(t, keeper)
		for i, db := range origins {
			if got := treeView(t, db); got != want {
				t.Fatalf("%s: origin %d shows\n%s\nwant (never pruned)\n%s", when, i, got, want)
			}
		}
	}
	phase(80)
	check("before pruning")
	stable := keeper.VersionVector()
	before, _ := keyCount(t, origins[0])
	for _, db := range origins {
		if _, err := db.Prune(stable, time.Now().Add(time.Hour), nil); err != nil {
			t.Fatal(err)
		}
	}
	after, _ := keyCount(t, origins[0])
	if after >= before {
		t.Fatalf("pruning kept %d keys of %d", after, before)
	}
	check("after pruning")
	phase(80)
	check("after more changes on pruned nodes")
	// Prune again, twice: the second finds nothing more to do.
	for _, db := range origins {
		if _, err := db.Prune(keeper.VersionVector(), time.Now().Add(time.Hour), nil); err != nil {
			t.Fatal(err)
		}
	}
	st, err := origins[1].Prune(keeper.VersionVector(), time.Now().Add(time.Hour), nil)
	if err != nil || st != (PruneStat{}) {
		t.Fatalf("second prune = %+v, %v; want nothing", st, err)
	}
	check("after pruning again")
}

// deliverAll applies every record not yet delivered to every node that
// lacks it, origins interleaved at random.
func deliverAll(t *testing.T, all []*DB, logs [][]*Record, sent []int) {
	t.Helper()
	for o := range logs {
		for _, rec := range logs[o][sent[o]:] {
			for _, db := range all {
				if _, err := db.Apply(rec); err != nil {
					t.Fatalf("Apply: %v", err)
				}
			}
		}
		sent[o] = len(logs[o])
	}
}

// TestPruneRespectsTheWindowAndStability: nothing newer than the cutoff,
// and no tombstone a member may not have seen, is pruned; the log keeps
// what a member lacks, and LogSince says when a record is pruned.
func TestPruneRespectsTheWindowAndStability(t *testing.T) {
	db := openMem(t, nil)
	create := mustCommit(t, db, fileInode(10, 5), fileDirent(RootID, "f", 10))
	over := &Inode{ID: 10, Type: TypeFile, Mode: 0o644, Size: 6, BaseVersion: create.HLC, BaseOrigin: db.self}
	mustCommit(t, db, Op{Inode: over})
	de, _, _ := db.StoredDirent(RootID, "f")
	w, _, _ := db.GetInode(10)
	del := mustCommit(t, db, Op{Dirent: &Dirent{Parent: RootID, Name: "f", Deleted: true, Child: 10,
		ChildVersion: w.Version, ChildOrigin: w.Origin, BaseChild: 10, BaseVersion: de.Version, BaseOrigin: de.Origin}})

	// A cutoff before the changes: the versions stay, restorable.
	if _, err := db.Prune(db.VersionVector(), time.UnixMilli(int64(create.HLC>>16)-1), nil); err != nil {
		t.Fatal(err)
	}
	if h, _ := db.History(10); len(h) != 2 {
		t.Fatalf("History = %d versions inside the window; want 2", len(h))
	}
	if h, _ := db.EntryHistory(RootID, "f"); len(h) != 2 {
		t.Fatalf("EntryHistory = %d versions inside the window; want 2", len(h))
	}
	// Records every member has are gone from the log, whatever the window.
	if _, err := db.LogSince(db.self, 0, 0, 0); !errors.Is(err, ErrPruned) {
		t.Fatalf("LogSince(0) after pruning = %v; want ErrPruned", err)
	}
	if recs, err := db.LogSince(db.self, del.Seq, 0, 0); err != nil || len(recs) != 0 {
		t.Fatalf("LogSince(last) = %d, %v", len(recs), err)
	}

	// The delete not yet stable (a member has not seen it): the name
	// and the inode stay, though older than the cutoff.
	db2 := openMem(t, nil)
	c2 := mustCommit(t, db2, fileInode(10, 5), fileDirent(RootID, "f", 10))
	de2, _, _ := db2.StoredDirent(RootID, "f")
	mustCommit(t, db2, Op{Dirent: &Dirent{Parent: RootID, Name: "f", Deleted: true, Child: 10,
		ChildVersion: c2.HLC, ChildOrigin: c2.Origin, BaseChild: 10, BaseVersion: de2.Version, BaseOrigin: de2.Origin}})
	st, err := db2.Prune(map[format.NodeID]uint64{db2.self: c2.Seq}, time.Now().Add(time.Hour), nil)
	if err != nil || st.Names != 0 || st.Inodes != 0 || st.Records != 1 {
		t.Fatalf("Prune with the delete unstable = %+v, %v; want only record 1", st, err)
	}
	if _, ok, _ := db2.GetInode(10); !ok {
		t.Fatal("an unstable delete let its inode go")
	}
	if recs, err := db2.LogSince(db2.self, c2.Seq, 0, 0); err != nil || len(recs) != 1 {
		t.Fatalf("LogSince after the stable point = %d, %v; want the delete", len(recs), err)
	}
	// In use here: kept even once stable.
	st, err = db2.Prune(db2.VersionVector(), time.Now().Add(time.Hour), func(id uint64) bool { return id == 10 })
	if err != nil || st.Names != 1 || st.Inodes != 0 {
		t.Fatalf("Prune with the inode in use = %+v, %v; want the name only", st, err)
	}
	if _, ok, _ := db2.GetInode(10); !ok {
		t.Fatal("an inode in use was pruned")
	}
	st, err = db2.Prune(db2.VersionVector(), time.Now().Add(time.Hour), nil)
	if err != nil || st.Inodes != 1 {
		t.Fatalf("Prune once unused = %+v, %v; want the inode", st, err)
	}
	if _, ok, _ := db2.GetInode(10); ok {
		t.Fatal("the deleted file's inode is still there")
	}
}

// TestCreateDeleteCyclesStayBounded: 50 000 create/delete cycles with a
// prune every 1 000 leave the index as small as a few cycles: the
// namespace and log hold O(live names + records since the last prune),
// not O(everything ever done).
func TestCreateDeleteCyclesStayBounded(t *testing.T) {
	cycles := 50_000
	if testing.Short() {
		cycles = 5_000
	}
	db := openMem(t, vfs.NewMem())
	mustCommit(t, db, fileInode(1, 1), fileDirent(RootID, "kept", 1))
	base, baseBytes := keyCount(t, db)
	maxKeys, maxBytes := 0, int64(0)
	for i := range cycles {
		id := db.NewID()
		name := fmt.Sprint("f", i)
		mustCommit(t, db, fileInode(id, 0), fileDirent(RootID, name, id))
		de, _, _ := db.StoredDirent(RootID, name)
		w, _, _ := db.GetInode(id)
		gone := Dirent{Parent: RootID, Name: name, Child: id, Deleted: true, ChildVersion: w.Version, ChildOrigin: w.Origin,
			BaseVersion: de.Version, BaseOrigin: de.Origin, BaseChild: id}
		rec, err := db.Commit([]Op{{Dirent: &gone}}, Unsynced)
		if err != nil {
			t.Fatal(err)
		}
		if (i+1)%1000 == 0 {
			if _, err := db.Prune(map[format.NodeID]uint64{db.self: rec.Seq}, time.Now().Add(time.Hour), nil); err != nil {
				t.Fatal(err)
			}
			n, b := keyCount(t, db)
			maxKeys, maxBytes = max(maxKeys, n), max(maxBytes, b)
		}
	}
	n, b := keyCount(t, db)
	t.Logf("%d cycles: %d keys, %d bytes after the last prune (%d, %d with one file); at most %d keys, %d bytes after any prune",
		cycles, n, b, base, baseBytes, maxKeys, maxBytes)
	// What is left: the live file, its name, the root's entry, the floor.
	if n > base+2 || b > baseBytes+200 {
		t.Fatalf("after %d cycles the index holds %d keys, %d bytes; want at most %d keys, %d bytes",
			cycles, n, b, base+2, baseBytes+200)
	}
	if _, ok, _ := db.LookupDirent(RootID, "kept"); !ok {
		t.Fatal("the live file lost its name")
	}
}
