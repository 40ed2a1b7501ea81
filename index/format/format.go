// Package format is the vocabulary every oashare package shares, and
// nothing else: the names of content (Hash, the SHA-256 of a chunk's
// bytes) and of nodes (NodeID), and the sizes of the content format
// (chunks, tree nodes, groups). It depends on the standard library only,
// so that the wire format (chunknet/wire) and the file trees
// (chunknet/tree) build without the storage engine. multisha, below it,
// computes many Hashes at once.
package format

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// The sizes of the content format. Every peer cuts and reads files
// identically (see chunknet/tree for the layout), so changing any of them
// is a format change.
const (
	// ChunkSize is the size of every data chunk of a file but its last.
	ChunkSize = 512
	// Fanout is the most children a tree node has.
	Fanout = 256
	// HashSize is the size of a Hash.
	HashSize = 32
	// MaxNodeSize is the size of a full tree node: Fanout hashes.
	MaxNodeSize = Fanout * HashSize
	// MaxChunkData is the largest chunk stored or sent by name: a full
	// tree node (data chunks are at most ChunkSize).
	MaxChunkData = MaxNodeSize
	// MaxGroupChunks is the most chunks of a group: the data chunks under
	// one depth-1 node.
	MaxGroupChunks = Fanout
	// MaxGroupData is the largest group: MaxGroupChunks chunks of
	// ChunkSize bytes.
	MaxGroupData = MaxGroupChunks * ChunkSize
)

// Compile-time check: a Hash is HashSize bytes.
var _ [HashSize]byte = Hash{}

// Hash is the name of a chunk, a tree node or a group: the SHA-256 of its
// bytes. It is comparable and usable as a map key.
type Hash [32]byte

// Sum returns the Hash of b.
func Sum(b []byte) Hash { return Hash(sha256.Sum256(b)) }

// IsZero reports whether h is the all-zero hash, which names no chunk (the
// root of an empty file).
func (h Hash) IsZero() bool { return h == Hash{} }

func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// Short returns the first 12 hex digits, for logs.
func (h Hash) Short() string { return hex.EncodeToString(h[:6]) }

// ParseHash parses the 64-hex-digit form written by String.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*len(h) {
		return h, fmt.Errorf("chunk hash %q: want %d hex digits", s, 2*len(h))
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("chunk hash %q: %v", s, err)
	}
	return h, nil
}

// NodeID names one oashare node. It is derived from the node's public
// key (NodeIDOf), so no other node can claim it: a peer proves it by the
// key its connection is authenticated with, and by its records'
// signatures.
type NodeID [16]byte

// NodeIDOf returns the node ID of the node whose Ed25519 public key is
// pub: the first 16 bytes of SHA-256("oashare node v1" || pub).
func NodeIDOf(pub ed25519.PublicKey) NodeID {
	h := sha256.New()
	h.Write([]byte("oashare node v1"))
	h.Write(pub)
	var n NodeID
	copy(n[:], h.Sum(nil))
	return n
}

func (n NodeID) String() string { return hex.EncodeToString(n[:]) }

// Short returns the first 8 hex digits, for logs and tables.
func (n NodeID) Short() string { return hex.EncodeToString(n[:4]) }

// IsZero reports whether n is unset.
func (n NodeID) IsZero() bool { return n == NodeID{} }

// ParseNodeID parses the 32-hex-digit form written by String.
func ParseNodeID(s string) (NodeID, error) {
	var n NodeID
	if len(s) != 2*len(n) {
		return n, fmt.Errorf("node id %q: want %d hex digits", s, 2*len(n))
	}
	if _, err := hex.Decode(n[:], []byte(s)); err != nil {
		return n, fmt.Errorf("node id %q: %v", s, err)
	}
	return n, nil
}

// NewNodeID returns a random node ID, for nodes without a key (tests of
// logic, indexes opened without an identity).
func NewNodeID() NodeID {
	var n NodeID
	if _, err := rand.Read(n[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}

// Compare orders node IDs bytewise; it breaks ties between equal clocks.
func (n NodeID) Compare(o NodeID) int {
	for i := range n {
		if n[i] != o[i] {
			if n[i] < o[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}
