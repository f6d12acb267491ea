package hmacauth

import (
	"net"
	"testing"

	"golang.org/x/net/nettest"
)

// TestConnConformance runs the x/net net.Conn conformance suite over real
// loopback TCP in every mode, including the three subtests crypto/tls
// fails (PastTimeout, FutureTimeout, ConcurrentMethods): a deadline must
// leave the connection usable.
func TestConnConformance(t *testing.T) {
	for _, mode := range allModes {
		t.Run(mode.String(), func(t *testing.T) {
			nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
				cc, sc := connPair(t, pairOptions{mode: mode})
				return cc, sc, func() { cc.Close(); sc.Close() }, nil
			})
		})
	}
}
