package wire

import (
	"testing"

	"github.com/oashare/oashare/index/format"
)

// benchChunks is a typical PutChunks batch: 256 chunks of 512 bytes.
func benchChunks() []Chunk {
	cs := make([]Chunk, 256)
	for i := range cs {
		d := make([]byte, 512)
		for j := range d {
			d[j] = byte(i + j)
		}
		cs[i] = Chunk{format.Sum(d), d}
	}
	return cs
}

func BenchmarkAppendPutChunks(b *testing.B) {
	cs := benchChunks()
	var buf []byte
	b.SetBytes(256 * 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendPutChunks(buf[:0], uint64(len(buf)), cs)
	}
}

func BenchmarkReaderNext(b *testing.B) {
	frame := AppendPutChunks(nil, 1, benchChunks())
	r := NewReader(&loopReader{b: frame}, 0)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodePutChunks(b *testing.B) {
	p := AppendPutChunks(nil, 1, benchChunks())[HeaderSize:]
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodePutChunks(p); err != nil {
			b.Fatal(err)
		}
	}
}
