package chunknet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/oashare/oashare/chunknet/tree"
	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// writeFile cuts content into a file tree on n, uploading it as a file
// handle does, and returns its version.
func writeFile(t testing.TB, n *Node, content []byte) tree.Version {
	t.Helper()
	up := n.NewUploader(t.Context())
	b := tree.NewBuilder(t.Context(), up)
	for p := content; len(p) > 0; {
		k := min(len(p), 100_000) // writes that do not fall on chunk bounds
		if _, err := b.Write(p[:k]); err != nil {
			t.Fatal(err)
		}
		p = p[k:]
	}
	v, err := b.Finish()
	if werr := up.Wait(); err == nil {
		err = werr
	}
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// fileContent is size random bytes with a run of zeros (holes) inside
// its second group.
func fileContent(t *testing.T, size int) []byte {
	c := randBytes(t, size)
	clear(c[300*format.ChunkSize : 310*format.ChunkSize])
	return c
}

func readWhole(t *testing.T, n *Node, v tree.Version) ([]byte, error) {
	t.Helper()
	got := make([]byte, v.Size)
	k, err := tree.ReadAt(t.Context(), n, v, got, 0)
	if err == io.EOF {
		err = nil
	}
	return got[:k], err
}

// TestGroupsPlacedAndReadEverywhere: a file's data goes to its groups'
// replicas, group by group (one index entry per group, none per data
// chunk), and every node reads it back exactly, whole and in pieces.
func TestGroupsPlacedAndReadEverywhere(t *testing.T) {
	nodes := startCluster(t, 4, Config{Replicas: 3})
	content := fileContent(t, 700*format.ChunkSize+77)
	v := writeFile(t, nodes[0].node, content)
	spans, err := tree.Spans(t.Context(), nodes[0].node, v, 0, tree.LeafCount(v.Size))
	if err != nil {
		t.Fatal(err)
	}
	if len(spans) != 3 {
		t.Fatalf("%d spans for 701 chunks, want 3", len(spans))
	}
	ids := nodeIDs(nodes)
	for _, s := range spans {
		want := Rank(s.Group, ids)[:3]
		var got []format.NodeID
		for _, tn := range nodes {
			if ok, _ := tn.db.HasGroup(s.Group); ok {
				got = append(got, tn.node.ID())
			}
			// The depth-1 node is stored with its group, by its name.
			if ok, _ := tn.db.HasChunk(s.Group); ok != containsID(want, tn.node.ID()) {
				t.Errorf("node %s holds the depth-1 node %s: %v", tn.node.ID().Short(), s.Group.Short(), ok)
			}
			for _, h := range s.Leaves {
				if ok, _ := tn.db.HasChunk(h); ok && !h.IsZero() {
					t.Fatalf("data chunk %s stored by its own name", h.Short())
				}
			}
		}
		if !sameSet(got, want) {
			t.Errorf("group %s on %v, want its 3 best-ranked nodes %v", s.Group.Short(), got, want)
		}
	}
	holders, err := nodes[1].node.GroupHolders(t.Context(), []format.Hash{spans[0].Group, spans[2].Group})
	if err != nil || len(holders) != 2 || len(holders[0]) != 3 || len(holders[1]) != 3 {
		t.Fatalf("GroupHolders = %v, %v; want 3 holders each", holders, err)
	}
	for _, tn := range nodes {
		got, err := readWhole(t, tn.node, v)
		if err != nil || !bytes.Equal(got, content) {
			t.Fatalf("node %s reads %d bytes (%v), equal %v", tn.node.ID().Short(), len(got), err, bytes.Equal(got, content))
		}
		for _, r := range [][2]int{{0, 1}, {511, 2}, {255*512 + 3, 1500}, {299 * 512, 20 * 512}, {len(content) - 100, 100}} {
			p := make([]byte, r[1])
			if _, err := tree.ReadAt(t.Context(), tn.node, v, p, int64(r[0])); err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if !bytes.Equal(p, content[r[0]:r[0]+r[1]]) {
				t.Fatalf("node %s: bytes [%d, +%d) differ", tn.node.ID().Short(), r[0], r[1])
			}
		}
	}
	// A one-chunk file is its own group.
	small := []byte("a file of one chunk")
	sv := writeFile(t, nodes[2].node, small)
	if got, err := readWhole(t, nodes[3].node, sv); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("one-chunk file read back as %q, %v", got, err)
	}
}

func containsID(ids []format.NodeID, id format.NodeID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// rawGroup makes the group of a one-group file of content: its node, and
// the version naming it.
func rawGroup(content []byte) (node []byte, v tree.Version) {
	for i := 0; i < len(content); i += format.ChunkSize {
		h := format.Sum(content[i:min(i+format.ChunkSize, len(content))])
		node = append(node, h[:]...)
	}
	return node, tree.Version{Size: uint64(len(content)), Root: format.Sum(node), Depth: 1}
}

// TestGroupFetchSkipsCorruptAndMissing: a replica holding a damaged or no
// copy of a group is passed over for the next one; when no replica holds a
// good copy the read fails, never returning bad bytes.
func TestGroupFetchSkipsCorruptAndMissing(t *testing.T) {
	nodes := startCluster(t, 4, Config{Replicas: 3, RetryFor: 100 * time.Millisecond})
	for _, tc := range []struct {
		name   string
		copies []string // what each of the group's 3 replicas holds, best first
		ok     bool
	}{
		{"first corrupt, second missing", []string{"corrupt", "", "good"}, true},
		{"first missing", []string{"", "good", "good"}, true},
		{"every copy corrupt", []string{"corrupt", "corrupt", "corrupt"}, false},
		{"nowhere", []string{"", "", ""}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			content := randBytes(t, 200*format.ChunkSize+5)
			node, v := rawGroup(content)
			bad := bytes.Clone(content)
			bad[3000] ^= 1
			order := Rank(v.Root, nodeIDs(nodes))
			reader := byID(nodes, order[3])
			for _, tn := range nodes {
				putRaw(t, tn, index.Chunk{Hash: v.Root, Data: node})
			}
			for k, what := range tc.copies {
				var data []byte
				switch what {
				case "good":
					data = content
				case "corrupt":
					data = bad
				default:
					continue
				}
				if _, err := byID(nodes, order[k]).db.PutGroups([]index.Group{{Hash: v.Root, Data: data}}, nil); err != nil {
					t.Fatal(err)
				}
			}
			got, err := readWhole(t, reader.node, v)
			switch {
			case tc.ok && (err != nil || !bytes.Equal(got, content)):
				t.Fatalf("read %d bytes, %v; want the good copy", len(got), err)
			case !tc.ok && !errors.Is(err, ErrUnavailable):
				t.Fatalf("read %d bytes, %v; want ErrUnavailable", len(got), err)
			}
			// A replica reading its own damaged copy gets the bytes from
			// another replica.
			if tc.ok && tc.copies[0] == "corrupt" {
				if got, err := readWhole(t, byID(nodes, order[0]).node, v); err != nil || !bytes.Equal(got, content) {
					t.Fatalf("the replica with the damaged copy read %d bytes, %v", len(got), err)
				}
			}
		})
	}
}

// TestPutGroupsRefusesBadBytes: a peer storing a group whose bytes do not
// match its node, or a node that does not match the group's name, gets
// BadHash for it and nothing is stored; good groups in the same frame are.
func TestPutGroupsRefusesBadBytes(t *testing.T) {
	tn := startNode(t, Config{})
	p := connectRaw(t, tn.node.Addr())
	data := randBytes(t, 3*format.ChunkSize+10)
	var node []byte
	for i := 0; i < len(data); i += format.ChunkSize {
		h := format.Sum(data[i:min(i+format.ChunkSize, len(data))])
		node = append(node, h[:]...)
	}
	good := wire.Group{Hash: format.Sum(node), Node: node, Data: data}
	flipped := bytes.Clone(data)
	flipped[700] ^= 1
	single := []byte("one chunk")
	cases := []wire.Group{
		good,
		{Hash: good.Hash, Node: node, Data: flipped},                                         // data not what the node names
		{Hash: format.Sum([]byte("other")), Node: node, Data: data},                          // node not the name
		{Hash: good.Hash, Node: node, Data: data[:len(data)-1]},                              // a chunk cut short
		{Hash: good.Hash, Node: node, Data: append(bytes.Clone(data), 0)},                    // trailing bytes
		{Hash: format.Sum(single), Data: single},                                             // a one-chunk group
		{Hash: format.Sum(single), Data: append(bytes.Clone(single), 'x')},                   // that one, wrong
		{Hash: format.Sum(bytes.Repeat([]byte{1}, 600)), Data: bytes.Repeat([]byte{1}, 600)}, // one chunk too long
	}
	want := []byte{wire.StatusOK, wire.StatusBadHash, wire.StatusBadHash, wire.StatusBadHash, wire.StatusBadHash,
		wire.StatusOK, wire.StatusBadHash, wire.StatusBadHash}
	p.send(t, wire.AppendPutGroups(nil, 7, cases))
	f := p.next(t)
	if f.Type != wire.TypePutResult || f.ReqID != 7 {
		t.Fatalf("reply %v %d", f.Type, f.ReqID)
	}
	st, err := wire.DecodeStatuses(f.Payload)
	if err != nil || !bytes.Equal(st, want) {
		t.Fatalf("statuses %v (%v), want %v", st, err, want)
	}
	if got, ok, err := tn.db.GetGroup(good.Hash, 0, format.MaxGroupData, nil); err != nil || !ok || !bytes.Equal(got, data) {
		t.Fatalf("the good group: ok %v, %v", ok, err)
	}
	if ok, _ := tn.db.HasChunk(good.Hash); !ok {
		t.Fatal("the good group's node was not stored with it")
	}
	if c, _ := tn.db.ChunkStats(); c != 4+1+1 {
		t.Fatalf("%d chunks stored, want 6 (the good group, its node, the one-chunk group)", c)
	}
	// GetGroups serves ranges of what is stored, NotFound for the rest.
	p.send(t, wire.AppendGetGroups(nil, 8, []wire.GroupRange{
		{Hash: good.Hash, First: 1, N: 2}, {Hash: good.Hash, First: 3, N: 9}, {Hash: format.Sum(nil), First: 0, N: 1},
	}))
	f = p.next(t)
	items, err := wire.DecodeGroupResult(f.Payload)
	if err != nil || len(items) != 3 {
		t.Fatalf("GroupResult: %v, %d items", err, len(items))
	}
	if items[0].Status != wire.StatusOK || !bytes.Equal(items[0].Data, data[512:1536]) ||
		items[1].Status != wire.StatusOK || !bytes.Equal(items[1].Data, data[1536:]) ||
		items[2].Status != wire.StatusNotFound {
		t.Fatalf("GroupResult items: %v %v %v", items[0].Status, items[1].Status, items[2].Status)
	}
}

// TestFetchSpansReadsChunksStoredByName: a file whose data chunks were
// stored one by one, by their own names and placement (as before groups),
// still reads back.
func TestFetchSpansReadsChunksStoredByName(t *testing.T) {
	nodes := startCluster(t, 3, Config{Replicas: 2, RetryFor: 100 * time.Millisecond})
	content := randBytes(t, 40*format.ChunkSize)
	store := tree.NewMemStore()
	b := tree.NewBuilder(context.Background(), store)
	if _, err := b.Write(content); err != nil {
		t.Fatal(err)
	}
	v, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	var chunks []index.Chunk
	for i := 0; i < len(content); i += format.ChunkSize {
		d := content[i : i+format.ChunkSize]
		chunks = append(chunks, index.Chunk{Hash: format.Sum(d), Data: d})
	}
	root, err := store.Fetch(context.Background(), []format.Hash{v.Root})
	if err != nil {
		t.Fatal(err)
	}
	chunks = append(chunks, index.Chunk{Hash: v.Root, Data: root[0]})
	if err := upload(t, nodes[0].node, chunks); err != nil {
		t.Fatal(err)
	}
	for _, tn := range nodes {
		if got, err := readWhole(t, tn.node, v); err != nil || !bytes.Equal(got, content) {
			t.Fatalf("node %s: %v, equal %v", tn.node.ID().Short(), err, bytes.Equal(got, content))
		}
	}
}

// TestFetchSpansConcurrentOverlap: reads of overlapping ranges of groups
// held elsewhere, at once (read-ahead racing the read it runs ahead of),
// each return their bytes exactly: one waits for the other's flight of a
// group and fetches what it still lacks itself.
func TestFetchSpansConcurrentOverlap(t *testing.T) {
	nodes := startCluster(t, 4, Config{Replicas: 3, CacheBytes: 1 << 20})
	content := randBytes(t, 1024*format.ChunkSize)
	v := writeFile(t, nodes[0].node, content)
	for _, reader := range nodes {
		for round := range 5 {
			var wg sync.WaitGroup
			for _, r := range [][2]int{{0, 1024}, {100, 300}, {250, 700}, {900, 124}} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					off := (r[0] + round) * format.ChunkSize
					n := min(r[1]*format.ChunkSize, len(content)-off)
					p := make([]byte, n)
					if _, err := tree.ReadAt(t.Context(), reader.node, v, p, int64(off)); err != nil && err != io.EOF {
						t.Error(err)
						return
					}
					if !bytes.Equal(p, content[off:off+n]) {
						t.Errorf("bytes [%d, +%d) differ", off, n)
					}
				}()
			}
			wg.Wait()
		}
	}
}

// TestGroupBatchFitsOneFrame: the largest batch of groups an Uploader
// closes (whole groups with whole nodes, added until groupBatchBytes is
// reached: only a file's last group is smaller) is one PutGroups frame
// within wire.MaxPayload, so a target peer always gets its share of a
// batch in one frame.
func TestGroupBatchFitsOneFrame(t *testing.T) {
	data := make([]byte, format.MaxGroupData)
	node := make([]byte, wire.MaxGroupNode)
	var groups []wire.Group
	for size := 0; size < groupBatchBytes; size += len(data) + len(node) {
		groups = append(groups, wire.Group{Hash: format.Sum([]byte{byte(len(groups))}), Node: node, Data: data})
	}
	n := 0
	_, frame := wire.PutGroupsVec(nil, 1, groups) // panics past MaxPayload
	for _, p := range frame {
		n += len(p)
	}
	if n-wire.HeaderSize > wire.MaxPayload {
		t.Fatalf("a batch of %d groups is a frame of %d bytes, over the payload bound %d", len(groups), n, wire.MaxPayload)
	}
	t.Logf("largest batch: %d groups, a frame of %d bytes (payload bound %d)", len(groups), n, wire.MaxPayload)
}
