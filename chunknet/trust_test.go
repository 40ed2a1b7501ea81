package chunknet

import (
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
)

// liar is a member that acknowledges every copy it is sent and keeps none:
// it answers every read with "not found".
type liar struct {
	key  ed25519.PrivateKey
	ln   net.Listener
	puts sync.Map // hashes acknowledged
	wg   sync.WaitGroup
}

func startLiar(t *testing.T, network string) *liar {
	t.Helper()
	l := &liar{key: rawMember(t)}
	var err error
	if l.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	cert, err := selfCert(l.key)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			c, err := l.ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				l.serve(t, c, cert, network)
			}()
		}
	}()
	t.Cleanup(func() {
		l.ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		l.wg.Wait()
	})
	return l
}

func (l *liar) serve(t *testing.T, conn net.Conn, cert tls.Certificate, network string) {
	tc, _, _, err := secureServer(t.Context(), conn, cert, func(format.NodeID) error { return nil })
	if err != nil {
		return
	}
	if _, err := handshake(tc, wire.Hello{Version: wire.Version, Node: keyID(l.key), Network: network}, format.NodeID{}); err != nil {
		return
	}
	rc, err := toRecords(tc, false)
	if err != nil {
		return
	}
	rd := wire.NewReader(rc, wire.MaxPayload)
	for {
		f, err := rd.Next()
		if err != nil {
			return
		}
		var reply []byte
		switch f.Type {
		case wire.TypePing:
			reply = wire.AppendPong(nil, f.ReqID)
		case wire.TypePull:
			reply = wire.AppendRecords(nil, f.ReqID, false, nil)
		case wire.TypePutChunks:
			cs, _ := wire.DecodePutChunks(f.Payload)
			for _, c := range cs {
				l.puts.Store(c.Hash, true)
			}
			reply = wire.AppendPutResult(nil, f.ReqID, make([]byte, len(cs)))
		case wire.TypePutGroups:
			gs, _ := wire.DecodePutGroups(f.Payload)
			for _, g := range gs {
				l.puts.Store(g.Hash, true)
			}
			reply = wire.AppendPutResult(nil, f.ReqID, make([]byte, len(gs)))
		case wire.TypeGetChunks:
			hs, _ := wire.DecodeHashes(f.Payload)
			items := make([]wire.GetItem, len(hs))
			for i := range items {
				items[i].Status = wire.StatusNotFound
			}
			reply = wire.AppendGetResult(nil, f.ReqID, items)
		case wire.TypeGetGroups:
			rs, _ := wire.DecodeGetGroups(f.Payload)
			items := make([]wire.GetItem, len(rs))
			for i := range items {
				items[i].Status = wire.StatusNotFound
			}
			reply = wire.AppendGroupResult(nil, f.ReqID, items)
		case wire.TypeStat:
			reply = wire.AppendStatResult(nil, f.ReqID, wire.StatInfo{})
		default:
			reply = wire.AppendError(nil, f.ReqID, wire.CodeUnsupported, "liar")
		}
		if _, err := rc.Write(reply); err != nil {
			return
		}
	}
}

// TestSpotCheckCatchesLiar: a member that acknowledges copies and keeps
// none is caught by reading one back, reported, left out of placement, and
// the copies placed on it are made again on an honest node.
func TestSpotCheckCatchesLiar(t *testing.T) {
	cfg := Config{Replicas: 2, SpotCheckEvery: 1, SpotCheckDelay: 50 * time.Millisecond, TopUpEvery: 200 * time.Millisecond, RetryFor: -1}
	nodes := secureCluster(t, 1, cfg)
	a := nodes[0]
	l := startLiar(t, a.node.cfg.Network)
	a.node.AddPeerAddr(l.ln.Addr().String())
	waitFor(t, 5*time.Second, "the liar to be a peer", func() bool { return hasPeer(a.node, keyID(l.key)) })

	chunks := randChunks(t, 32, 512)
	if err := upload(t, a.node, chunks); err != nil {
		t.Fatalf("upload (the liar acknowledged every copy): %v", err)
	}
	waitFor(t, 5*time.Second, "the liar to be caught", func() bool {
		d := a.node.Distrusted()
		return len(d) == 1 && d[0] == keyID(l.key)
	})
	if got := a.node.Peers(); len(got) != 1 {
		t.Fatalf("the liar is no longer connected: %v", got)
	}
	// No more copies go to it: an honest member joins, and every chunk
	// ends with two real copies, on a and on it.
	b := startNode(t, Config{Identity: newKey(t), Replicas: 2})
	a.node.AddPeerAddr(b.node.Addr())
	b.node.AddPeerAddr(a.node.Addr())
	waitFor(t, 5*time.Second, "a and b connected", func() bool { return hasPeer(a.node, b.node.ID()) && hasPeer(b.node, a.node.ID()) })
	waitFor(t, 10*time.Second, "every chunk on two honest nodes", func() bool {
		for _, c := range chunks {
			if len(holders(t, c.Hash, []*testNode{a, b})) < 2 {
				return false
			}
		}
		return true
	})
	more := randChunks(t, 16, 512)
	before := 0
	l.puts.Range(func(any, any) bool { before++; return true })
	if err := upload(t, a.node, more); err != nil {
		t.Fatal(err)
	}
	after := 0
	l.puts.Range(func(any, any) bool { after++; return true })
	if after != before {
		t.Fatalf("the distrusted peer was sent %d more copies", after-before)
	}
}

// TestQuotaBoundsWhatAMemberStores: past its quota, a member's puts are
// refused (StatusQuota) and the node's store stops growing for it.
func TestQuotaBoundsWhatAMemberStores(t *testing.T) {
	const quota = 64 << 10
	a := startNode(t, Config{Identity: newKey(t), Replicas: 2, RetryFor: -1})
	b := startNode(t, Config{Identity: newKey(t), Replicas: 2, Quota: quota})
	connectAll(t, a, b)
	// Uploads of 32 KiB: the first two fit, the third is refused.
	var chunks []index.Chunk
	var err error
	for i := 0; i < 3; i++ {
		batch := randChunks(t, 64, 512)
		chunks = append(chunks, batch...)
		if err = upload(t, a.node, batch); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrNotDurable) {
		t.Fatalf("an upload past the quota: %v, want ErrNotDurable", err)
	}
	used, err := b.db.Usage(a.node.ID())
	if err != nil {
		t.Fatal(err)
	}
	// One put may cross the line; none follows it.
	if used < quota || used > quota+int64(wire.MaxPayload) {
		t.Fatalf("b stored %d bytes for a, quota %d", used, quota)
	}
	_, stored := b.db.ChunkStats()
	if stored > quota+int64(wire.MaxPayload) {
		t.Fatalf("b's store holds %d bytes", stored)
	}
	// Everything is still on a (kept when the copies failed), and b's own
	// writes are not limited by a's quota.
	for _, c := range chunks[:8] {
		if ok, _ := a.db.HasChunk(c.Hash); !ok {
			t.Fatal("a lost a chunk it wrote")
		}
	}
	if err := upload(t, b.node, randChunks(t, 256, 512)); err != nil {
		t.Fatalf("b's own upload: %v", err)
	}
}
