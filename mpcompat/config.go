package mpcompat

import (
	"cmp"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/sha512"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/hmacauth/hmacauth/internal/netx"
)

// Defaults for the zero values of Config fields.
const (
	DefaultHandshakeTimeout   = 5 * time.Second
	DefaultMaxHandshakes      = 256
	DefaultMaxHandshakesPerIP = 16
	DefaultAcceptQueue        = 64
)

// Digest names an HMAC hash as Python's multiprocessing.connection writes
// it between braces in a challenge or response, e.g. "{sha256}".
type Digest string

// The digests Python 3.12 and later know (_ALLOWED_DIGESTS).
const (
	// DigestSHA256 is the digest of Python 3.12 and later: Listener and
	// Client always challenge with it. It is the default.
	DigestSHA256   Digest = "sha256"
	DigestSHA384   Digest = "sha384"
	DigestSHA3_256 Digest = "sha3_256"
	DigestSHA3_384 Digest = "sha3_384"
	// DigestMD5 is HMAC-MD5, the only digest of Python 3.11 and older,
	// which send a bare 20-byte challenge and expect the raw 16-byte MAC.
	// It is accepted only with Config.AllowLegacyMD5 and cannot be
	// Config.Digest.
	DigestMD5 Digest = "md5"
)

// maxDigestNameLen is the longest digest name inside braces, as Python's
// _MAX_DIGEST_LEN.
const maxDigestNameLen = len(DigestSHA3_256)

// hashFunc returns the hash of d, or nil for a name Python does not know.
func (d Digest) hashFunc() func() hash.Hash {
	switch d {
	case DigestSHA256:
		return sha256.New
	case DigestSHA384:
		return sha512.New384
	case DigestSHA3_256:
		return func() hash.Hash { return sha3.New256() }
	case DigestSHA3_384:
		return func() hash.Hash { return sha3.New384() }
	case DigestMD5:
		return md5.New
	}
	return nil
}

// size is the length of d's MAC, which ranks digests by strength.
func (d Digest) size() int {
	switch d {
	case DigestSHA256, DigestSHA3_256:
		return 32
	case DigestSHA384, DigestSHA3_384:
		return 48
	case DigestMD5:
		return md5.Size
	}
	return 0
}

// String returns the name as Python writes it, e.g. "sha256".
func (d Digest) String() string { return string(d) }

// hmacName names the HMAC in messages, e.g. "HMAC-SHA256".
func (d Digest) hmacName() string { return "HMAC-" + strings.ToUpper(string(d)) }

// mac returns HMAC-d(key, msg); d must be known.
func (d Digest) mac(key, msg []byte) []byte {
	m := hmac.New(d.hashFunc(), key)
	m.Write(msg)
	return m.Sum(nil)
}

// Config configures a Listener, a Dialer, or a handshake run by
// ServerHandshake or ClientHandshake. Only AuthKey is required.
//
// Printing a Config with fmt or slog never shows the authkey.
//
// A Config may be shared by many listeners and dialers at once, but must
// not be modified after it has been passed to any of them.
type Config struct {
	// AuthKey is the shared secret, the authkey argument of Python's
	// Listener and Client. Both sides must hold the same bytes. It must
	// not be empty (Python skips authentication for an empty authkey; this
	// package refuses). Use at least 32 random bytes: the handshake lets an
	// eavesdropper test guesses of a short key offline.
	AuthKey []byte

	// Digest is the HMAC this side asks for in its challenge, and the
	// weakest it accepts from the peer, ranked by MAC length. The zero
	// value means DigestSHA256, the only digest Python's own Listener and
	// Client ask for: a stronger one here makes this side refuse Python
	// peers, whose challenges name sha256.
	Digest Digest

	// AllowLegacyMD5 lets this side talk to Python 3.11 and older, which
	// know only HMAC-MD5: as a listener it accepts a raw HMAC-MD5 answer
	// to its sha256 challenge; as a client it answers a legacy 20-byte
	// challenge. It also lets a peer name {md5} explicitly. Off by
	// default: MD5 is a downgrade that Python 3.12's listener accepts
	// silently; this package refuses it with ErrWeakDigest unless allowed.
	AllowLegacyMD5 bool

	// HandshakeTimeout bounds one handshake, on either side, in addition
	// to any context deadline. Zero means DefaultHandshakeTimeout (5 s); a
	// negative value means no bound.
	HandshakeTimeout time.Duration

	// MaxHandshakes caps the handshakes a Listener runs at once, counting
	// finished connections waiting for Accept. When every slot is taken
	// and a connection arrives, the Listener evicts the handshake that has
	// made the least progress for the longest (a client that has proven
	// the authkey is one step ahead of one that has not), once it has
	// waited at least 50 ms, and reports it with ErrShed; when every slot
	// is a connection waiting for Accept, or a handshake within those
	// 50 ms, it stops accepting from its inner listener until one frees.
	// Zero means DefaultMaxHandshakes (256).
	MaxHandshakes int

	// MaxHandshakesPerIP caps the handshakes in flight from one remote IP,
	// and from one IPv6 /64 (one host commonly has a whole /64); an
	// IPv4-mapped address counts as IPv4. Connections over it are closed
	// at once. Zero means DefaultMaxHandshakesPerIP (16); a negative value
	// means no cap.
	MaxHandshakesPerIP int

	// AcceptQueue is how many authenticated connections may wait for
	// Accept. Zero means DefaultAcceptQueue (64).
	AcceptQueue int

	// Logger receives one record per connection a Listener refuses, at
	// level Info, with the remote address, the digest and the reason, and
	// one per accepted connection at level Debug. Nil means no logging.
	// The authkey is never logged.
	Logger *slog.Logger

	// OnHandshake, if not nil, is called after every handshake a Listener
	// runs, successful, failed or evicted, and for every connection it
	// sheds. It runs on the handshake's goroutine (for a shed connection,
	// on a goroutine of the Listener that reports sheds one at a time):
	// keep it fast and safe for concurrent use.
	OnHandshake func(HandshakeEvent)
}

// HandshakeEvent describes one connection a Listener handled.
type HandshakeEvent struct {
	// RemoteAddr is the client's address.
	RemoteAddr net.Addr
	// Digest is the digest of the client's answer to the Listener's
	// challenge (DigestMD5 for a Python 3.11 or older client), or "" if
	// the client sent no parsable answer.
	Digest Digest
	// Duration is how long the handshake took.
	Duration time.Duration
	// Err is nil if the client was authenticated, else why it was refused
	// (errors.Is with ErrAuthFailed, ErrWeakDigest, ErrProtocol,
	// ErrHandshakeTimeout, ErrShed).
	Err error
}

// LogValue implements slog.LogValuer: the settings without the authkey.
// (Without it, a JSON handler would encode the authkey as base64.)
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("auth_key", fmt.Sprintf("[%d bytes redacted]", len(c.AuthKey))),
		slog.String("digest", c.digest().String()),
		slog.Bool("allow_legacy_md5", c.AllowLegacyMD5),
		slog.Duration("handshake_timeout", c.handshakeTimeout()),
		slog.Int("max_handshakes", cmp.Or(c.MaxHandshakes, DefaultMaxHandshakes)),
		slog.Int("max_handshakes_per_ip", cmp.Or(c.MaxHandshakesPerIP, DefaultMaxHandshakesPerIP)),
		slog.Int("accept_queue", cmp.Or(c.AcceptQueue, DefaultAcceptQueue)))
}

// String describes c without its authkey.
func (c Config) String() string {
	return fmt.Sprintf("mpcompat.Config{AuthKey: [%d bytes redacted], Digest: %q, AllowLegacyMD5: %t}", len(c.AuthKey), c.digest(), c.AllowLegacyMD5)
}

// GoString is like String, so that %#v does not print the authkey either.
func (c Config) GoString() string { return c.String() }

// Format prints String for every verb, so that none (%d and %o included,
// which would print AuthKey's bytes) shows the authkey.
func (c Config) Format(f fmt.State, _ rune) { io.WriteString(f, c.String()) }

// check reports whether c can be used.
func (c *Config) check() error {
	switch {
	case c == nil:
		return errorf(ErrConfig, "nil Config; set Config.AuthKey")
	case len(c.AuthKey) == 0:
		return errorf(ErrConfig, "Config.AuthKey is empty; Python would skip authentication, this package refuses")
	case c.Digest == DigestMD5:
		return errorf(ErrConfig, "Config.Digest cannot be md5; keep sha256 and set Config.AllowLegacyMD5 to talk to Python 3.11 and older")
	case c.digest().hashFunc() == nil:
		return errorf(ErrConfig, "Config.Digest %q is not one of sha256, sha384, sha3_256, sha3_384", c.Digest)
	case c.MaxHandshakes < 0 || c.AcceptQueue < 0:
		return errorf(ErrConfig, "Config.MaxHandshakes (%d) and Config.AcceptQueue (%d) must not be negative", c.MaxHandshakes, c.AcceptQueue)
	}
	return nil
}

func (c *Config) digest() Digest {
	if c.Digest == "" {
		return DigestSHA256
	}
	return c.Digest
}

func (c *Config) handshakeTimeout() time.Duration {
	return netx.Timeout(c.HandshakeTimeout, DefaultHandshakeTimeout)
}
