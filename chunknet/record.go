package chunknet

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"

	"github.com/oashare/oashare/chunknet/wire"
)

// The record layer. Between members, TLS 1.3 authenticates both sides and
// agrees on secrets; the hello and verdict move inside TLS. From then on
// each direction is a stream of records sealed with AES-128-GCM under keys
// exported from that TLS session (RFC 8446 §7.5), the way QUIC protects
// its packets with keys from a TLS handshake:
//
//	record = length u32 | ciphertext[length]      (length = plaintext + 16)
//
// The 4-byte length is the additional data; the nonce is the direction's
// IV XOR the record's sequence number under the current key (implicit:
// a dropped, repeated or reordered record fails to open). A direction's
// key is replaced by the next in its chain (HKDF-Expand of its secret)
// after 4 GiB of plaintext or 2^24 records (defaultRekey), at the same
// record on both ends, well inside AES-GCM's limits.
//
// Bulk records. In a PutGroups frame the groups' data needs no tag of
// its own: the receiver checks every byte of it against the chunk hashes
// of its group's node, and the node against the group's name, which
// travel in sealed records (storeGroups refuses a group that does not
// match). Those pieces travel in bulk records, encrypted with AES-128-CTR
// under a key of their own and no tag, which costs about half what
// AES-GCM does:
//
//	bulk record = 0x80000000|length u32 | ciphertext[length]
//
// Their order and lengths are still sealed: the additional data of each
// sealed record is its own header followed by the headers of the bulk
// records since the sealed one before it, and a frame whose last record
// is bulk ends with an empty sealed record. A reader takes bulk records
// only inside a PutGroups frame (BeginFrame) and does not hand the frame
// on before that closing record opened (EndFrame). So an attacker on the
// wire can no more move, drop, cut or add bytes than before; what it can
// do is flip bits of group data, and the group is then refused (its bytes
// do not match its name), as a group a broken member sends is: the
// writer places it elsewhere, and nothing is held against either end.
// Responses (a GroupResult's chunks) stay sealed: a copy that does not
// match its name counts against the peer that sent it (spot checks), so
// what arrives must be that peer's own bytes.
//
// Why not TLS records for the frames too: TLS seals 16 KiB at a time,
// copying each into its own buffer, and reads through two more buffers.
// Here a frame's bulk data (a group's 128 KiB) is sealed straight from
// the caller's memory into the one buffer a frame leaves in (one system
// call per frame), and opened straight from the buffer it was read into
// into the reader's (a frame's payload): BenchmarkFrameTransport moves
// PutGroups frames 1.6 times as fast as through TLS records when all is
// sealed, 1.8 times with the data in bulk records, and on the testbed a
// writer copies no more than without encryption. What remains
// is the cipher itself: AES-CTR for group data, AES-GCM for the rest.

const (
	recordHeader = 4
	recordTag    = 16
	// maxRecord bounds a record's plaintext; larger pieces of a frame
	// are sealed as several records.
	maxRecord = 256 << 10
	// recordGrowFrom is the first size of a connection's read buffer; it
	// grows (to maxRecord and its overhead at most) as bytes arrive.
	recordGrowFrom = 64 << 10
	// bigPiece: a piece of a frame at least this long is sealed from
	// where it lies; shorter ones are gathered into one record.
	bigPiece = 4 << 10
	// recordLabel names the exported secret of each direction.
	recordLabel = "oashare records "
	// bulkFlag marks a bulk record's header.
	bulkFlag = 1 << 31
	// maxBulkRun bounds the bulk records between two sealed ones (a
	// frame of MaxPayload in records of maxRecord makes 16).
	maxBulkRun = 64
)

// rekeyAt says when a key has carried enough: after this many plaintext
// bytes or records, whichever comes first.
type rekeyAt struct{ bytes, records uint64 }

// defaultRekey keeps each key far inside AES-GCM's bounds (RFC 8446 §5.5
// allows 2^24.5 full TLS records, about 380 GiB, per key).
var defaultRekey = rekeyAt{bytes: 1 << 32, records: 1 << 24}

// ErrBadRecord: a record that does not open (altered, replayed, out of
// order, or sealed under another key) or declares an impossible length.
// The connection is finished.
var ErrBadRecord = errors.New("bad record")

// recordKey is one direction's current key.
type recordKey struct {
	limit  rekeyAt
	secret []byte
	aead   cipher.AEAD
	bulk   cipher.Block // AES-CTR key of bulk records
	iv     [12]byte
	nbuf   [12]byte
	seq    uint64 // records sealed or opened under this key
	bytes  uint64 // their plaintext bytes
}

func newRecordKey(secret []byte, limit rekeyAt) (*recordKey, error) {
	k := &recordKey{limit: limit}
	return k, k.set(secret)
}

func (k *recordKey) set(secret []byte) error {
	key, err := hkdf.Expand(sha256.New, secret, "oashare record key", 16)
	if err != nil {
		return err
	}
	iv, err := hkdf.Expand(sha256.New, secret, "oashare record iv", len(k.iv))
	if err != nil {
		return err
	}
	bkey, err := hkdf.Expand(sha256.New, secret, "oashare bulk key", 16)
	if err != nil {
		return err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return err
	}
	bulk, err := aes.NewCipher(bkey)
	if err != nil {
		return err
	}
	k.secret, k.aead, k.bulk, k.seq, k.bytes = secret, aead, bulk, 0, 0
	copy(k.iv[:], iv)
	return nil
}

// xorBulk en- or decrypts the next record, a bulk one, from src into dst:
// AES-CTR whose counter block is the record's nonce followed by a 32-bit
// block count from zero (a record has at most 2^14 blocks).
func (k *recordKey) xorBulk(dst, src []byte) {
	var ctr [aes.BlockSize]byte
	copy(ctr[:], k.nonce())
	cipher.NewCTR(k.bulk, ctr[:]).XORKeyStream(dst, src)
}

// nonce returns the nonce of the next record (valid until the next call).
func (k *recordKey) nonce() []byte {
	k.nbuf = k.iv
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], k.seq)
	for i, b := range s {
		k.nbuf[4+i] ^= b
	}
	return k.nbuf[:]
}

// done counts a record of n plaintext bytes and moves to the next key
// when this one has carried enough.
func (k *recordKey) done(n int) error {
	k.seq++
	k.bytes += uint64(n)
	if k.seq < k.limit.records && k.bytes < k.limit.bytes {
		return nil
	}
	next, err := hkdf.Expand(sha256.New, k.secret, "oashare record next", 32)
	if err != nil {
		return err
	}
	return k.set(next)
}

// sealedConn carries frames as records over the TCP connection a TLS
// handshake ran on. Writes take whole frames (writeFrame); one goroutine
// reads.
type sealedConn struct {
	net.Conn // the TCP connection; deadlines and Close act on it

	wmu   sync.Mutex
	w     *recordKey
	wbulk []byte // headers of the bulk records sent since the last sealed one
	waad  []byte

	r     *recordKey
	src   io.Reader // bytes after the last TLS record, then the TCP connection
	buf   []byte    // raw bytes read: buf[r0:r1]
	r0    int
	r1    int
	plain []byte // opened and not yet read
	rerr  error  // final: an ErrBadRecord
	// Bulk records on the reading side: whether the frame being read may
	// hold some, and the headers of those read since the last sealed one.
	rbulkOK bool
	rbulk   []byte
	raad    []byte
}

// sealConn switches a connection whose TLS handshake (and hello) are done
// to records. bc is what TLS ran on; it read no further than TLS's last
// record (bufConn), so what it holds beyond that is ours.
func sealConn(tc *tls.Conn, bc *bufConn, client bool, limit rekeyAt) (*sealedConn, error) {
	st := tc.ConnectionState()
	cs, err := st.ExportKeyingMaterial(recordLabel+"client", nil, 32)
	if err != nil {
		return nil, err
	}
	ss, err := st.ExportKeyingMaterial(recordLabel+"server", nil, 32)
	if err != nil {
		return nil, err
	}
	if !client {
		cs, ss = ss, cs
	}
	w, err := newRecordKey(cs, limit)
	if err != nil {
		return nil, err
	}
	r, err := newRecordKey(ss, limit)
	if err != nil {
		return nil, err
	}
	return &sealedConn{Conn: bc.Conn, w: w, r: r, src: io.MultiReader(bc.leftover(), bc.Conn)}, nil
}

// Write sends p as a frame (io.Writer for the rare caller that has one
// frame in one slice).
func (c *sealedConn) Write(p []byte) (int, error) {
	if err := c.writeFrame([][]byte{p}, nil); err != nil {
		return 0, err
	}
	return len(p), nil
}

// writeFrame seals the pieces of one frame and sends them with one
// write. Runs of short pieces are gathered into one record; a long piece
// is sealed from where it lies into the outgoing buffer, or, if named(i)
// says the receiver checks piece i against the names of its chunks, sent
// in bulk records.
func (c *sealedConn) writeFrame(pieces [][]byte, named func(i int) bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	total := 0
	for _, p := range pieces {
		total += len(p)
	}
	// Every record ends at a piece's end or at maxRecord bytes; one more
	// closes bulk records.
	out := sendPool.get(total + (recordHeader+recordTag)*(len(pieces)+total/maxRecord+2))[:0]
	defer func() { sendPool.put(out) }()
	start := -1 // the open record of short pieces, if any
	var err error
	seal := func() {
		if start < 0 || err != nil {
			return
		}
		out, err = c.sealAt(out, start)
		start = -1
	}
	for i, p := range pieces {
		bulk := named != nil && len(p) >= bigPiece && named(i)
		for len(p) > 0 {
			if len(p) >= bigPiece || bulk {
				seal()
				n := min(len(p), maxRecord)
				s := len(out)
				out = append(out, make([]byte, recordHeader)...)
				if bulk {
					binary.BigEndian.PutUint32(out[s:], uint32(n)|bulkFlag)
					c.wbulk = append(c.wbulk, out[s:s+recordHeader]...)
					out = slices.Grow(out, n)[:len(out)+n] // the room was sized above
					c.w.xorBulk(out[s+recordHeader:], p[:n])
				} else {
					binary.BigEndian.PutUint32(out[s:], uint32(n+recordTag))
					out = c.w.aead.Seal(out, c.w.nonce(), p[:n], c.aad(out[s:s+recordHeader]))
				}
				if err == nil {
					err = c.w.done(n)
				}
				p = p[n:]
				continue
			}
			if start < 0 {
				start = len(out)
				out = append(out, make([]byte, recordHeader)...)
			}
			n := min(len(p), maxRecord-(len(out)-start-recordHeader))
			out = append(out, p[:n]...)
			p = p[n:]
			if len(out)-start-recordHeader == maxRecord {
				seal()
			}
		}
	}
	if start < 0 && len(c.wbulk) > 0 {
		// The frame ends in bulk: an empty sealed record closes it.
		start = len(out)
		out = append(out, make([]byte, recordHeader)...)
	}
	seal()
	if err != nil {
		return err
	}
	_, err = c.Conn.Write(out)
	return err
}

// aad returns the additional data of the next sealed record sent, whose
// header is hdr: hdr, then the headers of the bulk records before it.
func (c *sealedConn) aad(hdr []byte) []byte {
	if len(c.wbulk) == 0 {
		return hdr
	}
	c.waad = append(append(c.waad[:0], hdr...), c.wbulk...)
	c.wbulk = c.wbulk[:0]
	return c.waad
}

// sealAt seals in place the record whose header starts at out[start]
// and whose plaintext runs to the end of out.
func (c *sealedConn) sealAt(out []byte, start int) ([]byte, error) {
	if cap(out)-len(out) < recordTag {
		out = slices.Grow(out, recordTag)
	}
	n := len(out) - start - recordHeader
	hdr := out[start : start+recordHeader]
	binary.BigEndian.PutUint32(hdr, uint32(n+recordTag))
	pt := out[start+recordHeader:]
	c.w.aead.Seal(pt[:0], c.w.nonce(), pt, c.aad(hdr)) // in place: the capacity is there
	return out[:len(out)+recordTag], c.w.done(n)
}

// Read returns the plaintext of the records received, in order. A long
// record that fits in p is opened straight into it.
func (c *sealedConn) Read(p []byte) (int, error) {
	for len(c.plain) == 0 {
		if c.rerr != nil {
			return 0, c.rerr
		}
		n, err := c.readRecord(p)
		if err != nil {
			return 0, err
		}
		if n > 0 {
			return n, nil
		}
	}
	n := copy(p, c.plain)
	c.plain = c.plain[n:]
	return n, nil
}

// readRecord reads and opens the next record: into p if it is long and
// fits (returning its length), else where it was read (c.plain). A read
// error leaves what was read in place (a deadline may be retried); a
// record that does not open ends the connection.
func (c *sealedConn) readRecord(p []byte) (int, error) {
	if err := c.fill(recordHeader); err != nil {
		if err == io.EOF && c.r0 == c.r1 {
			return 0, io.EOF
		}
		return 0, noEOF(err)
	}
	h := binary.BigEndian.Uint32(c.buf[c.r0:])
	bulk, n := h&bulkFlag != 0, int(h&^bulkFlag)
	switch {
	case bulk && !c.rbulkOK:
		c.rerr = fmt.Errorf("%w: a bulk record outside the data of a PutGroups frame", ErrBadRecord)
	case bulk && len(c.rbulk) >= maxBulkRun*recordHeader:
		c.rerr = fmt.Errorf("%w: more than %d bulk records in a row", ErrBadRecord, maxBulkRun)
	case bulk && (n < 1 || n > maxRecord):
		c.rerr = fmt.Errorf("%w: bulk length %d, want 1 to %d", ErrBadRecord, n, maxRecord)
	case !bulk && (n < recordTag || n > maxRecord+recordTag):
		c.rerr = fmt.Errorf("%w: length %d, want %d to %d", ErrBadRecord, n, recordTag, maxRecord+recordTag)
	}
	if c.rerr != nil {
		return 0, c.rerr
	}
	if err := c.fill(recordHeader + n); err != nil {
		return 0, noEOF(err)
	}
	rec := c.buf[c.r0 : c.r0+recordHeader+n]
	m := n
	if !bulk {
		m -= recordTag
	}
	dst, direct := rec[recordHeader:recordHeader], false
	if m >= bigPiece && len(p) >= m {
		dst, direct = p[:0], true
	}
	var pt []byte
	if bulk {
		pt = dst[:m]
		c.r.xorBulk(pt, rec[recordHeader:])
		c.rbulk = append(c.rbulk, rec[:recordHeader]...)
	} else {
		aad := rec[:recordHeader]
		if len(c.rbulk) > 0 {
			c.raad = append(append(c.raad[:0], aad...), c.rbulk...)
			aad = c.raad
		}
		var err error
		pt, err = c.r.aead.Open(dst, c.r.nonce(), rec[recordHeader:], aad)
		if err != nil {
			c.rerr = fmt.Errorf("%w: it does not open", ErrBadRecord)
			return 0, c.rerr
		}
		c.rbulk = c.rbulk[:0]
	}
	if err := c.r.done(len(pt)); err != nil {
		c.rerr = err
		return 0, err
	}
	c.r0 += recordHeader + n
	if direct {
		return len(pt), nil
	}
	c.plain = pt
	return 0, nil
}

// BeginFrame hears the type of the frame whose payload is read next: only
// a PutGroups frame may carry bulk records (wire.FrameBounds).
func (c *sealedConn) BeginFrame(t wire.Type) error {
	c.rbulkOK = t == wire.TypePutGroups
	return nil
}

// EndFrame hears that the frame's payload has been read. If bulk records
// came after its last sealed one, the sealed record that closes them must
// follow, empty, and open: until then nothing of the frame is used.
func (c *sealedConn) EndFrame() error {
	c.rbulkOK = false
	if len(c.rbulk) == 0 {
		return nil
	}
	if len(c.plain) > 0 {
		c.rerr = fmt.Errorf("%w: a frame's bulk records are not closed", ErrBadRecord)
		return c.rerr
	}
	if _, err := c.readRecord(nil); err != nil {
		return err
	}
	if len(c.plain) > 0 {
		c.rerr = fmt.Errorf("%w: a frame's bulk records are closed by a record that is not empty", ErrBadRecord)
		return c.rerr
	}
	return nil
}

// fill reads until buf[r0:] holds at least n bytes. Memory comes as bytes
// do: the buffer grows to at most four times what has arrived of the
// record (recordGrowFrom at first), never past one record.
func (c *sealedConn) fill(n int) error {
	for c.r1-c.r0 < n {
		if c.r0 == c.r1 {
			c.r0, c.r1 = 0, 0
		}
		if len(c.buf)-c.r0 < n && c.r1 == len(c.buf) {
			have := c.r1 - c.r0
			size := max(recordGrowFrom, min(n, 4*have))
			if size <= len(c.buf) {
				copy(c.buf, c.buf[c.r0:c.r1])
			} else {
				nb := make([]byte, size)
				copy(nb, c.buf[c.r0:c.r1])
				c.buf = nb
			}
			c.r0, c.r1 = 0, have
		}
		// Read what fits, but not past the end of a record already
		// under way when it is long: what follows it would have to be
		// moved before the next long one.
		end := len(c.buf)
		if n > bigPiece && c.r0+n < end {
			end = c.r0 + n
		}
		k, err := c.src.Read(c.buf[c.r1:end])
		c.r1 += k
		if err != nil {
			if c.r1-c.r0 >= n {
				return nil
			}
			return err
		}
	}
	return nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// sendPool recycles the buffers frames leave in.
var sendPool payloadPool
