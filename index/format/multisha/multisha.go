// Package multisha computes the SHA-256 sums of several messages at once.
// oashare names every chunk of at most 512 bytes by its SHA-256, and the
// writer, every replica and every reader hash each chunk they touch:
// hashing is the largest single cost of a write. One message at a time
// leaves most of a core's hashing capacity idle, because each step of
// SHA-256 waits on the one before. Independent messages side by side fill
// those waits:
//
//   - with AVX-512, sixteen chunks at once, one in each 32-bit lane;
//   - with the SHA extensions (SHA-NI), two at once;
//   - elsewhere, and for whatever is left over, crypto/sha256.
//
// The sums are those of crypto/sha256; the tests compare them on every
// padding case, on random data and on every path this machine has.
//
// github.com/minio/sha256-simd (v1.0.1) has an AVX-512 server for sixteen
// streams, fed by sixteen goroutines through channels: it suits long
// streams. Hashing one group of 256 chunks of 512 bytes that way took
// 1.6-2.1 ms on the machine of results/, against 38 µs with Chunks.
//
// gen.go writes the assembly (go generate).
package multisha

//go:generate go run gen.go

import (
	"crypto/sha256"
	"encoding/binary"
)

// Size is the length of a sum in bytes.
const Size = sha256.Size

const blockSize = 64

// iv is the initial hash value of FIPS 180-4, section 5.3.3.
var iv = [8]uint32{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}

// Sum2 returns the SHA-256 sums of p and q.
func Sum2(p, q []byte) (hp, hq [Size]byte) {
	if !useSHANI || len(p) != len(q) {
		return sha256.Sum256(p), sha256.Sum256(q)
	}
	var st [16]uint32
	copy(st[:8], iv[:])
	copy(st[8:], iv[:])
	n := len(p) &^ (blockSize - 1)
	if n > 0 {
		blocks2(&st, &p[0], &q[0], n/blockSize)
	}
	var tp, tq [2 * blockSize]byte
	copy(tp[:], p[n:])
	copy(tq[:], q[n:])
	t := pad(tp[:], len(p))
	pad(tq[:], len(q))
	blocks2(&st, &tp[0], &tq[0], t/blockSize)
	for i := range 8 {
		binary.BigEndian.PutUint32(hp[4*i:], st[i])
		binary.BigEndian.PutUint32(hq[4*i:], st[8+i])
	}
	return hp, hq
}

// pad writes the padding of a message of n bytes after its last partial
// block, which b begins with: 0x80, zeros, and n in bits, filling one
// block or two when the rest leaves no room for the length. It returns how
// many bytes of b the last blocks take.
func pad(b []byte, n int) int {
	r := n % blockSize
	b[r] = 0x80
	t := blockSize
	if r >= blockSize-8 {
		t = 2 * blockSize
	}
	binary.BigEndian.PutUint64(b[t-8:], uint64(n)<<3)
	return t
}

// Chunks appends to dst the sums of data cut into chunks of size bytes,
// the last of which may be shorter, and returns dst. H is any type of 32
// bytes (the callers' hash types).
func Chunks[H ~[Size]byte](dst []H, data []byte, size int) []H {
	if size <= 0 {
		panic("multisha: chunk size must be positive")
	}
	full := len(data) / size
	i := 0
	if useAVX512 && size%blockSize == 0 && size <= maxLaneStride/lanes {
		for ; i+lanes <= full; i += lanes {
			dst = sum16(dst, data[i*size:(i+lanes)*size], size, lanes)
		}
		if r := full - i; r >= minLanes {
			dst = sum16(dst, data[i*size:full*size], size, r)
			i = full
		}
	}
	for ; i+2 <= full; i += 2 {
		hp, hq := Sum2(data[i*size:(i+1)*size], data[(i+1)*size:(i+2)*size])
		dst = append(dst, H(hp), H(hq))
	}
	if i < full {
		dst = append(dst, H(sha256.Sum256(data[i*size:(i+1)*size])))
	}
	if len(data)%size != 0 {
		dst = append(dst, H(sha256.Sum256(data[full*size:])))
	}
	return dst
}

const (
	lanes = 16
	// maxLaneStride bounds the offsets of the lanes, which the gathers
	// take as signed 32-bit numbers.
	maxLaneStride = 1 << 30
	// minLanes is the fewest chunks worth a pass of sixteen lanes:
	// below it, pairs on SHA-NI are as quick (BenchmarkFewChunks).
	minLanes = 10
)

// sum16 appends the sums of the first n chunks of size bytes in data,
// 1 <= n <= 16, size a multiple of the block size. Lanes past n hash the
// last chunk again and are dropped.
func sum16[H ~[Size]byte](dst []H, data []byte, size, n int) []H {
	var st [8][lanes]uint32
	for r := range 8 {
		for j := range lanes {
			st[r][j] = iv[r]
		}
	}
	var offs [lanes]uint32
	for j := range lanes {
		offs[j] = uint32(min(j, n-1) * size)
	}
	blocks16(&st, &data[0], &offs, size/blockSize)
	// Every chunk has the same length, so the same padding block, which
	// every lane reads at offset 0.
	var tail [2 * blockSize]byte
	t := pad(tail[:], size)
	blocks16(&st, &tail[0], &[lanes]uint32{}, t/blockSize)
	for j := range n {
		var h H
		for r := range 8 {
			binary.BigEndian.PutUint32(h[4*r:], st[r][j])
		}
		dst = append(dst, h)
	}
	return dst
}
