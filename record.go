package hmacauth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hmacauth/hmacauth/internal/netx"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/sys/cpu"
)

// The record layer of ModeIntegrity and ModeSealed; PROTOCOL.md section 9 is
// the specification and these constants must agree with it.
const (
	recordHeaderLen = 4 // type, 24-bit payload length
	recordTagLen    = 16
	recordOverhead  = recordHeaderLen + recordTagLen

	// maxRecordPayload is the largest payload a receiver accepts. It bounds
	// the buffer a peer can make this side allocate.
	maxRecordPayload = 256 << 10
	// defaultRecordSize is the largest payload this side puts in one
	// record: the protocol maximum, which measured fastest and cheapest in
	// CPU on loopback (PROTOCOL.md, 9.5). Buffers grow to it only
	// for connections that write that much at once.
	defaultRecordSize = 256 << 10
	// initialReadBuffer is the receive buffer of a connection that has only
	// seen small records; it grows when a larger record arrives.
	initialReadBuffer = 4<<10 + recordOverhead
	// initialCopyBuffer is the payload ReadFrom first reads into; it
	// doubles while the source fills it.
	initialCopyBuffer = 16 << 10

	recordData      = 1 // application data
	recordClose     = 2 // no more data in this direction (close_notify)
	recordKeyUpdate = 3 // later records in this direction use the next keys

	// keyUpdateBytes is how many payload bytes a sender protects under one
	// key before it moves to the next: 2^36 bytes is 2^32 AES blocks, far
	// inside the AES-GCM confidentiality bound of TLS 1.3 (RFC 8446 5.5)
	// whatever the record size.
	keyUpdateBytes = 1 << 36
	// keyUpdateRecords caps the records under one key, so the 64-bit
	// sequence number never comes near wrapping.
	keyUpdateRecords = 1 << 48

	// maxUselessRecords is how many records that carry no application
	// data (empty data records, key updates) a receiver takes in a row
	// before it refuses the peer, as crypto/tls does: each costs an AEAD
	// open and delivers nothing, so without a cap a peer holding the key
	// could keep a Read busy forever.
	maxUselessRecords = 16

	// closeNotifyTimeout bounds how long Close waits to send the close
	// record to a peer that does not read, as crypto/tls does.
	closeNotifyTimeout = 5 * time.Second

	trafficSecretLen = sha256.Size
)

// hasAESGCMHardware reports whether this CPU runs AES-GCM in constant time
// and fast; where it does not, records use ChaCha20-Poly1305. Same test as
// crypto/tls.
var hasAESGCMHardware = (cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ) ||
	(cpu.ARM64.HasAES && cpu.ARM64.HasPMULL) ||
	(cpu.S390X.HasAES && cpu.S390X.HasAESCBC && cpu.S390X.HasAESCTR && (cpu.S390X.HasGHASH || cpu.S390X.HasAESGCM)) ||
	cpu.PPC64.IsPOWER8

// recordLayer is the record layer of a ModeIntegrity or ModeSealed
// connection: the raw connection, both directions, the parameters the
// handshake settled and the closed state. A Conn installs it once its
// handshake has succeeded and hands it every Read, Write and Close from
// then on; it knows nothing of the handshake.
type recordLayer struct {
	conn net.Conn
	io   io.ReadWriter // conn's reads and writes (netx.SocketIO)
	peer string        // "server" on a client, "client" on a server, for errors

	sealed bool // encrypt payloads (ModeSealed), else MAC only
	chacha bool // ChaCha20-Poly1305 instead of AES-256-GCM
	// Test hooks, zero in production: a smaller record payload than
	// defaultRecordSize, and fewer bytes under one key than keyUpdateBytes.
	testingOnlyRecordSize     int
	testingOnlyKeyUpdateBytes uint64

	in, out halfConn

	// closed is set by shutdown and wipe: each direction is ended, its
	// secrets cleared, as soon as no Read or Write holds it.
	closed atomic.Bool
	// readClosed is set by CloseRead: the end of stream that follows is
	// this side's doing, not a cut by an attacker.
	readClosed atomic.Bool
}

// recordParams is what a record layer starts from.
type recordParams struct {
	client bool // this side is the client: it sends with the c2s keys
	sealed bool // ModeSealed, else ModeIntegrity
	chacha bool // the handshake chose ChaCha20-Poly1305
	// Test hooks, zero in production (see recordLayer).
	testingOnlyRecordSize     int
	testingOnlyKeyUpdateBytes uint64
}

// newRecordLayer returns the record layer of conn, keyed from the session
// secret.
func newRecordLayer(conn net.Conn, session []byte, p recordParams) *recordLayer {
	rl := &recordLayer{
		conn:                      conn,
		io:                        netx.SocketIO(conn),
		peer:                      "client",
		sealed:                    p.sealed,
		chacha:                    p.chacha,
		testingOnlyRecordSize:     p.testingOnlyRecordSize,
		testingOnlyKeyUpdateBytes: p.testingOnlyKeyUpdateBytes,
	}
	out, in := "c2s traffic", "s2c traffic"
	if p.client {
		rl.peer = "server"
	} else {
		out, in = in, out
	}
	rl.out.init(session, out, p.chacha)
	rl.in.init(session, in, p.chacha)
	return rl
}

// recordSize is the largest payload sent in one record.
func (rl *recordLayer) recordSize() int {
	if n := rl.testingOnlyRecordSize; n > 0 && n <= maxRecordPayload {
		return n
	}
	return defaultRecordSize
}

// updateAt is how many payload bytes a sender protects under one key.
func (rl *recordLayer) updateAt() uint64 {
	if n := rl.testingOnlyKeyUpdateBytes; n > 0 {
		return n
	}
	return keyUpdateBytes
}

// halfConn is one direction of the record layer: its keys, its sequence
// number and its buffer. Everything in it is guarded by mu, which is held
// for a whole Read (or Write), so Read and Write never wait for each other.
type halfConn struct {
	mu sync.Mutex

	// err is sticky: an ErrIntegrity or ErrProtocol failure, io.EOF after
	// the peer's close record (read side), or a fatal I/O error.
	err error

	aead   cipher.AEAD
	secret [trafficSecretLen]byte // current traffic secret
	iv     [12]byte
	nonce  [12]byte // scratch, so sealing does not allocate
	seq    uint64   // sequence number of the next record under this key
	used   uint64   // payload bytes protected under this key
	gen    int      // key updates so far
	// useless counts the records in a row that carried no application
	// data (read side).
	useless int

	// buf is allocated on first use, so an idle connection costs nothing.
	// Read side: buf[start:end] holds received bytes not yet opened, and
	// buf[pstart:pend] plaintext not yet delivered. Write side:
	// buf[start:end] is the unsent rest of a record whose first bytes are
	// already on the wire.
	buf          []byte
	start, end   int
	pstart, pend int

	closeSent bool // write side: the close record is sealed

	ctl [recordOverhead]byte // write side: a key update record
}

// init derives the first traffic secret of a direction from the session
// secret.
func (hc *halfConn) init(session []byte, label string, chacha bool) {
	expandLabelTo(hc.secret[:], session, label)
	hc.setKeys(chacha)
}

// setKeys derives the AEAD key and IV from the current traffic secret.
func (hc *halfConn) setKeys(chacha bool) {
	var key [32]byte
	expandLabelTo(key[:], hc.secret[:], "key")
	expandLabelTo(hc.iv[:], hc.secret[:], "iv")
	hc.aead = newRecordAEAD(key[:], chacha)
	clear(key[:])
	hc.seq, hc.used = 0, 0
}

// update moves to the next traffic secret (a key update).
func (hc *halfConn) update(chacha bool) {
	expandLabelTo(hc.secret[:], hc.secret[:], "traffic update")
	hc.gen++
	hc.setKeys(chacha)
}

func newRecordAEAD(key []byte, chacha bool) cipher.AEAD {
	if chacha {
		a, err := chacha20poly1305.New(key)
		if err != nil {
			panic(err) // unreachable: the key has the right size
		}
		return a
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // unreachable: the key has the right size
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		panic(err) // unreachable: AES has a 16-byte block
	}
	return a
}

// nextNonce returns the nonce of record seq: the IV XOR the big-endian
// sequence number, as in TLS 1.3.
func (hc *halfConn) nextNonce() []byte {
	hc.nonce = hc.iv
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], hc.seq)
	for i := range s {
		hc.nonce[4+i] ^= s[i]
	}
	return hc.nonce[:]
}

// putRecordHeader writes a record header.
func putRecordHeader(h []byte, typ byte, n int) {
	h[0] = typ
	h[1], h[2], h[3] = byte(n>>16), byte(n>>8), byte(n)
}

// parseRecordHeader returns the type and payload length of a record header,
// and an error if the length is over maxRecordPayload. The type is checked
// only once the record authenticates.
func parseRecordHeader(h []byte) (typ byte, n int, err error) {
	n = int(h[1])<<16 | int(h[2])<<8 | int(h[3])
	if n > maxRecordPayload {
		return h[0], n, fmt.Errorf("a record header announces %d payload bytes, more than the %d allowed", n, maxRecordPayload)
	}
	return h[0], n, nil
}

// seal protects the record in rec and counts it. The payload is src, or
// if src is nil already at rec[recordHeaderLen:len(rec)-recordTagLen].
func (hc *halfConn) seal(rec []byte, typ byte, sealed bool, src []byte) {
	n := len(rec) - recordOverhead
	putRecordHeader(rec, typ, n)
	nonce := hc.nextNonce()
	body := rec[recordHeaderLen : recordHeaderLen+n]
	if sealed {
		// The header is the additional data; the payload is encrypted
		// from src, or in place.
		if src == nil {
			src = body
		}
		hc.aead.Seal(body[:0], nonce, src, rec[:recordHeaderLen])
	} else {
		if src != nil {
			copy(body, src)
		}
		// Header and payload are the additional data of an empty
		// plaintext: the tag is a GMAC (or Poly1305) of the record.
		hc.aead.Seal(rec[len(rec)-recordTagLen:len(rec)-recordTagLen], nonce, nil, rec[:len(rec)-recordTagLen])
	}
	hc.seq++
	hc.used += uint64(n)
}

// open checks the whole record in rec and returns its type and payload.
// When sealed, the payload is decrypted into dst if it is not nil (the
// AEAD clears dst if the record does not authenticate), else in place. It
// counts the record on success only.
func (hc *halfConn) open(rec []byte, sealed bool, dst []byte) (byte, []byte, error) {
	n := len(rec) - recordOverhead
	nonce := hc.nextNonce()
	var payload []byte
	var err error
	if sealed {
		if dst == nil {
			dst = rec[recordHeaderLen:recordHeaderLen]
		}
		payload, err = hc.aead.Open(dst[:0], nonce, rec[recordHeaderLen:], rec[:recordHeaderLen])
	} else {
		_, err = hc.aead.Open(hc.nonce[:0:0], nonce, rec[recordHeaderLen+n:], rec[:recordHeaderLen+n])
		payload = rec[recordHeaderLen : recordHeaderLen+n]
	}
	if err != nil {
		return 0, nil, err
	}
	hc.seq++
	hc.used += uint64(n)
	return rec[0], payload, nil
}

// needsUpdate reports whether the sender must move to the next key before
// its next record.
func (hc *halfConn) needsUpdate(updateAt uint64) bool {
	return hc.used >= updateAt || hc.seq >= keyUpdateRecords
}

// grow makes buf at least n bytes long, keeping buf[keep:end].
func (hc *halfConn) grow(n, keep, limit int) {
	if len(hc.buf) >= n {
		return
	}
	nb := getBuffer(max(n, min(2*len(hc.buf), limit)))
	hc.end = copy(nb, hc.buf[keep:hc.end])
	hc.start = 0
	hc.putBuffer()
	hc.buf = nb
}

// The buffers of the two sizes every short connection starts with, the
// receive buffer (initialReadBuffer) and the one ReadFrom first reads
// into, are pooled: taken from a sync.Pool when a connection needs one
// and given back when it closes or outgrows it, so that a short
// connection does not allocate them. They are cleared when given back:
// they hold plaintext, and the next connection hands them to its own
// net.Conn and to ReadFrom's reader as Read destinations.
const copyBuffer = recordOverhead + initialCopyBuffer

var (
	readBufPool = sync.Pool{New: func() any { return new([initialReadBuffer]byte) }}
	copyBufPool = sync.Pool{New: func() any { return new([copyBuffer]byte) }}
)

// getBuffer returns a buffer of size bytes, from a pool if size is one of
// the pooled sizes. Every record buffer comes from here, so its length
// tells putBuffer whether it came from a pool.
func getBuffer(size int) []byte {
	switch size {
	case initialReadBuffer:
		return readBufPool.Get().(*[initialReadBuffer]byte)[:]
	case copyBuffer:
		return copyBufPool.Get().(*[copyBuffer]byte)[:]
	}
	return make([]byte, size)
}

// putBuffer drops buf, giving it back to its pool if it came from one.
// hc.mu is held, and nothing reads buf any more.
func (hc *halfConn) putBuffer() {
	switch len(hc.buf) {
	case initialReadBuffer:
		clear(hc.buf)
		readBufPool.Put((*[initialReadBuffer]byte)(hc.buf))
	case copyBuffer:
		clear(hc.buf)
		copyBufPool.Put((*[copyBuffer]byte)(hc.buf))
	}
	hc.buf = nil
}

// errReadAfterClose and errWriteAfterClose are what Read and Write return
// once Close has run. They are single values so that Close does not
// allocate.
var (
	errReadAfterClose  = fmt.Errorf("hmacauth: read after Close: %w", net.ErrClosed)
	errWriteAfterClose = fmt.Errorf("hmacauth: write after Close: %w", net.ErrClosed)
)

// shutdown and wipe end each direction of the record layer and clear its
// keys, but must neither wait for nor race with a Read or Write in
// progress on another goroutine (Close is what breaks it). So they set
// rl.closed and end a direction only if they can take its lock at once
// (TryLock); the Read or Write that held the lock then ends it as it
// unlocks. Since rl.closed is set before the TryLock and a holder checks
// it after its Unlock, one of the two always does it.

// unlockIn and unlockOut release a direction's lock after a Read or a
// Write, ending the direction if the record layer was closed meanwhile.
func (rl *recordLayer) unlockIn() {
	rl.in.mu.Unlock()
	if rl.closed.Load() && rl.in.mu.TryLock() {
		rl.in.endRead()
		rl.in.mu.Unlock()
	}
}

func (rl *recordLayer) unlockOut() {
	rl.out.mu.Unlock()
	if rl.closed.Load() && rl.out.mu.TryLock() {
		rl.out.endWrite()
		rl.out.mu.Unlock()
	}
}

// endRead, at Close, ends the read side: later Reads fail without touching
// the buffer or the keys. It gives the buffer back to its pool and clears
// the keys. hc.mu is held.
func (hc *halfConn) endRead() {
	hc.err = errReadAfterClose // whatever ended reading before, Close is the reason now
	hc.putBuffer()
	hc.start, hc.end, hc.pstart, hc.pend = 0, 0, 0, 0
	hc.clearKeys()
}

// endWrite, at Close, ends the write side and clears its keys. hc.mu is
// held.
func (hc *halfConn) endWrite() {
	hc.err = errWriteAfterClose
	hc.putBuffer()
	hc.start, hc.end = 0, 0
	hc.clearKeys()
}

// tryEnd ends a direction with end unless a Read or Write holds it (see
// unlockIn).
func (hc *halfConn) tryEnd(end func(*halfConn)) {
	if hc.mu.TryLock() {
		end(hc)
		hc.mu.Unlock()
	}
}

// wipe ends both directions and clears their secrets without sending the
// close record, for a Conn closed while its handshake ran.
func (rl *recordLayer) wipe() {
	rl.closed.Store(true)
	rl.in.tryEnd((*halfConn).endRead)
	rl.out.tryEnd((*halfConn).endWrite)
}

// clearKeys overwrites the traffic secret and IV with zeros and drops the
// AEAD. The AEAD's own copy of the key (inside crypto/aes or
// chacha20poly1305) cannot be cleared; it is left to the garbage collector.
func (hc *halfConn) clearKeys() {
	clear(hc.secret[:])
	clear(hc.iv[:])
	clear(hc.nonce[:])
	hc.aead = nil
}

// integrityError makes the sticky error of a record that failed its check.
func (rl *recordLayer) integrityError(format string, args ...any) error {
	return errorf(ErrIntegrity, "from the %s at %s: "+format+"; the connection is no longer usable", append([]any{rl.peer, rl.conn.RemoteAddr()}, args...)...)
}

// Read reads application data.
func (rl *recordLayer) Read(b []byte) (int, error) {
	hc := &rl.in
	hc.mu.Lock()
	defer rl.unlockIn()
	for {
		if hc.pstart < hc.pend {
			n := copy(b, hc.buf[hc.pstart:hc.pend])
			hc.pstart += n
			return n, nil
		}
		if hc.err != nil {
			return 0, hc.err
		}
		if len(b) == 0 {
			return 0, nil
		}
		n, err := rl.readRecord(b)
		if n > 0 || err != nil {
			return n, err
		}
	}
}

// readRecord reads and opens the next record. A sealed data record whose
// payload fits in dst is decrypted straight into it, saving a copy, and its
// length returned; otherwise the payload is left in buf[pstart:pend]. I/O
// errors, timeouts in particular, leave the bytes received so far in place,
// so the next call resumes the record.
func (rl *recordLayer) readRecord(dst []byte) (int, error) {
	hc := &rl.in
	if hc.buf == nil {
		hc.buf = getBuffer(initialReadBuffer)
	}
	if err := rl.fill(recordHeaderLen); err != nil {
		return 0, err
	}
	typ, n, err := parseRecordHeader(hc.buf[hc.start:])
	if err != nil {
		hc.err = rl.integrityError("%v", err)
		return 0, hc.err
	}
	total := recordOverhead + n
	if err := rl.fill(total); err != nil {
		return 0, err
	}
	rec := hc.buf[hc.start : hc.start+total]
	seq := hc.seq
	if !rl.sealed || len(dst) < n || typ != recordData {
		dst = nil
	}
	typ, payload, err := hc.open(rec, rl.sealed, dst)
	if err != nil {
		hc.err = rl.integrityError("record %d (generation %d) failed authentication: it was altered, dropped, reordered, replayed, reflected or injected in transit", seq, hc.gen)
		return 0, hc.err
	}
	off := hc.start + recordHeaderLen
	hc.start += total
	if hc.start == hc.end {
		hc.start, hc.end = 0, 0
	}
	if typ == recordData && len(payload) > 0 {
		hc.useless = 0
	} else if typ == recordData || typ == recordKeyUpdate {
		if hc.useless++; hc.useless > maxUselessRecords {
			hc.err = errorf(ErrProtocol, "the %s sent more than %d records in a row without application data (empty data records or key updates)", rl.peer, maxUselessRecords)
			return 0, hc.err
		}
	}
	switch typ {
	case recordData:
		if dst != nil {
			return len(payload), nil
		}
		hc.pstart, hc.pend = off, off+len(payload)
	case recordClose:
		if len(payload) != 0 {
			hc.err = errorf(ErrProtocol, "the %s sent a close record with a payload", rl.peer)
			return 0, hc.err
		}
		hc.err = io.EOF
	case recordKeyUpdate:
		if len(payload) != 0 {
			hc.err = errorf(ErrProtocol, "the %s sent a key update record with a payload", rl.peer)
			return 0, hc.err
		}
		hc.update(rl.chacha)
	default:
		hc.err = errorf(ErrProtocol, "the %s sent a record of unknown type %d", rl.peer, typ)
		return 0, hc.err
	}
	return 0, nil
}

// fill reads until buf[start:] holds at least n bytes, n being at most a
// whole record.
func (rl *recordLayer) fill(n int) error {
	hc := &rl.in
	if hc.start+n > len(hc.buf) {
		hc.grow(n, hc.start, recordOverhead+maxRecordPayload)
		if hc.start+n > len(hc.buf) {
			// Big enough, but the record starts too far in: move
			// it to the front.
			hc.end = copy(hc.buf, hc.buf[hc.start:hc.end])
			hc.start = 0
		}
	}
	for hc.end-hc.start < n {
		k, err := rl.io.Read(hc.buf[hc.end:])
		hc.end += k
		if err == nil {
			continue
		}
		if hc.end-hc.start >= n {
			return nil // report the error on the next read
		}
		if errors.Is(err, io.EOF) {
			if rl.readClosed.Load() {
				hc.err = fmt.Errorf("hmacauth: read after CloseRead: %w", net.ErrClosed)
				return hc.err
			}
			if hc.end == hc.start {
				hc.err = rl.integrityError("the connection ended without a close record: the stream was cut (%w)", io.ErrUnexpectedEOF)
			} else {
				hc.err = rl.integrityError("the connection ended in the middle of record %d: the stream was cut (%w)", hc.seq, io.ErrUnexpectedEOF)
			}
			return hc.err
		}
		return err
	}
	return nil
}

// Write writes application data.
func (rl *recordLayer) Write(b []byte) (int, error) {
	hc := &rl.out
	hc.mu.Lock()
	defer rl.unlockOut()
	if err := rl.writeReady(); err != nil {
		return 0, err
	}
	n := 0
	for len(b) > 0 {
		m := min(len(b), rl.recordSize())
		hc.grow(recordOverhead+m, 0, recordOverhead+rl.recordSize())
		sent, err := rl.writeRecord(recordData, b[:m], m, true)
		if sent {
			n += m
			b = b[m:]
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// writeReady sends what is left of a record that a deadline interrupted
// and checks that the write side is still open. rl.out.mu is held.
func (rl *recordLayer) writeReady() error {
	hc := &rl.out
	if hc.err != nil {
		return hc.err
	}
	if err := rl.flush(); err != nil {
		return err
	}
	if hc.closeSent {
		return fmt.Errorf("hmacauth: write after CloseWrite or Close: %w", net.ErrClosed)
	}
	return nil
}

// flush writes buf[start:end], the unsent rest of a record.
func (rl *recordLayer) flush() error {
	hc := &rl.out
	for hc.start < hc.end {
		k, err := rl.io.Write(hc.buf[hc.start:hc.end])
		hc.start += k
		if err != nil {
			return hc.fail(err)
		}
	}
	hc.start, hc.end = 0, 0
	return nil
}

// writeRecord seals and sends a record of type typ with n payload bytes,
// taken from src, or if src is nil already at buf[recordHeaderLen:], after
// a key update if one is due. It reports whether the record counts as
// sent: once its first byte is on the wire it does, and the rest goes out
// with the next write if a deadline cuts it. If not a single byte left and
// mayUndo is set, the record is forgotten and its sequence number reused:
// safe, because its ciphertext never left this process.
func (rl *recordLayer) writeRecord(typ byte, src []byte, n int, mayUndo bool) (bool, error) {
	hc := &rl.out
	if hc.needsUpdate(rl.updateAt()) {
		if err := rl.writeKeyUpdate(); err != nil {
			return false, err
		}
	}
	rec := hc.buf[:recordOverhead+n]
	hc.seal(rec, typ, rl.sealed, src)
	return rl.send(rec, n, mayUndo, false)
}

// send writes rec, a record with n payload bytes just sealed in buf, or in
// ctl if control is set; sent and mayUndo are as for writeRecord. The rest
// of a record cut by a deadline stays in buf for flush; that of a control
// record must go before anything else, so it takes buf's place, and a
// payload waiting there is given up: the caller has not counted it as
// written.
func (rl *recordLayer) send(rec []byte, n int, mayUndo, control bool) (sent bool, err error) {
	hc := &rl.out
	k, err := rl.io.Write(rec)
	if err == nil {
		return true, nil
	}
	if k == 0 && mayUndo && writesAllOrReports(rl.conn) {
		hc.seq--
		hc.used -= uint64(n)
		return false, hc.fail(err)
	}
	if control {
		hc.grow(len(rec)-k, hc.end, recordOverhead) // keeps nothing
		hc.start, hc.end = 0, copy(hc.buf, rec[k:])
	} else {
		hc.start, hc.end = k, len(rec)
	}
	return true, hc.fail(err)
}

// fail returns err, after making it this direction's sticky error unless
// it is a deadline, which leaves the connection usable.
func (hc *halfConn) fail(err error) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		hc.err = err
	}
	return err
}

// writeKeyUpdate sends a key update record and moves to the next key.
func (rl *recordLayer) writeKeyUpdate() error {
	sent, err := rl.writeControl(recordKeyUpdate, true)
	if sent {
		rl.out.update(rl.chacha)
	}
	return err
}

// writeControl seals and sends a record without payload, a key update or
// the close record, in its own small buffer (ctl): a payload waiting in buf
// stays where it is, and a connection that never wrote needs no buffer to
// close. sent and mayUndo are as for writeRecord.
func (rl *recordLayer) writeControl(typ byte, mayUndo bool) (sent bool, err error) {
	rec := rl.out.ctl[:]
	rl.out.seal(rec, typ, rl.sealed, nil)
	return rl.send(rec, 0, mayUndo, true)
}

// writesAllOrReports reports whether a Write on conn that returns 0 has
// certainly sent nothing, as for the kernel's sockets. Only then may a
// record's sequence number be reused: on any other net.Conn (a user's
// buffering wrapper, say) the bytes might still go out, and a reused
// sequence number would reuse an AEAD nonce.
func writesAllOrReports(conn net.Conn) bool {
	switch conn.(type) {
	case *net.TCPConn, *net.UnixConn:
		return true
	}
	return false
}

// closeRecordWrite sends the close record once. rl.out.mu is held.
func (rl *recordLayer) closeRecordWrite() error {
	hc := &rl.out
	if hc.closeSent {
		if hc.err != nil {
			return hc.err
		}
		return rl.flush() // the rest of a close record that a deadline cut
	}
	if err := rl.writeReady(); err != nil {
		return err
	}
	if hc.needsUpdate(rl.updateAt()) {
		if err := rl.writeKeyUpdate(); err != nil {
			return err
		}
	}
	sent, err := rl.writeControl(recordClose, false)
	if sent {
		// Even cut short by a deadline, the close record is on its way:
		// no data may follow it.
		hc.closeSent = true
		if hc.start == hc.end {
			// All sent: nothing uses the buffer any more.
			hc.putBuffer()
		}
	}
	return err
}

// ReadFrom reads from r until EOF or an error and sends it as data
// records. It reads straight into the record buffer, saving a copy.
func (rl *recordLayer) ReadFrom(r io.Reader) (int64, error) {
	hc := &rl.out
	hc.mu.Lock()
	defer rl.unlockOut()
	if err := rl.writeReady(); err != nil {
		return 0, err
	}
	// Read into as much buffer as the connection already has, at least
	// initialCopyBuffer, and double it each time a read fills it: a short
	// connection then never allocates a whole record, a bulk one reaches
	// full-size records within a few reads.
	limit := rl.recordSize()
	size := min(max(initialCopyBuffer, len(hc.buf)-recordOverhead), limit)
	var total int64
	for {
		// A key update goes first: if it fails, no byte taken from r
		// is lost with it.
		if hc.needsUpdate(rl.updateAt()) {
			if err := rl.writeKeyUpdate(); err != nil {
				return total, err
			}
		}
		hc.grow(recordOverhead+size, 0, recordOverhead+limit)
		m, rerr := r.Read(hc.buf[recordHeaderLen : recordHeaderLen+size])
		if m == size {
			size = min(2*size, limit)
		}
		if m > 0 {
			sent, err := rl.writeRecord(recordData, nil, m, false)
			if sent {
				total += int64(m)
			}
			if err != nil {
				return total, err
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// WriteTo writes the data received, until the peer's close record, to w.
// It hands each record's payload to w straight from the record buffer.
func (rl *recordLayer) WriteTo(w io.Writer) (int64, error) {
	hc := &rl.in
	hc.mu.Lock()
	defer rl.unlockIn()
	var total int64
	for {
		if hc.pstart < hc.pend {
			m, err := w.Write(hc.buf[hc.pstart:hc.pend])
			hc.pstart += m
			total += int64(m)
			if err != nil {
				return total, err
			}
			continue
		}
		if hc.err == io.EOF {
			return total, nil
		}
		if hc.err != nil {
			return total, hc.err
		}
		if _, err := rl.readRecord(nil); err != nil {
			return total, err // a close record is not an error: it sets hc.err to io.EOF
		}
	}
}

// closeWrite sends the close record, for CloseWrite.
func (rl *recordLayer) closeWrite() error {
	rl.out.mu.Lock()
	defer rl.unlockOut()
	return rl.closeRecordWrite()
}

// setReadClosed records that CloseRead shut down the reading side.
func (rl *recordLayer) setReadClosed() { rl.readClosed.Store(true) }

// shutdown sends the close record, by writeDeadline (zero: none) or within
// closeNotifyTimeout, unless a Write is in progress on another goroutine:
// then Close is breaking that Write, and must not wait for it. It ends both
// directions as wipe does.
func (rl *recordLayer) shutdown(writeDeadline time.Time) error {
	rl.closed.Store(true)
	rl.in.tryEnd((*halfConn).endRead)
	hc := &rl.out
	if !hc.mu.TryLock() {
		return nil
	}
	defer hc.mu.Unlock()
	defer hc.endWrite()
	if hc.err != nil {
		return nil
	}
	rl.conn.SetWriteDeadline(netx.Earliest(writeDeadline, time.Now().Add(closeNotifyTimeout)))
	if err := rl.closeRecordWrite(); err != nil {
		return fmt.Errorf("hmacauth: sending the close record (the connection was closed anyway): %w", err)
	}
	return nil
}
