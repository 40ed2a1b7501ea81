package chunknet

import (
	"errors"
	"io"
	"net"
	"sort"
	"syscall"
	"time"

	"github.com/oashare/oashare/chunknet/wire"
	"github.com/oashare/oashare/index"
	"github.com/oashare/oashare/index/format"
	"github.com/oashare/oashare/index/format/multisha"
)

const (
	// serverConcurrency bounds the requests one inbound connection may have
	// in service at once; further frames wait in the socket (back-pressure).
	serverConcurrency = 16
	// recordsReplyBytes bounds one Records reply; the puller asks again.
	recordsReplyBytes = 1 << 20
)

// serverConn is an inbound connection: the peer sends requests, we answer.
// One goroutine reads frames; each request is served by its own goroutine,
// at most serverConcurrency at a time, and answered with its request ID, so
// a slow request does not hold up the others.
type serverConn struct {
	n    *Node
	conn net.Conn
	peer wire.Hello
	w    frameWriter
}

func (sc *serverConn) serve() {
	defer sc.conn.Close()
	rd := wire.NewReader(sc.conn, wire.MaxPayload)
	// Each request's payload is its own, handed to the goroutine serving
	// it and recycled when it has answered.
	rd.Alloc, rd.Free = sc.n.payloads.get, sc.n.payloads.put
	sem := make(chan struct{}, serverConcurrency)
	done := make(chan struct{})
	defer close(done)
	for {
		// A live peer pings every PingInterval: one silent for ReadIdle,
		// or trickling a frame for that long, is gone or hostile.
		sc.conn.SetReadDeadline(time.Now().Add(sc.n.cfg.ReadIdle))
		f, err := rd.Next()
		if err != nil {
			if sc.n.ctx.Err() == nil && !isEOF(err) {
				sc.n.log.Warn("closing connection: bad frame", "peer", sc.peer.Node.Short(), "remote", sc.conn.RemoteAddr(), "err", err)
			}
			break
		}
		switch f.Type {
		case wire.TypeBye:
			sc.n.log.Debug("peer said goodbye", "peer", sc.peer.Node.Short())
			sc.n.dropPeer(sc.peer.Node, ErrPeerLeft)
			goto out
		case wire.TypePing:
			if err := sc.w.write(wire.AppendPong(nil, f.ReqID)); err != nil {
				goto out
			}
			continue
		case wire.TypeLeaving:
			on, err := wire.DecodeLeaving(f.Payload)
			if err != nil {
				sc.n.log.Warn("closing connection: bad frame", "peer", sc.peer.Node.Short(), "err", err)
				goto out
			}
			sc.n.setLeaving(sc.peer.Node, on)
			continue
		}
		if f.Type.IsResponse() {
			sc.n.log.Warn("closing connection: response frame sent as a request", "peer", sc.peer.Node.Short(), "type", f.Type)
			break
		}
		req := f
		sem <- struct{}{}
		sc.n.wg.Add(1)
		go func() {
			defer sc.n.wg.Done()
			defer func() { <-sem }()
			reply, bad := sc.handle(req)
			// Nothing a handler returns aliases the request.
			sc.n.payloads.put(req.Payload)
			if bad != nil {
				sc.n.log.Warn("closing connection: malformed request", "peer", sc.peer.Node.Short(), "type", req.Type, "err", bad)
				sc.conn.Close()
				return
			}
			if err := sc.w.write(reply); err != nil {
				sc.conn.Close()
			}
		}()
	}
out:
	// Wait for in-service requests so their writes do not race the close.
	for i := 0; i < serverConcurrency; i++ {
		sem <- struct{}{}
	}
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET)
}

// handle serves one request and returns the encoded reply. A non-nil bad
// means the request was malformed: the connection is closed.
func (sc *serverConn) handle(f wire.Frame) (reply []byte, bad error) {
	n := sc.n
	switch f.Type {
	case wire.TypePutChunks:
		chunks, err := wire.DecodePutChunks(f.Payload)
		if err != nil {
			return nil, err
		}
		return wire.AppendPutResult(nil, f.ReqID, n.storeChunks(chunks, sc.peer.Node)), nil
	case wire.TypeGetChunks:
		hashes, err := wire.DecodeHashes(f.Payload)
		if err != nil {
			return nil, err
		}
		// Askers send a file's chunks in file order, which GetChunks reads
		// with few index lookups. What it returns is verified.
		datas, err := n.db.GetChunks(hashes)
		if err != nil {
			n.log.Error("reading chunks", "chunks", len(hashes), "err", err)
		}
		items := make([]wire.GetItem, len(hashes))
		size := 4
		for i := range hashes {
			switch {
			case size+5+format.MaxChunkData > wire.MaxPayload:
				// The reply is full: the asker tries these elsewhere.
				items[i].Status = wire.StatusTooLarge
			case datas[i] != nil:
				items[i] = wire.GetItem{Status: wire.StatusOK, Data: datas[i]}
				size += 1 + 4 + len(datas[i])
			case err != nil:
				items[i].Status = wire.StatusStoreError
				size += 1 + 4
			default:
				items[i].Status = wire.StatusNotFound
				size += 1 + 4
			}
		}
		return wire.AppendGetResult(nil, f.ReqID, items), nil
	case wire.TypePutGroups:
		groups, err := wire.DecodePutGroups(f.Payload)
		if err != nil {
			return nil, err
		}
		return wire.AppendPutResult(nil, f.ReqID, n.storeGroups(groups, sc.peer.Node)), nil
	case wire.TypeGetGroups:
		ranges, err := wire.DecodeGetGroups(f.Payload)
		if err != nil {
			return nil, err
		}
		return wire.AppendGroupResult(nil, f.ReqID, n.serveGroups(ranges)), nil
	case wire.TypeHasGroups:
		hashes, err := wire.DecodeGroupHashes(f.Payload)
		if err != nil {
			return nil, err
		}
		st := make([]byte, len(hashes))
		for i, h := range hashes {
			if ok, err := n.db.HasGroup(h); err != nil || !ok {
				st[i] = wire.StatusNotFound
			}
		}
		return wire.AppendHasResult(nil, f.ReqID, st), nil
	case wire.TypeHasChunks:
		hashes, err := wire.DecodeHashes(f.Payload)
		if err != nil {
			return nil, err
		}
		st := make([]byte, len(hashes))
		for i, h := range hashes {
			if ok, err := n.db.HasChunk(h); err != nil || !ok {
				st[i] = wire.StatusNotFound
			}
		}
		return wire.AppendHasResult(nil, f.ReqID, st), nil
	case wire.TypePull:
		vv, err := wire.DecodePull(f.Payload)
		if err != nil {
			return nil, err
		}
		more, recs, err := n.recordsFor(vv)
		if errors.Is(err, index.ErrPruned) {
			return wire.AppendRecordsPruned(nil, f.ReqID), nil
		}
		if err != nil {
			n.log.Error("reading log", "err", err)
			return wire.AppendError(nil, f.ReqID, wire.CodeInternal, "reading log failed"), nil
		}
		return wire.AppendRecords(nil, f.ReqID, more, recs), nil
	case wire.TypePush:
		recs, err := wire.DecodePush(f.Payload)
		if err != nil {
			return nil, err
		}
		st := n.applyRecords(recs, sc.peer.Node)
		return wire.AppendPushResult(nil, f.ReqID, st), nil
	case wire.TypeStat:
		return wire.AppendStatResult(nil, f.ReqID, n.LocalStat()), nil
	case wire.TypeInUse:
		u, err := n.localInUse()
		if err != nil {
			return wire.AppendError(nil, f.ReqID, wire.CodeInternal, "what this node uses: "+err.Error()), nil
		}
		return wire.AppendInUseResult(nil, f.ReqID, u), nil
	case wire.TypeSnapshot:
		session, after, err := wire.DecodeSnapshot(f.Payload)
		if err != nil {
			return nil, err
		}
		return n.serveSnapshot(f.ReqID, sc.peer.Node, session, after), nil
	case wire.TypeWaitApplied:
		origin, seq, err := wire.DecodeWaitApplied(f.Payload)
		if err != nil {
			return nil, err
		}
		return wire.AppendApplied(nil, f.ReqID, n.waitApplied(origin, seq, sc.peer.Node)), nil
	default:
		return wire.AppendError(nil, f.ReqID, wire.CodeUnsupported, "unsupported request "+f.Type.String()), nil
	}
}

// storeChunks verifies and stores chunks peer from sent, returning a status
// per chunk.
func (n *Node) storeChunks(chunks []wire.Chunk, from format.NodeID) []byte {
	st := make([]byte, len(chunks))
	if !n.admitPut(from) {
		return quotaStatuses(st)
	}
	good := make([]index.Chunk, 0, len(chunks))
	for i, c := range chunks {
		if !verify(c.Hash, c.Data) {
			n.log.Warn("refusing chunk whose bytes do not match its name", "chunk", c.Hash.Short())
			st[i] = wire.StatusBadHash
			continue
		}
		good = append(good, index.Chunk{Hash: c.Hash, Data: c.Data})
	}
	stats, err := n.putChunksHere(good)
	n.charge(from, stats)
	if err == nil && stats.Chunks > 0 {
		items := make([]index.Item, len(good))
		for i, c := range good {
			items[i] = index.Item{Hash: c.Hash}
		}
		n.noteReceived(items)
	}
	if err != nil {
		n.log.Error("storing chunks", "err", err)
		storeErrStatuses(st, err)
	}
	return st
}

// storeGroups verifies and stores groups peer from sent, returning a
// status per group.
func (n *Node) storeGroups(groups []wire.Group, from format.NodeID) []byte {
	st := make([]byte, len(groups))
	if !n.admitPut(from) {
		return quotaStatuses(st)
	}
	good := make([]upGroup, 0, len(groups))
	for i, g := range groups {
		if !verifyGroup(g.Hash, g.Node, g.Data) {
			n.log.Warn("refusing group whose bytes do not match its name", "group", g.Hash.Short())
			st[i] = wire.StatusBadHash
			continue
		}
		good = append(good, upGroup{hash: g.Hash, node: g.Node, data: g.Data})
	}
	stats, err := n.putGroupsHere(good)
	n.charge(from, stats)
	if err == nil && stats.Groups > 0 {
		items := make([]index.Item, len(good))
		for i, g := range good {
			items[i] = index.Item{Group: true, Hash: g.hash}
		}
		n.noteReceived(items)
	}
	if err != nil {
		n.log.Error("storing groups", "err", err)
		storeErrStatuses(st, err)
	}
	return st
}

// storeErrStatuses marks the items the store was to take as not stored:
// StatusFull when the disk is full (the sender then places them on other
// nodes first for a while), else StatusStoreError.
func storeErrStatuses(st []byte, err error) {
	code := wire.StatusStoreError
	if errors.Is(err, syscall.ENOSPC) {
		code = wire.StatusFull
	}
	for i := range st {
		if st[i] == wire.StatusOK {
			st[i] = code
		}
	}
}

func quotaStatuses(st []byte) []byte {
	for i := range st {
		st[i] = wire.StatusQuota
	}
	return st
}

// verifyGroup checks a group received for storage against its name: node
// hashes to g and data is exactly the chunks node names, holes (zero
// hashes) left out, each format.ChunkSize bytes but the last; or, with no
// node, data is one chunk named g.
func verifyGroup(g format.Hash, node, data []byte) bool {
	if len(node) == 0 {
		return len(data) <= format.ChunkSize && verify(g, data)
	}
	if len(node)%len(g) != 0 || len(node) > format.MaxNodeSize || !verify(g, node) {
		return false
	}
	// The non-hole hashes of the node name the chunks of data in order,
	// all but the last format.ChunkSize bytes long.
	var buf [format.Fanout]format.Hash
	sums := multisha.Chunks(buf[:0], data, format.ChunkSize)
	k := 0
	for i := 0; i < len(node); i += len(g) {
		h := format.Hash(node[i : i+len(g)])
		if h.IsZero() {
			continue
		}
		if k == len(sums) || sums[k] != h {
			return false
		}
		k++
	}
	return k == len(sums)
}

// serveGroups reads the group ranges a peer asked for; the reply stays
// within a frame (the asker tries what did not fit elsewhere).
func (n *Node) serveGroups(ranges []wire.GroupRange) []wire.GetItem {
	items := make([]wire.GetItem, len(ranges))
	size := 4
	for i, r := range ranges {
		want := int(r.N) * format.ChunkSize
		if size+5+want > wire.MaxPayload {
			items[i].Status = wire.StatusTooLarge
			continue
		}
		data, ok, err := n.db.GetGroup(r.Hash, int(r.First)*format.ChunkSize, want, nil)
		switch {
		case err != nil:
			n.log.Error("reading a group", "group", r.Hash.Short(), "err", err)
			items[i].Status = wire.StatusStoreError
		case !ok:
			items[i].Status = wire.StatusNotFound
		default:
			items[i] = wire.GetItem{Status: wire.StatusOK, Data: data}
		}
		size += 5 + len(items[i].Data)
	}
	return items
}

// recordsFor collects log records the requester (whose version vector is
// vv) lacks, in per-origin order, bounded by recordsReplyBytes.
func (n *Node) recordsFor(vv []wire.VVEntry) (more bool, recs [][]byte, err error) {
	theirs := make(map[format.NodeID]uint64, len(vv))
	for _, e := range vv {
		theirs[e.Node] = e.Seq
	}
	ours := n.db.VersionVector()
	// This node's records go out only once durable (see Publish).
	if d := n.db.DurableSeq(); ours[n.self] > d {
		ours[n.self] = d
	}
	origins := make([]format.NodeID, 0, len(ours))
	for o := range ours {
		origins = append(origins, o)
	}
	sort.Slice(origins, func(i, j int) bool { return origins[i].Compare(origins[j]) < 0 })
	budget := recordsReplyBytes
	for _, o := range origins {
		after := theirs[o]
		if ours[o] <= after {
			continue
		}
		if budget <= 0 {
			return true, recs, nil
		}
		got, err := n.db.LogSince(o, after, int(min(65536, ours[o]-after)), budget)
		if err != nil {
			return false, nil, err
		}
		for _, r := range got {
			budget -= len(r) + 4
		}
		recs = append(recs, got...)
		if uint64(len(got)) < ours[o]-after {
			more = true
		}
	}
	return more, recs, nil
}
