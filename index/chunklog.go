package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/vfs"
)

// The chunk log keeps chunk bytes out of Pebble. Chunks are appended, in
// the order they arrive, to segment files chunks/NNNNNNNN.seg; Pebble maps
// each chunk's hash to its location (segment, offset, length). So:
//   - Pebble's values are 14 bytes instead of up to 8 KiB, and compactions
//     rewrite locations, not data: the chunk bytes are written once;
//   - the chunks of one file, stored together, sit together on disk, and a
//     sequential read of the file is a sequential read of the segment;
//   - disk use is the chunk bytes plus about 60 bytes of index per chunk.
//
// A segment holds raw chunk bytes and nothing else; the index is the only
// map of it. Bytes appended but not yet indexed when a node dies are never
// referenced: they cost space, not correctness. Appends come only from the
// PutChunks leader (one writer); reads may run concurrently with it.

const (
	chunkLogDir = "chunks"
	segSuffix   = ".seg"
	// segmentMax is the size at which a new segment is started.
	segmentMax = 1 << 30
	// locSize is the encoded size of a location.
	locSize = 4 + 8 + 2
)

// location says where a chunk's bytes are.
type location struct {
	seg uint32
	off uint64
	n   uint16
}

func (l location) encode(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, l.seg)
	dst = binary.BigEndian.AppendUint64(dst, l.off)
	return binary.BigEndian.AppendUint16(dst, l.n)
}

func decodeLocation(b []byte) (location, error) {
	if len(b) != locSize {
		return location{}, fmt.Errorf("%w: chunk location is %d bytes, want %d", ErrCorrupt, len(b), locSize)
	}
	l := location{
		seg: binary.BigEndian.Uint32(b),
		off: binary.BigEndian.Uint64(b[4:]),
		n:   binary.BigEndian.Uint16(b[12:]),
	}
	if l.n > MaxChunkData {
		return location{}, fmt.Errorf("%w: chunk location length %d exceeds %d", ErrCorrupt, l.n, MaxChunkData)
	}
	return l, nil
}

type chunkLog struct {
	fs  vfs.FS
	dir string

	mu    sync.RWMutex // guards files
	files map[uint32]vfs.File

	// The appender's state; only the PutChunks leader touches it.
	maxSeg  int64 // segment size at which the next one starts
	cur     uint32
	curFile vfs.File
	curSize int64
}

func segName(seg uint32) string { return fmt.Sprintf("%08d%s", seg, segSuffix) }

func openChunkLog(fs vfs.FS, dir string) (*chunkLog, error) {
	dir = fs.PathJoin(dir, chunkLogDir)
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("index: create %s: %w", dir, err)
	}
	names, err := fs.List(dir)
	if err != nil {
		return nil, fmt.Errorf("index: list %s: %w", dir, err)
	}
	var segs []uint32
	for _, n := range names {
		if !strings.HasSuffix(n, segSuffix) {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSuffix(n, segSuffix), 10, 32)
		if err != nil {
			continue
		}
		segs = append(segs, uint32(v))
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i] < segs[j] })
	l := &chunkLog{fs: fs, dir: dir, files: make(map[uint32]vfs.File), maxSeg: segmentMax}
	cur := uint32(1)
	if len(segs) > 0 {
		cur = segs[len(segs)-1]
	}
	if err := l.startSegment(cur); err != nil {
		return nil, err
	}
	return l, nil
}

// startSegment opens (creating if needed) segment seg for appending.
func (l *chunkLog) startSegment(seg uint32) error {
	path := l.fs.PathJoin(l.dir, segName(seg))
	f, err := l.fs.OpenReadWrite(path)
	if err != nil {
		return fmt.Errorf("index: open chunk segment %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("index: stat chunk segment %s: %w", path, err)
	}
	l.mu.Lock()
	l.files[seg] = f
	l.mu.Unlock()
	l.cur, l.curFile, l.curSize = seg, f, st.Size()
	if seg > 1 || st.Size() == 0 {
		// Make the new file's directory entry durable.
		if d, err := l.fs.OpenDir(l.dir); err == nil {
			d.Sync()
			d.Close()
		}
	}
	return nil
}

// append writes datas contiguously to the current segment, syncs it and
// returns the segment and each one's offset in it. It starts a new segment
// when the current one is full.
func (l *chunkLog) append(datas [][]byte) (seg uint32, offs []uint64, err error) {
	total := 0
	for _, d := range datas {
		total += len(d)
	}
	if l.curSize > 0 && l.curSize+int64(total) > l.maxSeg {
		if err := l.startSegment(l.cur + 1); err != nil {
			return 0, nil, err
		}
	}
	buf := make([]byte, 0, total)
	offs = make([]uint64, len(datas))
	off := uint64(l.curSize)
	for i, d := range datas {
		offs[i] = off
		off += uint64(len(d))
		buf = append(buf, d...)
	}
	if _, err := l.curFile.WriteAt(buf, l.curSize); err != nil {
		return 0, nil, fmt.Errorf("index: append to chunk segment %d: %w", l.cur, err)
	}
	if err := l.curFile.SyncData(); err != nil {
		return 0, nil, fmt.Errorf("index: sync chunk segment %d: %w", l.cur, err)
	}
	l.curSize += int64(total)
	return l.cur, offs, nil
}

// read appends the bytes at loc to buf[:0].
func (l *chunkLog) read(loc location, buf []byte) ([]byte, error) {
	f, err := l.file(loc.seg)
	if err != nil {
		return buf[:0], err
	}
	buf = append(buf[:0], make([]byte, loc.n)...)
	if _, err := f.ReadAt(buf, int64(loc.off)); err != nil {
		return buf[:0], fmt.Errorf("index: read chunk at segment %d offset %d: %w", loc.seg, loc.off, err)
	}
	return buf, nil
}

// readSpan reads len(buf) bytes at offset off of segment seg, or as many
// as the segment holds there, and returns how many it read.
func (l *chunkLog) readSpan(seg uint32, off uint64, buf []byte) (int, error) {
	f, err := l.file(seg)
	if err != nil {
		return 0, err
	}
	n, err := f.ReadAt(buf, int64(off))
	if err != nil && !errors.Is(err, io.EOF) {
		return n, fmt.Errorf("index: read chunk segment %d at offset %d: %w", seg, off, err)
	}
	return n, nil
}

func (l *chunkLog) file(seg uint32) (vfs.File, error) {
	l.mu.RLock()
	f := l.files[seg]
	l.mu.RUnlock()
	if f != nil {
		return f, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.files[seg]; f != nil {
		return f, nil
	}
	path := l.fs.PathJoin(l.dir, segName(seg))
	f, err := l.fs.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: chunk segment %s: %v", ErrCorrupt, path, err)
	}
	l.files[seg] = f
	return f, nil
}

func (l *chunkLog) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first error
	for _, f := range l.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	l.files = nil
	return first
}

// diskBytes reports the bytes the segments take.
func (l *chunkLog) diskBytes() int64 {
	names, err := l.fs.List(l.dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, name := range names {
		if st, err := l.fs.Stat(l.fs.PathJoin(l.dir, name)); err == nil {
			n += st.Size()
		}
	}
	return n
}
