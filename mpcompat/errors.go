package mpcompat

import (
	"errors"

	"github.com/hmacauth/hmacauth/internal/netx"
)

// Sentinel errors. Every error this package returns for a refused peer, a
// bad message or a bad configuration wraps one of them; match with
// errors.Is. The wrapping error says what happened and what to check.
var (
	// ErrAuthFailed means the peer did not prove the authkey, or refused
	// the proof of this side: the two sides hold different authkeys.
	ErrAuthFailed = errors.New("mpcompat: authentication failed")

	// ErrWeakDigest means the peer asked for or answered with a digest
	// weaker than this side accepts: HMAC-MD5 (Python 3.11 and older, or a
	// downgrade attempt) without Config.AllowLegacyMD5, or a digest shorter
	// than Config.Digest. The authkey was not checked.
	ErrWeakDigest = errors.New("mpcompat: digest too weak")

	// ErrProtocol means the peer does not speak the multiprocessing.connection
	// handshake or framing: a message without "#CHALLENGE#", an unknown
	// digest name, an oversized handshake message, a negative length, a
	// connection closed in the middle of the handshake.
	ErrProtocol = errors.New("mpcompat: protocol error")

	// ErrReflection means a dialer was challenged with a challenge that a
	// dialer of this process sent and is still waiting to have answered:
	// the server is reflecting this process's own challenges to obtain
	// their answers, which a server without the authkey can do when it
	// gets two dials at once. The dialer refused to answer.
	ErrReflection = errors.New("mpcompat: reflected challenge")

	// ErrMessageTooLarge means ReadMessage met a length over its limit. It
	// is returned before anything is allocated for the message, and the
	// message is left unread: the stream cannot be used further.
	ErrMessageTooLarge = errors.New("mpcompat: message too large")

	// ErrHandshakeTimeout means the handshake did not finish within
	// Config.HandshakeTimeout or the deadline of its context. It is a
	// net.Error whose Timeout method reports true.
	ErrHandshakeTimeout error = netx.TimeoutError("mpcompat: handshake timed out")

	// ErrConfig means a Config cannot be used: an empty AuthKey, an unknown
	// Digest, or a negative limit.
	ErrConfig = errors.New("mpcompat: invalid config")

	// ErrShed is reported to Config.OnHandshake (never returned by Accept)
	// for a connection a Listener closed unread because its remote IP (or
	// IPv6 /64) already had MaxHandshakesPerIP handshakes in flight, and
	// for a handshake it evicted under load, every MaxHandshakes slot
	// taken. The message says which.
	ErrShed = errors.New("mpcompat: connection shed")
)

// errorf formats a refusal as "<sentinel>: <details>".
func errorf(sentinel error, format string, args ...any) error {
	return netx.Errorf(sentinel, format, args...)
}
