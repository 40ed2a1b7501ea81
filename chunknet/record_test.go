package chunknet

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index/format"
)

// tlsPair runs a real TLS handshake between two fresh keys over loopback
// TCP and returns both ends, client first.
func tlsPair(t testing.TB) (*tls.Conn, *tls.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	certOf := func() tls.Certificate {
		c, err := selfCert(newKey(t))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ccert, scert := certOf(), certOf()
	type res struct {
		tc  *tls.Conn
		err error
	}
	done := make(chan res, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- res{err: err}
			return
		}
		tc, _, _, err := secureServer(t.Context(), conn, scert, func(format.NodeID) error { return nil })
		done <- res{tc, err}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ctc, _, _, err := secureClient(t.Context(), conn, ccert, func(format.NodeID) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { ctc.NetConn().Close(); r.tc.NetConn().Close() })
	return ctc, r.tc
}

// randFrame returns a frame as pieces: short and long ones mixed, some
// longer than a record.
func randFrame(rng *rand.Rand) [][]byte {
	var pieces [][]byte
	for range 1 + rng.IntN(6) {
		var n int
		switch rng.IntN(4) {
		case 0:
			n = rng.IntN(64)
		case 1:
			n = rng.IntN(bigPiece * 2)
		case 2:
			n = 128 << 10
		default:
			n = rng.IntN(3*maxRecord + 7)
		}
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		pieces = append(pieces, p)
	}
	return pieces
}

// TestRecordsAfterTLS: a member connection moves from TLS to records
// with the peer's first records already behind TLS's last one in flight
// (they must not be lost in TLS's or the reader's buffers); frames of any
// shape arrive intact and in order in both directions, across rekeys.
func TestRecordsAfterTLS(t *testing.T) {
	ctc, stc := tlsPair(t)
	rng := rand.New(rand.NewPCG(1, 2))
	limit := rekeyAt{bytes: 1 << 20, records: 5}
	var frames [][][]byte
	for range 40 {
		frames = append(frames, randFrame(rng))
	}
	// The server says its last TLS words and at once sends records; the
	// client reads the TLS message only afterwards.
	serr := make(chan error, 1)
	go func() {
		if _, err := stc.Write([]byte("verdict")); err != nil {
			serr <- err
			return
		}
		sc, err := sealConn(stc, stc.NetConn().(*bufConn), false, limit)
		if err != nil {
			serr <- err
			return
		}
		for _, f := range frames {
			if err := sc.writeFrame(f, nil, nil); err != nil {
				serr <- err
				return
			}
		}
		// And reads the client's frames back.
		for i, f := range frames {
			got := make([]byte, len(bytes.Join(f, nil)))
			if _, err := io.ReadFull(sc, got); err != nil {
				serr <- err
				return
			}
			if !bytes.Equal(got, bytes.Join(f, nil)) {
				serr <- fmt.Errorf("server: frame %d differs", i)
				return
			}
		}
		serr <- nil
	}()
	time.Sleep(50 * time.Millisecond) // the records are on their way
	msg := make([]byte, 7)
	if _, err := io.ReadFull(ctc, msg); err != nil || string(msg) != "verdict" {
		t.Fatalf("TLS message: %q, %v", msg, err)
	}
	cc, err := sealConn(ctc, ctc.NetConn().(*bufConn), true, limit)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range frames {
		want := bytes.Join(f, nil)
		got := make([]byte, len(want))
		if _, err := io.ReadFull(cc, got); err != nil {
			t.Fatalf("frame %d (%d bytes): %v", i, len(want), err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("frame %d (%d bytes) differs", i, len(want))
		}
	}
	for _, f := range frames {
		if err := cc.writeFrame(f, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-serr; err != nil {
		t.Fatal(err)
	}
	if cc.w.seq >= limit.records || cc.r.seq >= limit.records {
		t.Fatalf("keys not renewed: %d and %d records under one key", cc.w.seq, cc.r.seq)
	}
}

// sealedTo seals frames with a key made from secret and returns the bytes
// that go on the wire, one slice per frame.
func sealedTo(t *testing.T, secret []byte, frames ...[]byte) [][]byte {
	t.Helper()
	w, err := newRecordKey(secret, defaultRekey)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, f := range frames {
		var buf bytes.Buffer
		sc := &sealedConn{Conn: writerConn{&buf}, w: w}
		if err := sc.writeFrame([][]byte{f}, nil, nil); err != nil {
			t.Fatal(err)
		}
		out = append(out, buf.Bytes())
	}
	return out
}

// writerConn is a net.Conn whose writes go to w (reads are not used).
type writerConn struct{ w io.Writer }

func (c writerConn) Write(p []byte) (int, error)    { return c.w.Write(p) }
func (writerConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (writerConn) Close() error                     { return nil }
func (writerConn) LocalAddr() net.Addr              { return nil }
func (writerConn) RemoteAddr() net.Addr             { return nil }
func (writerConn) SetDeadline(time.Time) error      { return nil }
func (writerConn) SetReadDeadline(time.Time) error  { return nil }
func (writerConn) SetWriteDeadline(time.Time) error { return nil }

// readerOf returns the reading end of records sealed with secret.
func readerOf(t *testing.T, secret []byte, wire []byte) *sealedConn {
	t.Helper()
	r, err := newRecordKey(secret, defaultRekey)
	if err != nil {
		t.Fatal(err)
	}
	return &sealedConn{r: r, src: bytes.NewReader(wire)}
}

// TestRecordsRefuseTampering: a record altered, replayed, reordered,
// dropped, cut short or sealed under another key is never returned as
// plaintext; the connection fails with ErrBadRecord (or an unexpected
// end), and what was read before is intact.
func TestRecordsRefuseTampering(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	a, b, c := []byte("first frame"), bytes.Repeat([]byte("second "), 3000), []byte("third")
	recs := sealedTo(t, secret, a, b, c)
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	flipped := bytes.Clone(recs[1])
	flipped[len(flipped)/2] ^= 1
	lenFlipped := bytes.Clone(recs[1])
	lenFlipped[3] ^= 1
	cases := []struct {
		name string
		wire []byte
		want error
	}{
		{"altered", join(recs[0], flipped, recs[2]), ErrBadRecord},
		{"length altered", join(recs[0], lenFlipped, recs[2]), ErrBadRecord},
		{"replayed", join(recs[0], recs[0], recs[1]), ErrBadRecord},
		{"reordered", join(recs[0], recs[2], recs[1]), ErrBadRecord},
		{"dropped", join(recs[0], recs[2]), ErrBadRecord},
		{"cut short", join(recs[0], recs[1][:len(recs[1])-1]), io.ErrUnexpectedEOF},
		{"other key", join(recs[0], sealedTo(t, bytes.Repeat([]byte{8}, 32), b)[0]), ErrBadRecord},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sc := readerOf(t, secret, tc.wire)
			got := make([]byte, len(a))
			if _, err := io.ReadFull(sc, got); err != nil || !bytes.Equal(got, a) {
				t.Fatalf("first frame: %q, %v", got, err)
			}
			rest, err := io.ReadAll(sc)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if len(rest) > 0 && !bytes.HasPrefix(b, rest) {
				t.Fatalf("returned %d bytes that were never sent", len(rest))
			}
			// The same into a buffer the second record fits in (opened
			// straight into it).
			sc = readerOf(t, secret, tc.wire)
			io.ReadFull(sc, got)
			big := make([]byte, len(b)+len(c))
			if n, err := io.ReadFull(sc, big); !errors.Is(err, tc.want) || (n > 0 && !bytes.HasPrefix(b, big[:n])) {
				t.Fatalf("into a large buffer: %d bytes, %v; want %v", n, err, tc.want)
			}
		})
	}
	// Untouched, all three arrive and the stream ends cleanly.
	all, err := io.ReadAll(readerOf(t, secret, join(recs...)))
	if err != nil || !bytes.Equal(all, join(a, b, c)) {
		t.Fatalf("clean stream: %d bytes, %v", len(all), err)
	}
}

// TestRecordMemoryComesWithBytes: a declared length buys nothing until
// bytes arrive; an impossible one is refused before anything is read.
func TestRecordMemoryComesWithBytes(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	// A record header claiming the largest record, then 1 KiB.
	hdr := []byte{0, 0, 0, 0}
	n := maxRecord + recordTag
	hdr[1], hdr[2], hdr[3] = byte(n>>16), byte(n>>8), byte(n)
	sc := readerOf(t, secret, append(hdr, make([]byte, 1024)...))
	if _, err := sc.Read(make([]byte, 10)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short record: %v", err)
	}
	if cap(sc.buf) > recordGrowFrom {
		t.Fatalf("read buffer %d bytes for 1 KiB received, want at most %d", cap(sc.buf), recordGrowFrom)
	}
	// A length past the largest record.
	sc = readerOf(t, secret, []byte{0x7f, 0xff, 0xff, 0xff, 1, 2, 3})
	if _, err := sc.Read(make([]byte, 10)); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("huge length: %v", err)
	}
	if cap(sc.buf) > recordGrowFrom {
		t.Fatalf("read buffer %d bytes for a refused header", cap(sc.buf))
	}
}

// BenchmarkFrameTransport sends frames like a put of groups (16 groups of
// 128 KiB, wire.PutGroupsVec) over loopback TCP and reads them on the
// other end: records with the groups' data in bulk records (what members
// use), all records sealed, and TLS records.
func BenchmarkFrameTransport(b *testing.B) {
	sizes := make([]int, 16)
	for i := range sizes {
		sizes[i] = format.MaxGroupData
	}
	big, _ := groupsFrame(rand.New(rand.NewPCG(1, 1)), 1, sizes...)
	// A small request, as a stat or a namespace push of one record is.
	small := [][]byte{make([]byte, 13), make([]byte, 180)}
	for _, shape := range []struct {
		name  string
		frame [][]byte
	}{{"groups", big}, {"small", small}} {
		b.Run(shape.name, func(b *testing.B) { benchFrames(b, shape.frame) })
	}
}

func benchFrames(b *testing.B, frame [][]byte) {
	size := len(bytes.Join(frame, nil))
	run := func(b *testing.B, w func([][]byte) error, r func([]byte) error) {
		b.SetBytes(int64(size))
		done := make(chan error, 1)
		go func() {
			buf := make([]byte, size)
			for range b.N {
				if err := r(buf); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		for range b.N {
			if err := w(frame); err != nil {
				b.Fatal(err)
			}
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	sealedPair := func(b *testing.B) (*sealedConn, *sealedConn) {
		ctc, stc := tlsPair(b)
		cc, err := sealConn(ctc, ctc.NetConn().(*bufConn), true, defaultRekey)
		if err != nil {
			b.Fatal(err)
		}
		sc, err := sealConn(stc, stc.NetConn().(*bufConn), false, defaultRekey)
		if err != nil {
			b.Fatal(err)
		}
		return cc, sc
	}
	b.Run("records-bulk", func(b *testing.B) {
		cc, sc := sealedPair(b)
		run(b, func(f [][]byte) error { return cc.writeFrame(f, wire.PutGroupsData, nil) }, func(buf []byte) error {
			sc.BeginFrame(wire.TypePutGroups)
			if _, err := io.ReadFull(sc, buf); err != nil {
				return err
			}
			return sc.EndFrame()
		})
	})
	b.Run("records", func(b *testing.B) {
		cc, sc := sealedPair(b)
		run(b, func(f [][]byte) error { return cc.writeFrame(f, nil, nil) }, func(buf []byte) error {
			_, err := io.ReadFull(sc, buf)
			return err
		})
	})
	b.Run("tls", func(b *testing.B) {
		ctc, stc := tlsPair(b)
		bw := bufio.NewWriterSize(ctc, 64<<10)
		run(b, func(f [][]byte) error {
			for _, p := range f {
				if _, err := bw.Write(p); err != nil {
					return err
				}
			}
			return bw.Flush()
		}, func(buf []byte) error {
			_, err := io.ReadFull(stc, buf)
			return err
		})
	})
}

// groupsFrame returns a PutGroups frame of groups of random data, as
// pieces (wire.PutGroupsVec), and the groups.
func groupsFrame(rng *rand.Rand, id uint64, sizes ...int) ([][]byte, []wire.Group) {
	var gs []wire.Group
	for _, n := range sizes {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		node, v := rawGroup(data)
		gs = append(gs, wire.Group{Hash: v.Root, Node: node, Data: data})
	}
	_, frame := wire.PutGroupsVec(nil, id, gs)
	return frame, gs
}

// recordKinds walks the records on the wire and returns, for each, whether
// it is a bulk record and its length.
func recordKinds(t *testing.T, w []byte) (bulk []bool, lens []int) {
	t.Helper()
	for len(w) > 0 {
		h := binary.BigEndian.Uint32(w)
		n := int(h &^ (bulkFlag | keyFlag))
		if len(w) < recordHeader+n {
			t.Fatalf("record of %d bytes cut short", n)
		}
		bulk, lens = append(bulk, h&bulkFlag != 0), append(lens, n)
		w = w[recordHeader+n:]
	}
	return bulk, lens
}

// TestBulkRecordsCarryGroupData: the data of a PutGroups frame goes in
// bulk records, everything else sealed, a frame ending in data closed by
// an empty sealed record; a wire.Reader gets every frame back intact,
// across rekeys, with other frames in between.
func TestBulkRecordsCarryGroupData(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	secret := bytes.Repeat([]byte{9}, 32)
	limit := rekeyAt{bytes: 1 << 20, records: 7}
	w, err := newRecordKey(secret, limit)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	sc := &sealedConn{Conn: writerConn{&buf}, w: w}
	type sent struct {
		ping   bool
		groups []wire.Group
	}
	var frames []sent
	for i := range 30 {
		if i%3 == 2 {
			if err := sc.writeFrame([][]byte{wire.AppendPing(nil, uint64(i))}, nil, nil); err != nil {
				t.Fatal(err)
			}
			frames = append(frames, sent{ping: true})
			continue
		}
		// Groups whose data is long, short (under bigPiece: sealed) and
		// as long as a group goes.
		var sizes []int
		for range 1 + rng.IntN(4) {
			sizes = append(sizes, []int{format.MaxGroupData, 100, 1 + rng.IntN(format.MaxGroupData)}[rng.IntN(3)])
		}
		frame, gs := groupsFrame(rng, uint64(i), sizes...)
		if err := sc.writeFrame(frame, wire.PutGroupsData, nil); err != nil {
			t.Fatal(err)
		}
		frames = append(frames, sent{groups: gs})
	}
	// Every frame of the first kind begins sealed; bulk records never
	// end the stream, nor run longer than one group's data.
	bulk, lens := recordKinds(t, buf.Bytes())
	nbulk := 0
	for i, b := range bulk {
		if b {
			nbulk++
			if lens[i] < bigPiece || i == len(bulk)-1 || (i > 0 && bulk[i-1]) {
				t.Fatalf("record %d: bulk of %d bytes at a wrong place", i, lens[i])
			}
		}
	}
	if nbulk == 0 {
		t.Fatal("no bulk record: group data went sealed")
	}
	rk, err := newRecordKey(secret, limit)
	if err != nil {
		t.Fatal(err)
	}
	rd := wire.NewReader(&sealedConn{r: rk, src: bytes.NewReader(buf.Bytes())}, wire.MaxPayload)
	rd.Alloc = func(n int) []byte { return make([]byte, n) }
	for i, f := range frames {
		got, err := rd.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if f.ping {
			if got.Type != wire.TypePing {
				t.Fatalf("frame %d: %v, want Ping", i, got.Type)
			}
			continue
		}
		gs, err := wire.DecodePutGroups(got.Payload)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		for j, g := range gs {
			w := f.groups[j]
			if g.Hash != w.Hash || !bytes.Equal(g.Node, w.Node) || !bytes.Equal(g.Data, w.Data) || !verifyGroup(g.Hash, g.Node, g.Data) {
				t.Fatalf("frame %d group %d differs", i, j)
			}
		}
	}
	if _, err := rd.Next(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want EOF", err)
	}
}

// TestBulkRecordsRefuseTampering: records of a PutGroups frame moved,
// dropped, added, cut, or turned from one kind into the other end the
// connection before the frame is used; the one change that goes through,
// bits flipped in group data, yields a group that does not match its
// name (the receiver refuses it). Bulk records outside a PutGroups frame
// are refused.
func TestBulkRecordsRefuseTampering(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	secret := bytes.Repeat([]byte{7}, 32)
	frame, gs := groupsFrame(rng, 1, 8192)
	ping := wire.AppendPing(nil, 2)
	w, err := newRecordKey(secret, defaultRekey)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	sc := &sealedConn{Conn: writerConn{&buf}, w: w}
	if err := sc.writeFrame(frame, wire.PutGroupsData, nil); err != nil {
		t.Fatal(err)
	}
	if err := sc.writeFrame([][]byte{ping}, nil, nil); err != nil {
		t.Fatal(err)
	}
	// The records: frame and group fields sealed, data bulk, an empty
	// sealed record closing the frame, the ping.
	var recs [][]byte
	bulk, lens := recordKinds(t, buf.Bytes())
	for rest := buf.Bytes(); len(rest) > 0; {
		n := recordHeader + lens[len(recs)]
		recs, rest = append(recs, rest[:n]), rest[n:]
	}
	if want := []bool{false, true, false, false}; !slices.Equal(bulk, want) || lens[2] != recordTag {
		t.Fatalf("records: bulk %v lengths %v, want bulk %v and an empty third", bulk, lens, want)
	}
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	edit := func(i int, f func(r []byte) []byte) []byte {
		out := slices.Clone(recs)
		out[i] = f(bytes.Clone(recs[i]))
		return join(out...)
	}
	flag := func(r []byte) []byte { r[0] ^= 0x80; return r }
	cases := []struct {
		name string
		wire []byte
	}{
		{"sealed record made bulk", edit(0, flag)},
		{"bulk record made sealed", edit(1, flag)},
		{"bulk record cut", edit(1, func(r []byte) []byte {
			binary.BigEndian.PutUint32(r, uint32(len(r)-recordHeader-1)|bulkFlag)
			return r[:len(r)-1]
		})},
		{"bulk record dropped", join(recs[0], recs[2], recs[3])},
		{"bulk record replayed", join(recs[0], recs[1], recs[1], recs[2], recs[3])},
		{"closing record dropped", join(recs[0], recs[1], recs[3])},
		{"closing record altered", edit(2, func(r []byte) []byte { r[5] ^= 1; return r })},
	}
	next := func(w []byte) (wire.Frame, *wire.Reader, error) {
		rd := wire.NewReader(readerOf(t, secret, w), wire.MaxPayload)
		f, err := rd.Next()
		return f, rd, err
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, _, err := next(tc.wire)
			if !errors.Is(err, ErrBadRecord) {
				t.Fatalf("got a %v frame and %v, want ErrBadRecord", f.Type, err)
			}
		})
	}
	t.Run("data altered", func(t *testing.T) {
		f, rd, err := next(edit(1, func(r []byte) []byte { r[100] ^= 4; return r }))
		if err != nil {
			t.Fatal(err)
		}
		got, err := wire.DecodePutGroups(f.Payload)
		if err != nil || len(got) != 1 {
			t.Fatalf("%d groups, %v", len(got), err)
		}
		if bytes.Equal(got[0].Data, gs[0].Data) || verifyGroup(got[0].Hash, got[0].Node, got[0].Data) {
			t.Fatal("altered group data arrived as the group it was")
		}
		if f, err := rd.Next(); err != nil || f.Type != wire.TypePing {
			t.Fatalf("the frame after: %v, %v", f.Type, err)
		}
	})
	t.Run("bulk outside PutGroups", func(t *testing.T) {
		push := wire.AppendPush(nil, 3, [][]byte{make([]byte, 8192)})
		var buf bytes.Buffer
		w, err := newRecordKey(secret, defaultRekey)
		if err != nil {
			t.Fatal(err)
		}
		sc := &sealedConn{Conn: writerConn{&buf}, w: w}
		all := func(int) bool { return true }
		if err := sc.writeFrame([][]byte{push[:wire.HeaderSize+8], push[wire.HeaderSize+8:]}, all, nil); err != nil {
			t.Fatal(err)
		}
		if f, _, err := next(buf.Bytes()); !errors.Is(err, ErrBadRecord) {
			t.Fatalf("got a %v frame and %v, want ErrBadRecord", f.Type, err)
		}
	})
	// Untouched, both frames arrive.
	f, rd, err := next(buf.Bytes())
	if err != nil || f.Type != wire.TypePutGroups {
		t.Fatalf("clean stream: %v, %v", f.Type, err)
	}
	if f, err := rd.Next(); err != nil || f.Type != wire.TypePing {
		t.Fatalf("clean stream, second frame: %v, %v", f.Type, err)
	}
}

// TestKeyRecordsSealGroupsOnce: groups given sealed once (onceSealed) go
// to two connections as a key record and bulk records whose bytes are the
// same on both (one encryption for every receiver), not the plaintext;
// each reader gets every frame back intact, across rekeys, and the data
// of groups sent without a seal, even right after a keyed piece.
func TestKeyRecordsSealGroupsOnce(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	limit := rekeyAt{bytes: 1 << 20, records: 5}
	secrets := [][]byte{bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)}
	var bufs [2]bytes.Buffer
	var scs [2]*sealedConn
	for k := range scs {
		w, err := newRecordKey(secrets[k], limit)
		if err != nil {
			t.Fatal(err)
		}
		scs[k] = &sealedConn{Conn: writerConn{&bufs[k]}, w: w}
	}
	var sent [][]wire.Group
	var seals []*onceSealed
	for i := range 12 {
		frame, gs := groupsFrame(rng, uint64(i), format.MaxGroupData, 100, 5000+rng.IntN(9000))
		ss := make([]*onceSealed, len(gs))
		for j := range ss {
			if i%4 != 3 || j != 2 { // one frame in four sends its last group unsealed
				ss[j] = new(onceSealed)
				if len(gs[j].Data) >= bigPiece { // shorter data goes sealed
					seals = append(seals, ss[j])
				}
			}
		}
		pre := func(i int) *onceSealed { return ss[i/2] }
		for _, sc := range scs {
			if err := sc.writeFrame(frame, wire.PutGroupsData, pre); err != nil {
				t.Fatal(err)
			}
		}
		sent = append(sent, gs)
	}
	// A keyed piece followed at once by one under the connection's key.
	a, b := make([]byte, 8192), make([]byte, 8192)
	for i := range a {
		a[i], b[i] = byte(rng.Uint32()), byte(rng.Uint32())
	}
	hdr := wire.AppendPing(nil, 0)[:wire.HeaderSize]
	hdr[4] = byte(wire.TypePutGroups)
	binary.BigEndian.PutUint32(hdr, uint32(wire.HeaderSize-4+len(a)+len(b)))
	last := new(onceSealed)
	for _, sc := range scs {
		if err := sc.writeFrame([][]byte{hdr, a, b}, func(i int) bool { return i > 0 },
			func(i int) *onceSealed { return []*onceSealed{nil, last, nil}[i] }); err != nil {
			t.Fatal(err)
		}
	}

	// The bulk bytes of keyed pieces are the same on both connections
	// and are not the plaintext.
	keyedBulk := func(w []byte) (out [][]byte, keys int) {
		keyed := false
		for len(w) > 0 {
			h := binary.BigEndian.Uint32(w)
			n := int(h &^ (bulkFlag | keyFlag))
			rec := w[recordHeader : recordHeader+n]
			switch {
			case h&keyFlag != 0:
				keys++
				keyed = true
			case h&bulkFlag != 0:
				if keyed {
					out = append(out, rec)
				}
			default:
				keyed = false
			}
			w = w[recordHeader+n:]
		}
		return out, keys
	}
	b0, k0 := keyedBulk(bufs[0].Bytes())
	b1, k1 := keyedBulk(bufs[1].Bytes())
	if k0 != len(seals)+1 || k1 != k0 {
		t.Fatalf("key records: %d and %d, want %d (one per sealed group)", k0, k1, len(seals)+1)
	}
	if len(b0) != len(b1) || len(b0) == 0 {
		t.Fatalf("keyed bulk records: %d and %d", len(b0), len(b1))
	}
	for i := range b0 {
		if !bytes.Equal(b0[i], b1[i]) {
			t.Fatalf("keyed bulk record %d differs between the connections: encrypted twice", i)
		}
	}
	for _, gs := range sent {
		for _, g := range gs {
			for _, r := range b0 {
				if len(g.Data) >= 64 && bytes.Contains(r, g.Data[:64]) {
					t.Fatal("group data went in the clear")
				}
			}
		}
	}

	for k := range scs {
		rk, err := newRecordKey(secrets[k], limit)
		if err != nil {
			t.Fatal(err)
		}
		rd := wire.NewReader(&sealedConn{r: rk, src: bytes.NewReader(bufs[k].Bytes())}, wire.MaxPayload)
		rd.Alloc = func(n int) []byte { return make([]byte, n) }
		for i, want := range sent {
			f, err := rd.Next()
			if err != nil {
				t.Fatalf("connection %d frame %d: %v", k, i, err)
			}
			gs, err := wire.DecodePutGroups(f.Payload)
			if err != nil {
				t.Fatalf("connection %d frame %d: %v", k, i, err)
			}
			for j, g := range gs {
				if !bytes.Equal(g.Data, want[j].Data) || !verifyGroup(g.Hash, g.Node, g.Data) {
					t.Fatalf("connection %d frame %d group %d differs", k, i, j)
				}
			}
		}
		f, err := rd.Next()
		if err != nil || !bytes.Equal(f.Payload, append(slices.Clone(a), b...)) {
			t.Fatalf("connection %d: the keyed piece and the one after: %v", k, err)
		}
		if _, err := rd.Next(); err != io.EOF {
			t.Fatalf("connection %d after the last frame: %v, want EOF", k, err)
		}
	}
}

// TestKeyRecordsRefuseTampering: a key record dropped, made bulk, made an
// ordinary sealed record, or sent outside a PutGroups frame ends the
// connection before the frame is used; bits flipped in a keyed piece's
// bulk record yield a group that does not match its name.
func TestKeyRecordsRefuseTampering(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	secret := bytes.Repeat([]byte{5}, 32)
	frame, gs := groupsFrame(rng, 1, 8192)
	w, err := newRecordKey(secret, defaultRekey)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	sc := &sealedConn{Conn: writerConn{&buf}, w: w}
	seal := new(onceSealed)
	if err := sc.writeFrame(frame, wire.PutGroupsData, func(int) *onceSealed { return seal }); err != nil {
		t.Fatal(err)
	}
	// The records: frame and group fields sealed, the key, the data in
	// bulk, an empty sealed record closing the frame.
	var recs [][]byte
	for rest := buf.Bytes(); len(rest) > 0; {
		n := recordHeader + int(binary.BigEndian.Uint32(rest)&^(bulkFlag|keyFlag))
		recs, rest = append(recs, rest[:n]), rest[n:]
	}
	if len(recs) != 4 || recs[1][0]&0x40 == 0 || recs[2][0]&0x80 == 0 {
		t.Fatalf("%d records, flags %x %x: want sealed, key, bulk, sealed", len(recs), recs[1][0], recs[2][0])
	}
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	edit := func(i int, f func(r []byte) []byte) []byte {
		out := slices.Clone(recs)
		out[i] = f(bytes.Clone(recs[i]))
		return join(out...)
	}
	next := func(w []byte) (wire.Frame, error) {
		return wire.NewReader(readerOf(t, secret, w), wire.MaxPayload).Next()
	}
	for _, tc := range []struct {
		name string
		wire []byte
	}{
		{"key record dropped", join(recs[0], recs[2], recs[3])},
		{"key record made bulk", edit(1, func(r []byte) []byte { r[0] ^= 0x80; return r })},
		{"key record made sealed", edit(1, func(r []byte) []byte { r[0] ^= 0x40; return r })},
		{"key altered", edit(1, func(r []byte) []byte { r[6] ^= 1; return r })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if f, err := next(tc.wire); !errors.Is(err, ErrBadRecord) {
				t.Fatalf("got a %v frame and %v, want ErrBadRecord", f.Type, err)
			}
		})
	}
	t.Run("data altered", func(t *testing.T) {
		f, err := next(edit(2, func(r []byte) []byte { r[100] ^= 4; return r }))
		if err != nil {
			t.Fatal(err)
		}
		got, err := wire.DecodePutGroups(f.Payload)
		if err != nil || len(got) != 1 {
			t.Fatalf("%d groups, %v", len(got), err)
		}
		if bytes.Equal(got[0].Data, gs[0].Data) || verifyGroup(got[0].Hash, got[0].Node, got[0].Data) {
			t.Fatal("altered group data arrived as the group it was")
		}
	})
	t.Run("key record outside PutGroups", func(t *testing.T) {
		push := wire.AppendPush(nil, 3, [][]byte{make([]byte, 8192)})
		var buf bytes.Buffer
		w, err := newRecordKey(secret, defaultRekey)
		if err != nil {
			t.Fatal(err)
		}
		sc := &sealedConn{Conn: writerConn{&buf}, w: w}
		if err := sc.writeFrame([][]byte{push[:wire.HeaderSize+8], push[wire.HeaderSize+8:]},
			func(int) bool { return true }, func(int) *onceSealed { return new(onceSealed) }); err != nil {
			t.Fatal(err)
		}
		if f, err := next(buf.Bytes()); !errors.Is(err, ErrBadRecord) {
			t.Fatalf("got a %v frame and %v, want ErrBadRecord", f.Type, err)
		}
	})
	// Untouched, the frame arrives whole.
	f, err := next(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	got, err := wire.DecodePutGroups(f.Payload)
	if err != nil || len(got) != 1 || !bytes.Equal(got[0].Data, gs[0].Data) {
		t.Fatalf("clean stream: %d groups, %v", len(got), err)
	}
}
