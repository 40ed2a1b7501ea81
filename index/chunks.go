package index

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble"
)

// Chunk is one stored chunk: its name and its bytes.
type Chunk struct {
	Hash Hash
	Data []byte
}

// MaxChunkData is the largest chunk the store accepts: data chunks are at
// most 512 bytes, tree nodes at most 8192.
const MaxChunkData = 8192

func chunkKey(h Hash) []byte {
	k := make([]byte, 1+len(h))
	k[0] = prefixChunk
	copy(k[1:], h[:])
	return k
}

// PutChunks stores chunks durably (a synced Pebble batch). Chunks already
// stored (or repeated within chunks) are skipped: a chunk is stored once
// however many files contain it. The caller has verified every hash. If any
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
	for i := range chunks {
		if n := len(chunks[i].Data); n > MaxChunkData {
			return 0, fmt.Errorf("index: chunk %s is %d bytes, limit %d",
				chunks[i].Hash.Short(), n, MaxChunkData)
		}
	}
	if len(chunks) == 0 {
		return 0, nil
	}
	req := &putReq{chunks: chunks, done: make(chan struct{})}
	db.putMu.Lock()
	db.putQueue = append(db.putQueue, req)
	leader := !db.putLeader
	db.putLeader = true
	db.putMu.Unlock()
	if !leader {
		<-req.done
		return req.added, req.err
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
	return req.added, req.err
}

// putReq is one queued PutChunks call.
type putReq struct {
	chunks []Chunk
	added  int
	err    error
	done   chan struct{}
}

// putGroup writes the chunks of every request in group in one synced batch
// and completes the requests. Only the current leader calls it.
func (db *DB) putGroup(group []*putReq) {
	var chunks []*Chunk
	var owner []*putReq
	for _, r := range group {
		for i := range r.chunks {
			chunks = append(chunks, &r.chunks[i])
			owner = append(owner, r)
		}
	}
	err := db.writeChunks(chunks, func(k int) { owner[k].added++ })
	for _, r := range group {
		if err != nil {
			r.added, r.err = 0, err
		}
		close(r.done)
	}
}

// writeChunks stores those of chunks not stored yet in one synced batch,
// together with the updated counters, calling isNew(k) for each chunks[k]
// it writes. Only the leader of PutChunks calls it, so the counters have a
// single writer.
func (db *DB) writeChunks(chunks []*Chunk, isNew func(k int)) error {
	// Look the chunks up in hash order with one iterator: successive seeks
	// move forward through the same blocks, and SeekPrefixGE consults the
	// bloom filters, which answer most lookups of new chunks without reading
	// a data block. L6 filters are on: the bottom level holds most chunks.
	order := make([]int, len(chunks))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(x, y int) int {
		return bytes.Compare(chunks[x].Hash[:], chunks[y].Hash[:])
	})
	it, err := db.pdb.NewIter(&pebble.IterOptions{
		LowerBound:   []byte{prefixChunk},
		UpperBound:   []byte{prefixChunk + 1},
		UseL6Filters: true,
	})
	if err != nil {
		return fmt.Errorf("index: put chunks: %w", err)
	}
	defer it.Close()

	var added, newBytes int64
	var written []int
	key := make([]byte, 1+len(Hash{}))
	key[0] = prefixChunk
	for n, i := range order {
		c := chunks[i]
		if n > 0 && c.Hash == chunks[order[n-1]].Hash {
			continue // the same chunk twice in one group
		}
		copy(key[1:], c.Hash[:])
		if it.SeekPrefixGE(key) && bytes.Equal(it.Key(), key) {
			continue // already stored
		}
		written = append(written, i)
		added++
		newBytes += int64(len(c.Data))
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("index: put chunks: %w", err)
	}
	if added == 0 {
		return nil
	}
	// The bytes go to the chunk log first (synced), then their locations
	// to Pebble: an index entry never points at bytes not on disk. Writing
	// in arrival order (not hash order) keeps a file's chunks together.
	slices.Sort(written)
	datas := make([][]byte, len(written))
	for k, i := range written {
		datas[k] = chunks[i].Data
	}
	locs, err := db.chunks.append(datas)
	if err != nil {
		return err
	}
	b := db.pdb.NewBatch()
	defer b.Close()
	val := make([]byte, 0, locSize)
	for k, i := range written {
		copy(key[1:], chunks[i].Hash[:])
		if err := b.Set(key, locs[k].encode(val[:0]), nil); err != nil {
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
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("index: put chunks: %w", err)
	}
	db.chunkCount.Store(count)
	db.chunkBytes.Store(total)
	for _, i := range written {
		isNew(i)
	}
	return nil
}

// GetChunk appends the stored bytes of chunk h to buf[:0] and returns them;
// ok is false if the chunk is not stored. It does not check the hash: the
// caller verifies.
func (db *DB) GetChunk(h Hash, buf []byte) (data []byte, ok bool, err error) {
	if db.closed.Load() {
		return buf[:0], false, ErrClosed
	}
	v, c, err := db.pdb.Get(chunkKey(h))
	if errors.Is(err, pebble.ErrNotFound) {
		return buf[:0], false, nil
	}
	if err != nil {
		return buf[:0], false, fmt.Errorf("index: get chunk %s: %w", h.Short(), err)
	}
	loc, err := decodeLocation(v)
	c.Close()
	if err != nil {
		return buf[:0], false, fmt.Errorf("index: get chunk %s: %w", h.Short(), err)
	}
	data, err = db.chunks.read(loc, buf)
	if err != nil {
		return data, false, err
	}
	return data, true, nil
}

// HasChunk reports whether chunk h is stored.
func (db *DB) HasChunk(h Hash) (bool, error) {
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
