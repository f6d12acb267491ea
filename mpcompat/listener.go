package mpcompat

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"

	"github.com/hmacauth/hmacauth/internal/acceptor"
)

// Listener is a net.Listener whose Accept returns only connections whose
// client proved the authkey in the multiprocessing.connection handshake,
// the way Python's multiprocessing.connection.Listener.accept does, and
// was proven it in turn. The connections returned are the inner
// listener's own (a *net.TCPConn for TCP), positioned after the handshake:
// exchange messages on them with WriteMessage and ReadMessage.
//
// Handshakes run concurrently, one goroutine each, off the goroutine that
// accepts from the inner listener, each bounded by Config.HandshakeTimeout,
// so a slow or silent client never delays another. A failed handshake is
// never returned from Accept: the connection is closed and the failure
// goes to Config.Logger and Config.OnHandshake. At most
// Config.MaxHandshakes connections are in handshake or wait for Accept, at
// most Config.MaxHandshakesPerIP of them from one IP or IPv6 /64; with
// every slot taken, a new connection evicts the handshake that has made
// the least progress for the longest.
type Listener struct {
	al  *acceptor.Listener
	cfg *Config
}

// NewListener returns a Listener that accepts from inner. It checks cfg and
// starts accepting at once.
func NewListener(inner net.Listener, cfg *Config) (*Listener, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return newListener(inner, cfg), nil
}

// newListener is NewListener for a cfg that passed check.
func newListener(inner net.Listener, cfg *Config) *Listener {
	l := &Listener{cfg: cfg}
	l.al = acceptor.New(inner, acceptor.Config{
		Handshake:   l.handshake,
		MaxInFlight: cmp.Or(cfg.MaxHandshakes, DefaultMaxHandshakes),
		MaxPerIP:    cmp.Or(cfg.MaxHandshakesPerIP, DefaultMaxHandshakesPerIP),
		QueueLen:    cmp.Or(cfg.AcceptQueue, DefaultAcceptQueue),
		Name:        "mpcompat",
		ClaimAttr:   "digest",
		ErrShed:     ErrShed,
		Logger:      cfg.Logger,
		Report:      l.report,
	})
	return l
}

// Listen listens on the network address (as net.Listen does; "tcp" and
// "unix" are what Python's Listener offers) and returns a Listener that
// accepts clients proving authKey, with the defaults of Config: sha256,
// no legacy MD5. Python's multiprocessing.connection.Client(address,
// authkey=authKey) of Python 3.12 and later can connect; for older Python
// use NewListener with Config.AllowLegacyMD5.
func Listen(network, address string, authKey []byte) (net.Listener, error) {
	cfg := &Config{AuthKey: authKey}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	inner, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	return newListener(inner, cfg), nil
}

// Accept waits for and returns the next authenticated connection. After
// Close it returns an error wrapping net.ErrClosed.
func (l *Listener) Accept() (net.Conn, error) { return l.al.Accept() }

// Close closes the inner listener, aborts handshakes in flight and closes
// authenticated connections not yet accepted. It returns when all of the
// Listener's goroutines have ended. Connections already returned by Accept
// are not affected.
func (l *Listener) Close() error { return l.al.Close() }

// Addr returns the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.al.Addr() }

// String names the Listener by its address, never its authkey.
func (l *Listener) String() string {
	if l == nil {
		return "mpcompat.Listener(nil)"
	}
	return fmt.Sprintf("mpcompat.Listener{Addr: %v}", l.Addr())
}

// Format prints String for every verb: fmt prints the Config's authkey for
// a verb that does not fit a pointer, such as %s or %q.
func (l *Listener) Format(f fmt.State, _ rune) { io.WriteString(f, l.String()) }

// handshake runs the listener side of the handshake on a connection the
// engine accepted. The claim it reports is the digest of the client's
// answer.
func (l *Listener) handshake(ctx context.Context, raw net.Conn) (net.Conn, string, error) {
	h := handshake{conn: raw, cfg: l.cfg, server: true}
	if err := h.run(ctx); err != nil {
		return nil, string(h.peerDigest), err
	}
	return raw, string(h.peerDigest), nil
}

// report passes a connection the engine handled, and has logged, to
// Config.OnHandshake.
func (l *Listener) report(ev acceptor.Event) {
	if l.cfg.OnHandshake != nil {
		l.cfg.OnHandshake(HandshakeEvent{RemoteAddr: ev.RemoteAddr, Digest: Digest(ev.Claim), Duration: ev.Duration, Err: ev.Err})
	}
}
