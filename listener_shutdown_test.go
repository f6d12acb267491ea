package hmacauth

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// closeSignalListener tells when its Close is called, and how often.
type closeSignalListener struct {
	net.Listener
	once   sync.Once
	closed chan struct{}
	closes atomic.Int32
}

func (l *closeSignalListener) Close() error {
	l.closes.Add(1)
	err := l.Listener.Close()
	l.once.Do(func() { close(l.closed) })
	return err
}

// gatedConn holds its first Write until gate is closed.
type gatedConn struct {
	net.Conn
	gate <-chan struct{}
	once sync.Once
}

func (c *gatedConn) Write(b []byte) (int, error) {
	c.once.Do(func() { <-c.gate })
	return c.Conn.Write(b)
}

// shutdownListener returns a Listener over a plain loopback socket (so a
// client's handshake starts as soon as it connects) and a channel closed
// when the Listener closes that socket.
func shutdownListener(t *testing.T, cfg *Config) (*Listener, *closeSignalListener) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sig := &closeSignalListener{Listener: inner, closed: make(chan struct{})}
	l, err := NewListener(sig, cfg)
	if err != nil {
		inner.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, sig
}

func TestListenerShutdown(t *testing.T) {
	t.Run("graceful", func(t *testing.T) {
		cfg, _ := newTestConfig()
		cfg.HandshakeTimeout = time.Minute
		l, inner := shutdownListener(t, cfg)
		clientCfg := configWith(cfg.Keys[0])

		// Two clients wait for Accept, one is in the middle of its
		// handshake: its ClientHello is held back until Shutdown began.
		for range 2 {
			dialTest(t, l.Addr(), clientCfg)
		}
		waitFor(t, "two clients wait for Accept", func() bool { return l.al.Stats().Queued == 2 })
		gate := make(chan struct{})
		raw := rawDial(t, l.Addr(), "")
		slow := Client(&gatedConn{Conn: raw, gate: gate}, clientCfg)
		hsDone := make(chan error, 1)
		go func() { hsDone <- slow.Handshake() }()
		waitFor(t, "the third handshake is in flight", func() bool { return l.al.Stats().InFlight == 1 })

		shutDone := make(chan error, 1)
		go func() { shutDone <- l.Shutdown(context.Background()) }()
		<-inner.closed
		// No new TCP connection is taken.
		if c, err := net.DialTimeout("tcp", l.Addr().String(), waitLimit); err == nil {
			c.Close()
			t.Fatal("a new connection was accepted after Shutdown began")
		}
		close(gate)
		if err := <-hsDone; err != nil {
			t.Fatalf("the handshake in flight when Shutdown began failed: %v", err)
		}

		// Accept returns the two queued connections and the one whose
		// handshake finished, each usable, then net.ErrClosed.
		for i := range 3 {
			c, err := l.Accept()
			if err != nil {
				t.Fatalf("Accept %d during Shutdown: %v", i+1, err)
			}
			if c.(*Conn).KeyID() != "test-key" {
				t.Errorf("accepted connection with key ID %q", c.(*Conn).KeyID())
			}
			c.Close()
		}
		if _, err := io.ReadAll(slow); err != nil {
			t.Errorf("the connection accepted during Shutdown did not end with a close record: %v", err)
		}
		slow.Close()
		if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after the last connection returned %v, want net.ErrClosed", err)
		}
		select {
		case err := <-shutDone:
			if err != nil {
				t.Errorf("Shutdown returned %v, want nil", err)
			}
		case <-time.After(waitLimit):
			t.Fatal("Shutdown did not return after Accept took every connection")
		}
		if err := l.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown after Shutdown returned %v, want nil", err)
		}
		goleak.VerifyNone(t)
	})

	t.Run("nothing left", func(t *testing.T) {
		cfg, _ := newTestConfig()
		l, _ := shutdownListener(t, cfg)
		accepted := make(chan error, 1)
		go func() {
			_, err := l.Accept()
			accepted <- err
		}()
		if err := l.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown of an idle Listener returned %v", err)
		}
		if err := <-accepted; !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept blocked across Shutdown returned %v, want net.ErrClosed", err)
		}
		goleak.VerifyNone(t)
	})

	// Shutdown and Close close the inner listener once between them (a
	// listener given to NewListener need not take a second Close), and a
	// Shutdown after Close reports the close, every time.
	t.Run("with Close", func(t *testing.T) {
		for _, shutdownFirst := range []bool{true, false} {
			for range 20 {
				cfg, _ := newTestConfig()
				l, inner := shutdownListener(t, cfg)
				var err error
				if shutdownFirst {
					err = l.Shutdown(context.Background())
					l.Close()
				} else {
					l.Close()
					err = l.Shutdown(context.Background())
					if !errors.Is(err, net.ErrClosed) {
						t.Fatalf("Shutdown after Close returned %v, want net.ErrClosed", err)
					}
				}
				if n := inner.closes.Load(); n != 1 {
					t.Fatalf("Shutdown first: %v: the inner listener was closed %d times (Shutdown: %v)", shutdownFirst, n, err)
				}
			}
		}
		goleak.VerifyNone(t)
	})

	t.Run("context ends", func(t *testing.T) {
		cfg, ev := newTestConfig()
		cfg.HandshakeTimeout = time.Minute
		l, _ := shutdownListener(t, cfg)
		queued := dialTest(t, l.Addr(), configWith(cfg.Keys[0]))
		waitFor(t, "a client waits for Accept", func() bool { return l.al.Stats().Queued == 1 })
		silent := rawDial(t, l.Addr(), "")
		waitFor(t, "a silent client is in handshake", func() bool { return l.al.Stats().InFlight == 1 })

		ctx, cancel := context.WithCancel(context.Background())
		shutDone := make(chan error, 1)
		go func() { shutDone <- l.Shutdown(ctx) }()
		cancel()
		select {
		case err := <-shutDone:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Shutdown returned %v, want context.Canceled", err)
			}
		case <-time.After(waitLimit): // far less than the handshake timeout
			t.Fatal("Shutdown did not return when its context ended")
		}
		// The rest was closed, as Close does.
		waitClosed(t, silent)
		if e := ev.waitFrom(t, silent.LocalAddr()); e.Err == nil {
			t.Error("the aborted handshake was reported as a success")
		}
		queued.SetReadDeadline(time.Now().Add(waitLimit))
		if n, err := queued.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("the connection never accepted is still open: read %d, %v", n, err)
		}
		if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Shutdown returned %v, want net.ErrClosed", err)
		}
		if st := l.al.Stats(); st.InFlight != 0 || st.Queued != 0 {
			t.Errorf("stats after Shutdown = %+v", st)
		}
		goleak.VerifyNone(t)
	})
}
