package mpcompat

import (
	"errors"
	"net"
	"testing"
)

func TestSlowClientDoesNotBlock(t *testing.T) {
	l, _ := listen(t, Config{AuthKey: keyA, HandshakeTimeout: -1})
	rawClient(t, l) // stays silent until the test ends
	accepted := acceptOne(t, l)
	c, err := dial(l.Addr(), Config{AuthKey: keyA})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exchange(t, c, <-accepted)
}

func TestShedPerIP(t *testing.T) {
	l, ev := listen(t, Config{AuthKey: keyA, MaxHandshakesPerIP: 1, HandshakeTimeout: -1})
	first := rawClient(t, l)
	first.recv() // its handshake is in flight
	second := rawClient(t, l)
	if e := ev.next(t); !errors.Is(e.Err, ErrShed) {
		t.Fatalf("second client from the same IP: %v, want ErrShed", e.Err)
	}
	if _, err := ReadMessage(second, 256); err == nil {
		t.Fatal("a shed client got a challenge")
	}
}

func TestListenerClose(t *testing.T) {
	l, ev := listen(t, Config{AuthKey: keyA, HandshakeTimeout: -1})
	p := rawClient(t, l)
	p.recv() // a handshake is in flight
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if e := ev.next(t); e.Err == nil {
		t.Fatal("the handshake in flight succeeded after Close")
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
}
