package hmacauth

import (
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// deferAcceptOf reads TCP_DEFER_ACCEPT of a TCP listener, in the seconds
// the kernel reports (its wait rounded up to a SYN-ACK retransmission).
func deferAcceptOf(t *testing.T, l net.Listener) int {
	t.Helper()
	rc, err := l.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		v, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

func TestDeferAcceptSeconds(t *testing.T) {
	for _, tc := range []struct {
		wait time.Duration
		want int // as the kernel reports it
	}{
		{time.Millisecond, 1},
		{time.Second, 1},
		{1500 * time.Millisecond, 3},
		{DefaultHandshakeTimeout, 7},
		{10 * time.Second, 15},
	} {
		lc := net.ListenConfig{Control: deferAccept(tc.wait)}
		l, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if got := deferAcceptOf(t, l); got != tc.want {
			t.Errorf("wait %v: TCP_DEFER_ACCEPT reads %d s, want %d s", tc.wait, got, tc.want)
		}
		l.Close()
	}
	if deferAccept(0) != nil {
		t.Error("deferAccept(0) sets an option; no handshake timeout must set nothing")
	}
}

// TestNewListenerKeepsSocketOptions checks that NewListener does not
// defer accepts on a listener it is given.
func TestNewListenerKeepsSocketOptions(t *testing.T) {
	t.Parallel()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewListener(inner, configWith(testKey("k")))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := deferAcceptOf(t, inner); got != 0 {
		t.Errorf("NewListener set TCP_DEFER_ACCEPT to %d s on the inner listener", got)
	}
}

// TestListenKeepsSilentClientsInKernel fills more than every handshake slot
// of a Listen listener with clients that send nothing: none of them takes
// a slot, so a good client that connects after them gets through at once.
// (Over NewListener, TestMaxHandshakes shows the same clients holding
// every slot.)
func TestListenKeepsSilentClientsInKernel(t *testing.T) {
	cfg, ev := newTestConfig()
	cfg.MaxHandshakes = 1
	cfg.MaxHandshakesPerIP = -1
	cfg.HandshakeTimeout = time.Minute
	s := startEcho(t, cfg)
	for range 3 {
		rawDial(t, s.Addr(), "")
	}
	client := configWith(cfg.Keys[0])
	client.HandshakeTimeout = waitLimit // a failure, not a hang, if a silent client holds the slot
	checkGoodClient(t, s, client)
	if st := s.Stats(); st.InFlight != 0 || st.Succeeded != 1 {
		t.Errorf("stats = %+v, want no handshake in flight and one success: a silent client reached the engine", st)
	}
	if n := ev.count(func(e HandshakeEvent) bool { return e.Err != nil }); n != 0 {
		t.Errorf("%d failed handshakes, want none", n)
	}
}

// TestListenSilentClientTimesOut checks what the kernel does with a silent
// client of a Listen listener once its deferral ends: it completes the
// connection, and the handshake timeout refuses it.
func TestListenSilentClientTimesOut(t *testing.T) {
	cfg, ev := newTestConfig()
	cfg.HandshakeTimeout = 500 * time.Millisecond // deferred for 1 s, then 0.5 s in handshake
	s := startEcho(t, cfg)
	c := rawDial(t, s.Addr(), "")
	e := ev.waitFrom(t, c.LocalAddr())
	mustBe(t, e.Err, ErrHandshakeTimeout)
	waitClosed(t, c)
}

// TestListenUnix checks that Listen sets nothing on a Unix socket.
func TestListenUnix(t *testing.T) {
	t.Parallel()
	l, err := Listen("unix", filepath.Join(t.TempDir(), "s"), configWith(testKey("k")))
	if err != nil {
		t.Fatalf("Listen on a Unix socket: %v", err)
	}
	s := serveListener(t, l, echo)
	c, err := Dial("unix", s.Addr().String(), configWith(testKey("k")))
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, "over a Unix socket")
	c.Close()
}
