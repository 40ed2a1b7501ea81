package multisha

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"testing"
)

// hashPath is one way of hashing: which of the faster paths it turns on.
type hashPath struct {
	name       string
	shani, avx bool
	available  bool
}

// hashPaths lists every way of hashing, fastest first: AVX-512, SHA-NI,
// and crypto/sha256 alone, each with the faster ones turned off.
func hashPaths() []hashPath {
	return []hashPath{
		{"avx512", useSHANI, useAVX512, useAVX512},
		{"shani", useSHANI, false, useSHANI},
		{"generic", false, false, true},
	}
}

// use turns on path p for the rest of tb (and what it runs), or skips tb
// if this CPU lacks it.
func use(tb testing.TB, p hashPath) {
	if !p.available {
		tb.Skipf("this CPU lacks %s", p.name)
	}
	shani, avx := useSHANI, useAVX512
	tb.Cleanup(func() { useSHANI, useAVX512 = shani, avx })
	useSHANI, useAVX512 = p.shani, p.avx
}

// paths runs f once for every way of hashing this machine has.
func paths(t *testing.T, f func(t *testing.T)) {
	for _, p := range hashPaths() {
		t.Run(p.name, func(t *testing.T) {
			use(t, p)
			f(t)
		})
	}
}

// TestSum2 compares Sum2 with crypto/sha256 on every length from 0 to
// four blocks and past (the length field in the last block and in a block
// of its own), on random data different in the two messages.
func TestSum2(t *testing.T) {
	paths(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		for n := range 4*blockSize + 9 {
			for range 4 {
				check2(t, random(rng, n), random(rng, n))
			}
		}
		for range 50 {
			n := rng.IntN(8192)
			check2(t, random(rng, n), random(rng, n))
		}
		// Different lengths, one message twice, overlapping messages.
		check2(t, random(rng, 512), random(rng, 300))
		b := random(rng, 1024)
		check2(t, b[:512], b[:512])
		check2(t, b[1:513], b[3:515])
	})
}

// TestChunks compares Chunks with crypto/sha256 chunk by chunk: every
// count of 512-byte chunks up to three passes of sixteen lanes, with and
// without a short last chunk, and other chunk sizes (multiples of the
// block size and not).
func TestChunks(t *testing.T) {
	paths(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 6))
		for _, size := range []int{512, 64, 128, 100, 1} {
			for n := range 3*lanes + 2 {
				for _, tail := range []int{0, 1, size / 2, size - 1} {
					if tail >= size || (tail == 0 && n == 0 && size != 512) {
						continue
					}
					checkChunks(t, random(rng, n*size+tail), size)
				}
			}
		}
		checkChunks(t, nil, 512)
		// A group: 256 chunks of 512 bytes.
		checkChunks(t, random(rng, 256*512), 512)
	})
}

func FuzzChunks(f *testing.F) {
	f.Add(make([]byte, 4096), uint16(512))
	f.Add([]byte("abc"), uint16(1))
	f.Fuzz(func(t *testing.T, data []byte, size uint16) {
		if size == 0 {
			return
		}
		checkChunks(t, data, int(size))
		if len(data) >= 2 {
			check2(t, data[:len(data)/2], data[len(data)/2:2*(len(data)/2)])
		}
	})
}

func check2(t *testing.T, p, q []byte) {
	t.Helper()
	hp, hq := Sum2(p, q)
	if want := sha256.Sum256(p); hp != want {
		t.Fatalf("Sum2 of %d bytes, first message: %x, crypto/sha256 says %x", len(p), hp, want)
	}
	if want := sha256.Sum256(q); hq != want {
		t.Fatalf("Sum2 of %d bytes, second message: %x, crypto/sha256 says %x", len(q), hq, want)
	}
}

func checkChunks(t *testing.T, data []byte, size int) {
	t.Helper()
	prefix := [Size]byte{1}
	got := Chunks([][Size]byte{prefix}, data, size)
	want := (len(data) + size - 1) / size
	if len(got) != 1+want || got[0] != prefix {
		t.Fatalf("Chunks of %d bytes by %d: %d sums after the one already there, want %d", len(data), size, len(got)-1, want)
	}
	for i := range want {
		c := data[i*size : min((i+1)*size, len(data))]
		if w := sha256.Sum256(c); got[1+i] != w {
			t.Fatalf("Chunks of %d bytes by %d: chunk %d is %x, crypto/sha256 says %x", len(data), size, i, got[1+i], w)
		}
	}
}

func random(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// BenchmarkChunks hashes a group (256 chunks of 512 bytes) on every path,
// crypto/sha256 one chunk at a time ("generic") being the baseline.
func BenchmarkChunks(b *testing.B) {
	data := random(rand.New(rand.NewPCG(7, 8)), 256*512)
	for _, p := range hashPaths() {
		b.Run(p.name, func(b *testing.B) {
			use(b, p)
			dst := make([][Size]byte, 0, 256)
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				dst = Chunks(dst[:0], data, 512)
			}
		})
	}
}

// BenchmarkFewChunks measures a pass of sixteen lanes against pairs for
// few chunks, which sets minLanes.
func BenchmarkFewChunks(b *testing.B) {
	data := random(rand.New(rand.NewPCG(9, 10)), 16*512)
	for _, n := range []int{2, 4, 6, 8, 12} {
		for _, p := range hashPaths()[:2] {
			b.Run(fmt.Sprintf("%d/%s", n, p.name), func(b *testing.B) {
				use(b, p)
				dst := make([][Size]byte, 0, 16)
				for b.Loop() {
					if p.avx {
						dst = sum16(dst[:0], data, 512, n)
					} else {
						dst = Chunks(dst[:0], data[:n*512], 512)
					}
				}
			})
		}
	}
}
