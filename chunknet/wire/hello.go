package wire

import (
	"encoding/binary"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/oashare/oashare/index/format"
)

// Handshake constants.
const (
	// Magic opens every hello: anything else is not an oashare peer.
	Magic = "OASH"
	// Version is the protocol version this package speaks. Peers of
	// different versions refuse each other at the handshake. Version 2
	// added the group frames (PutGroups, GetGroups, GroupResult,
	// HasGroups); version 3 the barrier of fsync (WaitApplied, Applied);
	// version 4 runs over mutually authenticated TLS between members
	// and adds Join and JoinResult; version 5 adds Leaving; version 6
	// carries frames between members in records sealed with keys
	// exported from TLS (chunknet's record layer) instead of TLS's own;
	// version 7 adds InUse; version 8 snapshots; version 9 namespace
	// records may carry inodes with extended attributes (op kind 4);
	// version 10 sends the data of PutGroups in bulk records; version 11
	// adds key records (a group encrypted once for all its receivers).
	Version uint16 = 11
	// MaxNetworkName bounds the network name of a hello, in bytes.
	MaxNetworkName = 64
	// MaxHelloSize is the largest hello on the wire: magic, version, node
	// ID, name length, the longest name, listen port.
	MaxHelloSize = 4 + 2 + 16 + 1 + MaxNetworkName + 2
)

// Verdict codes: the one byte each side writes after reading the peer's
// hello. Codes are append-only.
const (
	VerdictAccept       byte = 0 // go on
	VerdictWrongNetwork byte = 1 // the hellos name different networks
	VerdictSameNode     byte = 2 // the peer's node ID is ours: we dialled ourselves
	VerdictVersion      byte = 3 // protocol versions differ
	VerdictBusy         byte = 4 // busy, shutting down, or any other reason
	VerdictImpostor     byte = 5 // the hello names another node than the one the connection authenticated
)

// Hello is the first message each side writes after the TCP connect.
type Hello struct {
	// Version is the sender's protocol version. WriteHello sends Version
	// (the constant) when it is zero.
	Version uint16
	// Node is the sender's node ID.
	Node format.NodeID
	// Network is the name of the oashare network the sender belongs to:
	// 1..MaxNetworkName bytes of UTF-8.
	Network string
	// ListenPort is the TCP port the sender accepts peers on (0: none).
	ListenPort uint16
}

// WriteHello writes h to w in one Write. It returns an error wrapping
// ErrBadHello, and writes nothing, if the network name is empty, longer than
// MaxNetworkName bytes or not UTF-8.
func WriteHello(w io.Writer, h Hello) error {
	if err := checkNetwork(h.Network); err != nil {
		return err
	}
	if h.Version == 0 {
		h.Version = Version
	}
	var a [MaxHelloSize]byte
	b := append(a[:0], Magic...)
	b = binary.BigEndian.AppendUint16(b, h.Version)
	b = append(b, h.Node[:]...)
	b = append(b, byte(len(h.Network)))
	b = append(b, h.Network...)
	b = binary.BigEndian.AppendUint16(b, h.ListenPort)
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("wire: writing hello: %w", err)
	}
	return nil
}

func checkNetwork(name string) error {
	if len(name) == 0 || len(name) > MaxNetworkName {
		return fmt.Errorf("wire: network name of %d bytes, want 1..%d: %w", len(name), MaxNetworkName, ErrBadHello)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("wire: network name %q is not UTF-8: %w", name, ErrBadHello)
	}
	return nil
}

// ReadHello reads one hello from r, reading at most MaxHelloSize bytes and
// allocating only the network name. It checks, in this order:
//
//   - the magic (error wrapping ErrBadMagic);
//   - the version (a *VersionError, matching ErrVersion; the returned Hello
//     then carries the peer's Version and nothing else, because a hello of
//     another version may continue differently and is not read further);
//   - the network name length and encoding (error wrapping ErrBadHello).
//
// A stream that ends inside the hello gives an error wrapping
// io.ErrUnexpectedEOF (io.EOF if it ends before the first byte).
func ReadHello(r io.Reader) (Hello, error) {
	var b [MaxHelloSize]byte
	// Magic and version first: they are the part of the hello that every
	// version of the protocol keeps.
	if _, err := io.ReadFull(r, b[:6]); err != nil {
		return Hello{}, fmt.Errorf("wire: reading hello: %w", err)
	}
	if string(b[:4]) != Magic {
		return Hello{}, fmt.Errorf("wire: hello magic %q: %w", b[:4], ErrBadMagic)
	}
	v := binary.BigEndian.Uint16(b[4:6])
	if v != Version {
		return Hello{Version: v}, &VersionError{Got: v, Want: Version}
	}
	// Node ID and name length.
	if _, err := io.ReadFull(r, b[6:23]); err != nil {
		return Hello{}, fmt.Errorf("wire: reading hello: %w", noEOF(err))
	}
	n := int(b[22])
	if n == 0 || n > MaxNetworkName {
		return Hello{}, fmt.Errorf("wire: hello network name length %d, want 1..%d: %w", n, MaxNetworkName, ErrBadHello)
	}
	// Name and listen port.
	if _, err := io.ReadFull(r, b[23:23+n+2]); err != nil {
		return Hello{}, fmt.Errorf("wire: reading hello: %w", noEOF(err))
	}
	h := Hello{
		Version:    v,
		Node:       format.NodeID(b[6:22]),
		Network:    string(b[23 : 23+n]),
		ListenPort: binary.BigEndian.Uint16(b[23+n:]),
	}
	if !utf8.ValidString(h.Network) {
		return Hello{}, fmt.Errorf("wire: hello network name %q is not UTF-8: %w", h.Network, ErrBadHello)
	}
	return h, nil
}

// WriteVerdict writes the one-byte verdict on the peer's hello. code must be
// one of the Verdict* constants (else an error wrapping ErrBadHello, and
// nothing is written).
func WriteVerdict(w io.Writer, code byte) error {
	if code > VerdictImpostor {
		return fmt.Errorf("wire: verdict code %d unknown: %w", code, ErrBadHello)
	}
	if _, err := w.Write([]byte{code}); err != nil {
		return fmt.Errorf("wire: writing verdict: %w", err)
	}
	return nil
}

// ReadVerdict reads the peer's one-byte verdict on our hello. It returns nil
// for VerdictAccept and a *RefusedError (matching ErrRefused) for any other
// code, including codes this version does not know.
func ReadVerdict(r io.Reader) error {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return fmt.Errorf("wire: reading verdict: %w", err)
	}
	if b[0] == VerdictAccept {
		return nil
	}
	return &RefusedError{Code: b[0]}
}

// noEOF turns io.EOF, which io.ReadFull returns when it read nothing, into
// io.ErrUnexpectedEOF: used where the stream ends in the middle of a unit.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
