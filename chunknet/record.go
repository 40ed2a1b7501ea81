package chunknet

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
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
// Key records. A writer sends each group to two or three peers; rather
// than encrypt its data once per connection, it may encrypt it once, with
// AES-128-CTR under a random key of the group's own (counter from zero),
// and send the same ciphertext to every peer, each time after a key
// record that carries the key:
//
//	key record = 0x40000000|length u32 | ciphertext[length]   (16-byte key, sealed)
//
// A key record is a sealed record (its additional data chains the bulk
// headers before it like any other); the bulk records after it, up to
// the next sealed record, are the group's ciphertext in order, opened
// under that key instead of the connection's. Only a PutGroups frame may
// hold one. The key is fresh for each group written, so no two
// plaintexts share a key stream; a peer that gets the key gets the
// group's data, which it is sent anyway; everyone else sees a sealed
// record and, on every connection the group goes over, the same
// ciphertext: they learn that one group went to several peers, which its
// length and timing tell already.
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
	// bulkFlag marks a bulk record's header, keyFlag a key record's.
	bulkFlag = 1 << 31
	keyFlag  = 1 << 30
	// pieceKey is the length of a key record's plaintext: an AES-128 key.
	pieceKey = 16
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
	// wkeyed: the bulk records since the last sealed one follow a key
	// record (the next bulk record under the connection's key must come
	// after a sealed one).
	wkeyed bool
	waad   []byte

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
	// rpiece opens the bulk records after a key record, up to the next
	// sealed one.
	rpiece cipher.Stream
}

// onceSealed is a group's data encrypted once for every peer it is sent
// to: AES-128-CTR under a random key of its own, counter from zero (see
// Key records). The first connection that sends it encrypts it; the
// others wait for that and send the same bytes.
type onceSealed struct {
	once sync.Once
	key  [pieceKey]byte
	ct   []byte
	err  error
}

// sealed returns the key and ciphertext of data, the group's data, which
// must be the same at every call.
func (s *onceSealed) sealed(data []byte) ([]byte, []byte, error) {
	s.once.Do(func() {
		if _, s.err = rand.Read(s.key[:]); s.err != nil {
			return
		}
		block, err := aes.NewCipher(s.key[:])
		if err != nil {
			s.err = err
			return
		}
		s.ct = getGroupBuf()
		if cap(s.ct) < len(data) {
			s.ct = make([]byte, len(data))
		}
		s.ct = s.ct[:len(data)]
		var iv [aes.BlockSize]byte
		cipher.NewCTR(block, iv[:]).XORKeyStream(s.ct, data)
	})
	return s.key[:], s.ct, s.err
}

// release gives the ciphertext's buffer back once no connection sends it.
func (s *onceSealed) release() {
	if s != nil && s.ct != nil {
		putGroupBuf(s.ct)
		s.ct = nil
	}
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
	if err := c.writeFrame([][]byte{p}, nil, nil); err != nil {
		return 0, err
	}
	return len(p), nil
}

// writeFrame seals the pieces of one frame and sends them with one
// write. Runs of short pieces are gathered into one record; a long piece
// is sealed from where it lies into the outgoing buffer, or, if named(i)
// says the receiver checks piece i against the names of its chunks, sent
// in bulk records: if pre(i) is not nil, as that piece's ciphertext
// sealed once for every connection, after a key record.
func (c *sealedConn) writeFrame(pieces [][]byte, named func(i int) bool, pre func(i int) *onceSealed) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	total := 0
	for _, p := range pieces {
		total += len(p)
	}
	// Every record ends at a piece's end or at maxRecord bytes; a piece
	// may add a key record and a sealed record that ends it; one more
	// closes bulk records.
	out := sendPool.get(total + (recordHeader+recordTag)*(3*len(pieces)+total/maxRecord+2) + pieceKey*len(pieces))[:0]
	defer func() { sendPool.put(out) }()
	start := -1 // the open record of short pieces, if any
	var err error
	// A keyed piece's ciphertext is sent from where it lies (writev): vec
	// holds what goes before it, out[mark:] what is written since.
	var vec net.Buffers
	mark := 0
	seal := func() {
		if start < 0 || err != nil {
			return
		}
		out, err = c.sealAt(out, start, 0)
		start = -1
	}
	for i, p := range pieces {
		bulk := named != nil && len(p) >= bigPiece && named(i)
		keyed := false
		if bulk && pre != nil {
			if s := pre(i); s != nil {
				key, ct, serr := s.sealed(p)
				if serr != nil {
					return serr
				}
				// The key record, then the ciphertext as it is.
				seal()
				start = len(out)
				out = append(out, make([]byte, recordHeader)...)
				out = append(out, key...)
				if out, err = c.sealAt(out, start, keyFlag); err != nil {
					return err
				}
				start = -1
				p, keyed = ct, true
			}
		}
		if bulk && !keyed && c.wkeyed {
			// Bulk records under the connection's key may not follow a
			// keyed piece's directly: a sealed record ends that piece.
			seal()
			if c.wkeyed {
				start = len(out)
				out = append(out, make([]byte, recordHeader)...)
				seal()
			}
		}
		c.wkeyed = c.wkeyed || keyed
		for len(p) > 0 {
			if len(p) >= bigPiece || bulk {
				seal()
				n := min(len(p), maxRecord)
				s := len(out)
				out = append(out, make([]byte, recordHeader)...)
				if bulk {
					binary.BigEndian.PutUint32(out[s:], uint32(n)|bulkFlag)
					c.wbulk = append(c.wbulk, out[s:s+recordHeader]...)
					if keyed {
						vec = append(vec, out[mark:], p[:n])
						mark = len(out)
					} else {
						out = slices.Grow(out, n)[:len(out)+n] // the room was sized above
						c.w.xorBulk(out[s+recordHeader:], p[:n])
					}
				} else {
					binary.BigEndian.PutUint32(out[s:], uint32(n+recordTag))
					out = c.w.aead.Seal(out, c.w.nonce(), p[:n], c.aad(out[s:s+recordHeader]))
					c.wkeyed = false
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
	if vec == nil {
		_, err = c.Conn.Write(out)
		return err
	}
	vec = append(vec, out[mark:])
	_, err = vec.WriteTo(c.Conn)
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
// and whose plaintext runs to the end of out; flag (0 or keyFlag) goes
// into its header.
func (c *sealedConn) sealAt(out []byte, start int, flag uint32) ([]byte, error) {
	if cap(out)-len(out) < recordTag {
		out = slices.Grow(out, recordTag)
	}
	n := len(out) - start - recordHeader
	hdr := out[start : start+recordHeader]
	binary.BigEndian.PutUint32(hdr, uint32(n+recordTag)|flag)
	c.wkeyed = false
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
	bulk, key, n := h&bulkFlag != 0, h&keyFlag != 0, int(h&^(bulkFlag|keyFlag))
	switch {
	case bulk && key:
		c.rerr = fmt.Errorf("%w: a record marked both bulk and key", ErrBadRecord)
	case key && !c.rbulkOK:
		c.rerr = fmt.Errorf("%w: a key record outside the data of a PutGroups frame", ErrBadRecord)
	case key && n != pieceKey+recordTag:
		c.rerr = fmt.Errorf("%w: key record of length %d, want %d", ErrBadRecord, n, pieceKey+recordTag)
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
	if m >= bigPiece && len(p) >= m && !key {
		dst, direct = p[:0], true
	}
	var pt []byte
	used := 0 // plaintext bytes the record carried
	if bulk {
		pt = dst[:m]
		if c.rpiece != nil {
			c.rpiece.XORKeyStream(pt, rec[recordHeader:])
		} else {
			c.r.xorBulk(pt, rec[recordHeader:])
		}
		used = len(pt)
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
		c.rpiece = nil
		used = len(pt)
		if key {
			block, err := aes.NewCipher(pt)
			if err != nil {
				c.rerr = fmt.Errorf("%w: key record: %v", ErrBadRecord, err)
				return 0, c.rerr
			}
			var iv [aes.BlockSize]byte
			c.rpiece = cipher.NewCTR(block, iv[:])
			pt = pt[:0] // nothing of the frame's
		}
	}
	if err := c.r.done(used); err != nil {
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
	c.rpiece = nil
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
