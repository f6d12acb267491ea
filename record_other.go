//go:build !linux

package hmacauth

import "net"

// writeBeforeClose writes b, the close record that Close sends right before
// it closes conn. (On Linux it may leave with the FIN.)
func writeBeforeClose(conn net.Conn, b []byte) (int, error) {
	return conn.Write(b)
}
