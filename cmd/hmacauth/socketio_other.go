//go:build !(linux && (amd64 || arm64)) || race

package main

import (
	"io"
	"net"
)

// socketIO returns c: system calls are made directly only on Linux on
// amd64 and arm64, outside the race detector (see the Linux version).
func socketIO(c net.Conn) io.ReadWriter { return c }

// directCalls says whether socketIO makes system calls directly.
const directCalls = false
