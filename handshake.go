package hmacauth

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// The wire format; PROTOCOL.md is the specification and these constants must
// agree with it.
const (
	protocolLabel = "hmacauth/1"
	magic         = "hmacauth"
	version1      = 1

	msgClientHello    = 1
	msgServerHello    = 2
	msgClientFinished = 3

	headerLen = len(magic) + 2 // magic, version, message type
	nonceLen  = 32
	macLen    = sha256.Size
	shareLen  = 32 // X25519 public key

	// ClientHello: header, mode, flags, key ID length, key ID padded with
	// zeros to MaxKeyIDLen, client nonce, MAC.
	clientHelloLen = headerLen + 3 + MaxKeyIDLen + nonceLen + macLen
	// ServerHello: header, mode, flags, server nonce, server share, MAC.
	serverHelloLen = headerLen + 2 + nonceLen + shareLen + macLen
	// ClientFinished: type, client share, MAC.
	clientFinishedLen = 1 + shareLen + macLen

	transcriptLen = clientHelloLen + serverHelloLen + clientFinishedLen
)

// Flag bits of the ClientHello and ServerHello flags byte.
const (
	flagForwardSecrecy = 1 << 0 // ephemeral X25519 shares are exchanged
	flagChaCha20       = 1 << 1 // records use ChaCha20-Poly1305, not AES-256-GCM
	knownFlags         = flagForwardSecrecy | flagChaCha20
)

// modeMax is the highest mode this implementation knows.
const modeMax = ModeSealed

// clientHello is a parsed ClientHello, before its MAC is checked.
type clientHello struct {
	mode  Mode
	flags byte
	keyID string
	nonce []byte
	mac   []byte
}

// checkHeader checks the start of a handshake message, up to its first
// headerLen bytes, and tells a foreign protocol, a future version and a
// wrong message apart. Fewer bytes are checked as far as they go, so that a
// peer is refused at its first byte that no header has.
func checkHeader(b []byte, want byte, msgName string) error {
	if n := min(len(b), len(magic)); !bytes.Equal(b[:n], []byte(magic[:n])) {
		return errorf(ErrProtocol, "expected a %s, got %s: the peer does not speak hmacauth", msgName, describeBytes(b))
	}
	if len(b) > len(magic) {
		if v := b[len(magic)]; v != version1 {
			return errorf(ErrProtocol, "the peer speaks hmacauth version %d, this side speaks version %d; upgrade the older side", v, version1)
		}
	}
	if len(b) > len(magic)+1 {
		if t := b[len(magic)+1]; t != want {
			return errorf(ErrProtocol, "expected a %s (message type %d), got message type %d", msgName, want, t)
		}
	}
	return nil
}

// readHeader reads into b until it holds at least a whole header, and
// checks the bytes as they arrive: a peer that sends anything else is
// refused at its first read, not left waiting for 10 bytes it may never
// send (PostgreSQL's 8-byte SSLRequest waits for an answer). It returns the
// number of bytes read and either an ErrProtocol error for a wrong header
// or the read's own error.
func readHeader(r io.Reader, b []byte, want byte, msgName string) (int, error) {
	n := 0
	for n < headerLen {
		m, err := r.Read(b[n:])
		n += m
		if m > 0 {
			if herr := checkHeader(b[:n], want, msgName); herr != nil {
				return n, herr
			}
		}
		if err != nil {
			if n >= headerLen {
				return n, nil
			}
			return n, err
		}
	}
	return n, nil
}

// describeBytes renders the start of unexpected peer bytes for an error
// message, quoted and bounded so the peer cannot flood the log.
func describeBytes(b []byte) string {
	const shown = 16
	if len(b) > shown {
		return strconv.QuoteToASCII(string(b[:shown])) + "..."
	}
	return strconv.QuoteToASCII(string(b))
}

// parseClientHello parses a whole ClientHello. It does not check the MAC.
func parseClientHello(b []byte) (clientHello, error) {
	if len(b) != clientHelloLen {
		return clientHello{}, errorf(ErrProtocol, "ClientHello has %d bytes, want %d", len(b), clientHelloLen)
	}
	if err := checkHeader(b, msgClientHello, "ClientHello"); err != nil {
		return clientHello{}, err
	}
	p := b[headerLen:]
	m := clientHello{mode: Mode(p[0]), flags: p[1]}
	n := int(p[2])
	idField := p[3 : 3+MaxKeyIDLen]
	if n < 1 || n > MaxKeyIDLen {
		return clientHello{}, errorf(ErrProtocol, "ClientHello key ID length is %d, want 1 to %d", n, MaxKeyIDLen)
	}
	for _, c := range idField[n:] {
		if c != 0 {
			return clientHello{}, errorf(ErrProtocol, "ClientHello key ID padding is not zero")
		}
	}
	id := idField[:n]
	if err := checkKeyID(string(id)); err != nil {
		return clientHello{}, errorf(ErrProtocol, "ClientHello names an invalid key ID %s", describeBytes(id))
	}
	m.keyID = string(id)
	p = p[3+MaxKeyIDLen:]
	m.nonce = p[:nonceLen]
	m.mac = p[nonceLen:]
	if m.mode > modeMax {
		return m, errorf(ErrProtocol, "client asks for mode %d, which this server does not know", uint8(m.mode))
	}
	return m, nil
}

// serverHello is a parsed ServerHello, before its MAC is checked.
type serverHello struct {
	mode  Mode
	flags byte
	nonce []byte
	share []byte
	mac   []byte
}

// parseServerHello parses a whole ServerHello. It does not check the MAC.
func parseServerHello(b []byte) (serverHello, error) {
	if len(b) != serverHelloLen {
		return serverHello{}, errorf(ErrProtocol, "ServerHello has %d bytes, want %d", len(b), serverHelloLen)
	}
	if err := checkHeader(b, msgServerHello, "ServerHello"); err != nil {
		return serverHello{}, err
	}
	p := b[headerLen:]
	return serverHello{
		mode:  Mode(p[0]),
		flags: p[1],
		nonce: p[2 : 2+nonceLen],
		share: p[2+nonceLen : 2+nonceLen+shareLen],
		mac:   p[2+nonceLen+shareLen:],
	}, nil
}

// clientFinished is a parsed ClientFinished, before its MAC is checked.
type clientFinished struct {
	share []byte
	mac   []byte
}

// parseClientFinished parses a whole ClientFinished. It does not check the MAC.
func parseClientFinished(b []byte) (clientFinished, error) {
	if len(b) != clientFinishedLen {
		return clientFinished{}, errorf(ErrProtocol, "ClientFinished has %d bytes, want %d", len(b), clientFinishedLen)
	}
	if b[0] != msgClientFinished {
		return clientFinished{}, errorf(ErrProtocol, "expected a ClientFinished (message type %d), got %s", msgClientFinished, describeBytes(b[:1]))
	}
	return clientFinished{share: b[1 : 1+shareLen], mac: b[1+shareLen:]}, nil
}

// hsParams is what one side asks of a connection.
type hsParams struct {
	mode   Mode // the least this side accepts
	fs     bool // this side wants forward secrecy
	chacha bool // this side has no AES hardware: records use ChaCha20-Poly1305
	// progress, if set, is called by the server once the ClientHello has
	// passed its check, for a Listener's eviction order (acceptor.Progress).
	progress func()
}

// hsResult is what a successful handshake established.
type hsResult struct {
	keyID  string
	mode   Mode
	flags  byte
	secret []byte // session secret; see "Key schedule" in PROTOCOL.md
}

// handshake holds one handshake's transcript and key share.
type handshake struct {
	rand       io.Reader // nonces and ephemeral keys; crypto/rand unless testing
	transcript [transcriptLen]byte

	// shares, if not nil, provides a key share reused across handshakes for
	// shareLifetime; else the handshake makes its own key, priv.
	shares        *keyShares
	shareLifetime time.Duration
	reused        *keyShare
	priv          *ecdh.PrivateKey

	// owner, if not nil, is the Config this handshake runs with: a client
	// records its nonce under it (clientNonces), a server refuses a
	// ClientHello that carries a nonce recorded under it.
	owner *Config
}

// clientNonces maps the client nonce of every client handshake in flight
// in this process to the Config it runs with. A server handshake that
// receives a nonce of its own Config has been sent that Config's
// ClientHello: a connection redirected back to the process that dialed
// it, which would otherwise complete, since the process holds the key on
// both ends (PROTOCOL.md section 10, "Selfie"). The check is per Config,
// so that two Configs of one process that share a key can still connect
// to each other; the map is not a field of Config so that a copy of a
// Config is another Config here too. Nonces are 32 random bytes: entries
// of different handshakes never collide.
var clientNonces sync.Map // [nonceLen]byte -> *Config

// serverNonces holds the client nonces of the server handshakes in flight
// in this process (PROTOCOL.md 7.2, step 3): a ClientHello is sent once,
// so a second one with the nonce of a handshake still running is a replay,
// whichever listener of the process it reaches.
var serverNonces sync.Map // [nonceLen]byte -> struct{}

// ownClientNonce reports whether nonce is that of a client handshake in
// flight with cfg.
func ownClientNonce(nonce []byte, cfg *Config) bool {
	owner, ok := clientNonces.Load([nonceLen]byte(nonce))
	return ok && owner.(*Config) == cfg
}

// clientNonce returns the client nonce in the ClientHello of h.
func (h *handshake) clientNonce() []byte {
	const off = headerLen + 3 + MaxKeyIDLen
	return h.ch()[off : off+nonceLen]
}

func (h *handshake) ch() []byte { return h.transcript[:clientHelloLen] }
func (h *handshake) sh() []byte { return h.transcript[clientHelloLen : clientHelloLen+serverHelloLen] }
func (h *handshake) cf() []byte { return h.transcript[clientHelloLen+serverHelloLen:] }

func (h *handshake) random(b []byte) error {
	if h.rand == nil {
		rand.Read(b) // never fails; see crypto/rand.Read
		return nil
	}
	_, err := io.ReadFull(h.rand, b)
	return err
}

// share writes this side's X25519 public key to dst: the key share of
// h.shares, or a new key for this handshake alone.
func (h *handshake) share(dst []byte) error {
	if h.shares != nil {
		share, err := h.shares.get(h.shareLifetime)
		if err != nil {
			return err
		}
		h.reused = share
		copy(dst, share.priv.PublicKey().Bytes())
		return nil
	}
	var seed [32]byte
	if err := h.random(seed[:]); err != nil {
		return err
	}
	priv, err := ecdh.X25519().NewPrivateKey(seed[:])
	if err != nil {
		return err
	}
	h.priv = priv
	copy(dst, priv.PublicKey().Bytes())
	return nil
}

// sharedSecret runs X25519 with the peer's public key.
func (h *handshake) sharedSecret(peer []byte) ([]byte, error) {
	if h.reused != nil {
		return h.reused.sharedSecret(peer)
	}
	return x25519(h.priv, peer)
}

func isZero(b []byte) bool { return subtle.ConstantTimeCompare(b, make([]byte, len(b))) == 1 }

// writeClientHello fills the ClientHello for key sched.
func (h *handshake) writeClientHello(sched *keySchedule, p hsParams) error {
	b := h.ch()
	copy(b, magic)
	b[len(magic)] = version1
	b[len(magic)+1] = msgClientHello
	q := b[headerLen:]
	q[0] = byte(p.mode)
	q[1] = clientFlags(p)
	q[2] = byte(len(sched.id))
	copy(q[3:3+MaxKeyIDLen], sched.id)
	q = q[3+MaxKeyIDLen:]
	if err := h.random(q[:nonceLen]); err != nil {
		return err
	}
	mac(q[nonceLen:nonceLen], &sched.hello, b[:clientHelloLen-macLen])
	return nil
}

// readClientHello checks the ClientHello in h.ch() and finds its key.
// On error, the returned claimed key ID is the one the client named, if any.
func (h *handshake) readClientHello(keys *keySet) (clientHello, *keySchedule, error) {
	b := h.ch()
	m, err := parseClientHello(b)
	if err != nil {
		return m, nil, err
	}
	// The MAC is computed even for an unknown key ID, with another key, so
	// that the time to refuse does not tell a stranger which IDs exist.
	sched := keys.byID[m.keyID]
	key := &keys.first.hello
	if sched != nil {
		key = &sched.hello
	}
	var want [macLen]byte
	ok := hmac.Equal(mac(want[:0], key, b[:clientHelloLen-macLen]), m.mac)
	switch {
	case sched == nil:
		return m, nil, errorf(ErrAuthFailed, "client names key ID %q, which this server does not have", m.keyID)
	case !ok:
		return m, nil, errorf(ErrAuthFailed, "client's ClientHello MAC for key ID %q is wrong: it holds a different secret", m.keyID)
	}
	return m, sched, nil
}

func clientFlags(p hsParams) byte {
	var f byte
	if p.fs {
		f |= flagForwardSecrecy
	}
	if p.chacha {
		f |= flagChaCha20
	}
	return f
}

// writeServerHello chooses the connection's parameters and fills the
// ServerHello. The connection runs at the stronger of both sides' modes and
// uses forward secrecy if either side asks for it, and ChaCha20-Poly1305
// rather than AES-256-GCM if either side lacks AES hardware.
func (h *handshake) writeServerHello(sched *keySchedule, ch clientHello, p hsParams) (serverHello, error) {
	m := serverHello{mode: max(ch.mode, p.mode)}
	if ch.flags&flagForwardSecrecy != 0 || p.fs {
		m.flags |= flagForwardSecrecy
	}
	if ch.flags&flagChaCha20 != 0 || p.chacha {
		m.flags |= flagChaCha20
	}
	b := h.sh()
	copy(b, magic)
	b[len(magic)] = version1
	b[len(magic)+1] = msgServerHello
	q := b[headerLen:]
	q[0], q[1] = byte(m.mode), m.flags
	q = q[2:]
	if err := h.random(q[:nonceLen]); err != nil {
		return m, err
	}
	if m.flags&flagForwardSecrecy != 0 {
		if err := h.share(q[nonceLen : nonceLen+shareLen]); err != nil {
			return m, err
		}
	}
	mac(q[nonceLen+shareLen:nonceLen+shareLen], &sched.serverHello, h.ch(), b[:serverHelloLen-macLen])
	return m, nil
}

// readServerHello checks the ServerHello in h.sh() against what the client asked.
func (h *handshake) readServerHello(sched *keySchedule, p hsParams) (serverHello, error) {
	b := h.sh()
	m, err := parseServerHello(b)
	if err != nil {
		return m, err
	}
	var want [macLen]byte
	if !hmac.Equal(mac(want[:0], &sched.serverHello, h.ch(), b[:serverHelloLen-macLen]), m.mac) {
		return m, errorf(ErrAuthFailed, "the server did not prove key %q: it holds a different secret for that ID, or it is not the server you meant", sched.id)
	}
	switch {
	case m.flags&^knownFlags != 0:
		return m, errorf(ErrProtocol, "ServerHello sets unknown flags %#02x", m.flags&^knownFlags)
	case m.mode > modeMax:
		return m, errorf(ErrProtocol, "server chose mode %d, which this client does not know (it knows modes 0 to %d): the server is newer than this client, or broken", uint8(m.mode), uint8(modeMax))
	case m.mode < p.mode:
		return m, errorf(ErrProtocol, "server chose %v, but this client asked for at least %v", m.mode, p.mode)
	case p.fs && m.flags&flagForwardSecrecy == 0:
		return m, errorf(ErrProtocol, "server did not agree to forward secrecy, which this client asked for")
	case p.chacha && m.flags&flagChaCha20 == 0:
		return m, errorf(ErrProtocol, "server chose AES-256-GCM records, but this client has no AES hardware and asked for ChaCha20-Poly1305")
	case m.flags&flagForwardSecrecy == 0 && !isZero(m.share):
		return m, errorf(ErrProtocol, "ServerHello carries a key share without forward secrecy")
	}
	return m, nil
}

// writeClientFinished fills the ClientFinished and returns the DH secret.
func (h *handshake) writeClientFinished(sched *keySchedule, sh serverHello) ([]byte, error) {
	b := h.cf()
	b[0] = msgClientFinished
	var dh []byte
	if sh.flags&flagForwardSecrecy != 0 {
		if err := h.share(b[1 : 1+shareLen]); err != nil {
			return nil, err
		}
		var err error
		if dh, err = h.sharedSecret(sh.share); err != nil {
			return nil, err
		}
	}
	mac(b[1+shareLen:1+shareLen], &sched.clientFin, h.ch(), h.sh(), b[:clientFinishedLen-macLen])
	return dh, nil
}

// readClientFinished checks the ClientFinished in h.cf() and returns the DH secret.
func (h *handshake) readClientFinished(sched *keySchedule, sh serverHello) ([]byte, error) {
	b := h.cf()
	m, err := parseClientFinished(b)
	if err != nil {
		return nil, err
	}
	var want [macLen]byte
	if !hmac.Equal(mac(want[:0], &sched.clientFin, h.ch(), h.sh(), b[:clientFinishedLen-macLen]), m.mac) {
		return nil, errorf(ErrAuthFailed, "client's proof for key ID %q is wrong (a replayed ClientHello?)", sched.id)
	}
	if sh.flags&flagForwardSecrecy == 0 {
		if !isZero(m.share) {
			return nil, errorf(ErrProtocol, "ClientFinished carries a key share without forward secrecy")
		}
		return nil, nil
	}
	return h.sharedSecret(m.share)
}

// runClient runs the client side of the handshake on rw.
func (h *handshake) runClient(rw io.ReadWriter, sched *keySchedule, p hsParams) (hsResult, error) {
	if err := h.writeClientHello(sched, p); err != nil {
		return hsResult{}, err
	}
	if h.owner != nil {
		// For the rest of the client handshake: a reflected ClientHello
		// reaches this Config's server before the ServerHello comes back.
		nonce := [nonceLen]byte(h.clientNonce())
		clientNonces.Store(nonce, h.owner)
		defer clientNonces.Delete(nonce)
	}
	if _, err := rw.Write(h.ch()); err != nil {
		return hsResult{}, ioError("sending the ClientHello", err)
	}
	err := readMessage(rw, h.sh(), msgServerHello, "ServerHello", func(n int) error {
		switch {
		case n == 0:
			return errorf(ErrAuthFailed, "the server closed the connection without a word: closed during the handshake (wrong key, shed, or the server stopping); check that it has key ID %q with the same secret", sched.id)
		case n < headerLen:
			return errorf(ErrProtocol, "the server sent %s and closed: it does not speak hmacauth", describeBytes(h.sh()[:n]))
		}
		return errorf(ErrProtocol, "the server closed the connection in the middle of its ServerHello")
	})
	if err != nil {
		return hsResult{}, err
	}
	sh, err := h.readServerHello(sched, p)
	if err != nil {
		return hsResult{}, err
	}
	dh, err := h.writeClientFinished(sched, sh)
	if err != nil {
		return hsResult{}, err
	}
	if _, err := rw.Write(h.cf()); err != nil {
		return hsResult{}, ioError("sending the ClientFinished", err)
	}
	return hsResult{keyID: sched.id, mode: sh.mode, flags: sh.flags, secret: sessionSecret(sched, h.transcript[:], dh)}, nil
}

// runServer runs the server side of the handshake on rw. On failure the
// result still carries the key ID the client claimed, for the logs.
func (h *handshake) runServer(rw io.ReadWriter, keys *keySet, p hsParams) (hsResult, error) {
	err := readMessage(rw, h.ch(), msgClientHello, "ClientHello", func(n int) error {
		return errorf(ErrProtocol, "the client closed the connection after %d bytes, before a whole ClientHello", n)
	})
	if err != nil {
		return hsResult{}, err
	}
	ch, sched, err := h.readClientHello(keys)
	if err != nil {
		return hsResult{keyID: ch.keyID}, err
	}
	res := hsResult{keyID: ch.keyID}
	if h.owner != nil && ownClientNonce(ch.nonce, h.owner) {
		return res, errorf(ErrAuthFailed, "the ClientHello for key ID %q is one this Config's own client sent, in a handshake still in flight: a connection this process dialed was sent back to it (reflection); a client and a server in one process that mean to connect need a Config each", ch.keyID)
	}
	// A second ClientHello with the nonce of a server handshake in flight
	// is a replay, which can never finish: refused before it counts as
	// progress, so that replays of one recorded ClientHello cannot hold
	// the handshake slots a Listener keeps for clients that progress.
	nonce := [nonceLen]byte(ch.nonce)
	if _, replayed := serverNonces.LoadOrStore(nonce, struct{}{}); replayed {
		return res, errorf(ErrAuthFailed, "the ClientHello for key ID %q carries the client nonce of a handshake still in flight: a replay of a recorded ClientHello", ch.keyID)
	}
	defer serverNonces.Delete(nonce)
	if p.progress != nil {
		p.progress()
	}
	sh, err := h.writeServerHello(sched, ch, p)
	if err != nil {
		return res, err
	}
	if _, err := rw.Write(h.sh()); err != nil {
		return res, ioError("sending the ServerHello", err)
	}
	err = readMessage(rw, h.cf(), msgClientFinished, "ClientFinished", func(int) error {
		return errorf(ErrAuthFailed, "the client closed the connection instead of proving key %q: it did not accept this server's proof (different secret?), or it replayed a ClientHello", ch.keyID)
	})
	if err != nil {
		return res, err
	}
	dh, err := h.readClientFinished(sched, sh)
	if err != nil {
		return res, err
	}
	res.mode, res.flags, res.secret = sh.mode, sh.flags, sessionSecret(sched, h.transcript[:], dh)
	return res, nil
}

// readMessage reads the handshake message b, of type typ, from r. A
// ClientHello's or ServerHello's header is checked as it arrives (see
// readHeader); a ClientFinished has none. If the peer closes the
// connection before the whole message, closed explains it, given the
// number of bytes that came.
func readMessage(r io.Reader, b []byte, typ byte, name string, closed func(n int) error) error {
	n := 0
	var err error
	if typ != msgClientFinished {
		n, err = readHeader(r, b, typ, name)
	}
	if err == nil {
		var m int
		m, err = io.ReadFull(r, b[n:])
		n += m
	}
	switch {
	case err == nil, errors.Is(err, ErrProtocol):
		return err
	case isClosedByPeer(err):
		return closed(n)
	}
	return ioError("reading the "+name, err)
}

// ioError wraps an I/O failure during the handshake with the step it broke.
func ioError(step string, err error) error {
	return fmt.Errorf("%s: %w", step, err)
}

// isClosedByPeer reports whether err means the peer closed or reset the
// connection, rather than a local failure or a timeout.
func isClosedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}
