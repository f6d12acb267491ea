package hmacauth

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/hmacauth/hmacauth/internal/acceptor"
	"github.com/hmacauth/hmacauth/internal/netx"
)

// Listener is a net.Listener whose Accept returns only connections whose
// client proved a key of the Config, as *Conn with the handshake done.
//
// Handshakes run concurrently, each on its own goroutine and bounded by
// Config.HandshakeTimeout. A failed handshake is never returned from
// Accept (http.Server.Serve and grpc.Server.Serve stop on such errors):
// the connection is closed with no byte sent, by an orderly close after
// draining what the client sent (at most 64 KiB within 500 ms; PROTOCOL.md
// section 7.2), and the failure goes to Config.Logger and
// Config.OnHandshake, after that drain. Temporary errors of the inner
// listener are retried with backoff.
//
// At most Config.MaxHandshakes connections are in handshake or wait for a
// place in the accept queue (Config.AcceptQueue more may wait in it), at
// most Config.MaxHandshakesPerIP of them from one IP or IPv6 /64 (more are
// closed at once); when every slot is taken by a handshake, a new
// connection evicts the one that has made the least progress for the
// longest (see Config.MaxHandshakes). When the application stops calling
// Accept, the Listener stops accepting from the inner listener.
// SECURITY.md says what these bounds protect against.
type Listener struct {
	al       *acceptor.Listener
	config   *Config
	counters handshakeCounters
}

// NewListener returns a Listener that accepts from inner. It checks cfg and
// starts accepting at once.
func NewListener(inner net.Listener, cfg *Config) (*Listener, error) {
	if err := cfg.checkListener(); err != nil {
		return nil, err
	}
	return newListener(inner, cfg), nil
}

// newListener is NewListener for a cfg that passed checkListener.
func newListener(inner net.Listener, cfg *Config) *Listener {
	l := &Listener{config: cfg}
	l.al = acceptor.New(inner, acceptor.Config{
		Handshake:   l.handshake,
		MaxInFlight: cmp.Or(cfg.MaxHandshakes, DefaultMaxHandshakes),
		MaxPerIP:    cmp.Or(cfg.MaxHandshakesPerIP, DefaultMaxHandshakesPerIP),
		QueueLen:    cmp.Or(cfg.AcceptQueue, DefaultAcceptQueue),
		Refuse:      closeRefused,
		Name:        "hmacauth",
		ClaimAttr:   "key_id",
		ErrShed:     ErrShed,
		Logger:      cfg.Logger,
		Report:      l.report,
	})
	return l
}

// Listen listens on the network address (as net.Listen does) and returns a
// Listener over it.
//
// On Linux, a TCP socket made by Listen has TCP_DEFER_ACCEPT set to
// Config.HandshakeTimeout, rounded up to whole seconds (and by the kernel to
// its next SYN-ACK retransmission: 1, 3, 7, 15, 31, ... s): the kernel hands
// a connection to the Listener only once the client's first bytes have
// arrived, or when the deferral ends, and Config.HandshakeTimeout bounds it
// from then on. With no handshake timeout (negative), nothing is set.
// NewListener leaves the options of the listener it is given as they are.
// SECURITY.md says what the deferral bounds.
func Listen(network, address string, cfg *Config) (*Listener, error) {
	if err := cfg.checkListener(); err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: deferAccept(cfg.handshakeTimeout())}
	inner, err := lc.Listen(context.Background(), network, address)
	if err != nil {
		return nil, err
	}
	return newListener(inner, cfg), nil
}

// Accept waits for and returns the next authenticated connection, a *Conn.
// After Close, or once Shutdown has handed over the last connection, it
// returns an error wrapping net.ErrClosed.
func (l *Listener) Accept() (net.Conn, error) { return l.al.Accept() }

// Close closes the inner listener, aborts handshakes in flight and closes
// authenticated connections not yet accepted. It returns when all of the
// Listener's goroutines have ended, after the reports of connections it
// shed that were still pending (so Config.OnHandshake must return).
// Connections already returned by Accept are not affected.
func (l *Listener) Close() error { return l.al.Close() }

// Shutdown stops the Listener gracefully, as http.Server.Shutdown stops a
// server: it closes the inner listener at once, so no new connection is
// accepted (the kernel refuses or resets the ones not yet taken from its
// backlog), and lets the handshakes in flight run to their end. Accept keeps
// returning the connections whose handshake succeeded or that were waiting
// for it; once it has returned the last one, Accept returns an error
// wrapping net.ErrClosed and Shutdown returns nil. Call Accept meanwhile, as
// http.Server.Serve does, or Shutdown waits for ctx.
//
// If ctx ends first, Shutdown closes the Listener as Close does (aborting the
// handshakes left and closing the connections not yet accepted) and returns
// ctx's error. If the Listener is closed meanwhile, Shutdown returns the
// error Accept returns. It returns when all of the Listener's goroutines
// have ended. Connections already returned by Accept are not affected.
func (l *Listener) Shutdown(ctx context.Context) error { return l.al.Shutdown(ctx) }

// Addr returns the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.al.Addr() }

// Stats returns the Listener's counters. It is cheap (a few atomic loads)
// and safe to call at any time, also after Close.
func (l *Listener) Stats() ListenerStats {
	as := l.al.Stats()
	s := ListenerStats{
		Shed:          uint64(as.Shed),
		Evicted:       uint64(as.Evicted),
		InFlight:      as.InFlight,
		Queued:        as.Queued,
		AcceptRetries: uint64(as.Retries),
	}
	l.counters.fill(&s)
	return s
}

// handshake runs the server handshake on a connection the engine
// accepted. The claim it reports is the key ID the client proved or, on
// failure, the one it named (from the error).
func (l *Listener) handshake(ctx context.Context, raw net.Conn) (net.Conn, string, error) {
	c := Server(raw, l.config)
	if err := c.HandshakeContext(ctx); err != nil {
		return nil, claimedKeyID(err), err
	}
	return c, c.KeyID(), nil
}

// report counts a connection the engine handled and passes it to
// Config.OnHandshake; the engine has logged it.
func (l *Listener) report(ev acceptor.Event) {
	l.counters.record(ev.Duration, ev.Err)
	if l.config.OnHandshake != nil {
		l.config.OnHandshake(HandshakeEvent{RemoteAddr: ev.RemoteAddr, KeyID: ev.Claim, Duration: ev.Duration, Err: ev.Err})
	}
}

// Bounds of the reading closeRefused does before it closes a refused
// connection: enough for what a client or probe sends unanswered, and as
// long as net/http waits for the same reason (rstAvoidanceDelay).
// refusalDrainTime is a variable so that tests can show that a refusal
// never waits for it.
const refusalDrainBytes = 64 << 10

var refusalDrainTime = 500 * time.Millisecond

// closeRefused closes a connection whose handshake failed so that every
// refusal looks the same to the client: no byte, then an orderly end of
// stream (FIN). A close with unread bytes in the receive queue would make
// the kernel send a reset instead, which would set apart a client that
// sent more than the server read (a ClientHello and one byte more, a long
// HTTP request) from one that did not. So it half-closes first, which tells
// the client at once, then reads and discards what the client sent until
// the client closes, refusalDrainBytes have come or refusalDrainTime has
// passed, or ctx is done (the Listener is closing), and closes. A
// connection without half-close (an inner listener's wrapper that hides
// CloseWrite) is drained all the same: its client learns of the refusal
// only at the close, refusalDrainTime later, still without a reset.
func closeRefused(ctx context.Context, raw net.Conn) {
	defer raw.Close()
	if cw, ok := raw.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	if raw.SetReadDeadline(time.Now().Add(refusalDrainTime)) != nil {
		return
	}
	stop := netx.Interrupt(ctx, raw)
	io.Copy(io.Discard, io.LimitReader(raw, refusalDrainBytes))
	stop()
}

// String names the Listener by its address, never its Config's secrets.
func (l *Listener) String() string {
	if l == nil {
		return "hmacauth.Listener(nil)"
	}
	return fmt.Sprintf("hmacauth.Listener{Addr: %v}", l.Addr())
}

// Format prints String for every verb: fmt prints the Config's secrets
// for a verb that does not fit a pointer, such as %s or %q.
func (l *Listener) Format(f fmt.State, _ rune) { io.WriteString(f, l.String()) }
