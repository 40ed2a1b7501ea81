package tree_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/index/format"
)

// randBytes returns n pseudo-random bytes from seed.
func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)}))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// build writes content into a new Builder in writes of at most step bytes.
func build(t testing.TB, sink tree.Sink, content []byte, step int) tree.Version {
	t.Helper()
	b := tree.NewBuilder(context.Background(), sink)
	for p := content; len(p) > 0; {
		n := min(step, len(p))
		w, err := b.Write(p[:n])
		if err != nil || w != n {
			t.Fatalf("Write: %d, %v; want %d", w, err, n)
		}
		p = p[n:]
	}
	if b.Size() != uint64(len(content)) {
		t.Fatalf("Size = %d, want %d", b.Size(), len(content))
	}
	v, err := b.Finish()
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	if err := v.Validate(); err != nil {
		t.Fatalf("built version %+v invalid: %v", v, err)
	}
	return v
}

// refVersion computes a Version the slow, obvious way: all leaf hashes in
// memory, level by level.
func refVersion(content []byte) (tree.Version, map[format.Hash][]byte) {
	chunks := map[format.Hash][]byte{}
	var level []format.Hash
	for off := 0; off < len(content); off += format.ChunkSize {
		c := content[off:min(off+format.ChunkSize, len(content))]
		h := format.Sum(c)
		chunks[h] = c
		level = append(level, h)
	}
	v := tree.Version{Size: uint64(len(content))}
	if len(level) == 0 {
		return v, chunks
	}
	for len(level) > 1 {
		var up []format.Hash
		for i := 0; i < len(level); i += format.Fanout {
			var node []byte
			for _, h := range level[i:min(i+format.Fanout, len(level))] {
				node = append(node, h[:]...)
			}
			h := format.Sum(node)
			chunks[h] = node
			up = append(up, h)
		}
		level = up
		v.Depth++
	}
	v.Root = level[0]
	return v, chunks
}

type readerAt struct {
	f tree.Fetcher
	v tree.Version
}

func (r readerAt) ReadAt(p []byte, off int64) (int, error) {
	return tree.ReadAt(context.Background(), r.f, r.v, p, off)
}

const (
	depth2Size = 256*512 + 1
	depth3Size = 256*256*512 + 1
)

var sizes = []int{0, 1, 511, 512, 513, 1024, 256*512 - 1, 256 * 512, depth2Size, depth3Size}

func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	all := append([]int(nil), sizes...)
	for range 6 {
		all = append(all, r.IntN(600*512))
	}
	for _, size := range all {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			if size > 1<<22 && testing.Short() {
				t.Skip("large file in -short mode")
			}
			content := randBytes(uint64(size), size)
			store := tree.NewMemStore()
			v := build(t, store, content, 1000)

			want, chunks := refVersion(content)
			if v != want {
				t.Fatalf("version %+v, want %+v", v, want)
			}
			if store.Len() != len(chunks) {
				t.Errorf("store holds %d chunks, want %d", store.Len(), len(chunks))
			}
			if want := tree.DepthFor(tree.LeafCount(uint64(size))); v.Depth != want {
				t.Errorf("depth %d, want %d", v.Depth, want)
			}

			// Whole file, then random ranges (some past the end).
			got := make([]byte, size)
			n, err := tree.ReadAt(context.Background(), store, v, got, 0)
			if n != size || (err != nil && err != io.EOF) || !bytes.Equal(got, content) {
				t.Fatalf("ReadAt whole: n=%d err=%v equal=%v", n, err, bytes.Equal(got, content))
			}
			for range 50 {
				off := r.IntN(size + 2)
				l := r.IntN(3 * format.ChunkSize * (1 + r.IntN(300)))
				checkRange(t, store, v, content, off, l)
			}
			checkRange(t, store, v, content, size, 0)
			checkRange(t, store, v, content, size, 10)
			if store.Fallbacks() != 0 {
				t.Errorf("%d spans read by chunk names: the builder's groups are wrong", store.Fallbacks())
			}

			// TestReader makes one ReadAt per byte in places: keep it to
			// small files and one depth-2 file.
			if size <= 16<<10 || size == depth2Size && !testing.Short() {
				sr := io.NewSectionReader(readerAt{store, v}, 0, int64(size))
				if err := iotest.TestReader(sr, content); err != nil {
					t.Errorf("iotest.TestReader: %v", err)
				}
			}

			// Leaves of the whole file match the reference.
			leaves, err := tree.Leaves(context.Background(), store, v, 0, tree.LeafCount(uint64(size)))
			if err != nil {
				t.Fatal(err)
			}
			for i, h := range leaves {
				off := i * format.ChunkSize
				if h != format.Sum(content[off:min(off+format.ChunkSize, size)]) {
					t.Fatalf("leaf %d wrong", i)
				}
			}
		})
	}
}

func checkRange(t *testing.T, f tree.Fetcher, v tree.Version, content []byte, off, l int) {
	t.Helper()
	p := make([]byte, l)
	n, err := tree.ReadAt(context.Background(), f, v, p, int64(off))
	wantN := max(0, min(l, len(content)-off))
	if n != wantN || !bytes.Equal(p[:n], content[min(off, len(content)):][:wantN]) {
		t.Fatalf("ReadAt(off %d, len %d) = %d, %v; want %d bytes equal", off, l, n, err, wantN)
	}
	switch {
	case n < l && err != io.EOF:
		t.Fatalf("ReadAt(off %d, len %d) short with err %v, want io.EOF", off, l, err)
	case n == l && err != nil:
		t.Fatalf("ReadAt(off %d, len %d) full with err %v", off, l, err)
	}
}

func TestReadAtNegative(t *testing.T) {
	store := tree.NewMemStore()
	v := build(t, store, []byte("hello"), 10)
	if _, err := tree.ReadAt(context.Background(), store, v, make([]byte, 1), -1); err == nil {
		t.Fatal("negative offset accepted")
	}
}

func TestFetchCounts(t *testing.T) {
	content := randBytes(7, depth3Size)
	store := tree.NewMemStore()
	v := build(t, store, content, 64<<10)
	if v.Depth != 3 {
		t.Fatalf("depth %d, want 3", v.Depth)
	}
	ctx := context.Background()
	for _, tc := range []struct{ first, n uint64 }{
		{0, 1}, {100, 65000}, {255, 2}, {65535, 2}, {0, 65537}, {65536, 1},
	} {
		before := store.Fetches()
		leaves, err := tree.Leaves(ctx, store, v, tc.first, tc.n)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(leaves)) != tc.n {
			t.Fatalf("Leaves(%d, %d) returned %d", tc.first, tc.n, len(leaves))
		}
		if got := store.Fetches() - before; got != int(v.Depth) {
			t.Errorf("Leaves(%d, %d): %d Fetch calls, want %d", tc.first, tc.n, got, v.Depth)
		}
	}
	// A read spanning many depth-1 nodes: one Fetch per level, one for data.
	before := store.Fetches()
	off := 100*512 + 17
	p := make([]byte, 5000*512)
	if _, err := tree.ReadAt(ctx, store, v, p, int64(off)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, content[off:off+len(p)]) {
		t.Fatal("ReadAt content differs")
	}
	if got := store.Fetches() - before; got != int(v.Depth)+1 {
		t.Errorf("ReadAt: %d Fetch calls, want %d", got, v.Depth+1)
	}

	// n == 0 and out of range.
	if l, err := tree.Leaves(ctx, store, v, 65537, 0); err != nil || len(l) != 0 {
		t.Errorf("Leaves(end, 0) = %v, %v", l, err)
	}
	for _, tc := range []struct{ first, n uint64 }{{65537, 1}, {65530, 8}, {1, math.MaxUint64}, {math.MaxUint64, 2}} {
		if _, err := tree.Leaves(ctx, store, v, tc.first, tc.n); err == nil {
			t.Errorf("Leaves(%d, %d) accepted", tc.first, tc.n)
		}
	}
}

func TestNodes(t *testing.T) {
	for _, size := range sizes {
		content := randBytes(uint64(size)+3, size)
		store := tree.NewMemStore()
		v := build(t, store, content, 4096)
		_, chunks := refVersion(content)
		var got []format.Hash
		depths := map[uint8]int{}
		last := v.Depth
		err := tree.Nodes(context.Background(), store, v, func(d uint8, h format.Hash) error {
			if d > last {
				t.Fatalf("depth %d after %d: not level by level", d, last)
			}
			last = d
			got = append(got, h)
			depths[d]++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if v.Depth > 0 && got[0] != v.Root {
			t.Errorf("size %d: first node is not the root", size)
		}
		// Every node listed is a stored chunk; the counts match the levels.
		nodes := 0
		for k, c := 1, tree.LeafCount(uint64(size)); k <= int(v.Depth); k++ {
			c = (c + format.Fanout - 1) / format.Fanout
			if depths[uint8(k)] != int(c) {
				t.Errorf("size %d depth %d: %d nodes, want %d", size, k, depths[uint8(k)], c)
			}
			nodes += int(c)
		}
		if len(got) != nodes {
			t.Errorf("size %d: %d nodes, want %d", size, len(got), nodes)
		}
		for _, h := range got {
			if _, ok := chunks[h]; !ok {
				t.Errorf("size %d: node %s unknown", size, h.Short())
			}
		}
	}
	// fn's error stops the walk.
	store := tree.NewMemStore()
	v := build(t, store, randBytes(1, depth2Size), 4096)
	stop := errors.New("stop")
	calls := 0
	err := tree.Nodes(context.Background(), store, v, func(uint8, format.Hash) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Errorf("Nodes = %v after %d calls, want stop after 1", err, calls)
	}
}

// recSink records every Put.
type recSink struct {
	mu   sync.Mutex
	puts []format.Hash
	data map[format.Hash][]byte
}

func (s *recSink) Put(_ context.Context, h format.Hash, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if format.Sum(data) != h {
		return errors.New("hash mismatch")
	}
	if s.data == nil {
		s.data = map[format.Hash][]byte{}
	}
	s.puts = append(s.puts, h)
	s.data[h] = append([]byte(nil), data...)
	return nil
}

func (s *recSink) PutLeaf(ctx context.Context, h format.Hash, data []byte) error {
	return s.Put(ctx, h, data)
}

func (s *recSink) EndGroup(ctx context.Context, g format.Hash, node []byte) error {
	return putNode(ctx, s, g, node)
}

// putNode puts a group's node, if it has one, by name: how the test sinks,
// which record chunks by name only, take EndGroup.
func putNode(ctx context.Context, s interface {
	Put(context.Context, format.Hash, []byte) error
}, g format.Hash, node []byte) error {
	if node == nil {
		return nil
	}
	return s.Put(ctx, g, node)
}

func TestDeterminism(t *testing.T) {
	content := randBytes(9, 300*512+77)
	var s1, s2 recSink
	v1 := build(t, &s1, content, 1)
	v2 := build(t, &s2, content, 100000)
	if v1 != v2 {
		t.Fatalf("versions differ: %+v vs %+v", v1, v2)
	}
	if fmt.Sprint(s1.puts) != fmt.Sprint(s2.puts) {
		t.Fatal("put sequences differ")
	}
	// 301 data chunks + 2 depth-1 nodes + root.
	if len(s1.puts) != 301+2+1 {
		t.Errorf("%d puts, want %d", len(s1.puts), 304)
	}

	// Repeated content: shared chunks are put again under the same hash.
	block := randBytes(10, format.ChunkSize)
	rep := bytes.Repeat(block, 3)
	var s3 recSink
	build(t, &s3, rep, 700)
	h := format.Sum(block)
	if len(s3.puts) != 4 || s3.puts[0] != h || s3.puts[1] != h || s3.puts[2] != h {
		t.Errorf("puts of repeated chunks: %v", s3.puts)
	}
	// The same chunk at the same place in different files gets the same name.
	var s4 recSink
	build(t, &s4, append(append([]byte(nil), block...), 'x'), 700)
	if s4.puts[0] != h {
		t.Error("shared first chunk named differently")
	}
}

func TestAddLeaf(t *testing.T) {
	ctx := context.Background()
	for _, size := range []int{1, 511, 512, 513, 256 * 512, depth2Size, 700*512 + 5} {
		content := randBytes(uint64(size)+11, size)
		store := tree.NewMemStore()
		want := build(t, store, content, 8192)
		leaves, err := tree.Leaves(ctx, store, want, 0, tree.LeafCount(uint64(size)))
		if err != nil {
			t.Fatal(err)
		}
		// All leaves by hash: only the nodes are put.
		var rs recSink
		b := tree.NewBuilder(ctx, &rs)
		for i, h := range leaves {
			if err := b.AddLeaf(h, tree.LeafSize(uint64(size), uint64(i))); err != nil {
				t.Fatalf("AddLeaf %d: %v", i, err)
			}
		}
		got, err := b.Finish()
		if err != nil || got != want {
			t.Fatalf("size %d: AddLeaf version %+v, %v; want %+v", size, got, err, want)
		}
		isLeaf := map[format.Hash]bool{}
		for _, h := range leaves {
			isLeaf[h] = true
		}
		for _, h := range rs.puts {
			if isLeaf[h] {
				t.Errorf("size %d: AddLeaf builder put data chunk %s again", size, h.Short())
			}
		}

		// Within one group, new and existing chunks do not mix.
		if len(leaves) >= 2 {
			b = tree.NewBuilder(ctx, store)
			if _, err := b.Write(content[:format.ChunkSize]); err != nil {
				t.Fatal(err)
			}
			if err := b.AddLeaf(leaves[1], tree.LeafSize(uint64(size), 1)); err == nil {
				t.Errorf("size %d: AddLeaf after Write in one group accepted", size)
			}
			b = tree.NewBuilder(ctx, store)
			if err := b.AddLeaf(leaves[0], format.ChunkSize); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Write(content[format.ChunkSize:]); err == nil {
				if _, err := b.Finish(); err == nil {
					t.Errorf("size %d: Write after AddLeaf in one group accepted", size)
				}
			}
		}

		// Mixed by group: Write the first groups, AddLeaf a middle
		// group, Write the rest; the data reads back from groups only.
		if len(leaves) < 3*format.Fanout {
			continue
		}
		b = tree.NewBuilder(ctx, store)
		mid := format.Fanout
		if _, err := b.Write(content[:mid*format.ChunkSize]); err != nil {
			t.Fatal(err)
		}
		for i := mid; i < 2*mid; i++ {
			if err := b.AddLeaf(leaves[i], format.ChunkSize); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := b.Write(content[2*mid*format.ChunkSize:]); err != nil {
			t.Fatal(err)
		}
		if got, err := b.Finish(); err != nil || got != want {
			t.Fatalf("size %d: mixed version %+v, %v; want %+v", size, got, err, want)
		}
		checkRange(t, store, want, content, 0, size)
		if store.Fallbacks() != 0 {
			t.Errorf("size %d: %d spans read by chunk names, not from their group", size, store.Fallbacks())
		}
	}
}

func TestBuilderMisuse(t *testing.T) {
	ctx := context.Background()
	h := format.Sum([]byte("x"))
	store := tree.NewMemStore()

	b := tree.NewBuilder(ctx, store)
	b.Write([]byte("abc"))
	if err := b.AddLeaf(h, 1); err == nil {
		t.Error("AddLeaf after a partial chunk accepted")
	}
	for _, size := range []int{0, -1, 513} {
		b := tree.NewBuilder(ctx, store)
		if err := b.AddLeaf(h, size); err == nil {
			t.Errorf("AddLeaf of size %d accepted", size)
		}
	}
	b = tree.NewBuilder(ctx, store)
	if err := b.AddLeaf(format.Hash{}, 512); err != nil {
		t.Errorf("AddLeaf of a hole (zero hash): %v", err)
	}

	b = tree.NewBuilder(ctx, discard{})
	if err := b.AddLeaf(h, 1); err != nil {
		t.Fatal(err)
	}
	if err := b.AddLeaf(h, 1); err == nil {
		t.Error("AddLeaf after a short leaf accepted")
	}
	if _, err := b.Write([]byte("y")); err == nil {
		t.Error("Write after a short leaf accepted")
	}
	v, err := b.Finish()
	if err != nil || v != (tree.Version{Size: 1, Root: h}) {
		t.Errorf("Finish = %+v, %v", v, err)
	}
	if _, err := b.Finish(); err == nil {
		t.Error("second Finish accepted")
	}
	if _, err := b.Write([]byte("y")); err == nil {
		t.Error("Write after Finish accepted")
	}

	// Empty file.
	v, err = tree.NewBuilder(ctx, store).Finish()
	if err != nil || v != (tree.Version{}) {
		t.Errorf("empty Finish = %+v, %v", v, err)
	}
}

// failSink fails after ok successful Puts.
type failSink struct{ ok int }

var errSink = errors.New("sink failed")

func (s *failSink) Put(context.Context, format.Hash, []byte) error {
	if s.ok == 0 {
		return errSink
	}
	s.ok--
	return nil
}

func (s *failSink) PutLeaf(ctx context.Context, h format.Hash, data []byte) error {
	return s.Put(ctx, h, data)
}

func (s *failSink) EndGroup(ctx context.Context, g format.Hash, node []byte) error {
	return putNode(ctx, s, g, node)
}

func TestBuilderSinkError(t *testing.T) {
	content := randBytes(3, 300*512)
	for _, ok := range []int{0, 1, 255, 256, 300, 301} {
		b := tree.NewBuilder(context.Background(), &failSink{ok: ok})
		_, werr := b.Write(content)
		_, ferr := b.Finish()
		if !errors.Is(werr, errSink) && !errors.Is(ferr, errSink) {
			t.Errorf("ok=%d: Write %v, Finish %v; want the sink error", ok, werr, ferr)
		}
		if _, err := b.Write([]byte("x")); err == nil {
			t.Errorf("ok=%d: Write after error accepted", ok)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b := tree.NewBuilder(ctx, tree.NewMemStore())
	if _, err := b.Write(content); !errors.Is(err, context.Canceled) {
		t.Errorf("Write with cancelled ctx: %v", err)
	}
}

func TestValidate(t *testing.T) {
	h := format.Sum([]byte("x"))
	for _, tc := range []struct {
		v  tree.Version
		ok bool
	}{
		{tree.Version{}, true},
		{tree.Version{Root: h}, false},
		{tree.Version{Depth: 1}, false},
		{tree.Version{Size: 1}, true}, // one hole
		{tree.Version{Size: 1, Root: h}, true},
		{tree.Version{Size: 512, Root: h}, true},
		{tree.Version{Size: 512, Root: h, Depth: 1}, false},
		{tree.Version{Size: 513, Root: h}, false},
		{tree.Version{Size: 513, Root: h, Depth: 1}, true},
		{tree.Version{Size: 256 * 512, Root: h, Depth: 1}, true},
		{tree.Version{Size: depth2Size, Root: h, Depth: 1}, false},
		{tree.Version{Size: depth2Size, Root: h, Depth: 2}, true},
		{tree.Version{Size: depth3Size, Root: h, Depth: 3}, true},
		{tree.Version{Size: tree.MaxFileSize, Root: h, Depth: 7}, true},
		{tree.Version{Size: tree.MaxFileSize, Root: h, Depth: 6}, false},
		{tree.Version{Size: tree.MaxFileSize + 1, Root: h, Depth: 7}, false},
		{tree.Version{Size: math.MaxUint64, Root: h, Depth: 7}, false},
		{tree.Version{Size: math.MaxUint64, Root: h, Depth: 8}, false},
		{tree.Version{Size: math.MaxUint64, Root: h, Depth: 9}, false},
		{tree.Version{Size: 1, Root: h, Depth: 255}, false},
	} {
		err := tc.v.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%+v: Validate = %v, want ok=%v", tc.v, err, tc.ok)
		}
		if err != nil && !errors.Is(err, tree.ErrCorrupt) {
			t.Errorf("%+v: error %v does not wrap ErrCorrupt", tc.v, err)
		}
	}
}

func TestArithmetic(t *testing.T) {
	for _, tc := range []struct {
		leaves uint64
		depth  uint8
	}{
		{0, 0}, {1, 0}, {2, 1}, {256, 1}, {257, 2}, {65536, 2}, {65537, 3},
		{1 << 48, 6}, {1<<48 + 1, 7}, {1 << 56, 7}, {1<<56 + 1, 8}, {math.MaxUint64, 8},
	} {
		if got := tree.DepthFor(tc.leaves); got != tc.depth {
			t.Errorf("DepthFor(%d) = %d, want %d", tc.leaves, got, tc.depth)
		}
	}
	for _, tc := range []struct{ size, leaves uint64 }{
		{0, 0}, {1, 1}, {512, 1}, {513, 2}, {1024, 2}, {math.MaxUint64, 1 << 55},
	} {
		if got := tree.LeafCount(tc.size); got != tc.leaves {
			t.Errorf("LeafCount(%d) = %d, want %d", tc.size, got, tc.leaves)
		}
	}
	for _, tc := range []struct {
		size, i uint64
		n       int
	}{
		{0, 0, 0}, {1, 0, 1}, {1, 1, 0}, {512, 0, 512}, {513, 0, 512}, {513, 1, 1},
		{1000, 1, 488}, {1000, 2, 0}, {1000, math.MaxUint64, 0},
		{math.MaxUint64, 1<<55 - 1, 511}, {math.MaxUint64, 0, 512},
	} {
		if got := tree.LeafSize(tc.size, tc.i); got != tc.n {
			t.Errorf("LeafSize(%d, %d) = %d, want %d", tc.size, tc.i, got, tc.n)
		}
	}
}

// node concatenates hashes into a node.
func node(hs ...format.Hash) []byte {
	var b []byte
	for _, h := range hs {
		b = append(b, h[:]...)
	}
	return b
}

// putRaw stores data in m under its own hash and returns the hash.
func putRaw(t *testing.T, m *tree.MemStore, data []byte) format.Hash {
	t.Helper()
	h := format.Sum(data)
	if err := m.Put(context.Background(), h, data); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestCorrupt(t *testing.T) {
	ctx := context.Background()
	m := tree.NewMemStore()
	full := putRaw(t, m, bytes.Repeat([]byte{1}, 512))
	short := putRaw(t, m, []byte("tail"))
	leaves := func(n int) []format.Hash {
		hs := make([]format.Hash, n)
		for i := range hs {
			hs[i] = full
		}
		return hs
	}
	fullNode := putRaw(t, m, node(leaves(256)...))

	type tc struct {
		name string
		v    tree.Version
	}
	cases := []tc{
		{"root not a multiple of 32", tree.Version{Size: 3 * 512, Depth: 1, Root: putRaw(t, m, node(leaves(3)...)[:95])}},
		{"root empty", tree.Version{Size: 3 * 512, Depth: 1, Root: putRaw(t, m, []byte{})}},
		{"root truncated", tree.Version{Size: 3 * 512, Depth: 1, Root: putRaw(t, m, node(leaves(2)...))}},
		{"root too many", tree.Version{Size: 3 * 512, Depth: 1, Root: putRaw(t, m, node(leaves(4)...))}},
		{"root 257 children", tree.Version{Size: 257 * 512, Depth: 2, Root: putRaw(t, m, node(leaves(257)...))}},
		{"last depth-1 node too many", tree.Version{Size: 257 * 512, Depth: 2,
			Root: putRaw(t, m, node(fullNode, putRaw(t, m, node(full, full))))}},
		{"first depth-1 node short", tree.Version{Size: 257 * 512, Depth: 2,
			Root: putRaw(t, m, node(putRaw(t, m, node(leaves(255)...)), putRaw(t, m, node(full))))}},
		{"depth-1 node odd length", tree.Version{Size: 257 * 512, Depth: 2,
			Root: putRaw(t, m, node(fullNode, putRaw(t, m, append(node(full), 0))))}},
		{"root with 3 children for 2 nodes", tree.Version{Size: 257 * 512, Depth: 2,
			Root: putRaw(t, m, node(fullNode, fullNode, fullNode))}},
		{"data chunk too long", tree.Version{Size: 1000, Depth: 1, Root: putRaw(t, m, node(full, full))}},
		{"data chunk too short", tree.Version{Size: 1024, Depth: 1, Root: putRaw(t, m, node(full, short))}},
		{"single chunk wrong size", tree.Version{Size: 5, Root: short}},
		{"invalid version", tree.Version{Size: 1024, Depth: 3, Root: full}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := make([]byte, c.v.Size)
			_, err := tree.ReadAt(ctx, m, c.v, p, 0)
			if !errors.Is(err, tree.ErrCorrupt) {
				t.Errorf("ReadAt: %v, want ErrCorrupt", err)
			}
			t.Log(err)
		})
	}
	// Nodes checks the levels it fetches (all but depth 1).
	for _, c := range cases[4:9] {
		err := tree.Nodes(ctx, m, c.v, func(uint8, format.Hash) error { return nil })
		if c.name == "last depth-1 node too many" || c.name == "first depth-1 node short" || c.name == "depth-1 node odd length" {
			if err != nil {
				t.Errorf("Nodes(%s): %v; depth-1 nodes are not fetched", c.name, err)
			}
			continue
		}
		if !errors.Is(err, tree.ErrCorrupt) {
			t.Errorf("Nodes(%s): %v, want ErrCorrupt", c.name, err)
		}
	}
	// A missing chunk is the fetcher's error, not ErrCorrupt.
	v := build(t, m, randBytes(5, 2000), 2000)
	m.Delete(v.Root)
	if _, err := tree.ReadAt(ctx, m, v, make([]byte, 10), 0); !errors.Is(err, tree.ErrNotFound) {
		t.Errorf("missing root: %v, want ErrNotFound", err)
	}
}

// badFetcher returns the wrong number of chunks.
type badFetcher struct{}

func (badFetcher) Fetch(context.Context, []format.Hash) ([][]byte, error)    { return nil, nil }
func (badFetcher) FetchSpans(context.Context, []tree.Span) ([][]byte, error) { return nil, nil }

func TestBadFetcher(t *testing.T) {
	v := tree.Version{Size: 1000, Depth: 1, Root: format.Sum([]byte("r"))}
	if _, err := tree.ReadAt(context.Background(), badFetcher{}, v, make([]byte, 10), 0); err == nil {
		t.Error("fetcher returning no chunks accepted")
	}
}

func TestMemStore(t *testing.T) {
	m := tree.NewMemStore()
	ctx := context.Background()
	if err := m.Put(ctx, format.Sum([]byte("a")), []byte("b")); err == nil {
		t.Error("Put with wrong hash accepted")
	}
	h := putRaw(t, m, []byte("a"))
	buf := []byte("a")
	h2 := format.Sum(buf)
	m.Put(ctx, h2, buf)
	buf[0] = 'z' // the store keeps its own copy
	got, err := m.Fetch(ctx, []format.Hash{h, h})
	if err != nil || string(got[0]) != "a" || string(got[1]) != "a" {
		t.Fatalf("Fetch = %q, %v", got, err)
	}
	got[0][0] = 'q' // and hands out copies
	if got, _ := m.Fetch(ctx, []format.Hash{h}); string(got[0]) != "a" {
		t.Error("Fetch result aliases the store")
	}
	if m.Puts() != 2 || m.Fetches() != 2 || m.Fetched() != 3 || m.Len() != 1 || !m.Has(h) {
		t.Errorf("counters: puts %d fetches %d fetched %d len %d", m.Puts(), m.Fetches(), m.Fetched(), m.Len())
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.Fetch(cctx, []format.Hash{h}); !errors.Is(err, context.Canceled) {
		t.Errorf("Fetch with cancelled ctx: %v", err)
	}
}

type discard struct{}

func (discard) Put(context.Context, format.Hash, []byte) error      { return nil }
func (discard) PutLeaf(context.Context, format.Hash, []byte) error  { return nil }
func (discard) EndGroup(context.Context, format.Hash, []byte) error { return nil }

func TestBuilderMemory(t *testing.T) {
	const total = 64 << 20
	buf := randBytes(42, 1<<20+7) // odd length: writes straddle chunks
	b := tree.NewBuilder(context.Background(), discard{})
	b.Write(buf[:1000]) // let the builder reach its steady state

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for b.Size() < total {
		if _, err := b.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	v, err := b.Finish()
	if err != nil || v.Depth != 3 {
		t.Fatalf("Finish = %+v, %v", v, err)
	}
	// Allocated over the whole stream (garbage included), not just live:
	// keeping every leaf hash would take 4 MiB.
	if grow := after.TotalAlloc - before.TotalAlloc; grow > 1<<20 {
		t.Errorf("building %d MiB allocated %d bytes", b.Size()>>20, grow)
	}
	if grow := int64(after.HeapAlloc) - int64(before.HeapAlloc); grow > 4<<20 {
		t.Errorf("heap grew by %d bytes", grow)
	}
}

func benchStore(b *testing.B, size int) (*tree.MemStore, tree.Version) {
	store := tree.NewMemStore()
	return store, build(b, store, randBytes(99, size), 1<<16)
}

func BenchmarkBuilderWrite(b *testing.B) {
	const size = 8 << 20
	content := randBytes(1, size)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		bl := tree.NewBuilder(context.Background(), discard{})
		for p := content; len(p) > 0; p = p[64<<10:] {
			bl.Write(p[:64<<10])
		}
		if _, err := bl.Finish(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadAt(b *testing.B) {
	const size, read = 64 << 20, 128 << 10
	store, v := benchStore(b, size)
	p := make([]byte, read)
	r := rand.New(rand.NewPCG(1, 1))
	ctx := context.Background()
	b.SetBytes(read)
	b.ReportAllocs()
	for b.Loop() {
		off := r.Int64N(size - read)
		if _, err := tree.ReadAt(ctx, store, v, p, off); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLeaves(b *testing.B) {
	const size = 64 << 20 // 131072 leaves, depth 3
	store, v := benchStore(b, size)
	ctx := context.Background()
	for _, n := range []uint64{256, 131072} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			r := rand.New(rand.NewPCG(2, 2))
			for b.Loop() {
				first := r.Uint64N(tree.LeafCount(size) - n + 1)
				if _, err := tree.Leaves(ctx, store, v, first, n); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestHoles: chunks and nodes of zeros are holes, named by the zero hash,
// never put and never fetched, and read back as zeros.
func TestHoles(t *testing.T) {
	ctx := context.Background()
	// 300 chunks: data, a run of zeros spanning a whole node, data at the end.
	const n = 300 * format.ChunkSize
	src := make([]byte, n)
	copy(src, "head")
	copy(src[n-3:], "end")
	store := tree.NewMemStore()
	b := tree.NewBuilder(ctx, store)
	if _, err := b.Write(src); err != nil {
		t.Fatal(err)
	}
	v, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	// Stored: 2 data chunks + 2 depth-1 nodes + the root.
	if store.Len() != 5 {
		t.Errorf("%d chunks stored for a mostly empty file, want 5", store.Len())
	}
	got := make([]byte, n)
	if _, err := tree.ReadAt(ctx, store, v, got, 0); err != nil {
		t.Fatal(err)
	}
	// The last chunk is stored chunk 0 of its group: the holes before it
	// in the group take no place.
	spans, err := tree.Spans(ctx, store, v, 299, 1)
	if err != nil || len(spans) != 1 || spans[0].First != 0 || spans[0].Stored() != 1 {
		t.Errorf("Spans of the last chunk = %+v, %v; want one span, stored chunk 0", spans, err)
	}
	if store.Fallbacks() != 0 {
		t.Errorf("%d spans read by chunk names", store.Fallbacks())
	}
	if !bytes.Equal(got, src) {
		t.Fatal("holes read back wrong")
	}
	leaves, err := tree.Leaves(ctx, store, v, 1, 298)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range leaves {
		if !h.IsZero() {
			t.Fatalf("leaf %d of a hole is %s", i+1, h.Short())
		}
	}

	// A file that is one hole: 2^32+1 bytes (over 4 GiB), nothing stored,
	// nothing fetched.
	empty := tree.NewMemStore()
	b = tree.NewBuilder(ctx, empty)
	const big = 1<<32 + 1
	for i := uint64(0); i < tree.LeafCount(big); i++ {
		if err := b.AddLeaf(format.Hash{}, tree.LeafSize(big, i)); err != nil {
			t.Fatal(err)
		}
	}
	v, err = b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if v.Size != big || !v.Root.IsZero() || empty.Len() != 0 {
		t.Fatalf("sparse 4 GiB file: %+v, %d chunks stored", v, empty.Len())
	}
	p := make([]byte, 4096)
	p[0] = 1
	k, err := tree.ReadAt(ctx, empty, v, p, big-10)
	if k != 10 || err != io.EOF || !bytes.Equal(p[:10], make([]byte, 10)) {
		t.Fatalf("read at the end of a sparse file: %d, %v", k, err)
	}
	if empty.Fetches() != 0 {
		t.Errorf("%d fetches for a file that is one hole", empty.Fetches())
	}
}

// TestAddGroup: a version rebuilt from another's groups, by name, is that
// version, and costs one Fetch per level above depth 1; groups of holes
// read as zeros; AddGroup refuses what would not be a group of the file.
func TestAddGroup(t *testing.T) {
	ctx := context.Background()
	for _, size := range []int{2 * 512, 256 * 512, 257*512 + 3, depth2Size, 700*512 + 5} {
		content := randBytes(uint64(size)+3, size)
		store := tree.NewMemStore()
		want := build(t, store, content, 4096)
		leaves := tree.LeafCount(uint64(size))
		ngroups := (leaves + format.Fanout - 1) / format.Fanout
		before := store.Fetches()
		names, err := tree.Groups(ctx, store, want, 0, ngroups)
		if err != nil {
			t.Fatal(err)
		}
		if got, wantF := store.Fetches()-before, max(0, int(want.Depth)-1); got != wantF {
			t.Errorf("size %d: Groups made %d Fetch calls, want %d", size, got, wantF)
		}
		b := tree.NewBuilder(ctx, store)
		for j, h := range names {
			first := uint64(j) * format.Fanout
			n := min(format.Fanout, leaves-first)
			bytes := min((first+n)*format.ChunkSize, uint64(size)) - first*format.ChunkSize
			if err := b.AddGroup(h, int(n), bytes); err != nil {
				t.Fatalf("size %d: AddGroup %d: %v", size, j, err)
			}
		}
		if got, err := b.Finish(); err != nil || got != want {
			t.Fatalf("size %d: rebuilt %+v, %v; want %+v", size, got, err, want)
		}
	}

	// A group of holes between data.
	store := tree.NewMemStore()
	b := tree.NewBuilder(ctx, store)
	head := randBytes(1, 256*512)
	if _, err := b.Write(head); err != nil {
		t.Fatal(err)
	}
	if err := b.AddGroup(format.Hash{}, 256, 256*512); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write([]byte("tail")); err != nil {
		t.Fatal(err)
	}
	v, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(bytes.Clone(head), make([]byte, 256*512)...), "tail"...)
	checkRange(t, store, v, want, 0, len(want))

	h := format.Sum([]byte("a node"))
	for _, tc := range []struct {
		name  string
		setup func(b *tree.Builder)
		n     int
		size  uint64
	}{
		{"mid-group", func(b *tree.Builder) { b.Write(head[:512]) }, 256, 256 * 512},
		{"mid-chunk", func(b *tree.Builder) { b.Write(head[:100]) }, 256, 256 * 512},
		{"one leaf first", func(*tree.Builder) {}, 1, 512},
		{"too many leaves", func(*tree.Builder) {}, 257, 257 * 512},
		{"size too large", func(*tree.Builder) {}, 4, 4*512 + 1},
		{"size too small", func(*tree.Builder) {}, 4, 3 * 512},
	} {
		b := tree.NewBuilder(ctx, tree.NewMemStore())
		tc.setup(b)
		if err := b.AddGroup(h, tc.n, tc.size); err == nil {
			t.Errorf("AddGroup %s accepted", tc.name)
		}
	}
	b = tree.NewBuilder(ctx, tree.NewMemStore())
	if err := b.AddGroup(h, 10, 10*512); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write([]byte("x")); err == nil {
		t.Error("Write after a short group accepted")
	}
}

// TestAddNode: a depth-3 version rebuilt from its level-2 nodes (found by
// Entries) is that version, and costs Entries one Fetch of the root; a
// version with holes made of whole hole subtrees (AddHoles) equals the
// one written byte by byte; misplaced nodes are refused.
func TestAddNode(t *testing.T) {
	ctx := context.Background()
	const size = 3*256*256*512 + 1000 // three full level-2 nodes and a bit
	content := randBytes(11, size)
	store := tree.NewMemStore()
	want := build(t, store, content, 1<<20)
	if want.Depth != 3 {
		t.Fatalf("depth %d, want 3", want.Depth)
	}
	e, err := tree.NewEntries(store, want)
	if err != nil {
		t.Fatal(err)
	}
	before := store.Fetches()
	b := tree.NewBuilder(ctx, store)
	for j := uint64(0); j < 3; j++ {
		h, err := e.At(ctx, 2, j)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.AddNode(2, h, 256*256, 256*256*512); err != nil {
			t.Fatal(err)
		}
	}
	// The rest: its depth-1 node, a short group.
	h, err := e.At(ctx, 1, 3*256)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddNode(1, h, 2, 1000); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Finish(); err != nil || got != want {
		t.Fatalf("rebuilt %+v, %v; want %+v", got, err, want)
	}
	if n := store.Fetches() - before; n != 2 {
		t.Errorf("Entries made %d Fetch calls, want 2 (the root, then the level-2 node of the tail)", n)
	}
	// Leaves by Entries are those of Leaves.
	leaves, err := tree.Leaves(ctx, store, want, 65530, 10)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range leaves {
		if h, err := e.At(ctx, 0, 65530+uint64(i)); err != nil || h != l {
			t.Fatalf("leaf %d by Entries: %s, %v; want %s", 65530+i, h.Short(), err, l.Short())
		}
	}
	if _, err := e.At(ctx, 3, 1); err == nil {
		t.Error("an entry past the root accepted")
	}

	// Holes: head, 2^25 chunks of holes, tail; the same by Write.
	head, tail := randBytes(2, 300*512), randBytes(3, 777)
	const holes = 3*256*256*512 + 5*512
	b = tree.NewBuilder(ctx, store)
	if _, err := b.Write(head); err != nil {
		t.Fatal(err)
	}
	if err := b.AddHoles(holes); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write(tail); err != nil {
		t.Fatal(err)
	}
	got, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	whole := append(append(bytes.Clone(head), make([]byte, holes)...), tail...)
	if w := build(t, tree.NewMemStore(), whole, 1<<20); got != w {
		t.Fatalf("with AddHoles %+v, written %+v", got, w)
	}
	checkRange(t, store, got, whole, len(head)-10, 20)
	checkRange(t, store, got, whole, len(whole)-800, 800)

	// A file of nothing but holes, as large as files go, in O(depth).
	b = tree.NewBuilder(ctx, store)
	if err := b.AddHoles(tree.MaxFileSize); err != nil {
		t.Fatal(err)
	}
	if v, err := b.Finish(); err != nil || v.Size != tree.MaxFileSize || !v.Root.IsZero() || v.Validate() != nil {
		t.Fatalf("a hole of the largest size: %+v, %v", v, err)
	}
	if err := tree.NewBuilder(ctx, store).AddHoles(tree.MaxFileSize + 1); !errors.Is(err, tree.ErrTooLarge) {
		t.Fatalf("AddHoles beyond the largest size: %v, want ErrTooLarge", err)
	}

	for _, tc := range []struct {
		name   string
		setup  func(b *tree.Builder)
		level  uint8
		leaves uint64
	}{
		{"mid-node", func(b *tree.Builder) { b.AddGroup(h, 256, 256*512) }, 2, 65536},
		{"first node too small", func(*tree.Builder) {}, 2, 256},
		{"level 0", func(*tree.Builder) {}, 0, 1},
		{"level too high", func(*tree.Builder) {}, tree.MaxDepth, 1},
		{"too many leaves", func(*tree.Builder) {}, 2, 65537},
	} {
		b := tree.NewBuilder(ctx, tree.NewMemStore())
		tc.setup(b)
		if err := b.AddNode(tc.level, h, tc.leaves, tc.leaves*512); err == nil {
			t.Errorf("AddNode %s accepted", tc.name)
		}
	}
}

// TestStored: the groups Stored walks are those of Spans that store
// something, in order, with their first leaf; in a file of a petabyte
// with data at both ends it walks only those, and Nodes lists only the
// nodes above them.
func TestStored(t *testing.T) {
	ctx := context.Background()
	store := tree.NewMemStore()
	content := randBytes(5, 5*256*512+77)
	clear(content[256*512 : 3*256*512]) // two groups of holes
	clear(content[4*256*512+512 : 4*256*512+1024])
	v := build(t, store, content, 1<<16)
	spans, err := tree.Spans(ctx, store, v, 0, tree.LeafCount(v.Size))
	if err != nil {
		t.Fatal(err)
	}
	var want []tree.Span
	var wantFirst []uint64
	first := uint64(0)
	for _, s := range spans {
		if s.Stored() > 0 {
			want = append(want, s)
			wantFirst = append(wantFirst, first)
		}
		first += uint64(len(s.Leaves))
	}
	var got []tree.Span
	var gotFirst []uint64
	if err := tree.Stored(ctx, store, v, func(first uint64, s tree.Span) error {
		got, gotFirst = append(got, s), append(gotFirst, first)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || fmt.Sprint(gotFirst) != fmt.Sprint(wantFirst) {
		t.Fatalf("Stored walked %d groups at %v, want %d at %v", len(got), gotFirst, len(want), wantFirst)
	}

	b := tree.NewBuilder(ctx, store)
	head, tail := randBytes(6, 1000), randBytes(7, 1000)
	b.Write(head)
	b.Write(make([]byte, 512*256-1000))
	if err := b.AddHoles(1<<50 - 256*512); err != nil {
		t.Fatal(err)
	}
	b.Write(tail)
	huge, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	var firsts []uint64
	if err := tree.Stored(ctx, store, huge, func(first uint64, s tree.Span) error {
		firsts = append(firsts, first)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(firsts) != fmt.Sprint([]uint64{0, (1 << 50) / 512}) {
		t.Fatalf("Stored of a sparse petabyte walked groups at %v", firsts)
	}
	nodes := 0
	if err := tree.Nodes(ctx, store, huge, func(uint8, format.Hash) error { nodes++; return nil }); err != nil {
		t.Fatal(err)
	}
	if nodes > 2*int(huge.Depth) {
		t.Fatalf("Nodes listed %d nodes of a file with two groups (depth %d)", nodes, huge.Depth)
	}
}
