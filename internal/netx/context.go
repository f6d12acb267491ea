package netx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// errTimeout is the cause of the context that Bound's timeout ends.
var errTimeout = errors.New("the configured handshake timeout passed")

// Bound bounds a handshake on conn that began at start by ctx and by
// timeout (none when 0): either being done interrupts conn's I/O by
// moving its deadline into the past, so that the handshake sets no
// deadline of its own and those the user set stay untouched. It returns
// the context to run the handshake under, and finish, which the handshake
// calls once with its result and returns: it ends the arrangement and
// explains an interruption, as a deadline passing wrapped in timeoutErr
// (the package's ErrHandshakeTimeout), or as ContextError does.
func Bound(ctx context.Context, conn net.Conn, start time.Time, timeout time.Duration, timeoutErr error) (bounded context.Context, finish func(error) error) {
	cancel := context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithDeadlineCause(ctx, start.Add(timeout), errTimeout)
	}
	stop := Interrupt(ctx, conn)
	return ctx, func(err error) error {
		defer cancel()
		err = TimedOut(err, timeoutErr, start)
		if !stop() {
			return err
		}
		if context.Cause(ctx) != errTimeout {
			return ContextError(ctx, timeoutErr)
		}
		if err == nil {
			// Done just as the time ran out, which left the deadline in
			// the past.
			err = TimedOut(os.ErrDeadlineExceeded, timeoutErr, start)
		} else if !errors.Is(err, timeoutErr) {
			// The connection refused deadlines, so Interrupt closed it:
			// its I/O failed with the close, not a deadline.
			err = fmt.Errorf("%w after %v: %w", timeoutErr, time.Since(start).Round(time.Millisecond), err)
		}
		return err
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
		if conn.SetDeadline(aLongTimeAgo) != nil {
			conn.Close()
		}
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

// ContextError explains why a done ctx ended a handshake: a deadline
// passed (wrapping timeout, the package's ErrHandshakeTimeout), or the
// context was cancelled (wrapping its cause).
func ContextError(ctx context.Context, timeout error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: the context's deadline passed: %w", timeout, ctx.Err())
	}
	return fmt.Errorf("handshake abandoned: %w", context.Cause(ctx))
}
