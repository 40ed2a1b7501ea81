package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/oashare/oashare/index/format"
)

// FuzzReader feeds arbitrary streams to a Reader and every frame it returns
// to its decoder: nothing may panic, a frame the decoders accept must
// re-encode to the same bytes, and the Reader never hands out a payload
// above its limit.
//
//	go test ./chunknet/wire -run '^$' -fuzz FuzzReader
func FuzzReader(f *testing.F) {
	all, tfs := stream()
	f.Add(all)
	for _, tf := range tfs {
		f.Add(encodeFrame(nil, tf.t, tf.id, tf.v))
	}
	f.Add(header(1<<32-1, TypePutChunks, 1))
	f.Add(header(9, 200, 1))
	f.Add(header(9, maxType+1, 1))
	f.Add(AppendFrame(nil, TypePutGroups, 1, cat(u32(1), groupItem(33, 1))))
	f.Add(AppendFrame(nil, TypeGetGroups, 1, cat(u32(1), groupRange(255, 2))))
	const limit = 1 << 16
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), limit)
		for {
			fr, err := r.Next()
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrBadFrame) && !errors.Is(err, ErrFrameTooLarge) &&
					!errors.Is(err, ErrUnknownType) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			if len(fr.Payload) > limit || !fr.Type.known() {
				t.Fatalf("Reader returned %v with %d bytes", fr.Type, len(fr.Payload))
			}
			if err := canonical(fr); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// FuzzDecode feeds arbitrary payloads to the decoder of every frame type.
//
//	go test ./chunknet/wire -run '^$' -fuzz FuzzDecode
func FuzzDecode(f *testing.F) {
	for _, tf := range testFrames() {
		b := encodeFrame(nil, tf.t, tf.id, tf.v)
		f.Add(byte(tf.t), b[HeaderSize:])
	}
	f.Add(byte(TypePutChunks), u32(1<<32-1))
	f.Add(byte(TypeRecords), []byte{2, 0, 0, 0, 0})
	f.Add(byte(TypePutGroups), cat(u32(1), groupItem(33, 1)))
	f.Add(byte(TypePutGroups), cat(u32(1), groupItem(32, 0)))
	f.Add(byte(TypeGetGroups), cat(u32(1), groupRange(255, 2)))
	f.Add(byte(TypeGetGroups), cat(u32(1), groupRange(0, 0)))
	f.Add(byte(TypeGroupResult), cat(u32(1), []byte{0}, u32(format.MaxGroupData+1)))
	f.Add(byte(TypeHasGroups), u32(MaxGroupsPerFrame+1))
	f.Fuzz(func(t *testing.T, typ byte, p []byte) {
		fr := Frame{Type: Type(typ), ReqID: 42, Payload: p}
		if !fr.Type.known() {
			return
		}
		v, err := decodeFrame(fr)
		if err != nil {
			if !errors.Is(err, ErrBadFrame) && !errors.Is(err, ErrFrameTooLarge) && !errors.Is(err, ErrSnapshotNeeded) {
				t.Fatalf("%v: unexpected error kind: %v", fr.Type, err)
			}
			return
		}
		_ = v
		if err := canonical(fr); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzReadHello: ReadHello never panics, never reads more than one hello,
// and what it accepts re-encodes to the bytes it read.
//
//	go test ./chunknet/wire -run '^$' -fuzz FuzzReadHello
func FuzzReadHello(f *testing.F) {
	var b bytes.Buffer
	_ = WriteHello(&b, testHello())
	f.Add(b.Bytes())
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Add(append([]byte(Magic), 0, byte(Version+1)))
	f.Add(append([]byte(Magic), 0, byte(Version-1)))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		h, err := ReadHello(r)
		read := len(data) - r.Len()
		if read > MaxHelloSize {
			t.Fatalf("read %d bytes, more than a hello", read)
		}
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := WriteHello(&out, h); err != nil {
			t.Fatalf("accepted hello %+v does not encode: %v", h, err)
		}
		if !bytes.Equal(out.Bytes(), data[:read]) {
			t.Fatalf("hello re-encodes to %x, read %x", out.Bytes(), data[:read])
		}
	})
}
