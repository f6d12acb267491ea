package mpcompat

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"net"
	"sync"
	"testing"
	"time"
)

// bound is how long a test waits for something that should happen at once;
// it only keeps a broken test from hanging.
const bound = 20 * time.Second

var (
	keyA = []byte("the shared authkey of side A, 32+ bytes long")
	keyB = []byte("another authkey, held by side B, 32+ bytes")
)

// events collects a Listener's handshake events.
type events chan HandshakeEvent

func (ev events) next(t *testing.T) HandshakeEvent {
	t.Helper()
	select {
	case e := <-ev:
		return e
	case <-time.After(bound):
		t.Fatal("no handshake event")
		return HandshakeEvent{}
	}
}

// listen starts a Listener on 127.0.0.1 with cfg and records its events.
func listen(t *testing.T, cfg Config) (*Listener, events) {
	t.Helper()
	return listenOn(t, "tcp", "127.0.0.1:0", cfg)
}

func listenOn(t *testing.T, network, address string, cfg Config) (*Listener, events) {
	t.Helper()
	ev := make(events, 16)
	cfg.OnHandshake = func(e HandshakeEvent) { ev <- e }
	inner, err := net.Listen(network, address)
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewListener(inner, &cfg)
	if err != nil {
		inner.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, ev
}

// acceptOne accepts one connection in the background; it is closed when
// the test ends.
func acceptOne(t *testing.T, l net.Listener) <-chan net.Conn {
	t.Helper()
	ch := make(chan net.Conn, 1)
	done := make(chan struct{})
	var c net.Conn
	go func() {
		defer close(done)
		var err error
		if c, err = l.Accept(); err == nil {
			ch <- c
		}
		close(ch)
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		if c != nil {
			c.Close()
		}
	})
	return ch
}

func dial(addr net.Addr, cfg Config) (net.Conn, error) {
	d := Dialer{Config: &cfg, NetDialer: &net.Dialer{Timeout: bound}}
	return d.Dial(addr.Network(), addr.String())
}

// exchange sends messages both ways between a and b and checks them.
func exchange(t *testing.T, a, b net.Conn) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i, n := range []int{0, 5, 300_000} {
			WriteMessage(a, pattern(n, byte(i)))
		}
	}()
	for i, n := range []int{0, 5, 300_000} {
		got, err := ReadMessage(b, n)
		if err != nil || !bytes.Equal(got, pattern(n, byte(i))) {
			t.Errorf("message %d: %d bytes, %v", i, len(got), err)
		}
	}
	wg.Wait()
	WriteMessage(b, []byte("reply"))
	if got, err := ReadMessage(a, 10); err != nil || string(got) != "reply" {
		t.Errorf("reply: %q, %v", got, err)
	}
}

// rawPeer is a hand-driven end of a connection, for peers that misbehave.
type rawPeer struct {
	t *testing.T
	net.Conn
}

func (p rawPeer) send(b []byte) {
	p.t.Helper()
	if err := WriteMessage(p.Conn, b); err != nil {
		p.t.Error(err)
	}
}

func (p rawPeer) recv() []byte {
	p.t.Helper()
	b, err := ReadMessage(p.Conn, 1024)
	if err != nil {
		p.t.Errorf("raw peer: %v", err)
	}
	return b
}

func hmacMD5(key, m []byte) []byte {
	h := hmac.New(md5.New, key)
	h.Write(m)
	return h.Sum(nil)
}

// rawClient connects to l without this package's handshake.
func rawClient(t *testing.T, l net.Listener) rawPeer {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(bound))
	t.Cleanup(func() { c.Close() })
	return rawPeer{t, c}
}

// rawServer accepts one connection on 127.0.0.1 and runs play on it.
func rawServer(t *testing.T, play func(p rawPeer)) net.Addr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(bound))
		play(rawPeer{t, c})
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr()
}

// pattern returns n deterministic bytes, so that a reordered, dropped or
// duplicated byte shows.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7+i>>8) ^ seed
	}
	return b
}
