package hmacauth

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestDialForeignServers dials servers that do not speak hmacauth. Every
// case but the silent one must fail at once; HandshakeTimeout is long so
// that waiting for it would hang the test instead of passing it.
func TestDialForeignServers(t *testing.T) {
	t.Parallel()
	k := testKey("test-key")
	validSH := func() []byte {
		b := make([]byte, serverHelloLen)
		copy(b, magic)
		b[len(magic)], b[len(magic)+1] = version1, msgServerHello
		return b
	}
	for _, tc := range []struct {
		name    string
		handle  func(net.Conn)
		want    error
		inError string
	}{
		{"HTTP server answering 400", func(c net.Conn) {
			// What an HTTP server sends for a request line it cannot parse.
			c.Read(make([]byte, 4096))
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request")
		}, ErrProtocol, `"HTTP/1.1 400`},
		{"SSH server", func(c net.Conn) {
			io.WriteString(c, "SSH-2.0-x\r\n")
			drain(c)
		}, ErrProtocol, `"SSH-2.0-x\r\n"`},
		{"SSH server closing after its banner", func(c net.Conn) {
			io.WriteString(c, "SSH-2.0\r\n")
		}, ErrProtocol, `"SSH-2.0\r\n"`},
		{"server closing at once", func(c net.Conn) {}, ErrAuthFailed, "closed the connection"},
		{"server closing after reading", func(c net.Conn) {
			c.Read(make([]byte, clientHelloLen))
		}, ErrAuthFailed, "test-key"},
		{"future version", func(c net.Conn) {
			b := validSH()
			b[len(magic)] = 2
			c.Write(b)
			drain(c)
		}, ErrProtocol, "version 2"},
		{"ClientHello echoed back", func(c net.Conn) {
			io.Copy(c, c)
		}, ErrProtocol, "message type"},
		{"truncated ServerHello", func(c net.Conn) {
			c.Write(validSH()[:serverHelloLen-1])
		}, ErrProtocol, "middle of its ServerHello"},
		{"ServerHello with a bad MAC", func(c net.Conn) {
			c.Write(validSH())
			drain(c)
		}, ErrAuthFailed, "did not prove"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startRawServer(t, tc.handle)
			cfg := configWith(k)
			cfg.HandshakeTimeout = time.Minute
			c, err := Dial("tcp", addr.String(), cfg)
			if c != nil {
				t.Fatal("Dial returned a Conn with an error")
			}
			mustBe(t, err, tc.want)
			for _, want := range []string{tc.inError, addr.String()} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestDialSilentServer(t *testing.T) {
	addr := startRawServer(t, drain)
	cfg := configWith(testKey("test-key"))
	cfg.HandshakeTimeout = 100 * time.Millisecond
	_, err := Dial("tcp", addr.String(), cfg)
	mustBe(t, err, ErrHandshakeTimeout)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("error %v is not a net.Error with Timeout() true", err)
	}
	if !strings.Contains(err.Error(), addr.String()) {
		t.Errorf("error %q does not name the server", err)
	}
}

func TestErrHandshakeTimeoutIsNetError(t *testing.T) {
	t.Parallel()
	var ne net.Error
	if !errors.As(ErrHandshakeTimeout, &ne) || !ne.Timeout() {
		t.Fatal("ErrHandshakeTimeout is not a net.Error with Timeout() true")
	}
	var tmp interface{ Temporary() bool }
	if errors.As(ErrHandshakeTimeout, &tmp) && tmp.Temporary() {
		t.Error("ErrHandshakeTimeout reports Temporary(); a server loop would retry on it")
	}
}

// startSilentServer returns the address of a server that reads the
// ClientHello, reports it on the returned channel, and then says nothing.
func startSilentServer(t *testing.T) (net.Addr, <-chan struct{}) {
	hello := make(chan struct{}, 8)
	addr := startRawServer(t, func(c net.Conn) {
		if _, err := io.ReadFull(c, make([]byte, clientHelloLen)); err == nil {
			hello <- struct{}{}
		}
		drain(c)
	})
	return addr, hello
}

func TestDialContextCancel(t *testing.T) {
	t.Parallel()
	addr, hello := startSilentServer(t)
	cause := errors.New("the user gave up")
	ctx, cancel := context.WithCancelCause(context.Background())
	d := Dialer{Config: configWith(testKey("test-key"))}
	d.Config.HandshakeTimeout = time.Minute
	done := make(chan error, 1)
	go func() {
		c, err := d.DialContext(ctx, "tcp", addr.String())
		if c != nil {
			c.Close()
			err = errors.New("DialContext returned a Conn")
		}
		done <- err
	}()
	<-hello // the handshake is under way
	cancel(cause)
	var err error
	select {
	case err = <-done:
	case <-time.After(waitLimit): // far less than the handshake timeout
		t.Fatal("DialContext did not return after its context was cancelled")
	}
	if !errors.Is(err, cause) {
		t.Errorf("DialContext after cancel = %v, want the cancel cause", err)
	}
	if errors.Is(err, ErrHandshakeTimeout) {
		t.Errorf("a cancelled dial reports a timeout: %v", err)
	}

	// A context already done fails before any I/O.
	if _, err := d.DialContext(ctx, "tcp", addr.String()); err == nil {
		t.Error("DialContext with a cancelled context succeeded")
	}
}

func TestDialTimeouts(t *testing.T) {
	addr, _ := startSilentServer(t)
	k := testKey("test-key")
	slow := &Config{Keys: []Key{k}, HandshakeTimeout: time.Minute}
	for _, tc := range []struct {
		name string
		dial func() (net.Conn, error)
	}{
		{"context deadline", func() (net.Conn, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			return (&Dialer{Config: slow}).DialContext(ctx, "tcp", addr.String())
		}},
		{"NetDialer.Timeout", func() (net.Conn, error) {
			d := Dialer{NetDialer: &net.Dialer{Timeout: 100 * time.Millisecond}, Config: slow}
			return d.Dial("tcp", addr.String())
		}},
		{"NetDialer.Deadline", func() (net.Conn, error) {
			d := Dialer{NetDialer: &net.Dialer{Deadline: time.Now().Add(100 * time.Millisecond)}, Config: slow}
			return d.Dial("tcp", addr.String())
		}},
		{"Config.HandshakeTimeout", func() (net.Conn, error) {
			d := Dialer{Config: &Config{Keys: []Key{k}, HandshakeTimeout: 100 * time.Millisecond}}
			return d.Dial("tcp", addr.String())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.dial()
			if c != nil {
				t.Fatal("a Conn came back with the error")
			}
			// On a loaded machine the bound may already pass during
			// the loopback connect: a dial timeout is right then too.
			if op := (*net.OpError)(nil); !errors.As(err, &op) || op.Op != "dial" {
				mustBe(t, err, ErrHandshakeTimeout)
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("%v is not a net.Error with Timeout() true", err)
			}
		})
	}
}

func TestDialErrors(t *testing.T) {
	t.Parallel()
	// A port nobody listens on: take one and free it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	d := Dialer{Config: configWith(testKey("test-key"))}
	c, err := d.Dial("tcp", addr)
	if err == nil || c != nil {
		t.Errorf("Dial to a closed port = %v, %v; want a nil net.Conn and an error", c, err)
	}
	for _, cfg := range []*Config{nil, {}, {Keys: []Key{{ID: "k", Secret: []byte("short")}}}} {
		if _, err := (&Dialer{Config: cfg}).Dial("tcp", addr); !errors.Is(err, ErrConfig) && !errors.Is(err, ErrWeakKey) {
			t.Errorf("Dial with Config %v = %v, want ErrConfig or ErrWeakKey", cfg, err)
		}
		if _, err := Dial("tcp", addr, cfg); !errors.Is(err, ErrConfig) && !errors.Is(err, ErrWeakKey) {
			t.Errorf("package Dial with Config %v = %v, want ErrConfig or ErrWeakKey", cfg, err)
		}
	}
}

// TestDialerProvesFirstKey checks that a client with several keys proves
// Keys[0].
func TestDialerProvesFirstKey(t *testing.T) {
	t.Parallel()
	a, b := testKey("a"), testKey("b")
	cfg, _ := newTestConfig(a, b)
	s := startEcho(t, cfg)
	c, err := (&Dialer{Config: &Config{Keys: []Key{b, a}}}).Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.(*Conn).KeyID(); got != "b" {
		t.Errorf("KeyID = %q, want %q", got, "b")
	}
}

// TestTruncatedServerHello has a server send every proper prefix of a
// ServerHello, then close: the client must refuse each, never hang.
func TestTruncatedServerHello(t *testing.T) {
	t.Parallel()
	sh := fuzzPlain.sh()
	prefix := make(chan int, 1)
	addr := startRawServer(t, func(c net.Conn) {
		n := <-prefix
		if _, err := io.ReadFull(c, make([]byte, clientHelloLen)); err != nil {
			return
		}
		c.Write(sh[:n])
	})
	cfg := configWith(testKey("test-key"))
	cfg.HandshakeTimeout = time.Minute
	for n := range serverHelloLen {
		prefix <- n
		_, err := Dial("tcp", addr.String(), cfg)
		want := ErrProtocol
		if n == 0 {
			want = ErrAuthFailed // a server refuses by closing without a word
		}
		if !errors.Is(err, want) {
			t.Errorf("ServerHello cut to %d bytes: %v, want %v", n, err, want)
		}
		// A close during the handshake is not only a wrong key: the
		// server may have shed the connection or be stopping.
		if n == 0 && err != nil && !strings.Contains(err.Error(), "(wrong key, shed, or the server stopping)") {
			t.Errorf("server closed during the handshake: %q does not name every cause", err)
		}
	}
}
