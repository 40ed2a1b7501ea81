package wire

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error this package returns for bad input wraps one
// of them with detail (which field, which limit); match with errors.Is.
// Errors of the underlying reader (io.EOF, io.ErrUnexpectedEOF, a net
// timeout) are wrapped, not replaced, so errors.Is sees them too.
var (
	// ErrBadFrame: a frame or payload is malformed (a count or length
	// disagrees with the bytes present, a field is out of range, bytes
	// trail the payload).
	ErrBadFrame = errors.New("malformed frame")
	// ErrFrameTooLarge: a length field exceeds its limit.
	ErrFrameTooLarge = errors.New("frame too large")
	// ErrUnknownType: a frame type this version does not know.
	ErrUnknownType = errors.New("unknown frame type")
	// ErrBadMagic: the peer's first bytes are not "OASH".
	ErrBadMagic = errors.New("not an oashare peer")
	// ErrVersion: the peer speaks another protocol version. The concrete
	// error is a *VersionError.
	ErrVersion = errors.New("protocol version mismatch")
	// ErrBadHello: a hello field is out of range (network name length,
	// invalid UTF-8), or a verdict code is unknown to WriteVerdict.
	ErrBadHello = errors.New("malformed hello")
	// ErrRefused: the peer refused the handshake. The concrete error is a
	// *RefusedError.
	ErrRefused = errors.New("peer refused the connection")
)

// VersionError reports a peer that speaks another protocol version.
// errors.Is(err, ErrVersion) is true for it.
type VersionError struct {
	Got  uint16 // the peer's version
	Want uint16 // ours (Version)
}

func (e *VersionError) Error() string {
	older := "the peer"
	if e.Want < e.Got {
		older = "this node"
	}
	return fmt.Sprintf("%v: peer speaks oashare protocol version %d, this node speaks version %d; upgrade the older node (%s)",
		ErrVersion, e.Got, e.Want, older)
}

// Is makes errors.Is(err, ErrVersion) true.
func (e *VersionError) Is(target error) bool { return target == ErrVersion }

// RefusedError reports the verdict code a peer refused the handshake with.
// errors.Is(err, ErrRefused) is true for it.
type RefusedError struct {
	Code byte // a Verdict* constant, or a code unknown to this version
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%v: %s (verdict %d)", ErrRefused, verdictText(e.Code), e.Code)
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

func verdictText(code byte) string {
	switch code {
	case VerdictAccept:
		return "accepted"
	case VerdictWrongNetwork:
		return "wrong network"
	case VerdictSameNode:
		return "same node: connected to itself"
	case VerdictVersion:
		return "protocol version mismatch"
	case VerdictBusy:
		return "busy or other reason"
	case VerdictImpostor:
		return "the hello names another node than the authenticated one"
	}
	return "unknown reason"
}
