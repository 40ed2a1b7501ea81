//go:build !purego

package multisha

import "golang.org/x/sys/cpu"

var (
	// useSHANI is whether blocks2 runs here: it needs the SHA extensions,
	// and SSSE3 and SSE4.1 for its shuffles.
	useSHANI = hasSHANI()
	// useAVX512 is whether blocks16 runs here: VPSHUFB on 512 bits is
	// AVX-512BW. cpu checks that the OS saves the registers too.
	useAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW
)

func hasSHANI() bool {
	if !cpu.X86.HasSSSE3 || !cpu.X86.HasSSE41 {
		return false
	}
	maxLeaf, _, _, _ := cpuid(0, 0)
	if maxLeaf < 7 {
		return false
	}
	_, ebx, _, _ := cpuid(7, 0)
	return ebx&(1<<29) != 0 // leaf 7, EBX bit 29: SHA
}

// cpuid executes CPUID with EAX = leaf and ECX = sub. (golang.org/x/sys/cpu
// does not report the SHA extensions on x86.)
func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)

// blocks2 runs the compression function over n blocks of p and of q, the
// states in st[0:8] and st[8:16].
//
//go:noescape
func blocks2(st *[16]uint32, p, q *byte, n int)

// blocks16 runs the compression function over n blocks of sixteen
// messages, message j at base+offs[j], its state in st[0..7][j].
//
//go:noescape
func blocks16(st *[8][16]uint32, base *byte, offs *[16]uint32, n int)
