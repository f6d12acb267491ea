package mpcompat

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hmacauth/hmacauth/internal/acceptor"
	"github.com/hmacauth/hmacauth/internal/netx"
)

// The handshake of Python's multiprocessing.connection (deliver_challenge
// and answer_challenge in Lib/multiprocessing/connection.py). Every message
// is framed as by WriteMessage.
//
//	challenger                          responder
//	"#CHALLENGE#" + M          ->
//	                           <-       R = "{d}" + HMAC-d(key, M)
//	"#WELCOME#" or "#FAILURE#" ->
//
// Python 3.12 and later send M = "{sha256}" + 40 random bytes. Python 3.11
// and older send M = 20 random bytes and answer any challenge with the raw
// 16-byte HMAC-MD5 of M; Python 3.12 answers a 20-byte M the same way.
// A listener challenges first, then answers the client's challenge; a
// client answers first, then challenges.
const (
	challengePrefix    = "#CHALLENGE#"
	welcome            = "#WELCOME#"
	failure            = "#FAILURE#"
	nonceLen           = 40  // random bytes in a challenge (MESSAGE_LENGTH)
	legacyChallengeLen = 20  // M of Python 3.11 and older
	legacyResponseLen  = 16  // raw HMAC-MD5 of Python 3.11 and older
	maxAuthMessage     = 256 // recv_bytes(256) in deliver/answer_challenge
)

// parseDigestPrefix splits "{name}payload" as Python's
// _get_digest_name_and_payload does for a modern message. ok is false if
// there is no brace-enclosed name of a known digest.
func parseDigestPrefix(m []byte) (d Digest, payload []byte, ok bool) {
	if len(m) < 2 || m[0] != '{' {
		return "", nil, false
	}
	end := bytes.IndexByte(m[1:min(len(m), maxDigestNameLen+2)], '}')
	if end < 0 {
		return "", nil, false
	}
	d = Digest(m[1 : 1+end])
	if d.hashFunc() == nil {
		return "", nil, false
	}
	return d, m[2+end:], true
}

// parseChallenge checks a challenge message and returns its M and the
// digest it asks for; legacy reports a bare 20-byte M of Python 3.11 and
// older, to be answered with a raw HMAC-MD5.
func parseChallenge(msg []byte) (m []byte, d Digest, legacy bool, err error) {
	m, ok := bytes.CutPrefix(msg, []byte(challengePrefix))
	switch {
	case !ok:
		return nil, "", false, errorf(ErrProtocol, "expected a message starting with %q, got %q; the peer does not speak the multiprocessing.connection handshake", challengePrefix, clip(msg))
	case len(m) < legacyChallengeLen:
		return nil, "", false, errorf(ErrProtocol, "the challenge has %d bytes after %q; Python sends at least %d", len(m), challengePrefix, legacyChallengeLen)
	case len(m) == legacyChallengeLen:
		return m, DigestMD5, true, nil
	}
	d, _, ok = parseDigestPrefix(m)
	if !ok {
		return nil, "", false, errorf(ErrProtocol, "the challenge %q names no known digest; Python 3.12 and later send {sha256}", clip(m))
	}
	return m, d, false, nil
}

// parseResponse splits an answer to a challenge into its digest and MAC;
// a 16- or 20-byte answer is a raw HMAC-MD5, as Python 3.11 and older send
// (20 bytes cannot match; Python also reads it as MD5).
func parseResponse(r []byte) (d Digest, mac []byte, err error) {
	if len(r) == legacyResponseLen || len(r) == legacyChallengeLen {
		return DigestMD5, r, nil
	}
	d, mac, ok := parseDigestPrefix(r)
	if !ok {
		return "", nil, errorf(ErrProtocol, "the answer to our challenge (%d bytes, %q) names no known digest; Python 3.12 and later send {sha256}", len(r), clip(r))
	}
	return d, mac, nil
}

// clip shortens peer bytes quoted in an error.
func clip(b []byte) []byte {
	const n = 24
	if len(b) > n {
		return b[:n]
	}
	return b
}

// dialerChallenges holds the challenges that the dialers of this process
// (Dialer, Dial, ClientHandshake) have sent and whose answers they await.
// A client answers the server's challenge before the server has proved
// anything, and challenges in the same form, so a server without the
// authkey that gets two dials at once could send one dial's challenge to
// the other and hand the answer back. A dialer refuses to answer a
// challenge in this set. It must be process-wide, as the two dials need
// not share a Dialer or a Config. Listeners' challenges are not in it: a
// dialer answers a listener of its own process, and a listener answers a
// dialer of its own process.
var dialerChallenges = struct {
	sync.Mutex
	m map[string]struct{}
}{m: make(map[string]struct{})}

// issueChallenge records m as awaiting its answer; the returned func
// removes it.
func issueChallenge(m []byte) (resolved func()) {
	k := string(m)
	dialerChallenges.Lock()
	dialerChallenges.m[k] = struct{}{}
	dialerChallenges.Unlock()
	return func() {
		dialerChallenges.Lock()
		delete(dialerChallenges.m, k)
		dialerChallenges.Unlock()
	}
}

// issuedChallenge reports whether m is a challenge a dialer of this
// process awaits the answer to.
func issuedChallenge(m []byte) bool {
	dialerChallenges.Lock()
	defer dialerChallenges.Unlock()
	_, ok := dialerChallenges.m[string(m)]
	return ok
}

// handshake is one side of one handshake.
type handshake struct {
	conn   net.Conn
	cfg    *Config
	server bool
	// peerDigest is the digest of the peer's answer to our challenge.
	peerDigest Digest
}

// peer names the other side in messages.
func (h *handshake) peer() string {
	if h.server {
		return "client"
	}
	return "server"
}

// allow refuses a digest weaker than the configuration accepts.
func (h *handshake) allow(d Digest, what string) error {
	if d == DigestMD5 {
		if h.cfg.AllowLegacyMD5 {
			return nil
		}
		return errorf(ErrWeakDigest, "the %s %s HMAC-MD5, the legacy digest of Python 3.11 and older (or a downgrade); upgrade the peer to Python 3.12+ or set Config.AllowLegacyMD5", h.peer(), what)
	}
	if want := h.cfg.digest(); d.size() < want.size() {
		return errorf(ErrWeakDigest, "the %s %s %s, weaker than Config.Digest %s", h.peer(), what, d.hmacName(), want)
	}
	return nil
}

func (h *handshake) read() ([]byte, error) {
	msg, err := ReadMessage(h.conn, maxAuthMessage)
	switch {
	case err == nil:
		return msg, nil
	case errors.Is(err, ErrMessageTooLarge):
		return nil, errorf(ErrProtocol, "handshake message over %d bytes: %w", maxAuthMessage, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return nil, errorf(ErrProtocol, "the %s closed the connection during the handshake; it may have refused our digest, or may not speak multiprocessing.connection (see its log)", h.peer())
	}
	return nil, err
}

// deliverChallenge sends a challenge and checks the peer's answer, as
// Python's deliver_challenge does, but refuses digests weaker than
// allowed. The peer is told "#FAILURE#" for any refused answer.
func (h *handshake) deliverChallenge() error {
	d := h.cfg.digest()
	msg := make([]byte, 0, len(challengePrefix)+2+len(d)+nonceLen)
	msg = append(append(append(append(msg, challengePrefix...), '{'), d...), '}')
	msg = msg[:len(msg)+nonceLen]
	rand.Read(msg[len(msg)-nonceLen:]) // never fails; see crypto/rand.Read
	m := msg[len(challengePrefix):]    // what the answer's HMAC covers
	if !h.server {
		defer issueChallenge(m)()
	}
	if err := WriteMessage(h.conn, msg); err != nil {
		return err
	}
	answer, err := h.read()
	if err != nil {
		return err
	}
	err = h.checkAnswer(m, answer)
	verdict := welcome
	if err != nil {
		verdict = failure
	}
	if werr := WriteMessage(h.conn, []byte(verdict)); err == nil {
		err = werr
	}
	return err
}

// checkAnswer verifies the peer's answer to our challenge m.
func (h *handshake) checkAnswer(m, answer []byte) error {
	d, mac, err := parseResponse(answer)
	if err != nil {
		return err
	}
	h.peerDigest = d
	if d == DigestMD5 && len(answer) > legacyChallengeLen && !h.cfg.AllowLegacyMD5 {
		return errorf(ErrWeakDigest, "the %s answered our {%s} challenge with {md5}, a downgrade; refused", h.peer(), h.cfg.digest())
	}
	if err := h.allow(d, "answered with"); err != nil {
		return err
	}
	if !hmac.Equal(d.mac(h.cfg.AuthKey, m), mac) {
		return errorf(ErrAuthFailed, "the %s's %s does not match ours; the two sides hold different authkeys", h.peer(), d.hmacName())
	}
	return nil
}

// answerChallenge answers the peer's challenge, as Python's
// answer_challenge does, but refuses to answer with a digest weaker than
// allowed.
func (h *handshake) answerChallenge() error {
	msg, err := h.read()
	if err != nil {
		return err
	}
	m, d, legacy, err := parseChallenge(msg)
	if err != nil {
		return err
	}
	if err := h.allow(d, "asks for"); err != nil {
		return err
	}
	if !h.server && issuedChallenge(m) {
		return errorf(ErrReflection, "the server challenged us with a challenge that a dialer of this process sent and awaits the answer to: it is reflecting our own challenges to pass them off as proof of the authkey, which it may not hold; not answered. Check that the address is the intended listener and the path to it is trusted")
	}
	answer := d.mac(h.cfg.AuthKey, m)
	if !legacy {
		answer = append([]byte("{"+d+"}"), answer...)
	}
	if err := WriteMessage(h.conn, answer); err != nil {
		return err
	}
	verdict, err := h.read()
	if err != nil {
		return err
	}
	switch string(verdict) {
	case welcome:
		return nil
	case failure:
		return errorf(ErrAuthFailed, "the %s refused our %s answer; the two sides hold different authkeys", h.peer(), d.hmacName())
	}
	return errorf(ErrProtocol, "expected %q or %q, got %q", welcome, failure, clip(verdict))
}

// run runs the handshake in Python's order, bounded by ctx and
// Config.HandshakeTimeout, which interrupt its I/O: it sets no deadline of
// its own and leaves those set on conn as they are. h.cfg has passed
// check.
func (h *handshake) run(ctx context.Context) (err error) {
	start := time.Now()
	defer func() {
		if err != nil {
			err = &netx.HandshakeError{Pkg: "mpcompat", Peer: h.peer(), Addr: h.conn.RemoteAddr(), Err: err}
		}
	}()
	if ctx.Err() != nil {
		return netx.ContextError(ctx, ErrHandshakeTimeout)
	}
	_, finish := netx.Bound(ctx, h.conn, start, h.cfg.handshakeTimeout(), ErrHandshakeTimeout)
	defer func() { err = finish(err) }()

	if h.server {
		err = h.deliverChallenge()
		if err == nil {
			acceptor.Progress(ctx) // the client proved the authkey
			err = h.answerChallenge()
		}
	} else {
		err = h.answerChallenge()
		if err == nil {
			err = h.deliverChallenge()
		}
	}
	return err
}

// ServerHandshake runs the listener side of the handshake on conn, as
// Python's Listener.accept does: it challenges the client, then answers
// the client's challenge. It returns nil once both sides have proven the
// authkey. ctx and Config.HandshakeTimeout bound it; it sets no deadline
// on conn and leaves those set as they are. It does not close conn, except
// one that refuses deadlines (its SetDeadline fails): ctx or the timeout
// ending the handshake closes it, the only way to end its pending I/O.
func ServerHandshake(ctx context.Context, conn net.Conn, cfg *Config) error {
	if err := cfg.check(); err != nil {
		return err
	}
	h := handshake{conn: conn, cfg: cfg, server: true}
	return h.run(ctx)
}

// ClientHandshake runs the client side of the handshake on conn, as
// Python's Client does: it answers the listener's challenge, then
// challenges the listener. Otherwise it is like ServerHandshake.
func ClientHandshake(ctx context.Context, conn net.Conn, cfg *Config) error {
	if err := cfg.check(); err != nil {
		return err
	}
	h := handshake{conn: conn, cfg: cfg}
	return h.run(ctx)
}
