//go:build linux && (amd64 || arm64) && !race

package main

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// socketIO returns a reader and writer of c that make their system calls
// directly when c is a TCP connection or a Unix stream connection, and c
// itself otherwise. It is the core's internal/netx.SocketIO, which an
// *hmacauth.Conn uses for its own socket, copied because the command is a
// module of its own (TestSocketIOMirrorsCore keeps the two the same).
//
// The reads and writes are those of net.Conn's Read and Write, through the
// runtime's poller: one that finds the socket not ready waits for
// readiness, under the connection's deadlines. But they are made as
// recvfrom and sendto with MSG_DONTWAIT, which never block whatever the
// socket's flags, so they skip the runtime's accounting for system calls
// that may block and the monitor thread's hand-off of the processor of a
// goroutine in such a call to another thread. For small messages, a read
// and a write each, that accounting and those hand-offs cost about as much
// as the calls themselves (BENCHMARKS.md, "Small request/response
// traffic"). A goroutine keeps its processor during such a call, which
// delays a stop of the world until it returns: calls on buffers of more
// than directMax bytes, whose copies take longer, and empty ones (which
// must still fail on a closed connection) go through c's own Read and
// Write.
//
// Under the race detector, which cannot see the ordering the kernel gives
// through calls made this way (the syscall package tells it of its own),
// socketIO returns c.
func socketIO(c net.Conn) io.ReadWriter {
	var rc syscall.RawConn
	switch c := c.(type) {
	case *net.TCPConn:
		var err error
		if rc, err = c.SyscallConn(); err != nil {
			return c
		}
	case *net.UnixConn:
		// A datagram socket's empty datagram is no end of stream.
		var err error
		if rc, err = c.SyscallConn(); err != nil || !isStream(rc) {
			return c
		}
	default:
		return c
	}
	s := &directIO{c: c, rc: rc}
	s.rd.fn, s.wr.fn = s.recv, s.send
	return s
}

// directCalls says whether socketIO makes system calls directly.
const directCalls = true

// directMax is the largest buffer socketIO reads or writes with a direct
// call: a few small messages' worth, whose copy takes microseconds.
const directMax = 64 << 10

// isStream reports whether rc is a stream socket.
func isStream(rc syscall.RawConn) bool {
	typ := -1
	rc.Control(func(fd uintptr) {
		typ, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TYPE)
	})
	return typ == syscall.SOCK_STREAM
}

// directIO is socketIO's reader and writer. Each direction keeps its call's
// arguments, so that its callback, made once, allocates nothing per call;
// a mutex per direction keeps concurrent calls apart, as the poller's
// locks do for net.Conn.
type directIO struct {
	c      net.Conn
	rc     syscall.RawConn
	rd, wr call
}

// call is one direction's call in progress.
type call struct {
	mu  sync.Mutex
	p   []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

// recv is the poller's callback for Read; false asks it to wait for
// readiness and call again.
func (s *directIO) recv(fd uintptr) bool {
	r := &s.rd
	for {
		n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&r.p[0])), uintptr(len(r.p)), syscall.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			r.n = int(n)
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			r.err = os.NewSyscallError("read", errno)
		}
		return true
	}
}

// send is the poller's callback for Write: it sends until all of p is
// sent or the socket is full (false: wait for room). MSG_NOSIGNAL: a send
// to a reset connection fails with EPIPE without raising SIGPIPE. A send
// that takes nothing without an error ends the call, as internal/poll's
// Write does.
func (s *directIO) send(fd uintptr) bool {
	w := &s.wr
	for w.n < len(w.p) {
		n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&w.p[w.n])), uintptr(len(w.p)-w.n), syscall.MSG_DONTWAIT|syscall.MSG_NOSIGNAL, 0, 0)
		switch errno {
		case 0:
			if n == 0 {
				w.err = io.ErrUnexpectedEOF
				return true
			}
			w.n += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			w.err = os.NewSyscallError("write", errno)
			return true
		}
	}
	return true
}

// Read reads into p as net.Conn's Read does; an end of stream is io.EOF.
func (s *directIO) Read(p []byte) (int, error) {
	if len(p) == 0 || len(p) > directMax {
		return s.c.Read(p)
	}
	r := &s.rd
	r.mu.Lock()
	defer r.mu.Unlock()
	r.p, r.n, r.err = p, 0, nil
	err := s.rc.Read(r.fn)
	r.p = nil
	switch {
	case err != nil:
		return 0, s.opError("read", err)
	case r.err != nil:
		return 0, s.opError("read", r.err)
	case r.n == 0:
		return 0, io.EOF
	}
	return r.n, nil
}

// Write writes all of p, as net.Conn's Write does.
func (s *directIO) Write(p []byte) (int, error) {
	if len(p) == 0 || len(p) > directMax {
		return s.c.Write(p)
	}
	w := &s.wr
	w.mu.Lock()
	defer w.mu.Unlock()
	w.p, w.n, w.err = p, 0, nil
	err := s.rc.Write(w.fn)
	w.p = nil
	switch {
	case err != nil:
		return w.n, s.opError("write", err)
	case w.err != nil:
		return w.n, s.opError("write", w.err)
	}
	return w.n, nil
}

// opError shapes err as net.Conn's Read and Write do: a *net.OpError
// naming the operation and both addresses. The poller's own errors
// (deadline, closed) come as one already, named "raw-read" or "raw-write".
func (s *directIO) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		oe.Op = op
		return oe
	}
	return &net.OpError{Op: op, Net: s.c.LocalAddr().Network(), Source: s.c.LocalAddr(), Addr: s.c.RemoteAddr(), Err: err}
}
