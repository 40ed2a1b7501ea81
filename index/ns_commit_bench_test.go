package index

import (
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/vfs"
)

// BenchmarkCommitCreates commits what creating a file does (its inode, its
// entry and a new version of the directory), b.N files in one directory,
// in memory so that the index's own work shows, not the disk's. One op is
// one file. The cost per file grew with the files before it in the
// directory: compare runs of one size (-benchtime 2000x).
func BenchmarkCommitCreates(b *testing.B) {
	db := openMem(b, vfs.NewMem())
	dir := Inode{ID: 2, Type: TypeDir, Mode: 0o755}
	rec := mustCommit(b, db, Op{Inode: &dir})
	dir = *rec.Ops[0].Inode
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := uint64(1000 + i)
		next := dir
		next.BaseVersion, next.BaseOrigin = dir.Version, dir.Origin
		next.MtimeNs = int64(i)
		rec := mustCommit(b, db,
			Op{Inode: &Inode{ID: id, Type: TypeFile, Mode: 0o644}},
			Op{Dirent: &Dirent{Parent: dir.ID, Name: fmt.Sprint("f", i), Child: id, Type: TypeFile}},
			Op{Inode: &next},
		)
		dir = *rec.Ops[2].Inode
	}
}

// BenchmarkCreateDeleteCycle creates a file and deletes it again, one
// cycle per op, and reports what the cycles leave in the index
// (index-B/op: keys and values, before Pebble's compression). Nothing is
// pruned yet: every cycle leaves its record, versions and tombstone, so
// this is the figure history pruning must bring to zero.
func BenchmarkCreateDeleteCycle(b *testing.B) {
	db := openMem(b, vfs.NewMem())
	size := func() int64 {
		it, err := db.pdb.NewIter(nil)
		if err != nil {
			b.Fatal(err)
		}
		var n int64
		for ok := it.First(); ok; ok = it.Next() {
			n += int64(len(it.Key()) + len(it.Value()))
		}
		it.Close()
		return n
	}
	before := size()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := db.NewID()
		name := fmt.Sprint("f", i)
		mustCommit(b, db, fileInode(id, 0), fileDirent(RootID, name, id))
		de, _, err := db.StoredDirent(RootID, name)
		if err != nil {
			b.Fatal(err)
		}
		gone := Dirent{Parent: RootID, Name: name, Child: id, Type: TypeFile, Deleted: true,
			BaseVersion: de.Version, BaseOrigin: de.Origin, BaseChild: id}
		mustCommit(b, db, Op{Dirent: &gone})
	}
	b.StopTimer()
	b.ReportMetric(float64(size()-before)/float64(b.N), "index-B/op")
	// What is left once every member has seen it all (ns_prune.go).
	if _, err := db.Prune(db.VersionVector(), time.Now().Add(time.Hour), nil); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(size()-before)/float64(b.N), "pruned-B/op")
}
