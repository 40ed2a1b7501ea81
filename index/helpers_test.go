package index

import (
	"bytes"
	"fmt"
	"log/slog"
	"testing"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
)

var quietLogger = slog.New(slog.DiscardHandler)

// openMem opens an index in directory "db" of fs (a fresh MemFS if nil) and
// closes it at the end of the test.
func openMem(t testing.TB, fs vfs.FS) *DB {
	t.Helper()
	if fs == nil {
		fs = vfs.NewMem()
	}
	return openAt(t, fs, "db", Options{})
}

func openAt(t testing.TB, fs vfs.FS, dir string, opts Options) *DB {
	t.Helper()
	opts.FS = fs
	if opts.Logger == nil {
		opts.Logger = quietLogger
	}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() {
		if !db.closed.Load() {
			if err := db.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
	})
	return db
}

func mustCommit(t testing.TB, db *DB, ops ...Op) *Record {
	t.Helper()
	rec, err := db.Commit(ops, Synced)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return rec
}

func mustApply(t testing.TB, db *DB, rec *Record) {
	t.Helper()
	ok, err := db.Apply(rec)
	if err != nil || !ok {
		t.Fatalf("Apply(%s/%d) = %v, %v; want true, nil", rec.Origin.Short(), rec.Seq, ok, err)
	}
}

func fileDirent(parent uint64, name string, child uint64) Op {
	return Op{Dirent: &Dirent{Parent: parent, Name: name, Child: child, Type: TypeFile}}
}

func fileInode(id, size uint64) Op {
	return Op{Inode: &Inode{ID: id, Type: TypeFile, Mode: 0o644, Size: size}}
}

// namespaceDump renders every stored inode and dirent (tombstones included)
// as raw key/value pairs, to compare the namespaces of two DBs exactly.
func namespaceDump(t testing.TB, db *DB) string {
	t.Helper()
	var buf bytes.Buffer
	for _, p := range []byte{prefixInode, prefixDirent, prefixHistory, prefixHead, prefixNamed, prefixDerived, prefixEntryHist, prefixEntryHead, prefixEntryNamed, prefixConflicted} {
		lo := []byte{p}
		it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
		if err != nil {
			t.Fatal(err)
		}
		for it.First(); it.Valid(); it.Next() {
			fmt.Fprintf(&buf, "%x=%x\n", it.Key(), it.Value())
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.String()
}
