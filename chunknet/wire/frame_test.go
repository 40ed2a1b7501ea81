package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"
	"unicode/utf8"

	"github.com/oashare/oashare/index/format"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name.golden, a hex dump, or rewrites the
// file under -update. A difference means the wire format changed: if that
// is deliberate, bump Version or append a frame type, and run
// go test ./chunknet/wire -run Golden -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	dump := hex.Dump(got)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(dump), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if dump != string(want) {
		t.Errorf("%s: the encoding changed; this changes the wire protocol.\ngot:\n%s\nwant:\n%s", path, dump, want)
	}
}

func TestGoldenFrames(t *testing.T) {
	for _, tf := range testFrames() {
		golden(t, tf.name, encodeFrame(nil, tf.t, tf.id, tf.v))
	}
	golden(t, "hello", helloBytes(t, testHello()))
}

func TestFrameRoundTrip(t *testing.T) {
	for _, tf := range testFrames() {
		t.Run(tf.name, func(t *testing.T) {
			// Append after existing bytes: they must be kept.
			prefix := []byte("keep")
			b := encodeFrame(bytes.Clone(prefix), tf.t, tf.id, tf.v)
			if !bytes.HasPrefix(b, prefix) {
				t.Fatalf("Append clobbered dst: %q", b[:4])
			}
			b = b[len(prefix):]
			if n := binary.BigEndian.Uint32(b); int(n) != len(b)-4 {
				t.Fatalf("length field %d, frame has %d bytes after it", n, len(b)-4)
			}
			r := NewReader(bytes.NewReader(b), 0)
			f, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			if f.Type != tf.t || f.ReqID != tf.id || len(f.Payload) != len(b)-HeaderSize {
				t.Fatalf("header: got %v id %d len %d", f.Type, f.ReqID, len(f.Payload))
			}
			v, err := decodeFrame(f)
			if err != nil {
				t.Fatal(err)
			}
			if !same(v, tf.v) {
				t.Errorf("decoded %v, want %v", v, tf.v)
			}
			if err := canonical(f); err != nil {
				t.Error(err)
			}
			if _, err := r.Next(); err != io.EOF {
				t.Errorf("after the frame: %v, want io.EOF", err)
			}
		})
	}
}

// TestDecodeAliases: decoded byte slices point into the payload (no copy)
// and are capped, so appending to one cannot overwrite the next item.
func TestDecodeAliases(t *testing.T) {
	b := AppendPutChunks(nil, 1, []Chunk{{Data: []byte("ab")}, {Data: []byte("cd")}})
	p := b[HeaderSize:]
	cs, err := DecodePutChunks(p)
	if err != nil {
		t.Fatal(err)
	}
	p[4+36] = 'X'
	if string(cs[0].Data) != "Xb" {
		t.Errorf("Data does not alias the payload: %q", cs[0].Data)
	}
	_ = append(cs[0].Data, 'Z')
	if string(p[4+36+2:4+36+3]) == "Z" {
		t.Error("appending to a decoded slice overwrote the payload")
	}
}

// TestPutGroupsVec: the pieces of a vectored PutGroups frame are the
// bytes of AppendPutGroups's frame, in order, with each group's data the
// caller's own slice (not a copy) and everything else in the buffer.
func TestPutGroupsVec(t *testing.T) {
	gs := []Group{{Hash: format.Hash{1}, Node: make([]byte, 64), Data: []byte("abc")}, {Hash: format.Hash{2}, Data: []byte("d")}}
	want := AppendPutGroups(nil, 9, gs)
	buf, frame := PutGroupsVec([]byte("prefix"), 9, gs)
	if string(buf[:6]) != "prefix" {
		t.Fatalf("PutGroupsVec did not append to its buffer: %q", buf[:6])
	}
	var got []byte
	for _, p := range frame {
		got = append(got, p...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("pieces make\n%x\nwant\n%x", got, want)
	}
	if len(frame) != 2*len(gs) {
		t.Fatalf("%d pieces for %d groups, want %d", len(frame), len(gs), 2*len(gs))
	}
	for i, g := range gs {
		if &frame[2*i+1][0] != &g.Data[0] {
			t.Errorf("group %d's data was copied", i)
		}
	}
	if _, empty := PutGroupsVec(nil, 3, nil); !bytes.Equal(empty[0], AppendPutGroups(nil, 3, nil)) {
		t.Errorf("a frame of no groups: %x", empty)
	}
}

// TestDecodeGroupAliases: a decoded group's node and data point into the
// payload and are capped.
func TestDecodeGroupAliases(t *testing.T) {
	b := AppendPutGroups(nil, 1, []Group{{Node: make([]byte, 32), Data: []byte("ab")}, {Data: []byte("cd")}})
	p := b[HeaderSize:]
	gs, err := DecodePutGroups(p)
	if err != nil {
		t.Fatal(err)
	}
	node, data := 4+32+4, 4+32+4+32+4
	p[node] = 'N'
	p[data] = 'X'
	if gs[0].Node[0] != 'N' || string(gs[0].Data) != "Xb" {
		t.Errorf("Node and Data do not alias the payload: %q %q", gs[0].Node[:1], gs[0].Data)
	}
	_ = append(gs[0].Node, 'Z')
	_ = append(gs[0].Data, 'Z')
	if p[node+32] == 'Z' || p[data+2] == 'Z' {
		t.Error("appending to a decoded slice overwrote the payload")
	}
}

func TestTypes(t *testing.T) {
	responses := map[Type]bool{TypePong: true, TypePutResult: true, TypeGetResult: true, TypeHasResult: true,
		TypeRecords: true, TypePushResult: true, TypeError: true, TypeStatResult: true, TypeGroupResult: true, TypeApplied: true, TypeJoinResult: true, TypeInUseResult: true, TypeSnapshotPage: true}
	seen := map[string]bool{}
	for ty := Type(0); ty < 255; ty++ {
		s := ty.String()
		if !ty.known() {
			if s != "Type("+strconv.Itoa(int(ty))+")" {
				t.Errorf("unknown type %d: String %q", ty, s)
			}
			if ty.IsResponse() {
				t.Errorf("unknown type %d is a response", ty)
			}
			continue
		}
		if seen[s] || strings.HasPrefix(s, "Type(") {
			t.Errorf("type %d: String %q", ty, s)
		}
		seen[s] = true
		if ty.IsResponse() != responses[ty] {
			t.Errorf("%v.IsResponse() = %v", ty, ty.IsResponse())
		}
	}
	if len(seen) != 29 {
		t.Errorf("%d known types, want 29", len(seen))
	}
	// Type numbers are append-only: these must never change.
	fixed := []Type{TypePing, TypePong, TypePutChunks, TypePutResult, TypeGetChunks, TypeGetResult,
		TypeHasChunks, TypeHasResult, TypePull, TypeRecords, TypePush, TypePushResult, TypeError, TypeBye,
		TypeStat, TypeStatResult, TypePutGroups, TypeGetGroups, TypeGroupResult, TypeHasGroups,
		TypeWaitApplied, TypeApplied, TypeJoin, TypeJoinResult, TypeLeaving, TypeInUse, TypeInUseResult, TypeSnapshot, TypeSnapshotPage}
	for i, ty := range fixed {
		if int(ty) != i+1 {
			t.Errorf("%v is %d, want %d: frame type numbers are append-only", ty, ty, i+1)
		}
	}
}

// TestReaderAcceptsAllTypes: the Reader passes a frame of every known type
// (empty payload where the type has none, else an empty list), and
// testFrames, the source of goldens and fuzz seeds, covers every type.
func TestReaderAcceptsAllTypes(t *testing.T) {
	covered := map[Type]bool{}
	for _, tf := range testFrames() {
		covered[tf.t] = true
	}
	for ty := TypePing; ty <= maxType; ty++ {
		if !covered[ty] {
			t.Errorf("%v has no frame in testFrames", ty)
		}
		var payload []byte
		if !ty.emptyPayload() {
			payload = u32(0)
		}
		b := AppendFrame(nil, ty, uint64(ty), payload)
		f, err := NewReader(bytes.NewReader(b), 0).Next()
		if err != nil || f.Type != ty || f.ReqID != uint64(ty) || !bytes.Equal(f.Payload, payload) {
			t.Errorf("%v: got %v %d %x, %v", ty, f.Type, f.ReqID, f.Payload, err)
		}
	}
}

// stream is every test frame, back to back.
func stream() ([]byte, []testFrame) {
	tfs := testFrames()
	var b []byte
	for _, tf := range tfs {
		b = encodeFrame(b, tf.t, tf.id, tf.v)
	}
	return b, tfs
}

// TestReaderFragmentation: frames survive any split of the stream into
// reads, as TCP delivers it.
func TestReaderFragmentation(t *testing.T) {
	b, tfs := stream()
	for name, mk := range map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"onebyte":  iotest.OneByteReader,
		"half":     iotest.HalfReader,
		"dataerr":  iotest.DataErrReader,
		"onebyte+": func(r io.Reader) io.Reader { return iotest.DataErrReader(iotest.OneByteReader(r)) },
	} {
		t.Run(name, func(t *testing.T) {
			r := NewReader(mk(bytes.NewReader(b)), 0)
			for _, tf := range tfs {
				f, err := r.Next()
				if err != nil {
					t.Fatalf("%s: %v", tf.name, err)
				}
				v, err := decodeFrame(f)
				if err != nil {
					t.Fatalf("%s: %v", tf.name, err)
				}
				if f.Type != tf.t || f.ReqID != tf.id || !same(v, tf.v) {
					t.Fatalf("%s: got %v %d %v", tf.name, f.Type, f.ReqID, v)
				}
			}
			if _, err := r.Next(); err != io.EOF {
				t.Fatalf("end: %v, want io.EOF", err)
			}
		})
	}
}

func header(length uint32, t Type, id uint64) []byte {
	b := binary.BigEndian.AppendUint32(nil, length)
	b = append(b, byte(t))
	return binary.BigEndian.AppendUint64(b, id)
}

func TestReaderErrors(t *testing.T) {
	type tc struct {
		name string
		in   []byte
		max  int
		want error
	}
	tests := []tc{
		{"length 0", header(0, TypePing, 1), 0, ErrBadFrame},
		{"length 8", header(8, TypePing, 1), 0, ErrBadFrame},
		{"length max u32", header(1<<32-1, TypePutChunks, 1), 0, ErrFrameTooLarge},
		{"payload MaxPayload+1", header(9+MaxPayload+1, TypePutChunks, 1), 0, ErrFrameTooLarge},
		{"payload above own limit", header(9+101, TypePutChunks, 1), 100, ErrFrameTooLarge},
		{"type 0", header(9, 0, 1), 0, ErrUnknownType},
		{"type 30", header(9, 30, 1), 0, ErrUnknownType},
		{"type 255", header(9, 255, 1), 0, ErrUnknownType},
		{"ping with payload", append(header(10, TypePing, 1), 0), 0, ErrBadFrame},
		{"pong with payload", append(header(10, TypePong, 1), 0), 0, ErrBadFrame},
		{"bye with payload", append(header(10, TypeBye, 1), 0), 0, ErrBadFrame},
		{"empty stream", nil, 0, io.EOF},
	}
	// Every cut point of a valid frame.
	full := AppendPutChunks(nil, 5, []Chunk{{format.Sum([]byte("x")), []byte("xyz")}})
	for i := 1; i < len(full); i++ {
		tests = append(tests, tc{"cut at " + strconv.Itoa(i), full[:i], 0, io.ErrUnexpectedEOF})
	}
	// Cut after a complete frame: the first frame reads, the cut one fails.
	for _, cut := range []int{1, HeaderSize - 1, HeaderSize, len(full) - 1} {
		in := append(AppendPing(nil, 1), full[:cut]...)
		tests = append(tests, tc{"ping then cut at " + strconv.Itoa(cut), in, 0, io.ErrUnexpectedEOF})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(tt.in), tt.max)
			var err error
			for range 3 {
				if _, err = r.Next(); err != nil {
					break
				}
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if tt.want == io.EOF && err != io.EOF {
				t.Errorf("clean end is %#v, want bare io.EOF", err)
			}
			if _, err2 := r.Next(); err2 != err {
				t.Errorf("error not sticky: then %v", err2)
			}
		})
	}
}

// headerOnly serves a header, then fails the test if asked for more: the
// Reader must reject the frame from the header alone.
type headerOnly struct {
	t   *testing.T
	hdr []byte
}

func (h *headerOnly) Read(p []byte) (int, error) {
	if len(h.hdr) == 0 {
		h.t.Errorf("Reader read past a header it should have rejected")
		return 0, io.ErrUnexpectedEOF
	}
	n := copy(p, h.hdr)
	h.hdr = h.hdr[n:]
	return n, nil
}

// TestReaderOversizedNoAlloc: a length field of 4 GiB costs nothing: the
// frame is rejected from its header, before any allocation or read.
func TestReaderOversizedNoAlloc(t *testing.T) {
	for _, hdr := range [][]byte{
		header(1<<32-1, TypePutChunks, 1),
		header(9+MaxPayload+1, TypeGetResult, 2),
		header(1<<31, 99, 3),
	} {
		r := NewReader(&headerOnly{t: t, hdr: hdr}, 0)
		if _, err := r.Next(); !errors.Is(err, ErrFrameTooLarge) {
			t.Errorf("header %x: %v, want ErrFrameTooLarge", hdr, err)
		}
		if cap(r.buf) != 0 {
			t.Errorf("header %x: Reader allocated %d bytes", hdr, cap(r.buf))
		}
	}
	// And in bytes: 100 rejected 4 GiB frames allocate almost nothing
	// (the error values only).
	hdr := header(1<<32-1, TypePutChunks, 1)
	allocated := bytesAllocated(func() {
		for range 100 {
			r := NewReader(bytes.NewReader(hdr), 0)
			if _, err := r.Next(); err == nil {
				t.Fatal("accepted")
			}
		}
	})
	if allocated > 100<<10 {
		t.Errorf("100 rejected frames allocated %d bytes", allocated)
	}
}

func bytesAllocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestReaderReusesBuffer: steady-state reading allocates nothing, and the
// buffer grows only when a larger frame arrives.
func TestReaderReusesBuffer(t *testing.T) {
	big := AppendPush(nil, 1, [][]byte{make([]byte, 5000)})
	small := AppendPush(nil, 2, [][]byte{make([]byte, 100)})
	src := &loopReader{b: append(bytes.Clone(big), small...)}
	r := NewReader(src, 0)
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	c := cap(r.buf)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Next allocates %.1f times per frame", allocs)
	}
	if cap(r.buf) != c {
		t.Errorf("buffer grew from %d to %d without a larger frame", c, cap(r.buf))
	}
}

// loopReader repeats b forever.
type loopReader struct {
	b   []byte
	off int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.b[l.off:])
	l.off = (l.off + n) % len(l.b)
	return n, nil
}

func TestNewReaderLimit(t *testing.T) {
	for _, tt := range []struct{ in, want int }{{0, MaxPayload}, {-1, MaxPayload}, {MaxPayload + 1, MaxPayload}, {100, 100}} {
		if got := NewReader(nil, tt.in).max; got != tt.want {
			t.Errorf("NewReader(_, %d) limit %d, want %d", tt.in, got, tt.want)
		}
	}
	// A payload of exactly the limit is fine.
	b := AppendFrame(nil, TypePush, 1, make([]byte, 100))
	if _, err := NewReader(bytes.NewReader(b), 100).Next(); err != nil {
		t.Errorf("payload at the limit: %v", err)
	}
}

func TestAppendPanicsOverLimits(t *testing.T) {
	tooBig := make([]byte, format.MaxChunkData+1)
	groupData := make([]byte, format.MaxGroupData)
	group := func(node, data []byte) []Group { return []Group{{Node: node, Data: data}} }
	cases := map[string]func(){
		"chunks count":     func() { AppendPutChunks(nil, 1, make([]Chunk, MaxChunksPerFrame+1)) },
		"chunk data":       func() { AppendPutChunks(nil, 1, []Chunk{{Data: tooBig}}) },
		"chunks payload":   func() { AppendPutChunks(nil, 1, repeatChunk(MaxChunksPerFrame, format.MaxChunkData)) },
		"hashes":           func() { AppendGetChunks(nil, 1, make([]format.Hash, MaxChunksPerFrame+1)) },
		"has hashes":       func() { AppendHasChunks(nil, 1, make([]format.Hash, MaxChunksPerFrame+1)) },
		"get result data":  func() { AppendGetResult(nil, 1, []GetItem{{StatusOK, tooBig}}) },
		"get result count": func() { AppendGetResult(nil, 1, make([]GetItem, MaxChunksPerFrame+1)) },
		"put result":       func() { AppendPutResult(nil, 1, make([]byte, MaxChunksPerFrame+1)) },
		"has result":       func() { AppendHasResult(nil, 1, make([]byte, MaxChunksPerFrame+1)) },
		"push result":      func() { AppendPushResult(nil, 1, make([]byte, MaxRecordsPerFrame+1)) },
		"pull":             func() { AppendPull(nil, 1, make([]VVEntry, MaxVVEntries+1)) },
		"record size":      func() { AppendPush(nil, 1, [][]byte{make([]byte, MaxRecordBytes+1)}) },
		"records count":    func() { AppendRecords(nil, 1, false, make([][]byte, MaxRecordsPerFrame+1)) },
		"records payload": func() {
			AppendRecords(nil, 1, false, [][]byte{make([]byte, MaxRecordBytes), make([]byte, MaxRecordBytes), make([]byte, MaxRecordBytes), make([]byte, MaxRecordBytes)})
		},
		"frame payload": func() { AppendFrame(nil, TypePush, 1, make([]byte, MaxPayload+1)) },
		// Groups
		"groups count":       func() { AppendPutGroups(nil, 1, make([]Group, MaxGroupsPerFrame+1)) },
		"group node size":    func() { AppendPutGroups(nil, 1, group(make([]byte, MaxGroupNode+32), []byte{1})) },
		"group node not ×32": func() { AppendPutGroups(nil, 1, group(make([]byte, 33), []byte{1})) },
		"group data empty":   func() { AppendPutGroups(nil, 1, group(nil, nil)) },
		"group data size":    func() { AppendPutGroups(nil, 1, group(nil, make([]byte, format.MaxGroupData+1))) },
		"groups payload": func() {
			AppendPutGroups(nil, 1, slices.Repeat(group(nil, groupData), MaxPayload/format.MaxGroupData))
		},
		"group ranges count": func() { AppendGetGroups(nil, 1, make([]GroupRange, MaxGroupsPerFrame+1)) },
		"group range n 0":    func() { AppendGetGroups(nil, 1, []GroupRange{{First: 0, N: 0}}) },
		"group range end":    func() { AppendGetGroups(nil, 1, []GroupRange{{First: 255, N: 2}}) },
		"group range wraps":  func() { AppendGetGroups(nil, 1, []GroupRange{{First: 1<<16 - 1, N: 1<<16 - 1}}) },
		"group result count": func() { AppendGroupResult(nil, 1, make([]GetItem, MaxGroupsPerFrame+1)) },
		"group result data":  func() { AppendGroupResult(nil, 1, []GetItem{{StatusOK, make([]byte, format.MaxGroupData+1)}}) },
		"group result payload": func() {
			AppendGroupResult(nil, 1, slices.Repeat([]GetItem{{StatusOK, groupData}}, MaxPayload/format.MaxGroupData))
		},
		"has groups": func() { AppendHasGroups(nil, 1, make([]format.Hash, MaxGroupsPerFrame+1)) },
	}
	for name, f := range cases {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
	// At the limits: no panic.
	AppendPutChunks(nil, 1, repeatChunk(MaxChunksPerFrame, 512))
	AppendFrame(nil, TypePush, 1, make([]byte, MaxPayload))
	AppendPushResult(nil, 1, make([]byte, MaxRecordsPerFrame))
	AppendPutGroups(nil, 1, group(make([]byte, MaxGroupNode), groupData))
	AppendPutGroups(nil, 1, slices.Repeat(group(nil, []byte{1}), MaxGroupsPerFrame))
	AppendGetGroups(nil, 1, slices.Repeat([]GroupRange{{First: 0, N: format.MaxGroupChunks}, {First: format.MaxGroupChunks - 1, N: 1}}, MaxGroupsPerFrame/2))
	AppendGroupResult(nil, 1, slices.Repeat([]GetItem{{StatusOK, groupData}}, MaxPayload/format.MaxGroupData-1))
	AppendGroupResult(nil, 1, make([]GetItem, MaxGroupsPerFrame))
	AppendHasGroups(nil, 1, make([]format.Hash, MaxGroupsPerFrame))
	// A frame of MaxChunksPerFrame hashes is fine for chunks, not for groups.
	AppendHasChunks(nil, 1, make([]format.Hash, MaxChunksPerFrame))
}

func repeatChunk(n, size int) []Chunk {
	data := make([]byte, size)
	cs := make([]Chunk, n)
	for i := range cs {
		cs[i].Data = data
	}
	return cs
}

func TestAppendErrorTruncates(t *testing.T) {
	for _, msg := range []string{
		strings.Repeat("x", 5000),
		strings.Repeat("x", MaxErrorMsg-1) + "é" + "tail", // 'é' straddles the limit
		strings.Repeat("€", 1000),
		strings.Repeat("\xff", 2000), // not UTF-8: cut at the limit
	} {
		b := AppendError(nil, 3, CodeInternal, msg)
		code, got, err := DecodeError(b[HeaderSize:])
		if err != nil || code != CodeInternal {
			t.Fatalf("decode: %d %v", code, err)
		}
		if len(got) > MaxErrorMsg || !strings.HasPrefix(msg, got) || len(got) < MaxErrorMsg-3 {
			t.Errorf("truncated to %d bytes, prefix %v", len(got), strings.HasPrefix(msg, got))
		}
		if utf8.ValidString(msg) && !utf8.ValidString(got) {
			t.Errorf("truncation split a rune: %q", got[len(got)-4:])
		}
	}
}

// TestBytesByHand pins a few encodings to bytes written out by hand from
// the diagrams in doc.go and PROTOCOL.md, independently of the golden files.
func TestBytesByHand(t *testing.T) {
	mustHex := func(s string) []byte {
		b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tt := range []struct {
		name      string
		got, want []byte
	}{
		{"ping 1", AppendPing(nil, 1), mustHex("00000009 01 0000000000000001")},
		{"bye 0", AppendBye(nil, 0), mustHex("00000009 0e 0000000000000000")},
		{"PROTOCOL.md example", AppendPutChunks(nil, 7, []Chunk{{format.Sum([]byte("hi")), []byte("hi")}}),
			mustHex(`00000033 03 0000000000000007 00000001
				8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4
				00000002 6869`)},
		{"get result", AppendGetResult(nil, 2, []GetItem{{StatusNotFound, []byte("ignored")}, {StatusOK, []byte{9}}}),
			mustHex("00000014 06 0000000000000002 00000002 01 00 00000001 09")},
		{"pull", AppendPull(nil, 3, []VVEntry{{format.NodeID{15: 1}, 258}}),
			mustHex("00000023 09 0000000000000003 0001 00000000000000000000000000000001 0000000000000102")},
		{"error", AppendError(nil, 4, CodeUnsupported, "no"),
			mustHex("0000000f 0d 0000000000000004 0003 0002 6e6f")},
		{"hello", helloBytes(t, Hello{Node: format.NodeID{0: 0xaa}, Network: "n", ListenPort: 0x1f90}),
			mustHex("4f415348 000b aa000000000000000000000000000000 01 6e 1f90")},
		{"put groups", AppendPutGroups(nil, 5, []Group{{format.Hash{31: 1}, []byte{}, []byte("hi")}}),
			mustHex(`00000037 11 0000000000000005 00000001
				0000000000000000000000000000000000000000000000000000000000000001
				00000000 00000002 6869`)},
		{"get groups", AppendGetGroups(nil, 6, []GroupRange{{format.Hash{0: 0xcc}, 2, 254}}),
			mustHex(`00000031 12 0000000000000006 00000001
				cc00000000000000000000000000000000000000000000000000000000000000
				0002 00fe`)},
		{"group result", AppendGroupResult(nil, 6, []GetItem{{StatusOK, []byte{7, 8}}, {StatusNotFound, nil}}),
			mustHex("00000015 13 0000000000000006 00000002 00 00000002 0708 01")},
		{"has groups", AppendHasGroups(nil, 8, []format.Hash{{1: 0xee}}),
			mustHex(`0000002d 14 0000000000000008 00000001
				00ee000000000000000000000000000000000000000000000000000000000000`)},
		{"wait applied", AppendWaitApplied(nil, 9, format.NodeID{15: 2}, 300),
			mustHex("00000021 15 0000000000000009 00000000000000000000000000000002 000000000000012c")},
		{"applied", AppendApplied(nil, 9, StatusNotFound), mustHex("0000000a 16 0000000000000009 01")},
		{"join", AppendJoin(nil, 10, [JoinMACSize]byte{31: 1}, "ab"),
			mustHex(`0000002c 17 000000000000000a
				0000000000000000000000000000000000000000000000000000000000000001 02 6162`)},
		{"join result", AppendJoinResult(nil, 10, []byte{1, 2}), mustHex("0000000d 18 000000000000000a 0002 0102")},
		{"leaving", AppendLeaving(nil, 0, true), mustHex("0000000a 19 0000000000000000 01")},
		{"in use", AppendInUse(nil, 11), mustHex("00000009 1a 000000000000000b")},
		{"in use result", AppendInUseResult(nil, 11, InUse{Seq: 7, Unpublished: 1500 * time.Millisecond, Complete: true,
			Roots: []Root{{Size: 600, Depth: 1, Hash: format.Hash{31: 9}}}, VV: []VVEntry{{Node: format.NodeID{0xab}, Seq: 5}}}),
			mustHex(`00000061 1b 000000000000000b 0000000000000007 00000000000005dc 01 00000001
				0000000000000258 01 0000000000000000000000000000000000000000000000000000000000000009
				0001 ab000000000000000000000000000000 0000000000000005`)},
		{"records pruned", AppendRecordsPruned(nil, 3), mustHex("0000000e 0a 0000000000000003 02 00000000")},
		{"snapshot", AppendSnapshot(nil, 4, 9, []byte("ab")), mustHex("00000015 1c 0000000000000004 0000000000000009 0002 6162")},
		{"snapshot page", AppendSnapshotPage(nil, 4, SnapshotPage{Session: 9, Done: true, HLC: 6,
			VV: []SnapshotVV{{Node: format.NodeID{0xcd}, Seq: 2, HLC: 3}}, Items: []SnapshotItem{{Key: []byte("k"), Value: []byte("vv")}}}),
			mustHex(`00000049 1d 0000000000000004 0000000000000009 01 0000000000000006
				0001 cd000000000000000000000000000000 0000000000000002 0000000000000003
				00000001 0001 6b 00000002 7676`)},
	} {
		if !bytes.Equal(tt.got, tt.want) {
			t.Errorf("%s:\n got %x\nwant %x", tt.name, tt.got, tt.want)
		}
	}
}

// TestReaderAlloc: with Alloc, every payload is read into a buffer of
// Alloc's, which later frames leave alone.
func TestReaderAlloc(t *testing.T) {
	b, tfs := stream()
	r := NewReader(iotest.HalfReader(bytes.NewReader(b)), 0)
	var asked []int
	r.Alloc = func(n int) []byte { asked = append(asked, n); return make([]byte, n, n+7) }
	var frames []Frame
	var copies [][]byte
	for range tfs {
		f, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, f)
		copies = append(copies, bytes.Clone(f.Payload))
	}
	for i, f := range frames {
		if !bytes.Equal(f.Payload, copies[i]) {
			t.Fatalf("frame %d (%v): payload changed by later frames", i, f.Type)
		}
		if len(f.Payload) > 0 && cap(f.Payload) != len(f.Payload)+7 {
			t.Fatalf("frame %d: payload not in the buffer Alloc gave", i)
		}
	}
	for _, n := range asked {
		if n <= 0 {
			t.Fatalf("Alloc asked for %d bytes", n)
		}
	}
}

// TestReaderAllocatesAsBytesArrive: a Reader with Alloc does not allocate
// what a header declares before the bytes come: a frame that claims the
// largest payload and sends a few bytes costs at most growFrom; a frame
// that does send them all reads back whole, the outgrown buffers freed.
func TestReaderAllocatesAsBytesArrive(t *testing.T) {
	allocated, freed := 0, 0
	alloc := func(n int) []byte { allocated += n; return make([]byte, n) }
	free := func(b []byte) { freed += cap(b) }

	hdr := AppendFrame(nil, TypePush, 3, make([]byte, MaxPayload))[:HeaderSize+10]
	r := NewReader(bytes.NewReader(hdr), 0)
	r.Alloc, r.Free = alloc, free
	if _, err := r.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a frame cut short: %v", err)
	}
	if allocated > growFrom {
		t.Fatalf("allocated %d bytes for a frame that sent 10, want at most %d", allocated, growFrom)
	}

	allocated, freed = 0, 0
	payload := make([]byte, MaxPayload)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	r = NewReader(iotest.HalfReader(bytes.NewReader(AppendFrame(nil, TypePush, 4, payload))), 0)
	r.Alloc, r.Free = alloc, free
	f, err := r.Next()
	if err != nil || !bytes.Equal(f.Payload, payload) {
		t.Fatalf("a whole large frame: %v, equal %v", err, bytes.Equal(f.Payload, payload))
	}
	if allocated-freed != MaxPayload || allocated > 2*MaxPayload {
		t.Fatalf("allocated %d, freed %d for one %d-byte payload", allocated, freed, MaxPayload)
	}

	// A frame that sends a little more than growFrom and stops holds at
	// most four times what it sent.
	allocated, freed = 0, 0
	cut := AppendFrame(nil, TypePush, 5, payload)[:HeaderSize+growFrom+10]
	r = NewReader(bytes.NewReader(cut), 0)
	r.Alloc, r.Free = alloc, free
	if _, err := r.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a frame cut short: %v", err)
	}
	if allocated > growFrom+4*(growFrom+10) {
		t.Fatalf("allocated %d bytes for a frame that sent %d", allocated, growFrom+10)
	}

	// A payload of a few MiB is copied at most once; none when Alloc's
	// buffers have room (as pooled ones do).
	calls := 0
	roomy := func(n int) []byte { calls++; return make([]byte, n, MaxPayload) }
	big := payload[:2*growFrom+100]
	r = NewReader(iotest.HalfReader(bytes.NewReader(AppendFrame(nil, TypePush, 6, big))), 0)
	r.Alloc = roomy
	if f, err := r.Next(); err != nil || !bytes.Equal(f.Payload, big) || calls != 1 {
		t.Fatalf("a 2 MiB frame with roomy buffers: %v, equal %v, %d allocations", err, bytes.Equal(f.Payload, big), calls)
	}
	calls = 0
	r = NewReader(iotest.HalfReader(bytes.NewReader(AppendFrame(nil, TypePush, 7, big))), 0)
	r.Alloc = func(n int) []byte { calls++; return make([]byte, n) }
	if f, err := r.Next(); err != nil || !bytes.Equal(f.Payload, big) || calls != 2 {
		t.Fatalf("a 2 MiB frame: %v, equal %v, %d allocations, want 2", err, bytes.Equal(f.Payload, big), calls)
	}
}

// bounds is a source that records what a Reader tells it of frame bounds
// and fails EndFrame of a frame of type failOn.
type bounds struct {
	io.Reader
	failOn Type
	calls  []string
	cur    Type
}

func (b *bounds) BeginFrame(t Type) error {
	b.cur = t
	b.calls = append(b.calls, "begin "+t.String())
	return nil
}

func (b *bounds) EndFrame() error {
	b.calls = append(b.calls, "end "+b.cur.String())
	if b.cur == b.failOn {
		return errors.New("not closed")
	}
	return nil
}

// TestReaderTellsFrameBounds: a source that is a FrameBounds hears of each
// frame's type before its payload is read and of its end after; a frame
// whose EndFrame fails is not returned, and the stream ends.
func TestReaderTellsFrameBounds(t *testing.T) {
	var stream []byte
	stream = AppendPing(stream, 1)
	stream = AppendPush(stream, 2, [][]byte{[]byte("rec")})
	stream = AppendError(stream, 3, 1, "x")
	src := &bounds{Reader: bytes.NewReader(stream), failOn: TypeError}
	rd := NewReader(src, 0)
	for _, want := range []Type{TypePing, TypePush} {
		if f, err := rd.Next(); err != nil || f.Type != want {
			t.Fatalf("got %v, %v; want %v", f.Type, err, want)
		}
	}
	if f, err := rd.Next(); err == nil {
		t.Fatalf("got a %v frame whose EndFrame failed", f.Type)
	}
	want := []string{"begin Ping", "end Ping", "begin Push", "end Push", "begin Error", "end Error"}
	if !slices.Equal(src.calls, want) {
		t.Fatalf("calls %v, want %v", src.calls, want)
	}
}
