package hmacauth

import (
	"fmt"
	"syscall"
	"time"
)

// deferAccept returns a net.ListenConfig.Control function that sets
// TCP_DEFER_ACCEPT on a TCP listening socket: the kernel completes a
// connection and hands it to accept only once the client's first bytes (the
// ClientHello) have arrived, or once wait has passed. A silent client then
// costs a request socket in the kernel's SYN queue instead of a file
// descriptor, a goroutine and a handshake slot, and the server's first read
// finds the ClientHello already there instead of parking in the poller.
//
// The kernel counts the wait in SYN-ACK retransmissions (after 1, 3, 7, 15,
// 31, ... s), so it rounds wait up to the next of these. When it has passed,
// the kernel resends its SYN-ACK and completes the connection on the
// client's ACK; from Accept on, the handshake timeout applies as usual.
// A wait of zero (no handshake timeout) sets nothing.
func deferAccept(wait time.Duration) func(network, address string, c syscall.RawConn) error {
	if wait <= 0 {
		return nil
	}
	secs := int((wait + time.Second - 1) / time.Second)
	return func(network, address string, c syscall.RawConn) error {
		if network != "tcp4" && network != "tcp6" {
			return nil
		}
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, secs)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("setting TCP_DEFER_ACCEPT on %s: %w", address, serr)
		}
		return nil
	}
}
