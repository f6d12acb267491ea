package hmacauth

import (
	"cmp"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync/atomic"
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

// Config configures a Listener, a Dialer, or a Conn made by Client or Server.
// Only Keys (or Keyring) is required; every other field has a working zero
// value.
//
// A Config may be shared by many listeners, dialers and connections at once,
// but must not be modified after it has been passed to any of them: the keys
// are validated and their derived keys cached on first use, so a struct copy
// made after that keeps the original's keys (and, until it expires, its
// X25519 key share). Make a Config from another with Clone. To change keys
// while running, use Keyring.
//
// A server refuses a ClientHello that a client handshake of the same Config
// has in flight: a connection its own dialer made, sent back to it (a
// reflection, see SECURITY.md). A process that listens and also dials its
// own listeners gives each end a Config of its own.
//
// Printing a Config with fmt or slog never shows a secret.
type Config struct {
	// Keys holds the shared secrets. A dialer proves Keys[0]; a listener
	// accepts a client that proves any of them. To rotate a key, add the new
	// key to the listeners, move the clients to it, then drop the old one.
	// Keys is ignored when Keyring is set.
	Keys []Key

	// Keyring, if not nil, holds the keys instead of Keys, and lets them be
	// replaced while the Config is in use: each handshake uses the keys the
	// Keyring holds when it starts; established connections are not
	// affected. A dialer proves the Keyring's first key.
	Keyring *Keyring

	// Mode is the least protection this side accepts for the bytes after
	// the handshake. A connection runs at the stronger of the two sides'
	// modes. The zero value is ModeAuth. SECURITY.md says what each mode
	// protects against; PROTOCOL.md section 9 how.
	Mode Mode

	// ForwardSecrecy mixes an ephemeral X25519 exchange into the session
	// keys, so that a key stolen later does not reveal recorded sessions.
	// A connection uses it if either side asks for it.
	ForwardSecrecy bool

	// KeyShareLifetime is how long this side uses one X25519 key share for
	// the handshakes it runs with forward secrecy, and remembers the X25519
	// results computed with it; then the key share is dropped (a handshake
	// in flight keeps the one it started with until it ends). Zero means
	// DefaultKeyShareLifetime (1 s); a negative value means a new key share
	// for every handshake. SECURITY.md ("Key share reuse") says what reuse
	// exposes and BENCHMARKS.md what it saves.
	KeyShareLifetime time.Duration

	// HandshakeTimeout bounds one handshake, on either side, in addition to
	// any context or connection deadline. Zero means
	// DefaultHandshakeTimeout (5 s); a negative value means no bound (a
	// server handshake whose context has no deadline then makes its own
	// X25519 key share, see KeyShareLifetime).
	HandshakeTimeout time.Duration

	// MaxHandshakes caps the handshakes a Listener runs at once, counting
	// finished connections that wait for a place in the accept queue
	// (AcceptQueue) once it is full. When every slot is taken
	// and a connection arrives, the Listener evicts the handshake that has
	// made the least progress for the longest: the fewest messages that
	// passed their check (a client that replays a recorded ClientHello
	// takes one, unless a handshake with the same ClientHello is in flight:
	// such a replay is refused before it counts), and among those the one that has waited longest for its
	// next, once it has waited at least 50 ms. It is closed and reported
	// with ErrShed (ListenerStats.Evicted). A key holder's handshake takes
	// its step as soon as it runs and ends a round trip later, so it is
	// not evicted while stalled clients hold slots; a burst of more than
	// MaxHandshakes honest clients at once can evict some of them. When
	// every slot is a connection waiting for Accept, or a handshake within
	// those 50 ms, or one whose goroutine has not run yet while the rest
	// have made progress, the Listener stops accepting from its inner listener
	// until one frees. Zero means DefaultMaxHandshakes (256).
	MaxHandshakes int

	// MaxHandshakesPerIP caps the handshakes in flight from one remote IP
	// address, and from one IPv6 /64 (a single host is commonly given a
	// whole /64 and can send from any address in it); an IPv4-mapped IPv6
	// address counts as IPv4. Connections over it are closed at once, so one
	// host cannot take every slot. Zero means DefaultMaxHandshakesPerIP
	// (16); a negative value means no per-IP cap. Connections without an IP
	// (Unix sockets) are not counted.
	MaxHandshakesPerIP int

	// AcceptQueue is how many authenticated connections may wait for
	// Accept. Zero means DefaultAcceptQueue (64).
	AcceptQueue int

	// Logger receives one record per refused connection on a Listener, at
	// level Info, with the remote address, the key ID the client named (if
	// any) and the reason, and one record per accepted connection at level
	// Debug, with the remote address, key ID and handshake duration. Nil
	// means no logging. Secrets are never logged.
	Logger *slog.Logger

	// OnHandshake, if not nil, is called after every server-side handshake
	// a Listener runs, successful, failed or evicted, once the handshake's
	// per-IP slot is free, and for every connection it sheds. It runs on the
	// handshake's goroutine (for a shed connection, on a goroutine of the
	// Listener that reports sheds one at a time, never on the accept loop):
	// keep it fast, and safe for concurrent use.
	OnHandshake func(HandshakeEvent)

	keys   atomic.Pointer[keySet] // derived from Keys on first use
	shares keyShares
}

// Clone returns a copy of c: its settings, its own copy of the Keys slice
// (the secrets' bytes and the Keyring are shared), and none of the state c
// keeps once used (derived keys, X25519 key share), which the copy derives
// afresh. The copy is another Config for every purpose, including the
// refusal of a Config's own dials. Clone of nil is nil.
func (c *Config) Clone() *Config {
	if c == nil {
		return nil
	}
	return &Config{
		Keys:               slices.Clone(c.Keys),
		Keyring:            c.Keyring,
		Mode:               c.Mode,
		ForwardSecrecy:     c.ForwardSecrecy,
		KeyShareLifetime:   c.KeyShareLifetime,
		HandshakeTimeout:   c.HandshakeTimeout,
		MaxHandshakes:      c.MaxHandshakes,
		MaxHandshakesPerIP: c.MaxHandshakesPerIP,
		AcceptQueue:        c.AcceptQueue,
		Logger:             c.Logger,
		OnHandshake:        c.OnHandshake,
	}
}

// LogValue implements slog.LogValuer: the settings and the key IDs, never
// a secret. (Without it, a JSON handler would encode the secrets of Keys as
// base64.)
func (c *Config) LogValue() slog.Value {
	if c == nil {
		return slog.StringValue("<nil>")
	}
	keys := slog.Any("key_ids", keyIDs(c.Keys))
	if c.Keyring != nil {
		keys = slog.Any("keyring", c.Keyring)
	}
	return slog.GroupValue(keys,
		slog.String("mode", c.Mode.String()),
		slog.Bool("forward_secrecy", c.ForwardSecrecy),
		slog.Duration("key_share_lifetime", netx.Timeout(c.KeyShareLifetime, DefaultKeyShareLifetime)),
		slog.Duration("handshake_timeout", c.handshakeTimeout()),
		slog.Int("max_handshakes", cmp.Or(c.MaxHandshakes, DefaultMaxHandshakes)),
		slog.Int("max_handshakes_per_ip", cmp.Or(c.MaxHandshakesPerIP, DefaultMaxHandshakesPerIP)),
		slog.Int("accept_queue", cmp.Or(c.AcceptQueue, DefaultAcceptQueue)))
}

// String describes c by its key IDs and mode, never a secret.
func (c *Config) String() string {
	if c == nil {
		return "hmacauth.Config(nil)"
	}
	keys := fmt.Sprintf("Keys: %q", keyIDs(c.Keys))
	if c.Keyring != nil {
		keys = "Keyring: " + c.Keyring.String()
	}
	return fmt.Sprintf("hmacauth.Config{%s, Mode: %v, ForwardSecrecy: %v, secrets redacted}", keys, c.Mode, c.ForwardSecrecy)
}

// GoString is like String, so that %#v does not print a secret either.
func (c *Config) GoString() string { return c.String() }

// Format prints String for every verb, so that none (%s and %d included,
// which would print the keys' and the key share's bytes) shows a secret.
func (c *Config) Format(f fmt.State, _ rune) { io.WriteString(f, c.String()) }

// HandshakeEvent describes one connection a Listener handled.
type HandshakeEvent struct {
	// RemoteAddr is the client's address.
	RemoteAddr net.Addr
	// KeyID is the key ID the client named. When Err is not nil it is
	// only a claim, and empty if the client never sent one.
	KeyID string
	// Duration is how long the handshake took.
	Duration time.Duration
	// Err is nil if the client was authenticated, else the reason it was
	// refused (errors.Is with ErrAuthFailed, ErrProtocol,
	// ErrHandshakeTimeout, ErrShed, ...).
	Err error
}

func (c *Config) handshakeTimeout() time.Duration {
	return netx.Timeout(c.HandshakeTimeout, DefaultHandshakeTimeout)
}

// keyShares returns the key shares c's handshakes reuse and their lifetime,
// or nil for a new key share in every handshake.
func (c *Config) keyShares() (*keyShares, time.Duration) {
	if t := netx.Timeout(c.KeyShareLifetime, DefaultKeyShareLifetime); t > 0 {
		return &c.shares, t
	}
	return nil, 0
}

// check reports whether c can be used for a handshake and returns its
// keys. NewListener, Listen and Dial call it too, so that a bad Config fails
// there rather than in every handshake.
func (c *Config) check() (*keySet, error) {
	ks, err := c.keySet()
	if err != nil {
		return nil, err
	}
	if c.Mode > ModeSealed {
		return nil, errorf(ErrConfig, "Config.Mode is %v; use ModeAuth, ModeIntegrity or ModeSealed", c.Mode)
	}
	return ks, nil
}

// checkListener is check for a Listener, which also uses the limits.
func (c *Config) checkListener() error {
	if _, err := c.check(); err != nil {
		return err
	}
	if c.MaxHandshakes < 0 || c.AcceptQueue < 0 {
		return errorf(ErrConfig, "Config.MaxHandshakes is %d and Config.AcceptQueue is %d; neither may be negative (zero means the default)",
			c.MaxHandshakes, c.AcceptQueue)
	}
	return nil
}

// keySet returns the validated, derived keys of c.
func (c *Config) keySet() (*keySet, error) {
	if c == nil {
		return nil, errorf(ErrConfig, "nil Config; set Config.Keys")
	}
	if c.Keyring != nil {
		return c.Keyring.keySet()
	}
	if ks := c.keys.Load(); ks != nil {
		return ks, ks.err
	}
	ks := newKeySet(c.Keys)
	c.keys.CompareAndSwap(nil, ks)
	ks = c.keys.Load()
	return ks, ks.err
}
