package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/oashare/oashare/index/format"
)

// The chunk log keeps chunk bytes out of Pebble. Chunks and groups are
// appended, in the order they arrive, to segment files
// chunks/NNNNNNNN.seg; Pebble maps each one's key to its location
// (segment, offset, length). So:
//   - Pebble's values are 14 or 16 bytes instead of up to 128 KiB, and
//     compactions rewrite locations, not data: the bytes are written once;
//   - the chunks of one file, stored together, sit together on disk, and a
//     sequential read of the file is a sequential read of the segment;
//   - disk use is the bytes plus a small index entry per chunk or group.
//
// Each write group of PutChunks/PutGroups is one batch in the log,
// self-describing so that the log alone is enough to rebuild the index
// entries it holds (all integers big endian):
//
//	magic[4]="OASB" count u32 datalen u32 crc u32
//	count × {key[33] len u32}
//	data[datalen]   the items' bytes back to back, in the order above
//
// crc is the CRC-32C of everything but itself. The batch is synced before
// its index entries are committed, and that commit is not synced: the
// synced log is what makes a write durable, one fsync per write group.
// The "m/chunk-log" key, committed with the entries, says up to where the
// log is indexed; Open reads the batches after that point, checks their
// CRC and indexes what a crash left unindexed. The first batch that does
// not check (a write torn by the crash) ends its segment, and appends go
// on in a new segment, so a segment never holds bytes after a bad batch.
// The scan itself goes on past such a tail into the later segments: they
// were started by the recovery from that crash, and their synced batches
// must be found again if a later crash loses their index entries (any
// number of crashes in a row lose nothing acknowledged: TestChunkLogCrashes).
//
// Segments older than this format (numbered below the first one the
// "m/chunk-log" key names) hold raw chunk bytes only; their index entries
// were committed synced, so they are never scanned. Appends come only from
// the PutChunks/PutGroups leader (one writer); reads may run concurrently
// with it.

const (
	chunkLogDir = "chunks"
	segSuffix   = ".seg"
	// segmentMax is the size at which a new segment is started.
	segmentMax = 1 << 30
	// locSize is the encoded size of a location.
	locSize = 4 + 8 + 2

	batchMagic      = "OASB"
	batchHeaderSize = 4 + 4 + 4 + 4
	batchItemSize   = 1 + 32 + 4
	// batchMaxItems bounds the count a scanned batch header may claim.
	batchMaxItems = 1 << 20
	// logStateSize is the size of the "m/chunk-log" value: first batch
	// segment[4], indexed up to segment[4] offset[8].
	logStateSize = 4 + 4 + 8
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

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
	if l.n > format.MaxChunkData {
		return location{}, fmt.Errorf("%w: chunk location length %d exceeds %d", ErrCorrupt, l.n, format.MaxChunkData)
	}
	return l, nil
}

type chunkLog struct {
	fs  vfs.FS
	dir string

	mu    sync.RWMutex // guards files
	files map[uint32]vfs.File

	segs []uint32 // the segments found at open, in order

	// The appender's state; only the PutChunks leader touches it.
	maxSeg  int64 // segment size at which the next one starts
	cur     uint32
	curFile vfs.File
	curSize int64 // where the next batch goes
	// zeroedTo is the size of the current segment's file: the bytes from
	// curSize to it are zeros written ahead (see zeroAhead).
	zeroedTo int64
	// direct is the current segment opened with O_DIRECT, for large
	// batches (see appendDirect); nil where the file system has no such
	// thing (tests' MemFS, tmpfs). dbuf is its reused aligned buffer.
	direct   *os.File
	dbuf     []byte
	noDirect bool // a direct write failed once: buffered from then on
}

func segName(seg uint32) string { return fmt.Sprintf("%08d%s", seg, segSuffix) }

func openChunkLog(fs vfs.FS, dir string) (*chunkLog, error) {
	parent := dir
	dir = fs.PathJoin(dir, chunkLogDir)
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("index: create %s: %w", dir, err)
	}
	// Make the directory's entry durable, as startSegment does for the
	// segments in it.
	syncDir(fs, parent)
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
	return &chunkLog{fs: fs, dir: dir, files: make(map[uint32]vfs.File), maxSeg: segmentMax, segs: segs}, nil
}

// segSize returns the size of segment seg, 0 if it does not exist.
func (l *chunkLog) segSize(seg uint32) int64 {
	st, err := l.fs.Stat(l.fs.PathJoin(l.dir, segName(seg)))
	if err != nil {
		return 0
	}
	return st.Size()
}

// logState is where the batch log stands: the first segment of the batch
// format and the position up to which the batches are indexed.
type logState struct {
	first uint32
	seg   uint32
	off   uint64
}

func (s logState) encode() []byte {
	b := binary.BigEndian.AppendUint32(nil, s.first)
	b = binary.BigEndian.AppendUint32(b, s.seg)
	return binary.BigEndian.AppendUint64(b, s.off)
}

func decodeLogState(b []byte) (logState, error) {
	if len(b) != logStateSize {
		return logState{}, fmt.Errorf("%w: chunk log state is %d bytes, want %d", ErrCorrupt, len(b), logStateSize)
	}
	s := logState{first: binary.BigEndian.Uint32(b), seg: binary.BigEndian.Uint32(b[4:]), off: binary.BigEndian.Uint64(b[8:])}
	if s.seg < s.first {
		return logState{}, fmt.Errorf("%w: chunk log indexed up to segment %d, before its first %d", ErrCorrupt, s.seg, s.first)
	}
	return s, nil
}

// batchItem is one item of a scanned batch.
type batchItem struct {
	key []byte
	loc location // n unused: items may exceed 16 bits
	len uint32
}

// scan reads the batches of segment seg from offset off on and calls fn
// for each item of each batch that checks; it returns the offset after the
// last such batch and whether the segment ends there (false: a batch did
// not check, the segment's bytes after end are garbage). Zeros up to the
// end of the file (written ahead, see zeroAhead) end the segment cleanly.
func (l *chunkLog) scan(seg uint32, off uint64, fn func(batchItem) error) (end uint64, clean bool, err error) {
	size := uint64(l.segSize(seg))
	f, err := l.file(seg)
	if err != nil {
		return off, false, err
	}
	var hdr [batchHeaderSize]byte
	for {
		// A batch's magic is not zero: zeros here are the end, if only
		// zeros follow.
		if zero, err := zerosFrom(f, off, min(size, off+batchHeaderSize)); err != nil || zero {
			if err == nil {
				zero, err = zerosFrom(f, off, size)
			}
			if err != nil {
				return off, false, fmt.Errorf("index: read chunk segment %d at %d: %w", seg, off, err)
			}
			if zero {
				return off, true, nil
			}
		}
		// A batch written with O_DIRECT starts at the next multiple of
		// directAlign; the bytes before it are zeros.
		if next := uint64(alignUp(int64(off))); next != off && next <= size {
			gap := make([]byte, next-off)
			if _, err := f.ReadAt(gap, int64(off)); err != nil {
				return off, false, fmt.Errorf("index: read chunk segment %d at %d: %w", seg, off, err)
			}
			if isZero(gap) { // no batch here: a batch's magic is not zero
				off = next
			}
		}
		if off == size {
			return off, true, nil
		}
		if off+batchHeaderSize > size {
			return off, false, nil
		}
		if _, err := f.ReadAt(hdr[:], int64(off)); err != nil {
			return off, false, fmt.Errorf("index: read chunk segment %d at %d: %w", seg, off, err)
		}
		count := uint64(binary.BigEndian.Uint32(hdr[4:]))
		dataLen := uint64(binary.BigEndian.Uint32(hdr[8:]))
		if string(hdr[:4]) != batchMagic || count > batchMaxItems ||
			off+batchHeaderSize+count*batchItemSize+dataLen > size {
			return off, false, nil
		}
		body := make([]byte, count*batchItemSize+dataLen)
		if _, err := f.ReadAt(body, int64(off+batchHeaderSize)); err != nil {
			return off, false, fmt.Errorf("index: read chunk segment %d at %d: %w", seg, off, err)
		}
		crc := crc32.Update(crc32.Checksum(hdr[:12], crcTable), crcTable, body)
		if crc != binary.BigEndian.Uint32(hdr[12:]) {
			return off, false, nil
		}
		dataOff := off + batchHeaderSize + count*batchItemSize
		var sum uint64
		items := make([]batchItem, count)
		for i := range items {
			e := body[uint64(i)*batchItemSize:]
			n := binary.BigEndian.Uint32(e[33:])
			items[i] = batchItem{key: e[:33:33], loc: location{seg: seg, off: dataOff + sum}, len: n}
			sum += uint64(n)
		}
		if sum != dataLen {
			return off, false, nil
		}
		for _, it := range items {
			if err := fn(it); err != nil {
				return off, false, err
			}
		}
		off = dataOff + dataLen
	}
}

// zerosFrom reports whether the bytes [off, size) of f are all zeros.
func zerosFrom(f vfs.File, off, size uint64) (bool, error) {
	buf := make([]byte, min(size-min(off, size), 64<<10))
	for off < size {
		n := min(uint64(len(buf)), size-off)
		if _, err := f.ReadAt(buf[:n], int64(off)); err != nil {
			return false, err
		}
		if !isZero(buf[:n]) {
			return false, nil
		}
		off += n
	}
	return true, nil
}

// zeroAhead is how far the buffered appender writes zeros past the end of
// the log. A batch then overwrites zeros already on disk rather than
// growing the file, and its fdatasync has no file size to commit: on ext4,
// no journal commit, which every peer's syncs on one file system would
// otherwise queue for (measured: 4 writers syncing 4 KiB appends, 359 µs
// per sync; overwrites, 228 µs). Large batches (O_DIRECT) grow the file
// as before; a zero tail costs at most this much disk per segment.
const zeroAhead = 1 << 20

var zeroBlock [64 << 10]byte

// startSegment opens (creating if needed) segment seg for appending at
// end, or at the end of the file if end is negative.
func (l *chunkLog) startSegment(seg uint32, end int64) error {
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
	if end < 0 || end > st.Size() {
		end = st.Size()
	}
	l.cur, l.curFile, l.curSize, l.zeroedTo = seg, f, end, st.Size()
	if l.direct != nil {
		l.direct.Close()
		l.direct = nil
	}
	if l.fs == vfs.Default && !l.noDirect {
		if d, err := openDirect(path); err == nil {
			l.direct = d
		} else {
			l.noDirect = true // errNoDirect, or a file system that refuses it
		}
	}
	if seg > 1 || st.Size() == 0 {
		syncDir(l.fs, l.dir) // make the new file's entry durable
	}
	return nil
}

// append writes one batch of items (keys[i] naming datas[i]) to the
// current segment, syncs it and returns the segment, each item's data
// offset in it and the offset after the batch. It starts a new segment
// when the current one is full.
func (l *chunkLog) append(keys [][]byte, datas [][]byte) (seg uint32, offs []uint64, end uint64, err error) {
	total := 0
	for _, d := range datas {
		total += len(d)
	}
	size := batchHeaderSize + len(datas)*batchItemSize + total
	if l.curSize > 0 && l.curSize+int64(size) > l.maxSeg {
		if err := l.startSegment(l.cur+1, -1); err != nil {
			return 0, nil, 0, err
		}
	}
	head := make([]byte, batchHeaderSize, batchHeaderSize+len(datas)*batchItemSize)
	copy(head, batchMagic)
	binary.BigEndian.PutUint32(head[4:], uint32(len(datas)))
	binary.BigEndian.PutUint32(head[8:], uint32(total))
	for i, d := range datas {
		head = append(head, keys[i]...)
		head = binary.BigEndian.AppendUint32(head, uint32(len(d)))
	}
	at, stop, ok := l.appendDirect(head, datas, size)
	if !ok {
		binary.BigEndian.PutUint32(head[12:], batchCRC(head, datas, nil))
		at, stop = l.curSize, l.curSize+int64(size)
		if err := writeVec(l.curFile, at, head, datas); err != nil {
			return 0, nil, 0, fmt.Errorf("index: append to chunk segment %d: %w", l.cur, err)
		}
		l.zeroTail(stop)
		if err := l.curFile.SyncData(); err != nil {
			return 0, nil, 0, fmt.Errorf("index: sync chunk segment %d: %w", l.cur, err)
		}
	}
	offs = make([]uint64, len(datas))
	off := uint64(at) + uint64(len(head))
	for i, d := range datas {
		offs[i] = off
		off += uint64(len(d))
	}
	l.curSize = stop
	l.zeroedTo = max(l.zeroedTo, stop)
	return l.cur, offs, uint64(stop), nil
}

// zeroTail writes zeros from the end of the current segment's file to
// zeroAhead past stop (within the segment's size bound) when the file
// ends less than that past it. The batch's sync makes them durable. The
// zeros only make later syncs cheaper: if they cannot be written (a full
// disk), the log grows as it would without them.
func (l *chunkLog) zeroTail(stop int64) {
	to := min(alignUp(stop)+zeroAhead, max(l.maxSeg, stop))
	if l.zeroedTo >= stop+zeroAhead/4 || to <= l.zeroedTo {
		return
	}
	from := max(l.zeroedTo, stop)
	var zeros [][]byte
	for left := to - from; left > 0; left -= int64(len(zeroBlock)) {
		zeros = append(zeros, zeroBlock[:min(left, int64(len(zeroBlock)))])
	}
	if writeVec(l.curFile, from, nil, zeros) == nil {
		l.zeroedTo = to
	}
}

const (
	// directAlign is the alignment of O_DIRECT writes: offset, length and
	// buffer address.
	directAlign = 4096
	// directMin is the smallest batch written with O_DIRECT. Writing
	// through the page cache and then syncing cost several times the CPU
	// of a direct write of the same bytes; a direct batch starts at the
	// next multiple of directAlign and is padded with zeros to one, which
	// wastes at most 2 × 4 KiB per batch of at least 256 KiB.
	directMin = 256 << 10
)

// batchCRC returns the CRC-32C of a batch: head's first 12 bytes, its
// items, then datas. With dst not nil it also copies head and datas there,
// back to back, a few KiB at a time right after their CRC while they are
// in the CPU's cache: one pass over the bytes instead of two.
func batchCRC(head []byte, datas [][]byte, dst []byte) uint32 {
	crc := crc32.Update(crc32.Checksum(head[:12], crcTable), crcTable, head[batchHeaderSize:])
	n := copy(dst, head)
	for _, d := range datas {
		if dst == nil {
			crc = crc32.Update(crc, crcTable, d)
			continue
		}
		for len(d) > 0 {
			k := min(len(d), crcPiece)
			crc = crc32.Update(crc, crcTable, d[:k])
			n += copy(dst[n:], d[:k])
			d = d[k:]
		}
	}
	return crc
}

// crcPiece is how many bytes batchCRC checksums before it copies them.
const crcPiece = 4 << 10

func alignUp(n int64) int64 { return (n + directAlign - 1) &^ (directAlign - 1) }

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// appendDirect writes the batch (head, then datas; size bytes in all)
// with O_DIRECT at the next aligned offset and syncs it, returning where
// it starts and where the segment now ends (past the padding). ok is false
// if the batch is not written that way (too small, no direct file, or the
// write failed, which turns direct writes off): the caller writes it
// through the page cache instead, at the segment's end.
func (l *chunkLog) appendDirect(head []byte, datas [][]byte, size int) (pos, end int64, ok bool) {
	if l.direct == nil || l.noDirect || size < directMin {
		return 0, 0, false
	}
	pos = alignUp(l.curSize)
	padded := int(alignUp(int64(size)))
	if cap(l.dbuf) < padded {
		raw := make([]byte, padded+directAlign)
		skip := (directAlign - int(uintptr(unsafe.Pointer(&raw[0]))&(directAlign-1))) & (directAlign - 1)
		l.dbuf = raw[skip : skip+padded : skip+padded]
	}
	buf := l.dbuf[:padded]
	binary.BigEndian.PutUint32(buf[12:], batchCRC(head, datas, buf))
	clear(buf[size:])
	_, err := l.direct.WriteAt(buf, pos)
	if err == nil {
		err = fdatasync(l.direct)
	}
	if err != nil {
		// The bytes after the old end are not referenced by anything: the
		// buffered write that follows starts at the old end again.
		l.noDirect = true
		l.direct.Close()
		l.direct = nil
		return 0, 0, false
	}
	return pos, pos + int64(padded), true
}

// writeVec writes head and then datas, back to back, at offset off of f:
// with pwritev(2) straight from the callers' buffers where f is a real
// file, else through one copy.
func writeVec(f vfs.File, off int64, head []byte, datas [][]byte) error {
	if fd := f.Fd(); fd != vfs.InvalidFd {
		iovs := make([][]byte, 0, 1+len(datas))
		iovs = append(iovs, head)
		for _, d := range datas {
			if len(d) > 0 {
				iovs = append(iovs, d)
			}
		}
		for len(iovs) > 0 {
			k := min(len(iovs), maxIovecs)
			n, err := pwritev(fd, iovs[:k], off)
			if err != nil {
				return err
			}
			off += int64(n)
			// Drop what was written; a short write leaves part of one.
			for n > 0 {
				if n >= len(iovs[0]) {
					n -= len(iovs[0])
					iovs = iovs[1:]
				} else {
					iovs[0] = iovs[0][n:]
					n = 0
				}
			}
		}
		return nil
	}
	buf := append([]byte(nil), head...)
	for _, d := range datas {
		buf = append(buf, d...)
	}
	_, err := f.WriteAt(buf, off)
	return err
}

// maxIovecs is the most buffers one pwritev takes (IOV_MAX on Linux).
const maxIovecs = 1024

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
	if l.direct != nil {
		l.direct.Close()
		l.direct = nil
	}
	var first error
	for _, f := range l.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	l.files = nil
	return first
}

// removeSegment deletes segment seg, which nothing points into, and
// returns its size. Never the current segment.
func (l *chunkLog) removeSegment(seg uint32) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.files[seg]; f != nil {
		f.Close()
		delete(l.files, seg)
	}
	path := l.fs.PathJoin(l.dir, segName(seg))
	st, err := l.fs.Stat(path)
	if err != nil {
		return 0, nil // gone already
	}
	if err := l.fs.Remove(path); err != nil {
		return 0, fmt.Errorf("index: remove chunk segment %s: %w", path, err)
	}
	return st.Size(), nil
}

// fullClearFree is the free space the chunk log's disk must have again
// before a disk found full counts as not full: a small write that fits
// in what is left does not make it so.
const fullClearFree = 4 << 20

// freeBytes returns the space free on the chunk log's disk for an
// unprivileged user; where that cannot be read (an in-memory file system),
// as much as fullClearFree.
func (l *chunkLog) freeBytes() int64 {
	if l.fs != vfs.Default {
		return fullClearFree
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(l.dir, &st); err != nil {
		return fullClearFree
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// diskBytes reports the bytes the segments take on disk: their
// allocated blocks where the file system says (holes punched by Reclaim
// take none), else their sizes.
func (l *chunkLog) diskBytes() int64 {
	names, err := l.fs.List(l.dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, name := range names {
		st, err := l.fs.Stat(l.fs.PathJoin(l.dir, name))
		if err != nil {
			continue
		}
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			n += sys.Blocks * 512
		} else {
			n += st.Size()
		}
	}
	return n
}
