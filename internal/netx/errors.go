package netx

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Errorf formats a refusal as "<sentinel>: <details>", wrapping sentinel,
// so that the message reads "hmacauth: authentication failed: <details>".
func Errorf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)
}

// TimeoutError is the type of a package's ErrHandshakeTimeout: its message.
// It is a net.Error whose Timeout reports true; Temporary reports false,
// so that a server loop never mistakes it for a transient accept failure.
type TimeoutError string

// Error returns the message.
func (e TimeoutError) Error() string { return string(e) }

// Timeout reports true.
func (TimeoutError) Timeout() bool { return true }

// Temporary reports false.
func (TimeoutError) Temporary() bool { return false }

var _ net.Error = TimeoutError("")

// TimedOut wraps err, a handshake's I/O error, in timeout (the package's
// ErrHandshakeTimeout) if it is a deadline passing, with how long the
// handshake had run; other errors it returns as they are.
func TimedOut(err, timeout error, start time.Time) error {
	if !isDeadline(err) {
		return err
	}
	return fmt.Errorf("%w after %v: %w", timeout, time.Since(start).Round(time.Millisecond), err)
}

func isDeadline(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// HandshakeError is a handshake failure with the peer it happened with.
// Its message reads "<pkg>: handshake with <peer> <addr>: <err>", without
// err's own "<pkg>: " prefix.
type HandshakeError struct {
	Pkg  string // "hmacauth" or "mpcompat"
	Peer string // "client" or "server"
	Addr net.Addr
	// Claim is what the client named before the failure, for a
	// Listener's report: the key ID, or the digest of its answer; "" if
	// none or on the client side.
	Claim string
	Err   error
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("%s: handshake with %s %s: %s", e.Pkg, e.Peer, e.Addr, strings.TrimPrefix(e.Err.Error(), e.Pkg+": "))
}

func (e *HandshakeError) Unwrap() error { return e.Err }
