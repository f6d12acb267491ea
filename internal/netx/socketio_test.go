//go:build unix

package netx

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestSocketIOKinds checks which connections SocketIO calls directly: TCP
// and Unix connections, and nothing it cannot know carries its bytes as
// they are (here a wrapper, as a user's or the hmacauth.Conn would be).
func TestSocketIOKinds(t *testing.T) {
	c, _ := tcpPair(t)
	a, _ := unixPair(t)
	wrapped := struct{ net.Conn }{c}
	dir := t.TempDir()
	gram, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: dir + "/g", Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer gram.Close()
	for _, tc := range []struct {
		name   string
		c      net.Conn
		direct bool
	}{
		{"*net.TCPConn", c, directCalls},
		{"*net.UnixConn", a, directCalls},
		{"a wrapper", wrapped, false},
		{"a Unix datagram socket", gram, false}, // an empty datagram is no end of stream
	} {
		// Anything but the connection itself makes the calls directly.
		if direct := SocketIO(tc.c) != io.ReadWriter(tc.c); direct != tc.direct {
			t.Errorf("SocketIO(%s) makes system calls directly: %v; want %v", tc.name, direct, tc.direct)
		}
	}
}

// unixPair returns both ends of a Unix stream connection, closed at the
// test's end.
func unixPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	// A short path: socket paths are limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "sio")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c, s := connPair(t, "unix", dir+"/s")
	return c.(*net.UnixConn), s.(*net.UnixConn)
}

// TestSocketIO checks that SocketIO reads and writes as net.Conn's Read
// and Write do, over TCP and Unix sockets: data both ways, a write larger
// than the socket buffers (it waits for room), end of stream as io.EOF
// after a half-close, a peer's reset, deadlines (with part of a write
// done), and a Close from another goroutine; errors are *net.OpErrors
// naming the operation, as net.Conn's are.
func TestSocketIO(t *testing.T) {
	pairs := map[string]func(t *testing.T) (net.Conn, net.Conn){
		"tcp":  func(t *testing.T) (net.Conn, net.Conn) { return tcpPair(t) },
		"unix": func(t *testing.T) (net.Conn, net.Conn) { return unixPair(t) },
	}
	for name, pair := range pairs {
		t.Run(name+"/data", func(t *testing.T) {
			a, b := pair(t)
			for _, c := range []net.Conn{a, b} {
				c.SetDeadline(time.Now().Add(time.Minute))
			}
			sa, sb := SocketIO(a), SocketIO(b)
			// 4 MiB in writes of 16 KiB, read 8 KiB at a time: calls made
			// directly, which wait for room and for data; then one write
			// larger than directMax, which goes through net.Conn's.
			big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18)
			done := make(chan error, 1)
			go func() {
				var err error
				for i := 0; i < len(big) && err == nil; i += 16 << 10 {
					var n int
					n, err = sa.Write(big[i : i+16<<10])
					if err == nil && n != 16<<10 {
						err = io.ErrShortWrite
					}
				}
				if err == nil {
					_, err = sa.Write(big)
				}
				if err == nil {
					err = a.(interface{ CloseWrite() error }).CloseWrite()
				}
				done <- err
			}()
			var got []byte
			buf := make([]byte, 8<<10)
			for {
				n, err := sb.Read(buf)
				got = append(got, buf[:n]...)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("reading: %v", err)
				}
			}
			big = append(big, big...)
			if err := <-done; err != nil {
				t.Fatalf("writing: %v", err)
			}
			if !bytes.Equal(got, big) {
				t.Fatalf("read %d bytes, not the %d written", len(got), len(big))
			}
			if n, err := sb.Read(make([]byte, 8)); n != 0 || err != io.EOF {
				t.Errorf("Read after the end of stream = %d, %v; want 0, io.EOF", n, err)
			}
			if n, err := sb.Write(nil); n != 0 || err != nil {
				t.Errorf("Write(nil) = %d, %v", n, err)
			}
			if n, err := sb.Read(nil); n != 0 || err != nil {
				t.Errorf("Read(nil) = %d, %v", n, err)
			}
			if _, err := sb.Write([]byte("back")); err != nil {
				t.Fatal(err)
			}
			buf = buf[:8]
			if n, err := io.ReadAtLeast(sa, buf, 4); err != nil || string(buf[:n]) != "back" {
				t.Errorf("read %q, %v; want \"back\"", buf[:n], err)
			}
		})
		t.Run(name+"/deadline", func(t *testing.T) {
			a, _ := pair(t)
			sa := SocketIO(a)
			a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			_, err := sa.Read(make([]byte, 8))
			var oe *net.OpError
			if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &oe) || oe.Op != "read" {
				t.Errorf("Read past its deadline: %v; want a read *net.OpError with os.ErrDeadlineExceeded", err)
			}
			a.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
			n, err := sa.Write(make([]byte, 64<<20)) // the peer never reads
			if !errors.Is(err, os.ErrDeadlineExceeded) || n == 0 || n == 64<<20 || !errors.As(err, &oe) || oe.Op != "write" {
				t.Errorf("Write past its deadline = %d, %v; want part of it and a write *net.OpError with os.ErrDeadlineExceeded", n, err)
			}
		})
		t.Run(name+"/close", func(t *testing.T) {
			a, _ := pair(t)
			sa := SocketIO(a)
			done := make(chan error, 1)
			go func() {
				_, err := sa.Read(make([]byte, 8))
				done <- err
			}()
			// Close wakes a waiting Read; one that starts after it fails.
			time.Sleep(10 * time.Millisecond)
			a.Close()
			if err := <-done; !errors.Is(err, net.ErrClosed) {
				t.Errorf("Read during Close: %v; want net.ErrClosed", err)
			}
			for _, p := range [][]byte{[]byte("x"), nil} {
				if _, err := sa.Write(p); !errors.Is(err, net.ErrClosed) {
					t.Errorf("Write of %d bytes after Close: %v; want net.ErrClosed", len(p), err)
				}
				if _, err := sa.Read(p); !errors.Is(err, net.ErrClosed) {
					t.Errorf("Read into %d bytes after Close: %v; want net.ErrClosed", len(p), err)
				}
			}
		})
	}
	t.Run("tcp/reset", func(t *testing.T) {
		a, b := tcpPair(t)
		sa := SocketIO(a)
		b.Write([]byte("last"))
		b.(*net.TCPConn).SetLinger(0)
		b.Close()
		buf := make([]byte, 8)
		var err error
		for range 2 { // the data, then the reset
			if _, err = sa.Read(buf); err != nil {
				break
			}
		}
		var oe *net.OpError
		if !errors.Is(err, syscall.ECONNRESET) || !errors.As(err, &oe) || oe.Op != "read" {
			t.Errorf("Read after the peer's reset: %v; want a read *net.OpError with ECONNRESET", err)
		}
		// A write to a reset connection fails; SIGPIPE, if raised, is the
		// runtime's to ignore, as for net.Conn's Write.
		if _, err := sa.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("Write to a reset connection: %v; want EPIPE or ECONNRESET", err)
		}
	})
}
