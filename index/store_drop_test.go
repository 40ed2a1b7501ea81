package index

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/vfs"
)

func TestListAndDropStored(t *testing.T) {
	fs := vfs.NewMem()
	db := openAt(t, fs, "/db", Options{Logger: quietLogger})
	var groups []Group
	var nodes []Chunk
	for i := range 5 {
		g := mkGroup(byte(10*i), 3, 100)
		groups = append(groups, g)
		nodes = append(nodes, Chunk{Hash: g.Hash, Data: []byte("node of group " + string(rune('a'+i)))})
	}
	tree := mkChunk("a tree node")
	if _, err := db.Put(groups, append(nodes, tree)); err != nil {
		t.Fatal(err)
	}
	// Pages of two walk every item once: groups first, then chunks (the
	// groups' nodes and the tree node).
	var all []Item
	var after *Item
	for {
		var page []Item
		if err := db.ListStored(after, 2, func(it Item) bool { page = append(page, it); return true }); err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 2 {
			t.Fatalf("a page of %d items, limit 2", len(page))
		}
		all = append(all, page...)
		last := page[len(page)-1]
		after = &last
	}
	if len(all) != 11 {
		t.Fatalf("ListStored walked %d items, want 5 groups + 6 chunks", len(all))
	}
	for i, it := range all {
		if it.Group != (i < 5) {
			t.Fatalf("item %d (%s): groups must come first", i, it)
		}
	}

	if n, ok, err := db.StoredSize(Item{Group: true, Hash: groups[2].Hash}); err != nil || !ok || n != int64(len(groups[2].Data)+len(nodes[2].Data)) {
		t.Fatalf("StoredSize(group 2) = %d, %v, %v; want %d", n, ok, err, len(groups[2].Data)+len(nodes[2].Data))
	}
	if n, ok, err := db.StoredSize(Item{Hash: tree.Hash}); err != nil || !ok || n != int64(len(tree.Data)) {
		t.Fatalf("StoredSize(tree node) = %d, %v, %v; want %d", n, ok, err, len(tree.Data))
	}
	count0, bytes0 := db.ChunkStats()
	// A group in the under-target set stays; the others go with their
	// nodes; the tree node goes.
	if err := db.SetCopies([]Item{{Group: true, Hash: groups[0].Hash}}, []int{1}, 3); err != nil {
		t.Fatal(err)
	}
	n, err := db.DropStored([]Item{{Group: true, Hash: groups[0].Hash}, {Group: true, Hash: groups[1].Hash}, {Hash: tree.Hash}})
	if n != 2 || !errors.Is(err, ErrUnderTarget) {
		t.Fatalf("DropStored = %d, %v; want 2 and ErrUnderTarget for the listed group", n, err)
	}
	if ok, _ := db.HasGroup(groups[0].Hash); !ok {
		t.Fatal("a group below its target was dropped")
	}
	if _, ok, _ := db.StoredSize(Item{Hash: tree.Hash}); ok {
		t.Fatal("StoredSize finds a dropped tree node")
	}
	for _, h := range []struct {
		group bool
		name  string
		ok    func() (bool, error)
	}{
		{true, "group 1", func() (bool, error) { return db.HasGroup(groups[1].Hash) }},
		{false, "group 1's node", func() (bool, error) { return db.HasChunk(groups[1].Hash) }},
		{false, "tree node", func() (bool, error) { return db.HasChunk(tree.Hash) }},
	} {
		if ok, err := h.ok(); err != nil || ok {
			t.Fatalf("%s still stored after DropStored (err %v)", h.name, err)
		}
	}
	count, size := db.ChunkStats()
	wantBytes := bytes0 - int64(len(groups[1].Data)+len(nodes[1].Data)+len(tree.Data))
	if count != count0-3-1-1 || size != wantBytes { // the group counts as its 3 chunks
		t.Fatalf("ChunkStats after drops = %d, %d; want %d, %d", count, size, count0-5, wantBytes)
	}
	// Stored again later, an item counts again; dropping twice is harmless.
	if n, err := db.DropStored([]Item{{Group: true, Hash: groups[1].Hash}}); n != 1 || err != nil {
		t.Fatalf("dropping a dropped group = %d, %v", n, err)
	}
	if _, err := db.Put(groups[1:2], nodes[1:2]); err != nil {
		t.Fatal(err)
	}
	if ok, _ := db.HasGroup(groups[1].Hash); !ok {
		t.Fatal("a dropped group stored again is not there")
	}
	// The drops survive a reopen.
	db.Close()
	db = openAt(t, fs, "/db", Options{Logger: quietLogger})
	if ok, _ := db.HasChunk(tree.Hash); ok {
		t.Fatal("a dropped chunk is back after reopening")
	}
	if ok, _ := db.HasGroup(groups[1].Hash); !ok {
		t.Fatal("the group stored again is gone after reopening")
	}
}
