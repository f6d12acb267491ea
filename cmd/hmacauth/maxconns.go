package main

import (
	"log/slog"
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
// calls reached.
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
