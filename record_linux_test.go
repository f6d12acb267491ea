package hmacauth

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// unreadBytes returns how many received bytes wait in the kernel, unread,
// on the TCP socket under c.
func unreadBytes(t *testing.T, c net.Conn) int {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return n
}

// TestCloseWithUnreadCloseRecord checks that a side that closes without
// reading its peer's close record (which makes the kernel reset the
// connection) still delivers its own close record first: the peer, half
// closed and reading, gets the reply and then io.EOF, not a reset.
func TestCloseWithUnreadCloseRecord(t *testing.T) {
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		t.Run(mode.String(), func(t *testing.T) {
			c, s := connPair(t, pairOptions{mode: mode})
			defer c.Close()
			defer s.Close()
			if _, err := c.Write([]byte("request")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, len("request"))
			if _, err := io.ReadFull(s, buf); err != nil {
				t.Fatal(err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			// Wait, bounded, until the client's close record has reached
			// the server's socket, where the server will leave it unread.
			for i := 0; unreadBytes(t, s.NetConn()) < recordOverhead; i++ {
				if i == 5000 {
					t.Fatal("the client's close record did not arrive")
				}
				time.Sleep(time.Millisecond)
			}
			if _, err := s.Write([]byte("reply")); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "reply" {
				t.Fatalf("ReadAll = %q, %v; want %q, nil", got, err, "reply")
			}
		})
	}
}

// TestWriteBeforeCloseDeadline checks that the close record, held for the
// FIN, still gives up at the write deadline when the peer does not read.
func TestWriteBeforeCloseDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	// Fill the socket buffers: the peer reads nothing.
	chunk := make([]byte, 64<<10)
	for i := 0; ; i++ {
		if i == 10000 {
			t.Fatal("the socket buffers never filled")
		}
		c.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := c.Write(chunk); errors.Is(err, os.ErrDeadlineExceeded) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	c.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	rec := make([]byte, recordOverhead)
	if _, err := writeBeforeClose(c, rec); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("writeBeforeClose to a full socket = %v, want a deadline error", err)
	}
}
