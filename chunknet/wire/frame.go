package wire

import (
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
)

// Type is a frame type. Numbers are APPEND-ONLY: a number, once released, is
// never reused or renumbered; a new frame takes the next free number.
type Type uint8

// Frame types. See the package comment for each payload.
const (
	TypePing       Type = 1  // request, empty payload; answered by Pong
	TypePong       Type = 2  // response to Ping, empty payload
	TypePutChunks  Type = 3  // request: store chunks; answered by PutResult
	TypePutResult  Type = 4  // response: one status per chunk
	TypeGetChunks  Type = 5  // request: send chunks by hash; answered by GetResult
	TypeGetResult  Type = 6  // response: one status (+ data) per hash
	TypeHasChunks  Type = 7  // request: which of these hashes do you hold; answered by HasResult
	TypeHasResult  Type = 8  // response: one status per hash
	TypePull       Type = 9  // request: records newer than a version vector; answered by Records
	TypeRecords    Type = 10 // response to Pull: a batch of namespace records
	TypePush       Type = 11 // request: apply these records; answered by PushResult
	TypePushResult Type = 12 // response: one status per record
	TypeError      Type = 13 // response to any request: code and message
	TypeBye        Type = 14 // the sender is leaving cleanly; empty payload, no reply
	TypeStat       Type = 15 // request, empty payload: your storage; answered by StatResult
	TypeStatResult Type = 16 // response: disk total and free bytes, chunks and chunk bytes stored

	// Version 2: groups.
	TypePutGroups   Type = 17 // request: store groups; answered by PutResult
	TypeGetGroups   Type = 18 // request: send chunk ranges of groups; answered by GroupResult
	TypeGroupResult Type = 19 // response: one status (+ data) per range
	TypeHasGroups   Type = 20 // request: which of these groups do you hold; answered by HasResult

	// Version 3: the barrier of fsync.
	TypeWaitApplied Type = 21 // request: answer once you apply an origin's records up to a seq; answered by Applied
	TypeApplied     Type = 22 // response: whether they are applied (and visible to programs)

	// Version 4: members only.
	TypeJoin       Type = 23 // request of a node joining with a code; answered by JoinResult or Error
	TypeJoinResult Type = 24 // response: the network the joiner now belongs to

	// Version 5: leave.
	TypeLeaving Type = 25 // the sender is draining (1) or no longer (0): place no copies on it; 1-byte payload, no reply

	// Version 7: garbage collection.
	TypeInUse       Type = 26 // request, empty payload: what must you keep; answered by InUseResult
	TypeInUseResult Type = 27 // response: the answerer's log position, its oldest unpublished upload, the file versions it uses

	// Version 8: history pruning.
	TypeSnapshot     Type = 28 // request: a page of a snapshot of the namespace; answered by SnapshotPage
	TypeSnapshotPage Type = 29 // response: the snapshot's version vector and a page of its items

	maxType = TypeSnapshotPage // the highest known type; raise when appending
)

var typeNames = [...]string{
	TypePing:         "Ping",
	TypePong:         "Pong",
	TypePutChunks:    "PutChunks",
	TypePutResult:    "PutResult",
	TypeGetChunks:    "GetChunks",
	TypeGetResult:    "GetResult",
	TypeHasChunks:    "HasChunks",
	TypeHasResult:    "HasResult",
	TypePull:         "Pull",
	TypeRecords:      "Records",
	TypePush:         "Push",
	TypePushResult:   "PushResult",
	TypeError:        "Error",
	TypeBye:          "Bye",
	TypeStat:         "Stat",
	TypeStatResult:   "StatResult",
	TypePutGroups:    "PutGroups",
	TypeGetGroups:    "GetGroups",
	TypeGroupResult:  "GroupResult",
	TypeHasGroups:    "HasGroups",
	TypeWaitApplied:  "WaitApplied",
	TypeApplied:      "Applied",
	TypeJoin:         "Join",
	TypeJoinResult:   "JoinResult",
	TypeLeaving:      "Leaving",
	TypeInUse:        "InUse",
	TypeInUseResult:  "InUseResult",
	TypeSnapshot:     "Snapshot",
	TypeSnapshotPage: "SnapshotPage",
}

func (t Type) known() bool { return t >= TypePing && t <= maxType }

// String returns the frame type's name, or "Type(n)" for an unknown number.
func (t Type) String() string {
	if t.known() {
		return typeNames[t]
	}
	return "Type(" + strconv.Itoa(int(t)) + ")"
}

// IsResponse reports whether frames of type t answer a request: their
// request ID is that of the request they answer. Bye is neither a request
// nor a response, nor is Leaving.
func (t Type) IsResponse() bool {
	switch t {
	case TypePong, TypePutResult, TypeGetResult, TypeHasResult, TypeRecords, TypePushResult, TypeError, TypeStatResult, TypeGroupResult, TypeApplied, TypeJoinResult, TypeInUseResult, TypeSnapshotPage:
		return true
	}
	return false
}

// emptyPayload reports whether frames of type t must have an empty payload.
func (t Type) emptyPayload() bool {
	return t == TypePing || t == TypePong || t == TypeBye || t == TypeStat || t == TypeInUse
}

// Limits. Every count and length read off the wire is checked against these
// (and against the bytes actually present) before anything is allocated.
const (
	// HeaderSize is the size of the fixed frame header: length u32,
	// type u8, request ID u64.
	HeaderSize = 4 + 1 + 8
	// MaxPayload bounds the payload of any frame.
	MaxPayload = 4 << 20
	// MaxChunksPerFrame bounds the count of PutChunks, GetChunks,
	// HasChunks, GetResult, PutResult and HasResult.
	MaxChunksPerFrame = 4096
	// MaxVVEntries bounds the version vector of a Pull.
	MaxVVEntries = 4096
	// MaxRecordBytes bounds one record in Records and Push.
	MaxRecordBytes = 1 << 20
	// MaxRecordsPerFrame bounds the count of Records, Push and
	// PushResult.
	MaxRecordsPerFrame = 65536
	// MaxErrorMsg bounds the message of an Error frame; AppendError
	// truncates longer messages.
	MaxErrorMsg = 1024
	// MaxGroupNode bounds the tree node of one PutGroups item; a node is
	// a multiple of 32 bytes (hashes), possibly none.
	MaxGroupNode = 8192
	// MaxGroupsPerFrame bounds the count of PutGroups, GetGroups,
	// HasGroups and GroupResult.
	MaxGroupsPerFrame = 1024
	// MaxInUseRoots bounds the file versions of an InUseResult.
	MaxInUseRoots = 65536
)

// Chunk status codes, one per item in PutResult, GetResult, HasResult and
// GroupResult.
// Codes are append-only; a receiver treats any non-zero code as a failure of
// that item.
const (
	StatusOK         byte = 0 // done / here is the data / I have it
	StatusNotFound   byte = 1 // no such chunk here
	StatusBadHash    byte = 2 // the data does not hash to the given hash
	StatusTooLarge   byte = 3 // the data exceeds the chunk size limit
	StatusStoreError byte = 4 // the local store failed
	StatusQuota      byte = 5 // the sender has had this node store its quota (a put only)
	StatusFull       byte = 6 // this node's disk is full (a put only)
)

// Error frame codes. Codes are append-only.
const (
	CodeInternal    uint16 = 1 // the responder failed; the request may be retried elsewhere
	CodeBadRequest  uint16 = 2 // the request was malformed or out of limits
	CodeUnsupported uint16 = 3 // the responder does not serve this request type
	CodeJoinRefused uint16 = 4 // a Join was refused; the message says why
)

// Frame is one decoded frame.
type Frame struct {
	Type  Type
	ReqID uint64
	// Payload aliases the Reader's buffer: it is valid only until the next
	// call of Next (unless the Reader has an Alloc). Decode functions
	// return slices that alias it too.
	Payload []byte
}

// Reader reads frames from a stream. It keeps one payload buffer, reused
// across frames and grown only when a larger frame arrives. A Reader is not
// safe for concurrent use: one goroutine per connection reads.
//
// The Reader issues two reads per frame (header, payload); give it a
// bufio.Reader when it reads a net.Conn.
type Reader struct {
	// Alloc, if set, gives the buffer each payload is read into, of at
	// least n bytes: the payload is then the caller's, never reused by the
	// Reader (a server hands it to the goroutine serving the request
	// without copying it). Nil means one buffer reused across frames.
	// Free, if set, takes back a buffer Alloc gave that the Reader
	// outgrew (see growFrom).
	Alloc func(n int) []byte
	Free  func([]byte)

	r   io.Reader
	fb  FrameBounds // r, if it is one
	max int
	hdr [HeaderSize]byte
	buf []byte
	err error
}

// NewReader returns a Reader of frames from r whose payloads are at most
// maxPayload bytes. maxPayload <= 0 or above MaxPayload means MaxPayload.
func NewReader(r io.Reader, maxPayload int) *Reader {
	if maxPayload <= 0 || maxPayload > MaxPayload {
		maxPayload = MaxPayload
	}
	fb, _ := r.(FrameBounds)
	return &Reader{r: r, fb: fb, max: maxPayload}
}

// FrameBounds is implemented by a source that needs to know where frames
// begin and end (a record layer that takes some records inside some
// frames only, and checks a frame's records once it is whole). A Reader
// whose source is one tells it; an error from either call ends the
// stream.
type FrameBounds interface {
	// BeginFrame: a header of type t has been read, its payload is next.
	BeginFrame(t Type) error
	// EndFrame: the payload has been read; the frame is returned only if
	// EndFrame returns nil.
	EndFrame() error
}

// Next reads the next frame. Its Payload is valid until the next call.
//
// It returns io.EOF, unwrapped, when the stream ends cleanly between frames.
// Any other error is final: the stream is out of step, Next returns the same
// error again, and the connection must be closed. Errors wrap
// ErrFrameTooLarge (length above the limit; nothing is allocated or read
// past the header), ErrBadFrame (length below the header size, or a payload
// where the type has none), ErrUnknownType, or the underlying reader's error
// (io.ErrUnexpectedEOF when the stream ends inside a frame).
func (r *Reader) Next() (Frame, error) {
	if r.err != nil {
		return Frame{}, r.err
	}
	f, err := r.next()
	if err != nil {
		r.err = err
		return Frame{}, err
	}
	return f, nil
}

func (r *Reader) next() (Frame, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		if err == io.EOF {
			return Frame{}, io.EOF
		}
		return Frame{}, fmt.Errorf("wire: reading frame header: %w", err)
	}
	length := binary.BigEndian.Uint32(r.hdr[0:4])
	t := Type(r.hdr[4])
	id := binary.BigEndian.Uint64(r.hdr[5:13])
	if length < HeaderSize-4 {
		return Frame{}, fmt.Errorf("wire: frame length %d below the minimum %d: %w", length, HeaderSize-4, ErrBadFrame)
	}
	n := uint64(length) - (HeaderSize - 4)
	if n > uint64(r.max) {
		return Frame{}, fmt.Errorf("wire: %v frame payload of %d bytes exceeds the %d-byte limit: %w", t, n, r.max, ErrFrameTooLarge)
	}
	if !t.known() {
		return Frame{}, fmt.Errorf("wire: frame type %d (request %d): %w", uint8(t), id, ErrUnknownType)
	}
	if n > 0 && t.emptyPayload() {
		return Frame{}, fmt.Errorf("wire: %v frame with a %d-byte payload, want none: %w", t, n, ErrBadFrame)
	}
	if r.fb == nil {
		return r.payload(t, id, n)
	}
	if err := r.fb.BeginFrame(t); err != nil {
		return Frame{}, fmt.Errorf("wire: %v frame: %w", t, err)
	}
	f, err := r.payload(t, id, n)
	if err != nil {
		return Frame{}, err
	}
	if err := r.fb.EndFrame(); err != nil {
		if r.Alloc != nil && r.Free != nil && f.Payload != nil {
			r.Free(f.Payload)
		}
		return Frame{}, fmt.Errorf("wire: %v frame: %w", t, err)
	}
	return f, nil
}

// payload reads the payload of n bytes of a frame whose header was read.
func (r *Reader) payload(t Type, id uint64, n uint64) (Frame, error) {
	if r.Alloc == nil {
		if uint64(cap(r.buf)) < n {
			// Grow at least geometrically so a slowly rising size does not
			// reallocate on every frame, but never past the limit.
			c := max(int(n), 2*cap(r.buf))
			r.buf = make([]byte, min(c, r.max))
		}
		p := r.buf[:n]
		if _, err := io.ReadFull(r.r, p); err != nil {
			return Frame{}, fmt.Errorf("wire: reading %v frame payload of %d bytes: %w", t, n, noEOF(err))
		}
		return Frame{Type: t, ReqID: id, Payload: p}, nil
	}
	if n == 0 {
		return Frame{Type: t, ReqID: id}, nil
	}
	// Memory for the payload comes as its bytes do: the length a peer
	// declares buys it at most growFrom bytes until they have arrived,
	// then at most four times what has arrived (so a payload of up to
	// 4 MiB is copied once at most: MaxPayload is 4 × growFrom).
	p := r.Alloc(int(min(n, growFrom)))[:min(n, growFrom)]
	got := 0
	for {
		k, err := io.ReadFull(r.r, p[got:])
		got += k
		if err != nil {
			if r.Free != nil {
				r.Free(p)
			}
			return Frame{}, fmt.Errorf("wire: reading %v frame payload of %d bytes: %w", t, n, noEOF(err))
		}
		if uint64(got) == n {
			return Frame{Type: t, ReqID: id, Payload: p}, nil
		}
		want := min(n, 4*uint64(got))
		if uint64(cap(p)) >= want {
			p = p[:want] // Alloc gave room enough already
			continue
		}
		q := r.Alloc(int(want))[:want]
		copy(q, p[:got])
		if r.Free != nil {
			r.Free(p)
		}
		p = q
	}
}

// growFrom is how much of a payload a Reader with Alloc allocates before
// any of its bytes arrived; beyond it, the buffer grows as bytes come.
const growFrom = 1 << 20
