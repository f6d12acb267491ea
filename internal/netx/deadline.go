package netx

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"
)

// HandshakeDeadline returns when a handshake that began at start must end:
// the earlier of start+timeout (none when timeout is 0) and ctx's
// deadline. Zero means none.
func HandshakeDeadline(ctx context.Context, start time.Time, timeout time.Duration) time.Time {
	var dl time.Time
	if timeout > 0 {
		dl = start.Add(timeout)
	}
	if d, ok := ctx.Deadline(); ok {
		dl = Earliest(dl, d)
	}
	return dl
}

// Earliest returns the earlier of two deadlines, where zero means none.
func Earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

var aLongTimeAgo = time.Unix(1, 0)

// Interrupt arranges that ctx being done interrupts conn's pending and
// future I/O, by moving its deadline into the past. The returned stop
// undoes the arrangement and reports whether ctx interrupted the I/O; it
// returns only once an interruption has finished, so the caller may then
// set deadlines safely.
func Interrupt(ctx context.Context, conn net.Conn) (stop func() (interrupted bool)) {
	if ctx.Done() == nil {
		return func() bool { return false }
	}
	done := make(chan struct{})
	stopFunc := context.AfterFunc(ctx, func() {
		conn.SetDeadline(aLongTimeAgo)
		close(done)
	})
	return func() bool {
		if stopFunc() {
			return false
		}
		<-done
		return true
	}
}

// IsTemporary reports whether an Accept error is worth retrying, as
// net/http does: EMFILE, ENFILE, ECONNABORTED and the like, and a shortage
// of kernel buffers or memory. Some are checked for by errno: a connection
// aborted or reset before it was accepted, wrapped in an *os.SyscallError
// (as net's accept wraps it), has a Temporary method that reports false,
// yet only that one client is gone.
func IsTemporary(err error) bool {
	for _, errno := range []syscall.Errno{syscall.ECONNABORTED, syscall.ECONNRESET, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, errno) {
			return true
		}
	}
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// AcceptBackoff returns how long to wait before retrying an Accept after a
// temporary error, given the previous wait (zero at first): 5 ms, doubling
// to at most 1 s, as net/http waits.
func AcceptBackoff(prev time.Duration) time.Duration {
	return min(max(2*prev, 5*time.Millisecond), time.Second)
}

// Sleep waits for d, or until done is closed; it reports whether d passed.
func Sleep(d time.Duration, done <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}
