//go:build !amd64 || purego

package multisha

// Variables, not constants, so tests on every platform can set them.
var useSHANI, useAVX512 = false, false

func blocks2(st *[16]uint32, p, q *byte, n int) {
	panic("multisha: no assembly on this platform")
}

func blocks16(st *[8][16]uint32, base *byte, offs *[16]uint32, n int) {
	panic("multisha: no assembly on this platform")
}
