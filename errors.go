package hmacauth

import (
	"context"
	"errors"
	"net"

	"github.com/hmacauth/hmacauth/internal/netx"
)

// Sentinel errors. Every error returned by this package that refuses a peer,
// a key, a configuration or a call wraps exactly one of them; match with
// errors.Is.
// The wrapping error says in words what happened and what to check.
var (
	// ErrAuthFailed means the peer did not prove that it holds the key:
	// a wrong secret, a key ID the other side does not know, a bad proof,
	// or a server that closed the connection during the handshake (which is
	// how a server refuses: it says nothing to a client without a key). A
	// server also refuses with it a ClientHello that its own Config's client
	// sent (a reflection).
	ErrAuthFailed = errors.New("hmacauth: authentication failed")

	// ErrProtocol means the peer does not speak hmacauth/1 or sent a
	// malformed message: a plain TCP, HTTP, TLS or SSH peer, a future
	// protocol version, or garbage. In ModeIntegrity and ModeSealed it also
	// means a record that authenticated, so came from a holder of the key,
	// but breaks the protocol (an unknown type, more than 16 records in a
	// row without data); Read then returns it ever after.
	ErrProtocol = errors.New("hmacauth: protocol error")

	// ErrHandshakeTimeout means the handshake did not finish within
	// Config.HandshakeTimeout or the deadline of its context or connection.
	// It is a net.Error whose Timeout method reports true.
	ErrHandshakeTimeout error = netx.TimeoutError("hmacauth: handshake timed out")

	// ErrWeakKey means a key's secret is shorter than MinSecretLen bytes.
	ErrWeakKey = errors.New("hmacauth: weak key")

	// ErrConfig means a Config cannot be used: no keys, an invalid or
	// duplicate key ID, or an out-of-range setting.
	ErrConfig = errors.New("hmacauth: invalid config")

	// ErrIntegrity means a record of a ModeIntegrity or ModeSealed
	// connection failed its check: it was altered, dropped, reordered,
	// replayed, reflected or injected in transit, or the stream was cut
	// without the peer's close record. No byte of such a record reaches the
	// application, and the connection is unusable after it: every later
	// Read returns the same error.
	ErrIntegrity = errors.New("hmacauth: record integrity check failed")

	// ErrExport means ConnectionState.ExportKeyingMaterial cannot give
	// what it was asked for: the handshake has not succeeded, the
	// ConnectionState was taken after Close (which clears the session
	// secret), or the label, context or length is out of range.
	ErrExport = errors.New("hmacauth: cannot export keying material")

	// ErrShed is reported to Config.OnHandshake (never returned by Accept)
	// for a connection a Listener closed unread because its remote IP (or
	// IPv6 /64) already had MaxHandshakesPerIP handshakes in flight, and
	// for a handshake it evicted under load, when all MaxHandshakes slots
	// were taken (see Config.MaxHandshakes). The message says which.
	ErrShed = errors.New("hmacauth: connection shed")
)

// errorf formats a refusal: the sentinel first, then the details, so that
// the message reads "hmacauth: authentication failed: <details>".
func errorf(sentinel error, format string, args ...any) error {
	return netx.Errorf(sentinel, format, args...)
}

// contextError explains why a done ctx ended the handshake.
func contextError(ctx context.Context) error { return netx.ContextError(ctx, ErrHandshakeTimeout) }

// handshakeError adds the peer's role and address to a handshake failure,
// and on a server the key ID the client named, if any, for a Listener's
// report (claimedKeyID).
func handshakeError(isClient bool, addr net.Addr, claimed string, err error) error {
	peer := "client"
	if isClient {
		peer = "server"
	}
	return &netx.HandshakeError{Pkg: "hmacauth", Peer: peer, Addr: addr, Claim: claimed, Err: err}
}

// claimedKeyID returns the key ID a client named before its handshake
// failed with err, or "".
func claimedKeyID(err error) string {
	if he, ok := errors.AsType[*netx.HandshakeError](err); ok {
		return he.Claim
	}
	return ""
}
