package hmacauth

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
)

// TestReadAfterClose checks that Read after Close fails with net.ErrClosed
// in every mode, even with received plaintext not yet delivered: Close has
// given the receive buffer back for reuse.
func TestReadAfterClose(t *testing.T) {
	for _, mode := range allModes {
		t.Run(mode.String(), func(t *testing.T) {
			c, s := connPair(t, pairOptions{mode: mode})
			defer c.Close()
			if _, err := c.Write([]byte("abc")); err != nil {
				t.Fatal(err)
			}
			var b [1]byte
			if _, err := io.ReadFull(s, b[:]); err != nil {
				t.Fatal(err)
			}
			s.Close()
			for range 2 {
				if n, err := s.Read(b[:]); n != 0 || !errors.Is(err, net.ErrClosed) {
					t.Fatalf("Read after Close = %d, %v; want 0 and net.ErrClosed", n, err)
				}
			}
			if _, err := s.WriteTo(io.Discard); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("WriteTo after Close = %v; want net.ErrClosed", err)
			}
		})
		// Once the peer's close has been read (io.EOF), Close still
		// turns later reads into net.ErrClosed, as on a net.TCPConn.
		t.Run(mode.String()+"/after-EOF", func(t *testing.T) {
			c, s := connPair(t, pairOptions{mode: mode})
			c.Close()
			var b [1]byte
			if n, err := s.Read(b[:]); n != 0 || err != io.EOF {
				t.Fatalf("Read of a closed peer = %d, %v; want 0 and io.EOF", n, err)
			}
			s.Close()
			if n, err := s.Read(b[:]); n != 0 || !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Read after EOF and Close = %d, %v; want 0 and net.ErrClosed", n, err)
			}
		})
	}
}

// TestCloseDuringReads closes connections while other goroutines read from
// them, so that the race detector sees any use of a receive buffer after
// Close gave it back for reuse; the buffers given back go at once to the
// next connections, whose data is checked.
func TestCloseDuringReads(t *testing.T) {
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		t.Run(mode.String(), func(t *testing.T) {
			for i := range 20 {
				c, s := connPair(t, pairOptions{mode: mode})
				msg := []byte{byte(i), 1, 2, 3}
				got := make(chan []byte, 1)
				go func() {
					var all []byte
					buf := make([]byte, 64)
					for {
						n, err := s.Read(buf)
						all = append(all, buf[:n]...)
						if err != nil {
							got <- all
							return
						}
					}
				}()
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				early := i%2 == 0
				if early {
					s.Close() // while the reader may be in Read
				}
				c.Close()
				all := <-got
				s.Close()
				if !bytes.HasPrefix(msg, all) || !early && len(all) != len(msg) {
					t.Fatalf("connection %d: read %x, want %x", i, all, msg)
				}
			}
		})
	}
}
