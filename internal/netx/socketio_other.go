//go:build !(linux && (amd64 || arm64)) || race

package netx

import (
	"io"
	"net"
)

// SocketIO returns c: system calls are made directly only on Linux on
// amd64 and arm64, outside the race detector (see the Linux version).
func SocketIO(c net.Conn) io.ReadWriter { return c }

// directCalls says whether SocketIO makes system calls directly.
const directCalls = false
