package hmacauth

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// errNoDeadlines is what noDeadlineConn's deadline setters return.
var errNoDeadlines = errors.New("deadlines not supported")

// noDeadlineConn is a connection that refuses deadlines, as
// golang.org/x/crypto/ssh's channels and some users' wrappers do, over
// real loopback TCP. reading, if set, is closed at the first Read, when
// the handshake is waiting for the peer.
type noDeadlineConn struct {
	net.Conn
	once    sync.Once
	reading chan struct{}
}

func (c *noDeadlineConn) Read(b []byte) (int, error) {
	if c.reading != nil {
		c.once.Do(func() { close(c.reading) })
	}
	return c.Conn.Read(b)
}

func (*noDeadlineConn) SetDeadline(time.Time) error      { return errNoDeadlines }
func (*noDeadlineConn) SetReadDeadline(time.Time) error  { return errNoDeadlines }
func (*noDeadlineConn) SetWriteDeadline(time.Time) error { return errNoDeadlines }

// waitHandshake returns the error of the handshake that done reports,
// failing the test if it is still running after waitLimit: nothing else
// would end it.
func waitHandshake(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(waitLimit):
		t.Fatalf("handshake still running after %v on a connection without deadlines", waitLimit)
		return nil
	}
}

// Config.HandshakeTimeout ends a handshake on a connection that refuses
// deadlines, with ErrHandshakeTimeout, on either side, by closing it: the
// handshake does not hang (nor hold a shared key share) on a silent peer.
func TestHandshakeTimeoutWithoutDeadlines(t *testing.T) {
	for _, client := range []bool{false, true} {
		t.Run(map[bool]string{false: "server", true: "client"}[client], func(t *testing.T) {
			_, rs := pipeTCP(t) // the other end never writes
			cfg := &Config{Keys: []Key{testKey("k")}, HandshakeTimeout: 50 * time.Millisecond}
			raw := &noDeadlineConn{Conn: rs}
			c := Server(raw, cfg)
			if client {
				c = Client(raw, cfg)
			}
			done := make(chan error, 1)
			go func() { done <- c.Handshake() }()
			err := waitHandshake(t, done)
			mustBe(t, err, ErrHandshakeTimeout)
			t.Logf("handshake error: %v", err)
		})
	}
}

// A cancelled context ends a handshake on a connection that refuses
// deadlines, with the context's cause.
func TestHandshakeCancelWithoutDeadlines(t *testing.T) {
	_, rs := pipeTCP(t)
	raw := &noDeadlineConn{Conn: rs, reading: make(chan struct{})}
	c := Server(raw, &Config{Keys: []Key{testKey("k")}, HandshakeTimeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.HandshakeContext(ctx) }()
	<-raw.reading
	cancel()
	mustBe(t, waitHandshake(t, done), context.Canceled)
}

// A connection that refuses deadlines still carries a handshake that
// completes, and then data.
func TestHandshakeWithoutDeadlines(t *testing.T) {
	rc, rs := pipeTCP(t)
	cfg := &Config{Keys: []Key{testKey("k")}, Mode: ModeSealed}
	cc := Client(&noDeadlineConn{Conn: rc}, cfg)
	sc := Server(&noDeadlineConn{Conn: rs}, &Config{Keys: cfg.Keys, Mode: ModeSealed})
	if cerr, serr := handshakeBoth(cc, sc); cerr != nil || serr != nil {
		t.Fatalf("handshake: client %v, server %v", cerr, serr)
	}
	go echo(sc)
	roundTrip(t, cc, "over a connection without deadlines")
	cc.Close()
}

// noDeadlineListener yields connections that refuse deadlines; accepted
// receives each before the Listener sees it.
type noDeadlineListener struct {
	net.Listener
	accepted chan *noDeadlineConn
}

func (l *noDeadlineListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	nc := &noDeadlineConn{Conn: c, reading: make(chan struct{})}
	l.accepted <- nc
	return nc, nil
}

// Listener.Close returns while a handshake on a connection that refuses
// deadlines waits for a silent client: Close's cancellation reaches it.
func TestListenerCloseWithoutDeadlines(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nl := &noDeadlineListener{Listener: inner, accepted: make(chan *noDeadlineConn, 1)}
	l, err := NewListener(nl, &Config{Keys: []Key{testKey("k")}, HandshakeTimeout: time.Minute})
	if err != nil {
		inner.Close()
		t.Fatal(err)
	}
	c := rawDial(t, l.Addr(), "")
	defer c.Close()
	nc := <-nl.accepted
	<-nc.reading // the handshake waits for the ClientHello
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	select {
	case <-closed:
	case <-time.After(waitLimit):
		t.Fatalf("Listener.Close still waiting after %v for a handshake on a connection without deadlines", waitLimit)
	}
}
