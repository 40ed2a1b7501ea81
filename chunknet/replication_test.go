package chunknet

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index/faultfs"
	"github.com/oashare/oashare/index/format"
)

func nodeIDs(nodes []*testNode) []format.NodeID {
	ids := make([]format.NodeID, len(nodes))
	for i, tn := range nodes {
		ids[i] = tn.node.ID()
	}
	return ids
}

// Every chunk an Uploader stores lands on exactly Replicas nodes, and on
// the ones placement names: the top of Rank over all members.
func TestUploadPlacesReplicasByRank(t *testing.T) {
	nodes := startCluster(t, 4, Config{Replicas: 3})
	ids := nodeIDs(nodes)
	chunks := randChunks(t, 1000, 512)
	if err := upload(t, nodes[1].node, chunks); err != nil {
		t.Fatalf("upload: %v", err)
	}
	var total int64
	for _, tn := range nodes {
		c, _ := tn.db.ChunkStats()
		total += c
	}
	if total != 3*int64(len(chunks)) {
		t.Errorf("chunks stored across the cluster: %d, want %d", total, 3*len(chunks))
	}
	for i, c := range chunks {
		got := holders(t, c.Hash, nodes)
		want := Rank(c.Hash, ids)[:3]
		if !sameSet(got, want) {
			t.Fatalf("chunk %d (%s) is on %v, placement says %v", i, c.Hash.Short(), got, want)
		}
	}
	// What a node serves is what was uploaded.
	got, err := nodes[2].node.Fetch(t.Context(), hashesOf(chunks))
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range chunks {
		if !bytes.Equal(got[i], c.Data) {
			t.Fatalf("chunk %d: fetched bytes differ from the uploaded ones", i)
		}
	}
}

// With fewer live nodes than replicas, every chunk goes to every live node.
func TestUploadReplicasCappedByLiveNodes(t *testing.T) {
	nodes := startCluster(t, 3, Config{Replicas: 3})
	gone := nodes[2]
	gone.closeNode()
	live := nodes[:2]
	waitFor(t, 5*time.Second, "the closed node to leave the peer lists", func() bool {
		return len(live[0].node.Peers()) == 1 && len(live[1].node.Peers()) == 1
	})
	chunks := randChunks(t, 1000, 512)
	if err := upload(t, live[0].node, chunks); err != nil {
		t.Fatalf("upload with 2 of 3 replicas alive: %v", err)
	}
	for i, c := range chunks {
		if got := holders(t, c.Hash, live); len(got) != 2 {
			t.Fatalf("chunk %d is on %d live nodes, want both", i, len(got))
		}
		if ok, _ := gone.db.HasChunk(c.Hash); ok {
			t.Fatalf("chunk %d reached the closed node", i)
		}
	}
}

// A replica that leaves while an Uploader streams costs no data: the
// batches stuck on it fail when it goes, their chunks go to the
// next-ranked nodes, and Wait succeeds.
func TestUploadFailoverWhenPeerLeaves(t *testing.T) {
	plainOnly(t, "the fault transport sees frame types, which TLS hides")
	fn := &faultNet{}
	// Slow pings: the hung link is not dropped before the node leaves.
	quiet := Config{Replicas: 3, PingInterval: time.Minute, DeadAfter: time.Minute}
	withFaults := quiet
	withFaults.Transport = fn
	src := startNode(t, withFaults)
	nodes := []*testNode{src, startNode(t, quiet), startNode(t, quiet), startNode(t, quiet)}
	connectAll(t, nodes...)
	ids := nodeIDs(nodes)
	leaving, survivors := nodes[3], nodes[:3]

	// The link to the leaving node hangs: what src sends it is lost and
	// those batches wait for an answer.
	link := fn.open(leaving.node.Addr())
	if len(link) != 1 {
		t.Fatalf("%d connections from src to the leaving node, want 1", len(link))
	}
	link[0].frozen.Store(true)

	chunks := randChunks(t, 4000, 512)
	half := len(chunks) / 2
	u := src.node.NewUploader(t.Context())
	t.Cleanup(func() { u.Wait() }) // a failed test leaves no batch running into closed nodes
	for i, c := range chunks {
		if i == half {
			waitFor(t, 5*time.Second, "uploads to reach the hung link", func() bool {
				return link[0].swallowed[wire.TypePutChunks].Load() > 0
			})
			leaving.closeNode()
		}
		if err := u.Put(t.Context(), c.Hash, c.Data); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	if err := u.Wait(); err != nil {
		// Three nodes stay alive, so every chunk still reaches three.
		t.Fatalf("Wait: %v", err)
	}
	if n, _ := leaving.db.ChunkStats(); n != 0 {
		t.Fatalf("the leaving node stored %d chunks through a frozen link", n)
	}
	retargeted := 0
	for i, c := range chunks {
		if on := holders(t, c.Hash, survivors); len(on) != 3 {
			t.Fatalf("chunk %d is on %d surviving nodes (%v), want 3", i, len(on), on)
		}
		if i < half && slices.Contains(Rank(c.Hash, ids)[:3], leaving.node.ID()) {
			retargeted++
		}
	}
	// About 3/4 of the first half was meant for the leaving node.
	if retargeted < half/2 {
		t.Fatalf("only %d chunks of the first half were placed on the leaving node", retargeted)
	}
	t.Logf("%d chunks moved from the leaving node to the next-ranked one", retargeted)
	got, err := nodes[1].node.Fetch(t.Context(), hashesOf(chunks))
	if err != nil {
		t.Fatalf("fetch from a survivor: %v", err)
	}
	for i, c := range chunks {
		if !bytes.Equal(got[i], c.Data) {
			t.Fatalf("chunk %d: wrong bytes", i)
		}
	}
}

// A copy counts only while its holder is alive: when a replica stored a
// batch and then left while another refused it (a full disk), the retry
// does not count the copy on the node that is gone, and the upload
// succeeds only once min(replicas, live nodes) live nodes hold every
// chunk. A replica that cannot store answers with an error, never OK.
func TestUploadCountsOnlyLiveHolders(t *testing.T) {
	cfg := Config{Replicas: 3, RetryFor: 20 * time.Second}
	src := startNode(t, cfg)
	leaving := startNode(t, cfg)
	disk := faultfs.New(nil)
	disk.Fail.Store(true)
	full := startNodeOn(t, t.TempDir(), disk, cfg)
	connectAll(t, src, leaving, full)

	chunks := randChunks(t, 100, 512)
	done := make(chan error, 1)
	go func() { done <- upload(t, src.node, chunks) }()
	waitFor(t, 10*time.Second, "the full replica to refuse a batch", func() bool { return disk.Failed.Load() > 0 })
	leaving.closeNode()
	waitFor(t, 5*time.Second, "the node that left to leave the peer list", func() bool {
		return !hasPeer(src.node, leaving.node.ID())
	})
	disk.Fail.Store(false) // room again
	if err := <-done; err != nil {
		t.Fatalf("upload: %v", err)
	}
	live := []*testNode{src, full}
	for i, c := range chunks {
		if on := holders(t, c.Hash, live); len(on) != 2 {
			t.Fatalf("chunk %d is on %d live nodes (%v) after a successful upload, want 2", i, len(on), on)
		}
	}
}

// A replica whose stored copy of a chunk went bad (a bad sector) does not
// acknowledge that copy when the chunk is uploaded again: it stores the
// chunk anew, so the acknowledgement means a copy it can serve.
func TestUploadReplacesDamagedCopy(t *testing.T) {
	nodes := startCluster(t, 2, Config{Replicas: 2})
	src, replica := nodes[0], nodes[1]
	chunks := randChunks(t, 20, 512)
	if err := upload(t, src.node, chunks); err != nil {
		t.Fatal(err)
	}
	// Damage the replica's copy of chunk 5 in its segment file.
	victim := chunks[5]
	segs, _ := filepath.Glob(filepath.Join(replica.dir, "chunks", "*.seg"))
	damaged := false
	for _, seg := range segs {
		b, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, victim.Data); i >= 0 {
			b[i+100] ^= 0xff
			if err := os.WriteFile(seg, b, 0o644); err != nil {
				t.Fatal(err)
			}
			damaged = true
		}
	}
	if !damaged {
		t.Fatal("the chunk's bytes are in no segment of the replica")
	}
	if out, _ := replica.db.GetChunks([]format.Hash{victim.Hash}); out[0] != nil {
		t.Fatal("the damaged copy still reads as good")
	}
	if err := upload(t, src.node, chunks); err != nil {
		t.Fatal(err)
	}
	out, err := replica.db.GetChunks(hashesOf(chunks))
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range chunks {
		if !bytes.Equal(out[i], c.Data) {
			t.Fatalf("chunk %d: the replica acknowledged it but holds no good copy", i)
		}
	}
}
