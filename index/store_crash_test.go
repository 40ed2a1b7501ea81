package index

import (
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"

	"github.com/oashare/oashare/index/format"
)

// crashFS is a strict MemFS (only synced bytes survive a crash) that
// crashes at a chosen write or sync of the chunk log: its segment files
// and its directory. The crash comes as a power cut would:
//   - at a sync: the sync does not happen;
//   - at a write, "lost": the write is lost;
//   - at a write, "torn": the first half of it reaches the disk (is synced,
//     with whatever else of the file was written before), the rest does not.
//
// From the crash on, nothing more becomes durable (the MemFS ignores
// syncs) while the process goes on in memory, so the test can tell which
// calls returned before the crash: only those were acknowledged.
type crashFS struct {
	*vfs.MemFS

	mu      sync.Mutex
	ops     int  // chunk log writes and syncs seen
	crashAt int  // the op that crashes; 0 = none
	torn    bool // a write that crashes leaves half of itself
	crashed bool
}

func (c *crashFS) isLog(name string) bool {
	return strings.Contains(name, "/"+chunkLogDir+"/") || strings.HasSuffix(name, "/"+chunkLogDir)
}

// op counts one chunk log write or sync and reports whether it is the
// one that crashes. Once crashed, nothing crashes again.
func (c *crashFS) op() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.crashed {
		return false
	}
	c.ops++
	if c.ops == c.crashAt {
		c.crashed = true
		return true
	}
	return false
}

func (c *crashFS) hasCrashed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.crashed
}

// arm makes the n-th chunk log op from now crash (0: none).
func (c *crashFS) arm(n int, torn bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ops, c.crashAt, c.torn, c.crashed = 0, n, torn, false
}

// restart simulates the power coming back: what was not synced is gone.
func (c *crashFS) restart() {
	c.MemFS.ResetToSyncedState()
	c.MemFS.SetIgnoreSyncs(false)
}

func (c *crashFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !c.isLog(name) {
		return f, err
	}
	return &crashFile{File: f, fs: c}, nil
}

func (c *crashFS) Create(name string) (vfs.File, error) {
	f, err := c.MemFS.Create(name)
	return c.wrap(name, f, err)
}

func (c *crashFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := c.MemFS.Open(name, opts...)
	return c.wrap(name, f, err)
}

func (c *crashFS) OpenReadWrite(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := c.MemFS.OpenReadWrite(name, opts...)
	return c.wrap(name, f, err)
}

func (c *crashFS) OpenDir(name string) (vfs.File, error) {
	f, err := c.MemFS.OpenDir(name)
	return c.wrap(name, f, err)
}

type crashFile struct {
	vfs.File
	fs *crashFS
}

func (f *crashFile) WriteAt(p []byte, off int64) (int, error) {
	if f.fs.op() {
		if f.fs.torn && len(p) > 1 {
			f.File.WriteAt(p[:len(p)/2], off)
			f.File.Sync()
		}
		f.fs.MemFS.SetIgnoreSyncs(true)
		// The process goes on as if the write had happened; the disk
		// never sees it.
	}
	return f.File.WriteAt(p, off)
}

func (f *crashFile) Write(p []byte) (int, error) {
	if f.fs.op() {
		f.fs.MemFS.SetIgnoreSyncs(true)
	}
	return f.File.Write(p)
}

func (f *crashFile) Sync() error {
	if f.fs.op() {
		f.fs.MemFS.SetIgnoreSyncs(true)
	}
	return f.File.Sync()
}

func (f *crashFile) SyncData() error {
	if f.fs.op() {
		f.fs.MemFS.SetIgnoreSyncs(true)
	}
	return f.File.SyncData()
}

// crashWorkload writes groups and chunks in small batches, some large
// enough to fill a segment of segBytes, and returns those whose call
// returned before fs crashed: the acknowledged ones. The items are new
// for every round (seed).
func crashWorkload(t *testing.T, db *DB, fs *crashFS, seed int) (groups []Group, chunks []Chunk) {
	t.Helper()
	for i := range 6 {
		gs := []Group{mkSeededGroup(seed, i, 1+i*37%256)}
		var cs []Chunk
		if i%2 == 1 {
			cs = chunkSeq(seed*1000+i*10, 3, 100+i)
		}
		_, err := db.PutGroups(gs, cs)
		if err == nil && !fs.hasCrashed() {
			groups = append(groups, gs...)
			chunks = append(chunks, cs...)
		}
	}
	return groups, chunks
}

// mkSeededGroup returns a group of n chunks whose bytes depend on seed and
// i only.
func mkSeededGroup(seed, i, n int) Group {
	data := make([]byte, 0, n*512)
	for k := range n {
		var b [512]byte
		binary.BigEndian.PutUint64(b[:], uint64(seed)<<40|uint64(i)<<20|uint64(k))
		data = append(data, b[:]...)
	}
	return Group{Hash: format.Sum(append([]byte("seeded group"), data...)), Data: data}
}

// checkCounters fails unless the chunk counters are what the index holds.
func checkCounters(t *testing.T, db *DB) {
	t.Helper()
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixChunk}, UpperBound: []byte{prefixGroup + 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var count, total int64
	for it.First(); it.Valid(); it.Next() {
		switch it.Key()[0] {
		case prefixChunk:
			l, err := decodeLocation(it.Value())
			if err != nil {
				t.Fatal(err)
			}
			count++
			total += int64(l.n)
		case prefixGroup:
			_, _, n, err := decodeGroupLoc(it.Value())
			if err != nil {
				t.Fatal(err)
			}
			count += int64((n + groupChunkSize - 1) / groupChunkSize)
			total += int64(n)
		}
	}
	if c, b := db.ChunkStats(); c != count || b != total {
		t.Fatalf("ChunkStats = %d chunks, %d bytes; the index holds %d, %d", c, b, count, total)
	}
}

// TestChunkLogCrashes: whatever the moment a crash comes, at any write or
// sync of the chunk log, lost or torn, and however many crashes follow
// each other (a crash during the recovery of the one before included),
// nothing acknowledged is lost: every PutGroups/PutChunks that returned
// before a crash reads back after it, and the counters agree with the
// index. Segments are small so that crashes also fall on segment changes.
func TestChunkLogCrashes(t *testing.T) {
	const segBytes = 64 << 10
	// Ops one round of the workload makes, crash-free (counted below).
	probe := &crashFS{MemFS: vfs.NewStrictMem()}
	db := openAt(t, probe, "/db", Options{Logger: quietLogger})
	db.chunks.maxSeg = segBytes
	probe.arm(0, false)
	crashWorkload(t, db, probe, 1)
	perRound := probe.ops
	db.Close()
	if perRound < 12 {
		t.Fatalf("the workload made only %d chunk log ops", perRound)
	}

	type crash struct {
		at   int
		torn bool
	}
	// Every crash point of one round, lost and torn; then pairs and
	// triples of crashes in a row, at points spread over the rounds
	// (recoveries included: a round's count starts at its Open).
	var plans [][]crash
	for at := 1; at <= perRound+4; at++ {
		for _, torn := range []bool{false, true} {
			plans = append(plans, []crash{{at, torn}})
		}
	}
	for a := 1; a <= perRound+4; a += 3 {
		for b := 1; b <= perRound+4; b += 4 {
			plans = append(plans, []crash{{a, true}, {b, a%2 == 0}})
			plans = append(plans, []crash{{a, false}, {b, true}, {(a + b) % (perRound + 4), true}})
		}
	}
	for _, plan := range plans {
		name := ""
		for _, c := range plan {
			name += fmt.Sprintf("%d%s-", c.at, map[bool]string{true: "torn", false: "lost"}[c.torn])
		}
		t.Run(strings.TrimSuffix(name, "-"), func(t *testing.T) {
			fs := &crashFS{MemFS: vfs.NewStrictMem()}
			var groups []Group
			var chunks []Chunk
			for round, c := range plan {
				fs.arm(c.at, c.torn)
				db, err := Open("/db", Options{FS: fs, Logger: quietLogger})
				if err != nil {
					t.Fatalf("round %d: open after a crash: %v", round, err)
				}
				db.chunks.maxSeg = segBytes
				checkStored(t, db, groups, chunks)
				g, ch := crashWorkload(t, db, fs, round+1)
				groups, chunks = append(groups, g...), append(chunks, ch...)
				fs.MemFS.SetIgnoreSyncs(true) // the crash, if none came yet
				db.Close()
				fs.restart()
			}
			fs.arm(0, false)
			db := openAt(t, fs, "/db", Options{Logger: quietLogger})
			checkStored(t, db, groups, chunks)
			checkCounters(t, db)
			// And the store goes on working.
			more := []Group{mkSeededGroup(99, 0, 3)}
			if _, err := db.PutGroups(more, nil); err != nil {
				t.Fatal(err)
			}
			checkStored(t, db, append(groups, more...), chunks)
		})
	}
}
