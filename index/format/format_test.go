package format

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"testing"
)

func TestHash(t *testing.T) {
	h := Sum([]byte("hi"))
	if [32]byte(h) != sha256.Sum256([]byte("hi")) {
		t.Fatal("Sum is not SHA-256")
	}
	got, err := ParseHash(h.String())
	if err != nil || got != h {
		t.Fatalf("ParseHash(String()) = %v, %v", got, err)
	}
	if h.Short() != h.String()[:12] || h.IsZero() || !(Hash{}).IsZero() {
		t.Errorf("Short %q, IsZero %v", h.Short(), h.IsZero())
	}
	for _, bad := range []string{"", h.String()[:63], h.String() + "0", "zz" + h.String()[2:]} {
		if _, err := ParseHash(bad); err == nil {
			t.Errorf("ParseHash(%q) accepted", bad)
		}
	}
}

func TestNodeID(t *testing.T) {
	a, b := NewNodeID(), NewNodeID()
	if a == b || a.IsZero() {
		t.Fatalf("two random node IDs: %v %v", a, b)
	}
	got, err := ParseNodeID(a.String())
	if err != nil || got != a || a.Short() != a.String()[:8] {
		t.Fatalf("ParseNodeID(String()) = %v, %v", got, err)
	}
	if _, err := ParseNodeID(a.String()[:31]); err == nil {
		t.Error("a short node ID accepted")
	}
	lo, hi := NodeID{0: 1}, NodeID{0: 1, 15: 1}
	if lo.Compare(hi) != -1 || hi.Compare(lo) != 1 || lo.Compare(lo) != 0 {
		t.Error("Compare is not bytewise")
	}
}

// TestSizes: the format's sizes fit together as the layout says.
func TestSizes(t *testing.T) {
	if MaxNodeSize != 8192 || MaxGroupData != 128<<10 || MaxChunkData < ChunkSize || MaxGroupChunks != Fanout {
		t.Errorf("sizes: node %d, group %d, chunk %d", MaxNodeSize, MaxGroupData, MaxChunkData)
	}
}

func TestNodeIDOf(t *testing.T) {
	// A fixed key gives a fixed ID: peers compute it identically.
	pub := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	sum := sha256.Sum256(append([]byte("oashare node v1"), pub...))
	if got := NodeIDOf(pub); !bytes.Equal(got[:], sum[:16]) {
		t.Fatalf("NodeIDOf = %v, want %x", got, sum[:16])
	}
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	if NodeIDOf(other) == NodeIDOf(pub) {
		t.Fatal("two keys give one node ID")
	}
}
