package fusefs

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/oashare/oashare/chunknet"
	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// TestContentGroups drives a file's content (no mount: the same code the
// file handles run) through random writes, truncates and commits against
// a plain byte slice, on a real node and index. After every commit the
// version reads back as the model, and every group it names with stored
// chunks is stored as a group: reused groups are exactly the base's, and
// every other group was written out whole.
func TestContentGroups(t *testing.T) {
	node := loneNode(t)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(4, 2))
	const group = format.Fanout * format.ChunkSize

	var model []byte
	c := newContent(node, tree.Version{}, 0)
	write := func(off int, n int) {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(r.IntN(256))
		}
		if err := c.write(ctx, uint64(off), p); err != nil {
			t.Fatal(err)
		}
		if end := off + n; end > len(model) {
			model = append(model, make([]byte, end-len(model))...)
		}
		copy(model[off:], p)
	}
	check := func(step int) {
		t.Helper()
		v, err := c.commit(ctx)
		if err != nil {
			t.Fatalf("step %d: commit: %v", step, err)
		}
		if v.Size != uint64(len(model)) {
			t.Fatalf("step %d: size %d, want %d", step, v.Size, len(model))
		}
		got := make([]byte, len(model))
		if _, err := tree.ReadAt(ctx, node, v, got, 0); err != nil && err != io.EOF {
			t.Fatalf("step %d: read: %v", step, err)
		}
		if !bytes.Equal(got, model) {
			t.Fatalf("step %d: content differs from the model", step)
		}
		spans, err := tree.Spans(ctx, node, v, 0, tree.LeafCount(v.Size))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range spans {
			if ok, _ := node.DB().HasGroup(s.Group); s.Stored() > 0 && !ok {
				t.Fatalf("step %d: group %s of the version is not stored as a group", step, s.Group.Short())
			}
		}
	}
	// A streamed file of 3.5 groups, then changes.
	write(0, 3*group+group/2)
	check(0)
	for step := 1; step <= 300; step++ {
		switch k := r.IntN(10); {
		case k < 5: // a small write anywhere, maybe past the end
			write(r.IntN(len(model)+group), 1+r.IntN(3000))
		case k < 7: // a write across a group boundary
			b := group * (1 + r.IntN(len(model)/group+1))
			write(max(0, b-100), 200)
		case k < 8: // truncate down, often to a chunk boundary
			size := r.IntN(len(model) + 1)
			if r.IntN(2) == 0 {
				size -= size % format.ChunkSize
			}
			if err := c.truncate(ctx, uint64(size)); err != nil {
				t.Fatal(err)
			}
			model = model[:size]
		default: // truncate up: a hole
			size := len(model) + r.IntN(2*group)
			if err := c.truncate(ctx, uint64(size)); err != nil {
				t.Fatal(err)
			}
			model = append(model, make([]byte, size-len(model))...)
		}
		if r.IntN(3) == 0 {
			check(step)
		}
	}
	check(301)
}

// loneNode starts a real node and index with no peers and no mount, for
// driving content directly; both close at the end of the test.
func loneNode(t testing.TB) *chunknet.Node {
	t.Helper()
	dir := t.TempDir()
	db, err := index.Open(filepath.Join(dir, "data"), index.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	node, err := chunknet.New(chunknet.Config{DB: db, Network: "test", Listen: "127.0.0.1:0", Replicas: 1,
		Logger: slog.New(slog.DiscardHandler), DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close(); db.Close() })
	return node
}

// TestContentHugeSparse: writes and truncates anywhere in files of up to
// a petabyte cost what they change, never the size: holes and unchanged
// subtrees are taken whole. The sparse model (a few written regions) is
// checked by reading each region and the zeros around it, and every
// version is compared with the same content built from nothing, which
// must have the same root (a version is a function of the bytes).
func TestContentHugeSparse(t *testing.T) {
	node := loneNode(t)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(7, 9))
	type region struct {
		off  uint64
		data []byte
	}
	var regions []region // in write order; later ones win
	size := uint64(0)
	c := newContent(node, tree.Version{}, 0)
	read := func(v tree.Version, off uint64, n int) []byte {
		t.Helper()
		p := make([]byte, n)
		k, err := tree.ReadAt(ctx, node, v, p, int64(off))
		if err != nil && err != io.EOF {
			t.Fatalf("read %d at %d: %v", n, off, err)
		}
		return p[:k]
	}
	// model returns the model's bytes [off, off+n) ∩ [0, size).
	model := func(off uint64, n int) []byte {
		if off >= size {
			return nil
		}
		p := make([]byte, min(uint64(n), size-off))
		for _, rg := range regions {
			lo, hi := max(off, rg.off), min(off+uint64(len(p)), rg.off+uint64(len(rg.data)))
			if lo < hi {
				copy(p[lo-off:hi-off], rg.data[lo-rg.off:hi-rg.off])
			}
		}
		return p
	}
	offsets := []uint64{0, 1 << 20, 1<<40 + 12345, 1 << 50, 1<<50 - 100, 3 << 45, 5<<30 + 511}
	for step := 0; step < 40; step++ {
		switch k := r.IntN(4); {
		case k < 2 || size == 0:
			off := offsets[r.IntN(len(offsets))] + uint64(r.IntN(1<<18))
			p := make([]byte, 1+r.IntN(300000))
			for i := range p {
				p[i] = byte(r.IntN(255) + 1)
			}
			if err := c.write(ctx, off, p); err != nil {
				t.Fatal(err)
			}
			regions = append(regions, region{off, p})
			size = max(size, off+uint64(len(p)))
		case k == 2: // truncate down
			size = uint64(r.Int64N(int64(size) + 1))
			if err := c.truncate(ctx, size); err != nil {
				t.Fatal(err)
			}
			for i := range regions {
				if rg := &regions[i]; rg.off+uint64(len(rg.data)) > size {
					rg.data = rg.data[:max(0, int64(size)-int64(rg.off))]
				}
			}
		default: // truncate up, up to the largest file
			size += uint64(r.Int64N(1 << 52))
			if r.IntN(5) == 0 {
				size = tree.MaxFileSize
			}
			if err := c.truncate(ctx, size); err != nil {
				t.Fatal(err)
			}
		}
		v, err := c.commit(ctx)
		if err != nil {
			t.Fatalf("step %d: commit: %v", step, err)
		}
		if v.Size != size {
			t.Fatalf("step %d: size %d, want %d", step, v.Size, size)
		}
		for _, rg := range regions {
			for _, at := range []uint64{rg.off - min(rg.off, 700), rg.off + uint64(len(rg.data))/2, rg.off + uint64(len(rg.data))} {
				if got, want := read(v, at, 4000), model(at, 4000); !bytes.Equal(got, want) {
					t.Fatalf("step %d: bytes at %d differ from the model", step, at)
				}
			}
		}
		// The same bytes built from nothing: regions in order, then the size.
		fresh := newContent(node, tree.Version{}, 0)
		for _, rg := range regions {
			if err := fresh.write(ctx, rg.off, rg.data); err != nil {
				t.Fatal(err)
			}
		}
		if err := fresh.truncate(ctx, size); err != nil {
			t.Fatal(err)
		}
		w, err := fresh.commit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if w != v {
			t.Fatalf("step %d: version %+v, built from nothing %+v", step, v, w)
		}
	}
	// Nothing of the holes was stored: only the regions' groups and the
	// nodes above them.
	if chunks, _ := node.DB().ChunkStats(); chunks > 1<<20 {
		t.Fatalf("%d chunks stored for a few MiB of data", chunks)
	}
}
