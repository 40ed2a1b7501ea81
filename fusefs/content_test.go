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
	const group = tree.Fanout * tree.ChunkSize

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
				size -= size % tree.ChunkSize
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
