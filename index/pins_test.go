package index

import (
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/vfs"
)

func TestPins(t *testing.T) {
	fs := vfs.NewMem()
	db := openAt(t, fs, "db", Options{})
	for _, id := range []uint64{9, 2, 1 << 40} {
		if err := db.Pin(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Pin(2); err != nil { // again: still one pin
		t.Fatal(err)
	}
	if ok, err := db.Unpin(9); !ok || err != nil {
		t.Fatalf("Unpin(9) = %v, %v", ok, err)
	}
	if ok, err := db.Unpin(9); ok || err != nil {
		t.Fatalf("Unpin(9) again = %v, %v; want false", ok, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openAt(t, fs, "db", Options{})
	if got, err := db.Pins(); err != nil || !slices.Equal(got, []uint64{2, 1 << 40}) {
		t.Fatalf("Pins after reopen = %v, %v; want [2 %d]", got, err, uint64(1<<40))
	}
	// Pins are this node's own: nothing of them is in the log.
	if recs, err := db.LogSince(db.NodeID(), 0, 100, 1<<20); err != nil || len(recs) != 0 {
		t.Fatalf("log after pinning: %d records, %v", len(recs), err)
	}
}
