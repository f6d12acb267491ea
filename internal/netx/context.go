package netx

import (
	"context"
	"errors"
	"fmt"
	"net"
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

// ContextError explains why a done ctx ended a handshake: a deadline
// passed (wrapping timeout, the package's ErrHandshakeTimeout), or the
// context was cancelled (wrapping its cause).
func ContextError(ctx context.Context, timeout error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: the context's deadline passed: %w", timeout, ctx.Err())
	}
	return fmt.Errorf("handshake abandoned: %w", context.Cause(ctx))
}
