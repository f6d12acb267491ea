package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hmacauth/hmacauth"
	"golang.org/x/sync/errgroup"
)

// serve forwards one accepted connection.
func (t *tunnel) serve(accepted net.Conn) {
	defer t.capped.release()
	defer t.wg.Done()
	defer t.serving.Add(-1)
	if !t.track(accepted) {
		return
	}
	defer t.untrack(accepted)
	id, start := t.nextID.Add(1), time.Now()
	log := func(level slog.Level, msg string, attrs ...slog.Attr) {
		// Attributes are only formatted for records that are written: most
		// connections write none.
		if t.log.Enabled(context.Background(), level) {
			attrs = append([]slog.Attr{slog.Uint64("conn", id), slog.String("remote", accepted.RemoteAddr().String())}, attrs...)
			t.log.LogAttrs(context.Background(), level, msg, attrs...)
		}
	}

	var state hmacauth.ConnectionState
	dialFailed := "cannot connect to the server; closing the local connection"
	if t.role == roleClient {
		t.metrics.accepted.Inc()
		// The key the client is about to prove, for the logs before its
		// handshake has succeeded.
		if ids := t.config.Keyring.IDs(); len(ids) > 0 {
			state.KeyID = ids[0]
		}
	} else {
		hc := accepted.(*hmacauth.Conn) // the Listener ran the handshake
		state = hc.ConnectionState()
		if tc, ok := hc.NetConn().(*net.TCPConn); ok && t.opts.keepAlive.Idle != defaultKeepAlive {
			tc.SetKeepAliveConfig(t.opts.keepAlive)
		}
		dialFailed = "cannot connect to the target; closing the connection"
	}
	dialStart := time.Now()
	up, err := t.dialTarget(t.ctx, &t.dialer)
	t.metrics.dialed(time.Since(dialStart), err)
	if err != nil {
		log(slog.LevelError, dialFailed, slog.String("key_id", state.KeyID), slog.Any("err", err))
		return
	}
	if !t.track(up) {
		return
	}
	defer t.untrack(up)
	front, back := accepted, up
	if t.role == roleClient {
		c := hmacauth.Client(up, t.config)
		// Bounded by -handshake-timeout; closeAll interrupts it by closing
		// up, so it needs no context (which would cost an AfterFunc).
		done := t.metrics.handshakeStarted()
		err := c.Handshake()
		done(err)
		if err != nil {
			log(slog.LevelError, "handshake with the server failed; closing the local connection", slog.String("key_id", state.KeyID), slog.Any("err", err))
			return
		}
		state = c.ConnectionState()
		back = c
	}
	if t.opts.proxyProtocol != 0 {
		if err := t.sendProxyHeader(up, accepted, state.KeyID); err != nil {
			log(slog.LevelError, "closing the connection", slog.String("key_id", state.KeyID), slog.Any("err", err))
			return
		}
	}
	t.handOff(accepted, up)
	log(slog.LevelDebug, "connection opened", slog.String("key_id", state.KeyID),
		slog.String("mode", state.Mode.String()), slog.Bool("fs", state.ForwardSecrecy))
	nUp, nDown, err := pipe(t.ctx, front, back)
	t.metrics.up.Add(float64(nUp))
	t.metrics.down.Add(float64(nDown))
	level, attrs := slog.LevelDebug, []slog.Attr{slog.String("key_id", state.KeyID), slog.Int64("bytes_up", nUp), slog.Int64("bytes_down", nDown),
		slog.Duration("duration", time.Since(start))}
	if err != nil {
		level, attrs = slog.LevelInfo, append(attrs, slog.Any("err", err))
	}
	log(level, "connection closed", attrs...)
}

// errStopped is pipe's error for a connection ended by a forced stop.
var errStopped = errors.New("closed by the stop (drain timeout or second signal)")

// pipe copies front to back and back to front until both directions end,
// passing on each end of stream as a half-close, then closes both. One of
// them is an *hmacauth.Conn, whose end of stream is a verified close record
// in a record mode: anything else (a cut, a tampered record, a reset, any
// error of either direction) aborts both connections (abort), so that the
// plain application sees an error and never takes a cut stream for a
// whole one. When ctx ends (a forced stop), pipe ends both itself
// (endStopped): a connection whose stream is cut short is reset, so that no
// application takes part of a stream for the whole of it, while an
// hmacauth connection whose outgoing stream had ended gets its close
// record, so that the peer tunnel does not report a cut. It returns the
// bytes copied each way and the first error.
//
// Each direction is copied by copyStream: small messages with a read and a
// write, bulk transfers with io.Copy, which lets the kernel splice between
// the sockets where the mode keeps bytes as they are (hmacauth.Conn
// implements io.ReaderFrom and io.WriterTo).
func pipe(ctx context.Context, front, back net.Conn) (up, down int64, err error) {
	// The first error aborts both connections, which also ends the other
	// direction's copy; at a forced stop the deadlines below do that. It is
	// the error returned: the other direction's, which the abort caused,
	// may reach errgroup first.
	var (
		firstErr sync.Once
		aborted  bool
	)
	fail := func(e error) error {
		firstErr.Do(func() {
			err = e
			if ctx.Err() == nil {
				aborted = true
				abort(front)
				abort(back)
			}
		})
		return e
	}
	// A forced stop wakes both copies, reads and writes; the connections
	// are ended below once neither copy uses them.
	woken := make(chan struct{})
	stopWaking := context.AfterFunc(ctx, func() {
		defer close(woken)
		front.SetDeadline(aLongTimeAgo)
		back.SetDeadline(aLongTimeAgo)
	})
	var (
		g                errgroup.Group
		upDone, downDone bool // the direction ended cleanly: its end was passed on
	)
	// Each connection's reader-writer serves both directions: one reads
	// with it, the other writes.
	frontIO, backIO := socketIO(front), socketIO(back)
	g.Go(func() error {
		var e error
		if up, e = copyHalf(back, backIO, front, frontIO); e != nil {
			return fail(e)
		}
		upDone = true
		return nil
	})
	g.Go(func() error {
		var e error
		if down, e = copyHalf(front, frontIO, back, backIO); e != nil {
			return fail(e)
		}
		downDone = true
		return nil
	})
	g.Wait() // its error is one fail has seen; err is the first
	forced := false
	if !stopWaking() {
		<-woken
		forced = err != nil // both directions may have ended cleanly
	}
	switch {
	case aborted:
	case forced:
		err = errStopped
		endStopped(front, downDone)
		endStopped(back, upDone)
	default:
		front.Close()
		back.Close()
	}
	return up, down, err
}

// aLongTimeAgo is a deadline in the past, which wakes a blocked Read or
// Write at once.
var aLongTimeAgo = time.Unix(1, 0)

// abort closes c so that its peer reads an error, not an end of stream: a
// TCP connection with a reset (SO_LINGER 0). An *hmacauth.Conn is reset
// underneath, so that it sends no close record and the tunnel at the other
// end aborts its side too, then closed, which clears its secrets. A Unix
// socket has no reset: its peer reads an end of stream.
func abort(c net.Conn) {
	raw := c
	if hc, ok := c.(*hmacauth.Conn); ok {
		raw = hc.NetConn()
	}
	if tc, ok := raw.(interface{ SetLinger(int) error }); ok { // also a proxiedConn
		tc.SetLinger(0)
	}
	raw.Close()
	if raw != c {
		c.Close()
	}
}

// endStopped ends c at a forced stop. The stream written into c is cut
// unless finished (it had ended, and its end was passed on): then an
// *hmacauth.Conn is closed with its close record (bounded by hmacauth's own
// 5 s); otherwise c is aborted, so that the peer sees an error.
func endStopped(c net.Conn, finished bool) {
	if hc, ok := c.(*hmacauth.Conn); ok && finished {
		hc.SetWriteDeadline(time.Time{}) // pipe's wake-up deadline
		hc.Close()
		return
	}
	abort(c)
}

// copyHalf copies src to dst until src ends, then half-closes dst so the
// peer sees the end of stream too. write and read are dst's and src's
// socketIO.
func copyHalf(dst net.Conn, write io.Writer, src net.Conn, read io.Reader) (int64, error) {
	n, err := copyStream(dst, write, src, read)
	if err != nil {
		return n, err
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		return n, cw.CloseWrite()
	}
	return n, nil
}

// smallCopyBuffer is the buffer copyStream forwards small messages through;
// a read that fills it marks a bulk transfer.
const smallCopyBuffer = 16 << 10

// smallBufPool holds copyStream's buffers, so that a connection does not
// allocate one per direction.
var smallBufPool = sync.Pool{New: func() any { return new([smallCopyBuffer]byte) }}

// copyStream copies src to dst until src ends, as io.Copy does (an end of
// stream is not an error), with a read and a write per message through a
// pooled buffer until a read fills the buffer, then with io.Copy for the
// rest of the stream. io.Copy between TCP connections splices: each chunk
// goes socket -> pipe -> socket, which keeps bulk data out of this process,
// but it holds a pipe (two file descriptors) per direction for the
// connection's life and takes three splice calls per message, and
// request/response traffic such as Redis or PostgreSQL queries is all
// small messages. With an *hmacauth.Conn, io.Copy is also what moves bulk
// data in full-size records (see hmacauth.Conn's ReadFrom). The small
// messages go through read and write, src's and dst's socketIO: on a
// plain TCP or Unix connection system calls made directly, as an
// *hmacauth.Conn makes its own.
func copyStream(dst net.Conn, write io.Writer, src net.Conn, read io.Reader) (int64, error) {
	buf := smallBufPool.Get().(*[smallCopyBuffer]byte)
	// It held the stream's bytes: cleared before another connection takes
	// it, as the record layer's pooled buffers are.
	release := func() {
		if buf != nil {
			clear(buf[:])
			smallBufPool.Put(buf)
			buf = nil
		}
	}
	defer release()
	var total int64
	for {
		n, rerr := read.Read(buf[:])
		if n > 0 {
			m, werr := write.Write(buf[:n])
			total += int64(m)
			if werr == nil && m != n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return total, werr
			}
		}
		switch {
		case rerr == io.EOF:
			return total, nil
		case rerr != nil:
			return total, rerr
		case n == len(buf):
			release()
			m, err := io.Copy(dst, src)
			return total + m, err
		}
	}
}
