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

// corrupted returns c's name with other bytes under it, as a damaged disk
// or a lying peer would hold it.
func corrupted(c index.Chunk) index.Chunk {
	bad := bytes.Clone(c.Data)
	bad[len(bad)/2] ^= 0x40
	return index.Chunk{Hash: c.Hash, Data: bad}
}

// putRaw stores chunks in a node's index as they are: the index does not
// check names, which is how corrupt copies come to exist.
func putRaw(t *testing.T, tn *testNode, chunks ...index.Chunk) {
	t.Helper()
	if _, err := tn.db.PutChunks(chunks); err != nil {
		t.Fatal(err)
	}
}

// byID returns the node of nodes with ID id.
func byID(nodes []*testNode, id format.NodeID) *testNode {
	for _, tn := range nodes {
		if tn.node.ID() == id {
			return tn
		}
	}
	return nil
}

func TestFetchSkipsCorruptAndMissingReplicas(t *testing.T) {
	nodes := startCluster(t, 3, Config{})
	holdersOf, reader := nodes[:2], nodes[2]
	peerIDs := nodeIDs(holdersOf)

	// Each chunk's first choice among the reader's peers holds a corrupt
	// copy (or none); only the second choice holds the real bytes.
	corrupt := randChunks(t, 20, 512)
	missing := randChunks(t, 20, 512)
	for _, c := range corrupt {
		order := Rank(c.Hash, peerIDs)
		putRaw(t, byID(holdersOf, order[0]), corrupted(c))
		putRaw(t, byID(holdersOf, order[1]), c)
	}
	for _, c := range missing {
		order := Rank(c.Hash, peerIDs)
		putRaw(t, byID(holdersOf, order[1]), c)
	}
	all := append(append([]index.Chunk(nil), corrupt...), missing...)
	got, err := reader.node.Fetch(t.Context(), hashesOf(all))
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	for i, c := range all {
		if !bytes.Equal(got[i], c.Data) {
			t.Fatalf("chunk %d: Fetch returned wrong bytes", i)
		}
	}
	// Asked again (now from the cache), the answer is the same.
	again, err := reader.node.Fetch(t.Context(), hashesOf(corrupt[:1]))
	if err != nil || !bytes.Equal(again[0], corrupt[0].Data) {
		t.Fatalf("second Fetch: %v", err)
	}
}

func TestFetchCorruptLocalCopyFallsBackToPeer(t *testing.T) {
	nodes := startCluster(t, 2, Config{})
	local, peer := nodes[0], nodes[1]
	chunks := randChunks(t, 10, 512)
	for _, c := range chunks {
		putRaw(t, local, corrupted(c))
		putRaw(t, peer, c)
	}
	got, err := local.node.Fetch(t.Context(), hashesOf(chunks))
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	for i, c := range chunks {
		if !bytes.Equal(got[i], c.Data) {
			t.Fatalf("chunk %d: Fetch returned the corrupt local bytes", i)
		}
	}
}

func TestFetchUnavailableNeverReturnsBadBytes(t *testing.T) {
	// A short retry: the chunks below never become available.
	nodes := startCluster(t, 3, Config{RetryFor: 100 * time.Millisecond})
	a, b, reader := nodes[0], nodes[1], nodes[2]
	good := randChunks(t, 1, 512)[0]
	putRaw(t, a, good)

	cases := []struct {
		name  string
		setup func(c index.Chunk)
	}{
		{"nowhere", func(index.Chunk) {}},
		{"one corrupt copy", func(c index.Chunk) { putRaw(t, a, corrupted(c)) }},
		{"every copy corrupt", func(c index.Chunk) {
			putRaw(t, a, corrupted(c))
			putRaw(t, b, corrupted(c))
		}},
		{"corrupt here and absent elsewhere", func(c index.Chunk) { putRaw(t, reader, corrupted(c)) }},
		{"corrupt here and on every peer", func(c index.Chunk) {
			putRaw(t, reader, corrupted(c))
			putRaw(t, a, corrupted(c))
			putRaw(t, b, corrupted(c))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := randChunks(t, 1, 512)[0]
			tc.setup(c)
			got, err := reader.node.Fetch(t.Context(), []format.Hash{c.Hash})
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Fetch error %v, want one wrapping ErrUnavailable", err)
			}
			if got != nil {
				t.Fatalf("Fetch returned %d results along with its error", len(got))
			}
			// One bad chunk fails the whole request, even beside a good one.
			got, err = reader.node.Fetch(t.Context(), []format.Hash{good.Hash, c.Hash})
			if !errors.Is(err, ErrUnavailable) || got != nil {
				t.Fatalf("Fetch of a good and a bad chunk: %d results, error %v", len(got), err)
			}
		})
	}
	// The good chunk is still served.
	got, err := reader.node.Fetch(t.Context(), []format.Hash{good.Hash})
	if err != nil || !bytes.Equal(got[0], good.Data) {
		t.Fatalf("Fetch of the good chunk: %v", err)
	}
}

// A chunk no peer has yet is asked for again until RetryFor runs out: one
// that appears meanwhile (a peer restarting, an upload landing) is
// returned.
func TestFetchRetriesUntilAReplicaAppears(t *testing.T) {
	plainOnly(t, "the fault transport sees frame types, which TLS hides")
	fn := &faultNet{}
	reader := startNode(t, Config{Transport: fn, RetryFor: 20 * time.Second})
	holder := startNode(t, Config{})
	connectAll(t, reader, holder)
	link := fn.open(holder.node.Addr())
	if len(link) != 1 {
		t.Fatalf("%d connections from the reader to the holder, want 1", len(link))
	}
	asks := &link[0].sent[wire.TypeGetChunks]

	c := randChunks(t, 1, 512)[0]
	type result struct {
		data [][]byte
		err  error
	}
	done := make(chan result, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		d, err := reader.node.Fetch(t.Context(), []format.Hash{c.Hash})
		done <- result{d, err}
	}()
	t.Cleanup(wg.Wait) // before the nodes close; the test's context is done by then
	// Two requests sent: the first one's answer was "not found".
	waitFor(t, 10*time.Second, "the fetch to ask twice", func() bool {
		return asks.Load() >= 2
	})
	putRaw(t, holder, c)
	select {
	case r := <-done:
		if r.err != nil || !bytes.Equal(r.data[0], c.Data) {
			t.Fatalf("Fetch: %v", r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Fetch did not return after the chunk appeared")
	}
}

// A holder that answers pings but never answers reads costs a read the
// hedge delay, not the request timeout (30 s per try): the read asks the
// next replica meanwhile, and later reads ask the stalled peer last until
// it answers again.
func TestReadHedgesAroundStalledPeer(t *testing.T) {
	plainOnly(t, "the fault transport sees frame types, which TLS hides")
	fn := &faultNet{}
	cfg := Config{Replicas: 3}
	stuckCfg := cfg
	stuckCfg.Transport = fn
	stuck := startNode(t, stuckCfg)
	noCache := cfg
	noCache.CacheBytes = -1 // every read asks the peers
	nodes := []*testNode{stuck, startNode(t, cfg), startNode(t, cfg), startNode(t, noCache)}
	connectAll(t, nodes...)
	writer, reader := nodes[1], nodes[3]
	content := randBytes(t, 4<<20)
	v := writeFile(t, writer.node, content)
	// The stuck node swallows its answers to reads on every connection,
	// those it dialed too (a peer may send its requests on either);
	// pings still get their pongs.
	for _, c := range fn.open("") {
		c.drop[wire.TypeGroupResult].Store(true)
		c.drop[wire.TypeGetResult].Store(true)
	}
	// Three reads, each well within one request timeout; the reader
	// holds only part of the file, so the stuck node's groups come from
	// the other replicas.
	for i := range 3 {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		got := make([]byte, len(content))
		start := time.Now()
		_, err := tree.ReadAt(ctx, reader.node, v, got, 0)
		cancel()
		if err != nil && err != io.EOF {
			t.Fatalf("read %d with a stuck replica: %v", i, err)
		}
		if !bytes.Equal(got, content) {
			t.Fatalf("read %d: wrong bytes", i)
		}
		t.Logf("read %d of 4 MiB with a stuck replica: %v", i, time.Since(start).Round(time.Millisecond))
	}
	if !hasPeer(reader.node, stuck.node.ID()) {
		t.Fatal("the stuck node was dropped: it must stay live (it answers pings)")
	}
	var p *peer
	reader.node.mu.Lock()
	p = reader.node.peers[stuck.node.ID()]
	reader.node.mu.Unlock()
	if p == nil || !p.stalled.Load() {
		t.Fatal("the stuck node is not marked stalled")
	}
}
