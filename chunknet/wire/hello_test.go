package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

func helloBytes(t *testing.T, h Hello) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := WriteHello(&b, h); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestHelloRoundTrip(t *testing.T) {
	for _, h := range []Hello{
		testHello(),
		{Node: testHello().Node, Network: "x"}, // zero Version: sent as Version
		{Version: Version, Network: strings.Repeat("é", MaxNetworkName/2), ListenPort: 65535},
	} {
		b := helloBytes(t, h)
		if want := 4 + 2 + 16 + 1 + len(h.Network) + 2; len(b) != want || len(b) > MaxHelloSize {
			t.Errorf("hello %q is %d bytes, want %d (max %d)", h.Network, len(b), want, MaxHelloSize)
		}
		for name, r := range map[string]io.Reader{
			"whole":   bytes.NewReader(b),
			"onebyte": iotest.OneByteReader(bytes.NewReader(b)),
		} {
			got, err := ReadHello(r)
			if err != nil {
				t.Fatalf("%s: ReadHello: %v", name, err)
			}
			want := h
			want.Version = Version
			if got != want {
				t.Errorf("%s: got %+v, want %+v", name, got, want)
			}
		}
	}
}

// TestHandshake runs the whole handshake over a synchronous net.Pipe. Both
// sides write first, so each writes from its own goroutine (over TCP the
// kernel buffers make that unnecessary, but a Pipe has no buffer).
func TestHandshake(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ha, hb := testHello(), testHello()
	hb.Node[0] ^= 1
	hb.Network = "other-lan"

	// side runs one end: hello out, hello in, verdict out, verdict in.
	side := func(c net.Conn, mine Hello) (peer Hello, peerVerdict error, err error) {
		werr := make(chan error, 1)
		go func() { werr <- WriteHello(c, mine) }()
		peer, err = ReadHello(c)
		if err != nil {
			return
		}
		if err = <-werr; err != nil {
			return
		}
		code := VerdictAccept
		if peer.Network != mine.Network {
			code = VerdictWrongNetwork
		}
		go func() { werr <- WriteVerdict(c, code) }()
		peerVerdict = ReadVerdict(c)
		err = <-werr
		return
	}
	type result struct {
		peer Hello
		v    error
		err  error
	}
	done := make(chan result, 1)
	go func() {
		p, v, err := side(b, hb)
		done <- result{p, v, err}
	}()
	peer, v, err := side(a, ha)
	if err != nil {
		t.Fatal(err)
	}
	rb := <-done
	if rb.err != nil {
		t.Fatal(rb.err)
	}
	if peer != hb || rb.peer != ha {
		t.Errorf("hellos: a got %+v, b got %+v", peer, rb.peer)
	}
	for _, v := range []error{v, rb.v} {
		var re *RefusedError
		if !errors.As(v, &re) || re.Code != VerdictWrongNetwork || !errors.Is(v, ErrRefused) {
			t.Errorf("verdict: got %v, want a wrong-network refusal", v)
		}
	}
}

func TestReadHelloErrors(t *testing.T) {
	good := helloBytes(t, testHello())
	with := func(f func(b []byte) []byte) []byte {
		return f(bytes.Clone(good))
	}
	setVersion := func(v uint16) []byte {
		return with(func(b []byte) []byte { binary.BigEndian.PutUint16(b[4:], v); return b })
	}
	setNameLen := func(n byte) []byte {
		return with(func(b []byte) []byte { b[22] = n; return b })
	}
	tests := []struct {
		name  string
		in    []byte
		want  error
		wantV uint16 // for version errors: the Got field
	}{
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ErrBadMagic, 0},
		{"tls", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, ErrBadMagic, 0},
		{"lowercase magic", with(func(b []byte) []byte { copy(b, "oash"); return b }), ErrBadMagic, 0},
		// Magic is checked before version, version before the name.
		{"bad magic and version", with(func(b []byte) []byte { copy(b, "OASX\x00\x09"); return b }), ErrBadMagic, 0},
		{"version 0", setVersion(0), ErrVersion, 0},
		{"older version", setVersion(Version - 1), ErrVersion, Version - 1},
		{"newer version", setVersion(Version + 1), ErrVersion, Version + 1},
		{"newer version, short hello", append([]byte(Magic), 0, byte(Version+1)), ErrVersion, Version + 1},
		{"version and name", with(func(b []byte) []byte { binary.BigEndian.PutUint16(b[4:], Version+7); b[22] = 0; return b }), ErrVersion, Version + 7},
		{"name length 0", setNameLen(0), ErrBadHello, 0},
		{"name length 65", setNameLen(MaxNetworkName + 1), ErrBadHello, 0},
		{"name length 255", setNameLen(255), ErrBadHello, 0},
		{"name not UTF-8", with(func(b []byte) []byte { b[23] = 0xff; return b }), ErrBadHello, 0},
		{"empty", nil, io.EOF, 0},
	}
	// Every cut point of a good hello.
	for i := 1; i < len(good); i++ {
		tests = append(tests, struct {
			name  string
			in    []byte
			want  error
			wantV uint16
		}{"cut at " + strconv.Itoa(i), good[:i], io.ErrUnexpectedEOF, 0})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ReadHello(bytes.NewReader(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("ReadHello = %+v, %v; want an error matching %v", h, err, tt.want)
			}
			if tt.want != ErrVersion {
				if h != (Hello{}) {
					t.Errorf("failed ReadHello returned %+v, want zero Hello", h)
				}
				return
			}
			var ve *VersionError
			if !errors.As(err, &ve) || ve.Got != tt.wantV || ve.Want != Version || h.Version != tt.wantV {
				t.Fatalf("got %#v (hello %+v), want *VersionError{Got: %d, Want: %d}", err, h, tt.wantV, Version)
			}
			msg := err.Error()
			if !strings.Contains(msg, "upgrade the older node") || !strings.Contains(msg, strconv.Itoa(int(tt.wantV))) || !strings.Contains(msg, strconv.Itoa(int(Version))) {
				t.Errorf("version error message %q should name both versions and say to upgrade the older node", msg)
			}
		})
	}
}

func TestReadHelloBadMagicMessage(t *testing.T) {
	_, err := ReadHello(strings.NewReader("SSH-2.0-OpenSSH_9.6\r\n"))
	if err == nil || !strings.Contains(err.Error(), "not an oashare peer") {
		t.Errorf("got %v, want an error saying %q", err, "not an oashare peer")
	}
}

// TestReadHelloReadsNoMore: ReadHello consumes exactly one hello, leaving
// the verdict that follows it in the stream.
func TestReadHelloReadsNoMore(t *testing.T) {
	b := append(helloBytes(t, testHello()), VerdictSameNode)
	r := bytes.NewReader(b)
	if _, err := ReadHello(r); err != nil {
		t.Fatal(err)
	}
	err := ReadVerdict(r)
	var re *RefusedError
	if !errors.As(err, &re) || re.Code != VerdictSameNode {
		t.Errorf("verdict after hello: %v", err)
	}
}

func TestWriteHelloErrors(t *testing.T) {
	for _, name := range []string{"", strings.Repeat("n", MaxNetworkName+1), "bad\xff"} {
		h := testHello()
		h.Network = name
		var b bytes.Buffer
		if err := WriteHello(&b, h); !errors.Is(err, ErrBadHello) {
			t.Errorf("WriteHello(network %q) = %v, want ErrBadHello", name, err)
		}
		if b.Len() != 0 {
			t.Errorf("WriteHello(network %q) wrote %d bytes", name, b.Len())
		}
	}
	if err := WriteHello(errWriter{}, testHello()); !errors.Is(err, errWrite) {
		t.Errorf("write error not wrapped: %v", err)
	}
}

var errWrite = errors.New("write failed")

type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errWrite }

func TestVerdict(t *testing.T) {
	for code := byte(0); code <= VerdictImpostor; code++ {
		var b bytes.Buffer
		if err := WriteVerdict(&b, code); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b.Bytes(), []byte{code}) {
			t.Fatalf("verdict %d written as %x", code, b.Bytes())
		}
		err := ReadVerdict(&b)
		if code == VerdictAccept {
			if err != nil {
				t.Errorf("verdict 0: %v", err)
			}
			continue
		}
		var re *RefusedError
		if !errors.Is(err, ErrRefused) || !errors.As(err, &re) || re.Code != code {
			t.Errorf("verdict %d: got %v", code, err)
		}
	}
	// A code from a newer version is still a refusal.
	err := ReadVerdict(bytes.NewReader([]byte{200}))
	var re *RefusedError
	if !errors.As(err, &re) || re.Code != 200 || !strings.Contains(err.Error(), "200") {
		t.Errorf("unknown verdict: %v", err)
	}
	if err := WriteVerdict(io.Discard, VerdictImpostor+1); !errors.Is(err, ErrBadHello) {
		t.Errorf("WriteVerdict(unknown) = %v", err)
	}
	if err := ReadVerdict(bytes.NewReader(nil)); !errors.Is(err, io.EOF) {
		t.Errorf("ReadVerdict(empty) = %v, want io.EOF", err)
	}
	if !strings.Contains((&RefusedError{VerdictWrongNetwork}).Error(), "wrong network") {
		t.Errorf("RefusedError message: %v", &RefusedError{VerdictWrongNetwork})
	}
}
