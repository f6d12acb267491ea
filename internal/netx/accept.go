package netx

import (
	"errors"
	"syscall"
	"time"
)

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
