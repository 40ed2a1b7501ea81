package chunknet

import (
	"math/bits"
	"sync"

	"github.com/oashare/oashare/chunknet/wire"
)

// payloadPool recycles the payload buffers of requests a node serves: a
// put of groups is up to a few MiB, and allocating (and zeroing) a fresh
// buffer for each, then copying it, cost more than storing it. One
// sync.Pool per power-of-two size from minPooled to wire.MaxPayload;
// smaller payloads are allocated.
type payloadPool struct {
	classes [poolClasses]sync.Pool
}

const (
	minPooledBits = 12                 // 4 KiB
	poolClasses   = 23 - minPooledBits // up to 4 MiB = wire.MaxPayload
)

var _ [1]struct{} = [1 << (minPooledBits + poolClasses - 1) / wire.MaxPayload]struct{}{}

// class returns the size class holding buffers of at least n bytes.
func class(n int) int {
	if n <= 1<<minPooledBits {
		return 0
	}
	return bits.Len(uint(n-1)) - minPooledBits
}

// get returns a buffer of at least n bytes.
func (p *payloadPool) get(n int) []byte {
	c := class(n)
	if c >= poolClasses {
		return make([]byte, n)
	}
	if b, ok := p.classes[c].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, 1<<(c+minPooledBits))
}

// put gives b back; nothing may use it afterwards.
func (p *payloadPool) put(b []byte) {
	c := class(cap(b))
	if c >= poolClasses || cap(b) != 1<<(c+minPooledBits) {
		return // not one of ours
	}
	b = b[:0]
	p.classes[c].Put(&b)
}
