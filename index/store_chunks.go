package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble"

	"github.com/oashare/oashare/index/format"
)

// Chunk is one stored chunk: its name and its bytes.
type Chunk struct {
	Hash format.Hash
	Data []byte
}

func chunkKey(h format.Hash) []byte {
	k := make([]byte, 1+len(h))
	k[0] = prefixChunk
	copy(k[1:], h[:])
	return k
}

// PutChunks stores chunks durably (a synced batch of the chunk log).
// Chunks already stored intact (or repeated within chunks) are skipped: a
// chunk is stored once however many files contain it. A chunk whose stored
// copy is damaged is written again, so that success always means a good
// copy here. The caller has verified every hash. If any
// chunk is larger than MaxChunkData, PutChunks writes nothing and returns an
// error. It returns how many chunks were new.
//
// Concurrent calls are group-committed: callers queue their chunks, and one
// of them (the leader) writes every queued call's chunks in one batch with
// one sync, then wakes the others. Peers storing into one node at once thus
// share fsyncs instead of waiting for one each.
func (db *DB) PutChunks(chunks []Chunk) (added int, err error) {
	if db.closed.Load() {
		return 0, ErrClosed
	}
	if err := checkChunkSizes(chunks); err != nil {
		return 0, err
	}
	if len(chunks) == 0 {
		return 0, nil
	}
	req := &putReq{chunks: chunks, done: make(chan struct{})}
	if err := db.enqueuePut(req); err != nil {
		return 0, err
	}
	return req.added, req.err
}

// PutStats says what a Put stored that was not stored before.
type PutStats struct {
	Chunks, Groups int
	Bytes          int64
}

// Put is PutGroups (and, with no groups, PutChunks) reporting what was
// new: a peer's storage is charged for it (see chunknet's quota).
func (db *DB) Put(groups []Group, chunks []Chunk) (PutStats, error) {
	if db.closed.Load() {
		return PutStats{}, ErrClosed
	}
	if err := checkPut(groups, chunks); err != nil {
		return PutStats{}, err
	}
	if len(groups)+len(chunks) == 0 {
		return PutStats{}, nil
	}
	req := &putReq{groups: groups, chunks: chunks, done: make(chan struct{})}
	if err := db.enqueuePut(req); err != nil {
		return PutStats{}, err
	}
	return PutStats{Chunks: req.added, Groups: req.addedGroups, Bytes: req.addedBytes}, req.err
}

func checkChunkSizes(chunks []Chunk) error {
	for i := range chunks {
		if n := len(chunks[i].Data); n > format.MaxChunkData {
			return fmt.Errorf("index: chunk %s is %d bytes, limit %d",
				chunks[i].Hash.Short(), n, format.MaxChunkData)
		}
	}
	return nil
}

// enqueuePut queues req and returns when it is done: either another
// caller, the leader, wrote it, or this caller became the leader and wrote
// every queued request until the queue was empty.
func (db *DB) enqueuePut(req *putReq) error {
	db.putMu.Lock()
	db.putQueue = append(db.putQueue, req)
	leader := !db.putLeader
	db.putLeader = true
	db.putMu.Unlock()
	if !leader {
		<-req.done
		return nil
	}
	for {
		db.putMu.Lock()
		group := db.putQueue
		db.putQueue = nil
		if len(group) == 0 {
			db.putLeader = false
			db.putMu.Unlock()
			break
		}
		db.putMu.Unlock()
		db.putGroup(group)
	}
	return nil
}

// putReq is one queued PutChunks or PutGroups call.
type putReq struct {
	chunks      []Chunk
	groups      []Group
	drops       []Item   // DropStored: items to remove instead
	gc          bool     // drops of garbage: only items still candidates
	compact     []uint32 // segments to compact instead (store_compact.go)
	moved       int64    // compact: bytes moved
	added       int      // new chunks (DropStored: items dropped)
	addedGroups int      // new groups
	addedBytes  int64    // their bytes
	err         error
	done        chan struct{}
}

// putItem is one chunk or group of a write group.
type putItem struct {
	key   [1 + len(format.Hash{})]byte // chunk or group key
	data  []byte
	group bool
	owner *putReq
}

// putGroup writes the chunks and groups of every request in group in one
// synced batch and completes the requests. Only the current leader calls
// it.
func (db *DB) putGroup(group []*putReq) {
	var items []putItem
	var drops []*putReq
	for _, r := range group {
		if r.drops != nil || r.compact != nil {
			drops = append(drops, r)
			continue
		}
		for i := range r.chunks {
			it := putItem{data: r.chunks[i].Data, owner: r}
			it.key[0] = prefixChunk
			copy(it.key[1:], r.chunks[i].Hash[:])
			items = append(items, it)
		}
		for i := range r.groups {
			it := putItem{data: r.groups[i].Data, group: true, owner: r}
			it.key[0] = prefixGroup
			copy(it.key[1:], r.groups[i].Hash[:])
			items = append(items, it)
		}
	}
	// A put of an item makes it needed again (store_gc.go).
	db.gc.touch(items)
	// Drops first: a put that raced with a drop of the same item leaves
	// it stored, as its caller was told.
	for _, r := range drops {
		if r.compact != nil {
			r.moved, r.err = db.compactSegments(r.compact)
		} else {
			db.dropItems(r)
		}
		close(r.done)
	}
	var err error
	if len(items) > 0 {
		err = db.writeItems(items)
	}
	for _, r := range group {
		if r.drops != nil || r.compact != nil {
			continue
		}
		if err != nil {
			r.added, r.addedGroups, r.err = 0, 0, err
		}
		close(r.done)
	}
}

// groupChunkSize is the size of every chunk of a group but its last: the
// chunk counters count a group as that many chunks.
const groupChunkSize = format.ChunkSize

// writeItems stores those of items not stored yet in one synced batch,
// together with the updated counters, and counts each new one in its
// owner. Only the leader of PutChunks and PutGroups calls it, so the
// counters have a single writer.
func (db *DB) writeItems(items []putItem) error {
	// Look the items up in key order with one iterator: successive seeks
	// move forward through the same blocks, and SeekPrefixGE consults the
	// bloom filters, which answer most lookups of new items without
	// reading a data block. L6 filters are on: the bottom level holds most
	// keys.
	order := make([]int, len(items))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(x, y int) int {
		return bytes.Compare(items[x].key[:], items[y].key[:])
	})
	it, err := db.pdb.NewIter(&pebble.IterOptions{
		LowerBound:   []byte{prefixChunk},
		UpperBound:   []byte{prefixGroup + 1},
		UseL6Filters: true,
	})
	if err != nil {
		return fmt.Errorf("index: put chunks: %w", err)
	}
	defer it.Close()

	var added, newBytes int64
	var written []int
	replaced := make(map[int]bool) // items stored already, but damaged
	var buf []byte
	for n, i := range order {
		key := items[i].key[:]
		if n > 0 && items[i].key == items[order[n-1]].key {
			continue // the same item twice in one write group
		}
		if it.SeekPrefixGE(key) && bytes.Equal(it.Key(), key) {
			// Stored already. The caller verified the new bytes: the
			// stored copy counts only if it is the same. A damaged one
			// (bit rot, a bad sector) is written again, so that a
			// replica never acknowledges a copy it cannot serve.
			var same bool
			same, buf = db.storedEquals(items[i].group, it.Value(), items[i].data, buf)
			if same {
				continue
			}
			db.log.Warn("stored copy is damaged; storing it again", "key", fmt.Sprintf("%x", key))
			replaced[i] = true
			written = append(written, i)
			continue
		}
		written = append(written, i)
		d := len(items[i].data)
		if items[i].group {
			added += int64((d + groupChunkSize - 1) / groupChunkSize)
		} else {
			added++
		}
		newBytes += int64(d)
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("index: put chunks: %w", err)
	}
	if len(written) == 0 {
		return nil
	}
	// The bytes go to the chunk log first (synced), then their locations
	// to Pebble: an index entry never points at bytes not on disk. Writing
	// in arrival order (not key order) keeps a file's chunks together.
	slices.Sort(written)
	keys := make([][]byte, len(written))
	datas := make([][]byte, len(written))
	for k, i := range written {
		keys[k], datas[k] = items[i].key[:], items[i].data
	}
	seg, offs, end, err := db.chunks.append(keys, datas)
	if errors.Is(err, syscall.ENOSPC) {
		db.diskFullAt.CompareAndSwap(0, time.Now().UnixNano())
	}
	if err != nil {
		return err
	}
	if db.diskFullAt.Load() != 0 && db.chunks.freeBytes() >= fullClearFree {
		db.diskFullAt.Store(0)
	}
	b := db.pdb.NewBatch()
	defer b.Close()
	val := make([]byte, 0, groupLocSize)
	for k, i := range written {
		if items[i].group {
			val = encodeGroupLoc(val[:0], seg, offs[k], uint32(len(items[i].data)))
		} else {
			val = location{seg: seg, off: offs[k], n: uint16(len(items[i].data))}.encode(val[:0])
		}
		if err := b.Set(items[i].key[:], val, nil); err != nil {
			return err
		}
	}
	count := db.chunkCount.Load() + added
	total := db.chunkBytes.Load() + newBytes
	if err := b.Set(keyChunkCount, putU64(uint64(count)), nil); err != nil {
		return err
	}
	if err := b.Set(keyChunkBytes, putU64(uint64(total)), nil); err != nil {
		return err
	}
	if err := b.Set(keyChunkLog, logState{first: db.logFirst, seg: seg, off: end}.encode(), nil); err != nil {
		return err
	}
	// The batch in the log is synced: it is what makes the items durable
	// (Open indexes it again if this commit is lost), so the commit is not.
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("index: put chunks: %w", err)
	}
	db.chunkCount.Store(count)
	db.chunkBytes.Store(total)
	for _, i := range written {
		if replaced[i] {
			continue
		}
		if items[i].group {
			items[i].owner.addedGroups++
		} else {
			items[i].owner.added++
		}
		items[i].owner.addedBytes += int64(len(items[i].data))
	}
	return nil
}

// storedEquals reports whether the stored copy at loc (the encoded
// location of a group or a chunk) holds exactly data. A location that does
// not decode, or bytes that cannot be read, are no copy. buf is reused for
// the read and returned for the next call.
func (db *DB) storedEquals(group bool, loc, data, buf []byte) (bool, []byte) {
	var seg uint32
	var off uint64
	var n int
	if group {
		s, o, size, err := decodeGroupLoc(loc)
		if err != nil {
			return false, buf
		}
		seg, off, n = s, o, int(size)
	} else {
		l, err := decodeLocation(loc)
		if err != nil {
			return false, buf
		}
		seg, off, n = l.seg, l.off, int(l.n)
	}
	if n != len(data) {
		return false, buf
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	got, err := db.chunks.readSpan(seg, off, buf[:n])
	return err == nil && got == n && bytes.Equal(buf[:n], data), buf
}

// GetChunk appends the stored bytes of chunk h to buf[:0] and returns them;
// ok is false if the chunk is not stored. It does not check the hash: the
// caller verifies.
func (db *DB) GetChunk(h format.Hash, buf []byte) (data []byte, ok bool, err error) {
	if db.closed.Load() {
		return buf[:0], false, ErrClosed
	}
	loc, ok, err := db.locate(h)
	if err != nil || !ok {
		return buf[:0], false, err
	}
	data, err = db.chunks.read(loc, buf)
	if err != nil {
		return data, false, err
	}
	return data, true, nil
}

// GetChunks reads the chunks named by hashes and returns their bytes:
// out[i] holds the chunk hashes[i], or is nil if that chunk is not stored
// (or its stored bytes do not hash to hashes[i], which is logged as
// corruption). Unlike GetChunk, every chunk returned has been checked:
// its SHA-256 is the requested hash. The slices share a few buffers that
// the caller owns; they are never reused by the DB.
//
// It is made for reading files: hashes should come in file order. The
// chunks of a file are stored contiguously in arrival order, so after
// looking a chunk up in Pebble, GetChunks reads the bytes after it in the
// same segment as the next chunks (assuming each as long as the chunk
// looked up) and accepts each one only if it hashes to the next requested
// hash. Stored chunks that were not asked for are skipped, a few in a row
// (a reader gets some chunks of a file from this node and the others from
// other replicas); after that, GetChunks goes back to Pebble. A run
// of confirmed guesses doubles the read-ahead, up to getAheadMax chunks. Bytes accepted this way are the requested chunk whatever their
// location: a guess may even find a chunk appended to the log whose index
// entry is not yet committed.
func (db *DB) GetChunks(hashes []format.Hash) (out [][]byte, err error) {
	out, _, err = db.getChunks(hashes)
	return out, err
}

// getChunks is GetChunks; it also returns how many Pebble lookups it made.
func (db *DB) getChunks(hashes []format.Hash) (out [][]byte, lookups int, err error) {
	if db.closed.Load() {
		return nil, 0, ErrClosed
	}
	out = make([][]byte, len(hashes))
	var (
		guess  bool     // whether the chunks after next are worth scanning
		next   location // just after the last chunk read: same segment and length
		ahead  = getAheadMin
		spread = 1 // stored chunks per requested one, as last seen
	)
	for i := 0; i < len(hashes); {
		if guess {
			k := min(ahead, len(hashes)-i)
			got, used, gapped, err := db.scanRun(next, hashes[i:i+k], out[i:i+k], spread)
			if err != nil {
				return out, lookups, err
			}
			i += got
			next.off += uint64(used)
			if got > 0 {
				spread = spreadOf(used, int(next.n), got)
			}
			if got == k {
				ahead = min(2*ahead, getAheadMax)
				continue
			}
			if (got > 0 || used > 0) && !gapped {
				continue // the read ended first: scan on from there
			}
			// hashes[i] is not among the chunks that follow.
			guess, ahead = false, getAheadMin
			if i == len(hashes) {
				break
			}
		}
		lookups++
		loc, ok, err := db.locate(hashes[i])
		if err != nil {
			return out, lookups, err
		}
		if !ok {
			i++
			continue
		}
		// Read the chunk and what follows it with one read.
		k := min(ahead, len(hashes)-i-1)
		buf := make([]byte, int(loc.n)*(1+k*spread+gapFor(spread)))
		got, err := db.chunks.readSpan(loc.seg, loc.off, buf)
		if err != nil {
			return out, lookups, err
		}
		if got < int(loc.n) {
			return out, lookups, fmt.Errorf("index: get chunk %s: %w: segment %d ends before offset %d",
				hashes[i].Short(), ErrCorrupt, loc.seg, loc.off+uint64(loc.n))
		}
		d := buf[:loc.n:loc.n]
		if format.Sum(d) == hashes[i] {
			out[i] = d
		} else {
			db.log.Error("stored chunk does not match its hash", "chunk", hashes[i].Short(),
				"segment", loc.seg, "offset", loc.off)
		}
		i++
		guess = loc.n > 0
		next = location{seg: loc.seg, off: loc.off + uint64(loc.n), n: loc.n}
		if guess {
			m, used, gapped := matchScan(buf[loc.n:got], int(loc.n), hashes[i:i+k], out[i:i+k], gapFor(spread))
			i += m
			next.off += uint64(used)
			if m > 0 {
				spread = spreadOf(used, int(loc.n), m)
			}
			switch {
			case m == k:
				ahead = min(2*ahead, getAheadMax)
			case m == 0 && used == 0 || gapped:
				guess = false
			}
		}
	}
	return out, lookups, nil
}

const (
	// getAheadMin and getAheadMax bound how many requested chunks one read
	// of GetChunks looks for after a chunk it found.
	getAheadMin = 8
	getAheadMax = 128
	// scanSpread bounds how many stored chunks a read covers per
	// requested one: an asker that gets only some of a file's chunks from
	// this node (the others from other replicas) asks for every second or
	// third chunk stored here. GetChunks reads as many per requested chunk
	// as the last run showed (spread), and skips up to gapFor(spread)
	// unrequested chunks in a row: hashing them costs less than a lookup,
	// but on random requests every skipped chunk is hashed in vain, so the
	// allowance grows only with the spread actually seen.
	scanSpread = 4
)

// scanRun reads the stored chunks from at on, assuming each at.n bytes
// long, spread per requested chunk, and matches them against hashes in
// order (see matchScan).
func (db *DB) scanRun(at location, hashes []format.Hash, out [][]byte, spread int) (matched, used int, gapped bool, err error) {
	buf := make([]byte, int(at.n)*(len(hashes)*spread+gapFor(spread)))
	got, err := db.chunks.readSpan(at.seg, at.off, buf)
	if err != nil {
		return 0, 0, false, err
	}
	matched, used, gapped = matchScan(buf[:got], int(at.n), hashes, out, gapFor(spread))
	return matched, used, gapped, nil
}

// gapFor is how many unrequested chunks in a row a scan skips at spread.
func gapFor(spread int) int { return 2 * spread }

// spreadOf is how many stored chunks of n bytes lay in used bytes per
// matched one, rounded up, within 1..scanSpread.
func spreadOf(used, n, matched int) int {
	return min(scanSpread, max(1, (used/n+matched-1)/matched))
}

// matchScan cuts buf into pieces of n bytes and walks them in order: a
// piece that hashes to the next of hashes is taken (out[j] = piece) and
// the next hash is looked for; the header of the next batch of the log
// (see store_chunklog.go) is stepped over; any other piece (a chunk stored here
// that the asker did not ask for) is skipped, up to maxGap in a row. It
// returns how many hashes matched, how many bytes of buf lie up to the end
// of the last piece taken or batch header stepped over (possibly past the
// end of buf, for a header longer than what was read), and whether it
// stopped at a gap longer than maxGap (rather than at the end of hashes or
// of buf).
func matchScan(buf []byte, n int, hashes []format.Hash, out [][]byte, maxGap int) (matched, used int, gapped bool) {
	j, gap := 0, 0
	for pos := 0; j < len(hashes) && pos+n <= len(buf); {
		d := buf[pos : pos+n : pos+n]
		if format.Sum(d) == hashes[j] {
			out[j] = d
			j++
			gap = 0
			pos += n
			used = pos
			continue
		}
		if skip := batchHeaderLen(buf[pos:]); skip > 0 {
			pos += skip
			used = pos
			continue
		}
		if gap++; gap > maxGap {
			return j, used, true
		}
		pos += n
	}
	return j, used, false
}

// batchHeaderLen returns the length of the batch header (items included)
// that b starts with, or 0 if b does not start with one. A chunk whose
// bytes look like a header only costs the guess.
func batchHeaderLen(b []byte) int {
	if len(b) < batchHeaderSize || string(b[:4]) != batchMagic {
		return 0
	}
	count := binary.BigEndian.Uint32(b[4:])
	if count == 0 || count > batchMaxItems {
		return 0
	}
	return batchHeaderSize + int(count)*batchItemSize
}

// locate looks chunk h up in Pebble.
func (db *DB) locate(h format.Hash) (loc location, ok bool, err error) {
	v, c, err := db.pdb.Get(chunkKey(h))
	if errors.Is(err, pebble.ErrNotFound) {
		return loc, false, nil
	}
	if err != nil {
		return loc, false, fmt.Errorf("index: get chunk %s: %w", h.Short(), err)
	}
	loc, err = decodeLocation(v)
	c.Close()
	if err != nil {
		return loc, false, fmt.Errorf("index: get chunk %s: %w", h.Short(), err)
	}
	return loc, true, nil
}

// HasChunk reports whether chunk h is stored.
func (db *DB) HasChunk(h format.Hash) (bool, error) {
	if db.closed.Load() {
		return false, ErrClosed
	}
	return db.has(chunkKey(h))
}

func (db *DB) has(key []byte) (bool, error) {
	_, c, err := db.pdb.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("index: lookup %x: %w", key, err)
	}
	c.Close()
	return true, nil
}

// ChunkStats returns how many chunks are stored and their total size, from
// counters kept in memory (loaded at Open, persisted with every PutChunks).
func (db *DB) ChunkStats() (count int64, bytes int64) {
	return db.chunkCount.Load(), db.chunkBytes.Load()
}
