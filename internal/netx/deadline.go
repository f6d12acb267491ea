package netx

import (
	"context"
	"net"
	"time"
)

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
