package main

import (
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"time"
)

// capLogEvery is the least time between two "-max-conns reached" records.
const capLogEvery = 10 * time.Second

// capWaits tells when the accept loop waits for a free -max-conns slot:
// meanwhile new connections wait unseen in the kernel's listen backlog,
// which an operator would otherwise see only as clients that hang. Each
// wait is counted; it is logged at Info at most once per capLogEvery,
// with the number of waits since the last record. Only the accept loop
// (capListener.Accept) calls reached.
type capWaits struct {
	total atomic.Uint64 // every wait, for the metrics

	now      func() time.Time // time.Now; a test sets its own clock
	logged   time.Time        // when the last record was written
	unlogged uint64           // waits since then
}

// reached counts one wait and logs it unless a record was written less
// than capLogEvery ago.
func (w *capWaits) reached(log *slog.Logger, maxConns int, live int64) {
	w.total.Add(1)
	w.unlogged++
	now := time.Now
	if w.now != nil {
		now = w.now
	}
	t := now()
	if !w.logged.IsZero() && t.Sub(w.logged) < capLogEvery {
		return
	}
	log.Info("-max-conns reached: new connections wait in the listen backlog until one ends; raise -max-conns if this is not expected",
		"max_conns", maxConns, "live", live, "waits", w.unlogged, "total_waits", w.total.Load())
	w.logged, w.unlogged = t, 0
}

// errCapQuit is capListener.Accept's error when its quit channel ends a
// wait for a slot.
var errCapQuit = errors.New("stopped waiting for a free -max-conns slot")

// capListener accepts at most cap(slots) connections at once, as
// netutil.LimitListener does, with two differences the tunnel needs.
// LimitListener hands out each connection wrapped in a type of its own
// that gives the slot back on Close, which would hide the *hmacauth.Conn a
// server's serve reads the handshake's state from, the *net.TCPConn whose
// SetLinger abort resets and whose CloseWrite passes on a half-close, and
// the io.ReaderFrom and io.WriterTo that let io.Copy splice; here the
// connection is handed out as accepted and serve gives the slot back with
// release. And LimitListener waits for a slot unseen, where Accept calls
// full first, which counts and logs the wait (capWaits).
type capListener struct {
	net.Listener
	slots chan struct{}
	// quit ends a wait for a slot (Accept returns errCapQuit) and
	// acceptLoop's backoff after a temporary Accept error.
	quit <-chan struct{}
	full func() // called when Accept must wait for a slot
}

// Accept waits for a free slot, then accepts a connection, which holds the
// slot until release.
func (l *capListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	default:
		l.full()
		select {
		case l.slots <- struct{}{}:
		case <-l.quit:
			return nil, errCapQuit
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		l.release()
		return nil, err
	}
	return c, nil
}

// release gives back the slot of a connection Accept returned.
func (l *capListener) release() { <-l.slots }
