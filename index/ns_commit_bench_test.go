package index

import (
	"fmt"
	"testing"

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
