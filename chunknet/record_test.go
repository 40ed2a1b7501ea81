package chunknet

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

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
			if err := sc.writeFrame(f); err != nil {
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
		if err := cc.writeFrame(f); err != nil {
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
		if err := sc.writeFrame([][]byte{f}); err != nil {
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

// BenchmarkFrameTransport sends frames like a put of groups (16 pieces of
// 128 KiB after a short header) over loopback TCP and reads them on the
// other end: records (what members use) against TLS records.
func BenchmarkFrameTransport(b *testing.B) {
	big := [][]byte{make([]byte, 40)}
	for range 16 {
		big = append(big, make([]byte, 128<<10))
	}
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
	run := func(b *testing.B, w func([][]byte) error, r io.Reader) {
		b.SetBytes(int64(size))
		done := make(chan error, 1)
		go func() {
			buf := make([]byte, size)
			for range b.N {
				if _, err := io.ReadFull(r, buf); err != nil {
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
	b.Run("records", func(b *testing.B) {
		ctc, stc := tlsPair(b)
		cc, err := sealConn(ctc, ctc.NetConn().(*bufConn), true, defaultRekey)
		if err != nil {
			b.Fatal(err)
		}
		sc, err := sealConn(stc, stc.NetConn().(*bufConn), false, defaultRekey)
		if err != nil {
			b.Fatal(err)
		}
		run(b, cc.writeFrame, sc)
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
		}, stc)
	})
}
