package namespace

import (
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oashare/oashare/chunknet"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

func lone(t *testing.T) (*Namespace, *index.DB) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	db, err := index.Open(filepath.Join(t.TempDir(), "data"), index.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	node, err := chunknet.New(chunknet.Config{DB: db, Network: "t", Listen: "127.0.0.1:0", Replicas: 1, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close(); db.Close() })
	return New(node, 1000, 1000), db
}

// TestOperations: each operation's refusals (as POSIX has them), and what
// it publishes: entries that name what they replace, tombstones, times of
// the directories touched.
func TestOperations(t *testing.T) {
	ns, db := lone(t)
	dir, err := ns.Create(index.RootID, "d", index.Inode{Type: index.TypeDir, Mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	f, err := ns.Create(dir.ID, "f", index.Inode{Type: index.TypeFile, Mode: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"mkdir over a file", second(ns.Create(dir.ID, "f", index.Inode{Type: index.TypeDir})), ErrExists},
		{"a file over a directory", second(ns.Create(index.RootID, "d", index.Inode{Type: index.TypeFile})), ErrExists},
		{"a name too long", second(ns.Create(index.RootID, strings.Repeat("x", index.MaxNameLen+1), index.Inode{Type: index.TypeFile})), ErrLongName},
		{"the name ..", second(ns.Create(index.RootID, "..", index.Inode{Type: index.TypeFile})), ErrBadName},
		{"rmdir of a file", second(ns.Remove(dir.ID, "f", true)), ErrNotDir},
		{"unlink of a directory", second(ns.Remove(index.RootID, "d", false)), ErrIsDir},
		{"rmdir of a full directory", second(ns.Remove(index.RootID, "d", true)), ErrNotEmpty},
		{"unlink of nothing", second(ns.Remove(dir.ID, "nothing", false)), ErrNotFound},
		{"rename onto a name, noreplace", second(ns.Rename(dir.ID, "f", index.RootID, "d", true)), ErrExists},
		{"rename of a file over a directory", second(ns.Rename(dir.ID, "f", index.RootID, "d", false)), ErrIsDir},
		{"attributes of a conflict copy", second(ns.SetAttrs(index.ConflictIDBit|5, Attrs{})), ErrReadOnly},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	// A create over a file replaces it and names the entry it replaces.
	g, err := ns.Create(dir.ID, "f", index.Inode{Type: index.TypeFile, Mode: 0o600})
	if err != nil {
		t.Fatal(err)
	}
	de, ok, _ := db.StoredDirent(dir.ID, "f")
	if !ok || de.Child != g.ID || de.BaseChild != f.ID {
		t.Fatalf("the new entry %+v does not name the one it replaced (%d)", de, f.ID)
	}
	// Rename over it: the replaced inode is returned, the source leaves a
	// Moved tombstone, the directory's times move.
	h, _ := ns.Create(dir.ID, "h", index.Inode{Type: index.TypeFile})
	before, _, _ := db.GetInode(dir.ID)
	replaced, err := ns.Rename(dir.ID, "h", dir.ID, "f", false)
	if err != nil || replaced != g.ID {
		t.Fatalf("rename over f: replaced %d, %v; want %d", replaced, err, g.ID)
	}
	st, ok, _ := db.StoredDirent(dir.ID, "h")
	if !ok || !st.Deleted || !st.Moved {
		t.Fatalf("the source's entry after a rename: %+v", st)
	}
	if de, _, _ := db.LookupDirent(dir.ID, "f"); de.Child != h.ID {
		t.Fatalf("f names %d after the rename, want %d", de.Child, h.ID)
	}
	if after, _, _ := db.GetInode(dir.ID); after.MtimeNs <= before.MtimeNs {
		t.Fatal("the directory's mtime did not move")
	}
	if child, err := ns.Remove(dir.ID, "f", false); err != nil || child != h.ID {
		t.Fatalf("unlink f: %d, %v", child, err)
	}
	if child, err := ns.Remove(index.RootID, "d", true); err != nil || child != dir.ID {
		t.Fatalf("rmdir d: %d, %v", child, err)
	}
}

// TestPublishVersion: a new version supersedes the one its changes were
// made on; made on content a peer has replaced since, it stays a head
// beside it (a conflict copy); attribute changes alone supersede whatever
// is current; nothing is published when nothing changes.
func TestPublishVersion(t *testing.T) {
	ns, db := lone(t)
	f, err := ns.Create(index.RootID, "f", index.Inode{Type: index.TypeFile, Mode: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	content := func(s string) (uint64, format.Hash) { return uint64(len(s)), format.Sum([]byte(s)) }
	size1, root1 := content("one")
	v1, err := ns.PublishVersion(index.Pending{ID: f.ID, Size: size1, Root: root1, Base: f.Ref(), MtimeNs: 10, ContentChanged: true}, false)
	if err != nil || v1.BaseVersion != f.Version {
		t.Fatalf("first version: %+v, %v", v1, err)
	}
	// Made on the empty content, read from f's first version, while the
	// content is "one" now: a conflict, both stay heads.
	size2, root2 := content("two")
	if _, err := ns.PublishVersion(index.Pending{ID: f.ID, Size: size2, Root: root2, Base: f.Ref(), MtimeNs: 20, ContentChanged: true}, false); err != nil {
		t.Fatal(err)
	}
	heads, _ := db.Heads(f.ID)
	if len(heads) != 2 {
		t.Fatalf("%d heads after a change made on replaced content, want 2", len(heads))
	}
	// A mode change alone supersedes the winner and keeps its content.
	cur, _, _ := db.GetInode(f.ID)
	got, err := ns.PublishVersion(index.Pending{ID: f.ID, Size: 999, Base: f.Ref(), AttrChange: index.AttrChange{SetMode: true, Mode: 0o600, CtimeNs: 5}}, false)
	if err != nil || got.Mode != 0o600 || got.Size != cur.Size || got.Root != cur.Root || got.BaseVersion != cur.Version {
		t.Fatalf("a mode change: %+v, %v (current %+v)", got, err, cur)
	}
	// The same content again, nothing else: nothing published.
	seq := db.Applied(db.NodeID())
	if _, err := ns.PublishVersion(index.Pending{ID: got.ID, Size: got.Size, Root: got.Root, Depth: got.Depth,
		OrigSize: got.Size, OrigRoot: got.Root, Base: got.Ref(), MtimeNs: got.MtimeNs, ContentChanged: true}, false); err != nil {
		t.Fatal(err)
	}
	if db.Applied(db.NodeID()) != seq {
		t.Fatal("a change that changes nothing was published")
	}
}

func second[T any](_ T, err error) error { return err }
