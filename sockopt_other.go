//go:build !linux

package hmacauth

import (
	"syscall"
	"time"
)

// deferAccept sets nothing: TCP_DEFER_ACCEPT is Linux's. Every accepted
// connection goes to the accept engine at once, whose caps and handshake
// timeout bound silent clients.
func deferAccept(time.Duration) func(network, address string, c syscall.RawConn) error {
	return nil
}
