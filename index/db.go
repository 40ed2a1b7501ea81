package index

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"
	"github.com/cockroachdb/pebble/vfs"

	"github.com/oashare/oashare/index/format"
)

// Options configure Open.
type Options struct {
	// FS is the file system the database lives on; nil means vfs.Default.
	// Tests use vfs.NewMem().
	FS vfs.FS
	// Logger receives the index's and Pebble's messages; nil means
	// slog.Default().
	Logger *slog.Logger
	// OnApply, if set, is called once a record received from a peer is
	// committed, before the version vector in memory counts it (so
	// whoever sees Applied reach a record also sees OnApply's effect):
	// on Apply's goroutine, with the write lock held, so it must not
	// call the DB (fusefs only queues the record).
	OnApply func(rec *Record)
	// Identity is this node's key. With one, the node ID is derived from
	// it (format.NodeIDOf), records are signed, and the DB belongs to a
	// network with a member list (see ns_members.go); an index made with
	// another key, or with none, is refused. Without one, the node ID is
	// random and any record is accepted.
	Identity ed25519.PrivateKey
}

// ErrClosed is returned by calls made after Close.
var ErrClosed = errors.New("index: closed")

// ErrWrongIdentity: the index was made by another node than the one
// whose key opens it (Options.Identity), or without a key.
var ErrWrongIdentity = errors.New("index: wrong identity")

// ErrCorrupt wraps every error about bytes that do not decode: a malformed
// record from a peer or a damaged value on disk.
var ErrCorrupt = errors.New("index: corrupt data")

// Pebble memory. Pebble reserves the memory of its memtables (the mutable
// one and any waiting to be flushed) out of the block cache, so the cache
// must be well larger than memTableSize: with two memtables of 16 MiB in a
// cache of 32 MiB nothing could be cached at all, and every lookup read
// its filter, index and data blocks from the files again. blockCacheSize
// is the whole of it (memtables included): about 48 MiB of blocks beside
// two 8 MiB memtables, room for the filter and index blocks of millions of
// chunks and the hot part of the namespace.
const (
	blockCacheSize = 64 << 20
	memTableSize   = 8 << 20
	// targetFileSize is the size of the tables Pebble writes at every
	// level. Small tables have small filter and index blocks, which stay
	// in the cache and are cheap to load when they do not.
	targetFileSize = 4 << 20
)

// DB is the local index of one node. See the package documentation for what
// it holds and its locking rules.
type DB struct {
	pdb     *pebble.DB
	chunks  *chunkLog
	log     *slog.Logger
	self    format.NodeID
	onApply atomic.Pointer[func(*Record)]

	identity  ed25519.PrivateKey // nil: no network (see Options.Identity)
	onMembers atomic.Pointer[func()]
	// network and members are guarded by stateMu (written under writeMu
	// too); membersPending are the entries of the batch being built,
	// guarded by writeMu.
	network        *Network
	members        map[format.NodeID]Member
	membersPending []Member
	usageMu        sync.Mutex              // guards usage; serializes AddUsage
	usage          map[format.NodeID]int64 // counts read or written so far (ns_members.go)
	closed         atomic.Bool

	// wallMs returns the physical clock in unix milliseconds; tests replace it.
	wallMs func() int64

	writeMu sync.Mutex // serializes Commit and Apply
	// Heads of recently written inodes (see writerHeads), and those of the
	// batch being built; both guarded by writeMu.
	headsCache   map[uint64][]VersionRef
	headsPending map[uint64][]VersionRef
	// countsPending: the changes of subdirectory and link counts the
	// batch being built makes, by key (ns_links.go); guarded by writeMu.
	countsPending map[string]int64
	hlc           atomic.Uint64 // last HLC value used or seen; written under writeMu

	stateMu sync.RWMutex
	vv      map[format.NodeID]uint64 // guarded by stateMu; written under writeMu too

	putMu      sync.Mutex // guards putQueue and putLeader (see doc.go)
	putQueue   []*putReq
	putLeader  bool
	chunkCount atomic.Int64
	chunkBytes atomic.Int64
	logFirst   uint32 // the first segment of batches (see store_chunklog.go)

	reclaimMu sync.Mutex   // one Reclaim at a time (store_reclaim.go)
	reclaimed atomic.Int64 // bytes Reclaim punched since Open
	compacted atomic.Int64 // segments compacted since Open (store_compact.go)
	// diskFullAt is when a chunk log write last found the disk full
	// (unix nanoseconds), 0 once one succeeded again.
	diskFullAt atomic.Int64

	durable atomic.Uint64 // this node's records are durable up to this Seq

	under underState // the under-target set's counts (store_under.go)
	gc    gcState    // items no retained version needs (store_gc.go)
}

// Key prefixes; see doc.go.
const (
	prefixChunk  = 'c'
	prefixGroup  = 'g'
	prefixInode  = 'i'
	prefixDirent = 'd'
	prefixLog    = 'l'
	prefixVV     = 'v'
	prefixMeta   = 'm'
	prefixUnder  = 'u'
	// prefixPending keys the pending journal (ns_pending.go).
	prefixPending = 'p'

	prefixHistory = 'h'
	prefixHead    = 'H'
	prefixNamed   = 'n'
	prefixDerived = 'x'

	prefixEntryHist  = 'e'
	prefixEntryHead  = 'E'
	prefixEntryNamed = 'N'
	prefixConflicted = 'C'
	// prefixMember keys the member list (ns_members.go).
	prefixMember = 'M'
	// prefixUsage keys the bytes stored per member (ns_members.go).
	prefixUsage = 'q'
	// prefixPin keys the pinned files and trees of this node (pins.go).
	prefixPin = 'P'
)

var (
	keyNodeID     = []byte("m/node-id")
	keyHLC        = []byte("m/hlc")
	keyChunkCount = []byte("m/chunk-count")
	keyChunkBytes = []byte("m/chunk-bytes")
)

// Open opens (creating if needed) the index in dir. On first open it makes
// and persists this node's NodeID.
func Open(dir string, opts Options) (*DB, error) {
	fs := opts.FS
	if fs == nil {
		fs = vfs.Default
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "index")
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("index: create %s: %w", dir, err)
	}
	syncDir(fs, fs.PathDir(dir)) // a new directory's entry must be durable

	cache := pebble.NewCache(blockCacheSize)
	defer cache.Unref() // Pebble holds its own reference while open
	// Keys are compared bytewise, as with Pebble's default comparer (same
	// name, so the on-disk format is the same). Split is the whole key,
	// which is what the bloom filters hash either way; setting it lets
	// PutChunks use SeekPrefixGE.
	comparer := *pebble.DefaultComparer
	comparer.Split = func(key []byte) int { return len(key) }
	popts := &pebble.Options{
		FS:           walFS{fs},
		Comparer:     &comparer,
		Cache:        cache,
		Logger:       pebbleLogger{log},
		MemTableSize: memTableSize,
	}
	// Bloom filters make the "is this chunk new?" check of PutChunks cheap
	// for chunks that are not stored yet.
	popts.Levels = make([]pebble.LevelOptions, 7)
	for i := range popts.Levels {
		popts.Levels[i] = pebble.LevelOptions{
			FilterPolicy:   bloom.FilterPolicy(10),
			TargetFileSize: targetFileSize,
		}
	}
	pdb, err := pebble.Open(dir, popts)
	if err != nil {
		return nil, fmt.Errorf("index: open %s: %w", dir, err)
	}
	chunks, err := openChunkLog(fs, dir)
	if err != nil {
		pdb.Close()
		return nil, err
	}
	db := &DB{
		chunks: chunks,
		pdb:    pdb,
		log:    log,
		wallMs: func() int64 { return time.Now().UnixMilli() },
		vv:     make(map[format.NodeID]uint64),

		identity: opts.Identity,
		members:  make(map[format.NodeID]Member),

		headsCache:   make(map[uint64][]VersionRef),
		headsPending: make(map[uint64][]VersionRef),

		countsPending: make(map[string]int64),
	}
	if opts.OnApply != nil {
		db.onApply.Store(&opts.OnApply)
	}
	err = db.load()
	if err == nil {
		err = db.loadMembers()
	}
	if err == nil {
		err = db.openLog()
	}
	if err == nil {
		err = db.recoverOwnRecords()
	}
	if err == nil {
		err = db.indexLinks()
	}
	if err == nil {
		err = db.countSubdirs()
	}
	if err != nil {
		pdb.Close()
		chunks.close()
		return nil, fmt.Errorf("index: open %s: %w", dir, err)
	}
	db.durable.Store(db.applied(db.self)) // what survived is on disk
	log.Debug("opened", "dir", dir, "node", db.self.Short(),
		"chunks", db.chunkCount.Load(), "origins", len(db.vv))
	return db, nil
}

// load reads the node ID (making one if absent), the clock, the chunk
// counters and the version vector.
func (db *DB) load() error {
	v, ok, err := db.getMeta(keyNodeID)
	if err != nil {
		return err
	}
	switch {
	case !ok:
		db.self = format.NewNodeID()
		if db.identity != nil {
			db.self = format.NodeIDOf(db.identity.Public().(ed25519.PublicKey))
		}
		if err := db.pdb.Set(keyNodeID, db.self[:], pebble.Sync); err != nil {
			return fmt.Errorf("store node id: %w", err)
		}
	case len(v) != len(db.self):
		return fmt.Errorf("%w: node id is %d bytes", ErrCorrupt, len(v))
	default:
		copy(db.self[:], v)
		if db.identity != nil && format.NodeIDOf(db.identity.Public().(ed25519.PublicKey)) != db.self {
			return fmt.Errorf("%w: the index belongs to node %s, whose key this is not", ErrWrongIdentity, db.self)
		}
	}
	if _, hasNet, err := db.getMeta(keyNetwork); err != nil {
		return err
	} else if hasNet && db.identity == nil {
		return fmt.Errorf("%w: the index belongs to a network; open it with its node's key", ErrWrongIdentity)
	}

	for _, m := range []struct {
		key []byte
		set func(uint64)
	}{
		{keyHLC, db.hlc.Store},
		{keyChunkCount, func(n uint64) { db.chunkCount.Store(int64(n)) }},
		{keyChunkBytes, func(n uint64) { db.chunkBytes.Store(int64(n)) }},
	} {
		v, ok, err := db.getMeta(m.key)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if len(v) != 8 {
			return fmt.Errorf("%w: %s is %d bytes", ErrCorrupt, m.key, len(v))
		}
		m.set(binary.BigEndian.Uint64(v))
	}

	lo := []byte{prefixVV}
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != 1+16 || len(v) != 8 {
			return fmt.Errorf("%w: version vector entry %x", ErrCorrupt, k)
		}
		db.vv[format.NodeID(k[1:])] = binary.BigEndian.Uint64(v)
	}
	return it.Error()
}

// getMeta returns a copy of the value under key.
func (db *DB) getMeta(key []byte) ([]byte, bool, error) {
	v, c, err := db.pdb.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := append([]byte(nil), v...)
	c.Close()
	return out, true, nil
}

// Close closes the database. It must be called once, after every other call
// has returned.
func (db *DB) Close() error {
	if db.closed.Swap(true) {
		return ErrClosed
	}
	err := db.pdb.Close()
	if cerr := db.chunks.close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("index: close: %w", err)
	}
	return nil
}

// SetOnApply replaces the function called after each record received from
// a peer is committed (see Options.OnApply); nil removes it.
func (db *DB) SetOnApply(f func(rec *Record)) {
	if f == nil {
		db.onApply.Store(nil)
		return
	}
	db.onApply.Store(&f)
}

// DiskUsage reports the bytes this index takes on disk: the chunk log
// segments and Pebble's files.
func (db *DB) DiskUsage() (chunkLog, pebbleFiles int64) {
	m := db.pdb.Metrics()
	return db.chunks.diskBytes(), int64(m.DiskSpaceUsage())
}

// NodeID returns this node's ID.
func (db *DB) NodeID() format.NodeID { return db.self }

// prefixEnd returns the smallest key greater than every key starting with
// prefix, or nil (no upper bound) if there is none.
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// syncDir makes the entries of directory dir durable, as far as it can:
// a failure shows later, as a missing file on the next open.
func syncDir(fs vfs.FS, dir string) {
	if d, err := fs.OpenDir(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

func putU64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// pebbleLogger sends Pebble's messages to slog. Pebble logs routine events
// (flushes, compactions) through Infof, so they go out at Debug level.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), "source", "pebble")
}

// Fatalf is called by Pebble on unrecoverable storage errors; like Pebble's
// own default logger it does not return.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "source", "pebble")
	os.Exit(1)
}
