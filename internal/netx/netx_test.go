package netx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errSentinel = errors.New("pkg: refused")

func TestErrorf(t *testing.T) {
	t.Parallel()
	err := Errorf(errSentinel, "client %s named %q", "a", "k")
	if !errors.Is(err, errSentinel) || err.Error() != `pkg: refused: client a named "k"` {
		t.Errorf("Errorf = %q (wraps the sentinel: %v)", err, errors.Is(err, errSentinel))
	}
}

func TestTimeoutError(t *testing.T) {
	t.Parallel()
	var timeout error = TimeoutError("pkg: handshake timed out")
	var ne net.Error
	if !errors.As(timeout, &ne) || !ne.Timeout() || timeout.(TimeoutError).Temporary() || timeout.Error() != "pkg: handshake timed out" {
		t.Errorf("TimeoutError %q: want a net.Error that times out and is not temporary", timeout)
	}

	start := time.Now().Add(-1500 * time.Millisecond)
	err := TimedOut(fmt.Errorf("reading: %w", os.ErrDeadlineExceeded), timeout, start)
	if !errors.Is(err, timeout) || !errors.Is(err, os.ErrDeadlineExceeded) || !strings.HasPrefix(err.Error(), "pkg: handshake timed out after 1.5") {
		t.Errorf("TimedOut of a deadline = %q, want it wrapping both, with the time taken", err)
	}
	other := errors.New("reset")
	if got := TimedOut(other, timeout, start); got != other {
		t.Errorf("TimedOut of another error = %v, want it unchanged", got)
	}
	if got := TimedOut(nil, timeout, start); got != nil {
		t.Errorf("TimedOut(nil) = %v", got)
	}
}

func TestContextError(t *testing.T) {
	t.Parallel()
	timeout := TimeoutError("pkg: handshake timed out")
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if err := ContextError(ctx, timeout); !errors.Is(err, timeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ContextError after the deadline = %v, want it wrapping the timeout and context.DeadlineExceeded", err)
	}
	cause := errors.New("listener closed")
	ctx2, cancel2 := context.WithCancelCause(context.Background())
	cancel2(cause)
	if err := ContextError(ctx2, timeout); errors.Is(err, timeout) || !errors.Is(err, cause) || !strings.HasPrefix(err.Error(), "handshake abandoned: ") {
		t.Errorf("ContextError after a cancel = %v, want it wrapping the cause, not the timeout", err)
	}
}

func TestHandshakeError(t *testing.T) {
	t.Parallel()
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
	err := error(&HandshakeError{Pkg: "pkg", Peer: "client", Addr: addr, Claim: "k1", Err: Errorf(errSentinel, "bad proof")})
	if want := "pkg: handshake with client 127.0.0.1:9: refused: bad proof"; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err, want)
	}
	if he, ok := errors.AsType[*HandshakeError](fmt.Errorf("outer: %w", err)); !ok || he.Claim != "k1" || !errors.Is(err, errSentinel) {
		t.Errorf("the claim or the sentinel is lost: %v", err)
	}
}

func TestEarliest(t *testing.T) {
	t.Parallel()
	now := time.Now()
	a, b := now.Add(time.Second), now.Add(2*time.Second)
	for _, tc := range []struct{ x, y, want time.Time }{
		{a, b, a}, {b, a, a}, {time.Time{}, a, a}, {a, time.Time{}, a}, {time.Time{}, time.Time{}, time.Time{}},
	} {
		if got := Earliest(tc.x, tc.y); !got.Equal(tc.want) {
			t.Errorf("Earliest(%v, %v) = %v, want %v", tc.x, tc.y, got, tc.want)
		}
	}
}

// TestBound checks over loopback TCP that Bound's timeout and its ctx
// interrupt a blocked read and are told apart, and that a handshake that
// ends in time leaves the conn's deadlines as they were.
func TestBound(t *testing.T) {
	t.Parallel()
	c, _ := tcpPair(t)
	timeout := TimeoutError("pkg: handshake timed out")

	_, finish := Bound(context.Background(), c, time.Now(), time.Millisecond, timeout)
	_, err := c.Read(make([]byte, 1))
	if err = finish(err); !errors.Is(err, timeout) || !errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("after the timeout: %v, want the timeout wrapping the deadline error", err)
	}

	c, _ = tcpPair(t)
	ctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("listener closed")
	_, finish = Bound(ctx, c, time.Now(), time.Hour, timeout)
	cancel(cause)
	_, err = c.Read(make([]byte, 1))
	if err = finish(err); errors.Is(err, timeout) || !errors.Is(err, cause) {
		t.Errorf("after a cancel: %v, want the cause, not the timeout", err)
	}

	c, s := tcpPair(t)
	bounded, finish := Bound(context.Background(), c, time.Now(), time.Hour, timeout)
	if !bounded {
		t.Error("a handshake with a timeout is not reported bounded")
	}
	if b, f := Bound(context.Background(), s, time.Now(), 0, timeout); b || f(nil) != nil {
		t.Error("a handshake without timeout or deadline is reported bounded, or its finish failed")
	}
	dctx, dcancel := context.WithTimeout(context.Background(), time.Hour)
	defer dcancel()
	if b, f := Bound(dctx, s, time.Now(), 0, timeout); !b || f(nil) != nil {
		t.Error("a handshake under a context deadline is not reported bounded, or its finish failed")
	}
	s.Write([]byte{1})
	_, err = c.Read(make([]byte, 1))
	if err = finish(err); err != nil {
		t.Errorf("a read in time: %v", err)
	}
	s.Write([]byte{2})
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Errorf("a read after finish: %v, want the conn without a deadline", err)
	}
}

func tcpPair(t *testing.T) (c, s net.Conn) {
	t.Helper()
	return connPair(t, "tcp", "127.0.0.1:0")
}

// connPair returns both ends of a connection through a listener on
// network and address, closed at the test's end.
func connPair(t *testing.T, network, address string) (c, s net.Conn) {
	t.Helper()
	ln, err := net.Listen(network, address)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err = net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return c, s
}

// TestInterrupt checks over loopback TCP that a done ctx interrupts a
// blocked read, and that stop reports it.
func TestInterrupt(t *testing.T) {
	t.Parallel()
	c, _ := tcpPair(t)

	if stop := Interrupt(context.Background(), c); stop() {
		t.Error("stop reports an interruption for a context that is never done")
	}
	ctx, cancel := context.WithCancel(context.Background())
	stop := Interrupt(ctx, c)
	if stop() {
		t.Error("stop reports an interruption before ctx was done")
	}
	stop = Interrupt(ctx, c)
	cancel()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read after ctx was done: %v, want a deadline error", err)
	}
	if !stop() {
		t.Error("stop does not report the interruption")
	}
}

func TestIsTemporaryAndBackoff(t *testing.T) {
	t.Parallel()
	aborted := &os.SyscallError{Syscall: "accept", Err: syscall.ECONNABORTED}
	if !IsTemporary(aborted) || !IsTemporary(&net.OpError{Op: "accept", Err: aborted}) {
		t.Error("ECONNABORTED is not temporary")
	}
	if IsTemporary(net.ErrClosed) || IsTemporary(TimeoutError("t")) {
		t.Error("net.ErrClosed or a handshake timeout is temporary")
	}
	var d time.Duration
	for _, want := range []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000} {
		if d = AcceptBackoff(d); d != want*time.Millisecond {
			t.Fatalf("backoff %v, want %v", d, want*time.Millisecond)
		}
	}
	done := make(chan struct{})
	close(done)
	if Sleep(time.Hour, done) {
		t.Error("Sleep did not end when done was closed")
	}
	if !Sleep(time.Nanosecond, nil) {
		t.Error("Sleep(1ns) reports that it was stopped")
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ v, want time.Duration }{{0, 5}, {-1, 0}, {7, 7}} {
		if got := Timeout(tc.v, 5); got != tc.want {
			t.Errorf("Timeout(%v, 5) = %v, want %v", tc.v, got, tc.want)
		}
	}
}
