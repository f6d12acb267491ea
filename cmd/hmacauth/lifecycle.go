package main

import (
	"context"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hmacauth/hmacauth"
)

// notifySignals catches the signals run and stop act on: SIGTERM and
// SIGINT stop, SIGHUP reloads the keys. Call stop when done.
func notifySignals() (sigc <-chan os.Signal, stop func()) {
	c := make(chan os.Signal, 4)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	return c, func() { signal.Stop(c) }
}

// run serves until a stop signal and returns the exit status.
func (t *tunnel) run(sigc <-chan os.Signal) int {
	defer t.cancel()
	if t.status != nil {
		go t.status.serve()
		defer t.status.close()
	}
	if t.opts.watchKeys > 0 {
		ctx, stop := context.WithCancel(context.Background())
		watched := make(chan struct{})
		defer func() {
			stop()
			<-watched
		}()
		first := true // the watcher's first load is the file just read at start
		w := &hmacauth.KeyFileWatcher{Path: t.opts.keyFile, Keyring: t.config.Keyring, Interval: t.opts.watchKeys,
			Logger: t.log,
			OnError: func(err error) {
				if e := t.keyLoadError(err); e != err { // the watcher's own log cannot say why
					t.log.Error("key reload failed; keeping the current keys", "err", e.Error())
					err = e
				}
				t.keys.loaded("watch", err)
			},
			OnReload: func([]string) {
				if !first {
					t.keys.loaded("watch", nil)
				}
				first = false
			}}
		go func() {
			defer close(watched)
			// Run logs the reloads and the later errors itself; it
			// returns an error only if the first read fails.
			if err := w.Run(ctx); err != nil && ctx.Err() == nil {
				t.keys.loaded("watch", err)
				t.log.Error("watching the key file failed; reload it with SIGHUP", "err", err.Error())
			}
		}()
	}
	acceptDone := make(chan error, 1)
	go func() { acceptDone <- t.acceptLoop() }()
	t.notify.ready()
	notified := make(chan struct{})
	notifyDone := make(chan struct{})
	go func() {
		defer close(notified)
		t.notify.run(notifyDone)
	}()
	defer func() {
		close(notifyDone)
		<-notified
	}()
	for {
		select {
		case sig := <-sigc:
			if sig == syscall.SIGHUP {
				t.notify.reloading()
				t.reload()
				t.notify.ready()
				continue
			}
			return t.stop(sig, sigc, acceptDone)
		case err := <-acceptDone:
			t.log.Error("accepting connections failed; closing all connections", "err", err.Error())
			t.notify.stopping()
			t.ln.Close()
			t.closeAll()
			t.wg.Wait()
			return exitFail
		}
	}
}

// stop stops gracefully: no new connections, live ones drain for up to
// -drain-timeout (or until a second stop signal), then the rest is closed.
// A server's handshakes in flight finish and are forwarded too, as are the
// connections its Listener had queued.
func (t *tunnel) stop(sig os.Signal, sigc <-chan os.Signal, acceptDone <-chan error) int {
	close(t.stopping)
	t.notify.stopping()
	shutDone := make(chan struct{})
	if hl, ok := t.ln.(*hmacauth.Listener); ok {
		// closeAll cancels t.ctx, which ends the Shutdown as a Close.
		go func() {
			defer close(shutDone)
			hl.Shutdown(t.ctx)
		}()
	} else {
		t.ln.Close()
		close(shutDone)
	}
	t.log.Info("stopping: no longer accepting; draining live connections",
		"signal", sig.String(), "live", t.live(), "drain_timeout", t.opts.drainTimeout.String())
	drained := make(chan struct{})
	go func() {
		// The accept loop ends first: it is the only one to add to t.wg.
		<-acceptDone
		<-shutDone
		t.wg.Wait()
		close(drained)
	}()
	timer := time.NewTimer(t.opts.drainTimeout)
	defer timer.Stop()
	for {
		select {
		case <-drained:
			t.log.Info("stopped: all connections finished")
			return exitOK
		case s := <-sigc:
			if s == syscall.SIGHUP {
				t.reload()
				continue
			}
			t.log.Warn("second stop signal: closing live connections", "signal", s.String(), "live", t.live())
		case <-timer.C:
			t.log.Warn("drain timeout: closing live connections", "live", t.live())
		}
		t.closeAll()
		<-drained
		t.log.Info("stopped")
		return exitOK
	}
}

// reload replaces the keys with the key file's; live connections keep
// running, new handshakes use the new keys.
func (t *tunnel) reload() {
	keys, err := hmacauth.LoadKeys(t.opts.keyFile)
	if err == nil {
		err = t.config.Keyring.Set(keys...)
	}
	err = t.keyLoadError(err)
	t.keys.loaded("sighup", err)
	if err != nil {
		t.log.Error("key reload failed; keeping the current keys", "err", err.Error())
		return
	}
	t.log.Info("keys reloaded", "keys", t.config.Keyring.IDs())
}

// live returns the number of open connections.
func (t *tunnel) live() int64 { return t.serving.Load() }

// track records c for closeAll. It returns false, having closed c, when
// closeAll has run (it cancels t.ctx before it takes t.mu).
func (t *tunnel) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ctx.Err() != nil {
		c.Close()
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *tunnel) untrack(c net.Conn) {
	t.handOff(c)
	c.Close()
}

// handOff takes conns off closeAll's list: pipe ends them itself (with a
// close record only for a stream that had ended), where closeAll's Close
// would send one for a stream it cuts.
func (t *tunnel) handOff(conns ...net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range conns {
		delete(t.conns, c)
	}
}

// closeAll aborts every dial in progress and closes every connection
// being set up, which ends the handshakes in progress too; cancelling t.ctx
// also has pipe end the connections it forwards.
func (t *tunnel) closeAll() {
	t.cancel()
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.conns {
		c.Close()
	}
}
