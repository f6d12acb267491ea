package netx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Bound bounds a handshake on conn that began at start by ctx and by
// timeout (none when 0): either being done interrupts conn's I/O by
// moving its deadline into the past, so that the handshake sets no
// deadline of its own and those the user set stay untouched. It reports
// whether the handshake is bounded in time (by timeout or ctx's
// deadline), and returns finish, which the handshake calls once with its
// result and returns: it ends the arrangement and explains an
// interruption, as a deadline passing wrapped in timeoutErr (the
// package's ErrHandshakeTimeout; also when ctx ended it too), or as
// ContextError does. The timeout is a timer of its own rather than a
// derived context: the connect path then pays for one context
// registration, not two.
func Bound(ctx context.Context, conn net.Conn, start time.Time, timeout time.Duration, timeoutErr error) (bounded bool, finish func(error) error) {
	_, bounded = ctx.Deadline()
	stopCtx := Interrupt(ctx, conn)
	var timer *time.Timer
	var timerDone chan struct{}
	if timeout > 0 {
		bounded = true
		timerDone = make(chan struct{})
		timer = time.AfterFunc(time.Until(start.Add(timeout)), func() {
			interruptIO(conn)
			close(timerDone)
		})
	}
	return bounded, func(err error) error {
		timedOut := timer != nil && !timer.Stop()
		if timedOut {
			<-timerDone // the interruption is complete
		}
		if stopCtx() && !timedOut {
			return ContextError(ctx, timeoutErr)
		}
		if timedOut {
			if err == nil {
				// Done just as the time ran out, which left the deadline
				// in the past.
				return TimedOut(os.ErrDeadlineExceeded, timeoutErr, start)
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				// The connection refused deadlines, so the timeout closed
				// it: its I/O failed with the close, not a deadline.
				return fmt.Errorf("%w after %v: %w", timeoutErr, time.Since(start).Round(time.Millisecond), err)
			}
		}
		return TimedOut(err, timeoutErr, start)
	}
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
// future I/O, by moving its deadline into the past; a conn that refuses
// deadlines (its SetDeadline fails, as on x/crypto/ssh channels) it closes
// instead, as crypto/tls does, since nothing else unblocks its I/O. The
// returned stop undoes the arrangement and reports whether ctx interrupted
// the I/O; it returns only once an interruption has finished, so the
// caller may then set deadlines safely.
func Interrupt(ctx context.Context, conn net.Conn) (stop func() (interrupted bool)) {
	if ctx.Done() == nil {
		return func() bool { return false }
	}
	done := make(chan struct{})
	stopFunc := context.AfterFunc(ctx, func() {
		interruptIO(conn)
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

// interruptIO interrupts conn's pending and future I/O by moving its
// deadline into the past, or closes it if it refuses deadlines.
func interruptIO(conn net.Conn) {
	if conn.SetDeadline(aLongTimeAgo) != nil {
		conn.Close()
	}
}

// ContextError explains why a done ctx ended a handshake: a deadline
// passed (wrapping timeout, the package's ErrHandshakeTimeout), or the
// context was cancelled (wrapping its cause).
func ContextError(ctx context.Context, timeout error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: the context's deadline passed: %w", timeout, ctx.Err())
	}
	return fmt.Errorf("handshake abandoned: %w", context.Cause(ctx))
}
