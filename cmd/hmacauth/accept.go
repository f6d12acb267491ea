package main

import (
	"errors"
	"syscall"
	"time"
)

// The command is a module of its own and uses only the core's public API,
// so it keeps its own copy of the few lines of accept-loop plumbing that
// the core's Listener has internally (net/http's rules).

// isTemporary reports whether an Accept error is worth retrying, as
// net/http does: EMFILE, ENFILE, ECONNABORTED and the like, and a shortage
// of kernel buffers or memory. A connection aborted or reset before it was
// accepted is checked for by errno: net wraps it in an *os.SyscallError
// whose Temporary method reports false, yet only that one client is gone.
func isTemporary(err error) bool {
	for _, errno := range []syscall.Errno{syscall.ECONNABORTED, syscall.ECONNRESET, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, errno) {
			return true
		}
	}
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// acceptBackoff returns how long to wait before retrying an Accept after a
// temporary error, given the previous wait (zero at first): 5 ms, doubling
// to at most 1 s, as net/http waits.
func acceptBackoff(prev time.Duration) time.Duration {
	return min(max(2*prev, 5*time.Millisecond), time.Second)
}

// sleep waits for d, or until done is closed; it reports whether d passed.
func sleep(d time.Duration, done <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

// acceptLoop accepts connections until the listener is closed; t.capped
// holds a -max-conns slot for each, which serve gives back.
func (t *tunnel) acceptLoop() error {
	var backoff time.Duration
	for {
		c, err := t.capped.Accept()
		if err != nil {
			if errors.Is(err, errCapQuit) {
				return nil
			}
			select {
			case <-t.stopping:
				return nil
			default:
			}
			if !isTemporary(err) {
				return err
			}
			// Out of file descriptors, say: wait for connections to end
			// rather than spin or quit.
			backoff = acceptBackoff(backoff)
			t.log.Warn("accept failed; retrying", "err", err.Error(), "retry_in", backoff.String())
			if !sleep(backoff, t.capped.quit) {
				return nil
			}
			continue
		}
		backoff = 0
		t.wg.Add(1)
		t.serving.Add(1) // here, not in serve: live() counts it at once
		go t.serve(c)
	}
}
