package hmacauth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
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

// checkSecretsCleared fails unless Close has overwritten c's session
// secret (whose bytes were session, taken before Close) and both
// directions' traffic secrets and IVs with zeros. Nothing may hold the
// locks any more.
func checkSecretsCleared(t *testing.T, c *Conn, session []byte) {
	t.Helper()
	if !isZero(session) {
		t.Errorf("the session secret was not cleared: %d non-zero bytes left", len(session)-bytes.Count(session, []byte{0}))
	}
	c.secretMu.Lock()
	if c.res.secret != nil {
		t.Error("the Conn still holds a session secret")
	}
	c.secretMu.Unlock()
	if c.rl == nil {
		return
	}
	for _, hc := range []*halfConn{&c.rl.in, &c.rl.out} {
		hc.mu.Lock()
		if !isZero(hc.secret[:]) || !isZero(hc.iv[:]) || hc.aead != nil {
			t.Errorf("a traffic secret, IV or AEAD was not cleared: secret zero %v, IV zero %v, AEAD dropped %v", isZero(hc.secret[:]), isZero(hc.iv[:]), hc.aead == nil)
		}
		hc.mu.Unlock()
	}
}

// TestCloseClearsSecrets checks that Close overwrites the session secret
// and the traffic secrets with zeros, in every mode, on an idle connection
// and on one with a Read and a Write in progress on other goroutines (the
// race detector checks that clearing does not race with them); that a
// ConnectionState taken before Close keeps its exporter, and one taken
// after fails with net.ErrClosed; and that Read and Write fail after it.
func TestCloseClearsSecrets(t *testing.T) {
	for _, mode := range allModes {
		for _, busy := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/busy=%v", mode, busy), func(t *testing.T) {
				c, s := connPair(t, pairOptions{mode: mode})
				defer c.Close()
				session := s.res.secret // the bytes Close must clear
				before := s.ConnectionState()
				want, err := before.ExportKeyingMaterial("test", nil, 32)
				if err != nil {
					t.Fatal(err)
				}
				var done sync.WaitGroup
				if busy {
					// A Read that waits for data that never comes, and
					// Writes that fill the socket buffers of a peer that
					// does not read: both are blocked when Close runs.
					wrote := make(chan struct{})
					done.Add(2)
					go func() {
						defer done.Done()
						buf := make([]byte, 100)
						for {
							if _, err := s.Read(buf); err != nil {
								return
							}
						}
					}()
					go func() {
						defer done.Done()
						chunk := make([]byte, 64<<10)
						for i := 0; ; i++ {
							if _, err := s.Write(chunk); err != nil {
								if i == 0 {
									close(wrote)
								}
								return
							}
							if i == 0 {
								close(wrote)
							}
						}
					}()
					<-wrote
				}
				s.Close()
				done.Wait()
				checkSecretsCleared(t, s, session)
				got, err := before.ExportKeyingMaterial("test", nil, 32)
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("a ConnectionState taken before Close exports %x, %v; want %x", got, err, want)
				}
				if _, err := s.ConnectionState().ExportKeyingMaterial("test", nil, 32); !errors.Is(err, net.ErrClosed) || !errors.Is(err, ErrExport) {
					t.Errorf("exporter of a ConnectionState taken after Close: %v, want ErrExport and net.ErrClosed", err)
				}
				if _, err := s.Write([]byte("x")); err == nil {
					t.Error("Write after Close succeeded")
				}
				if _, err := s.Read(make([]byte, 1)); err == nil {
					t.Error("Read after Close succeeded")
				}
			})
		}
	}
}

// closeOnFinishedConn is a client's connection that runs Close on its Conn
// right after the ClientFinished has gone out: Close then runs while the
// handshake is still in progress, yet the handshake succeeds.
type closeOnFinishedConn struct {
	net.Conn
	c *Conn
}

func (w *closeOnFinishedConn) Write(b []byte) (int, error) {
	n, err := w.Conn.Write(b)
	if len(b) == clientFinishedLen {
		w.c.Close()
	}
	return n, err
}

// TestCloseDuringHandshakeClearsSecrets checks that a Close that runs while
// the handshake is in progress, which leaves the secrets to the
// handshake, still has them cleared once the handshake completes.
func TestCloseDuringHandshakeClearsSecrets(t *testing.T) {
	for _, mode := range allModes {
		t.Run(mode.String(), func(t *testing.T) {
			rc, rs := pipeTCP(t)
			cfg := &Config{Keys: []Key{recordTestKey()}, Mode: mode}
			scfg := &Config{Keys: []Key{recordTestKey()}, Mode: mode} // one Config refuses its own dial
			w := &closeOnFinishedConn{Conn: rc}
			c, s := Client(w, cfg), Server(rs, scfg)
			w.c = c
			defer s.Close()
			cerr, serr := handshakeBoth(c, s)
			if cerr != nil || serr != nil {
				t.Fatalf("handshake: client %v, server %v", cerr, serr)
			}
			if !c.closed.Load() {
				t.Fatal("Close did not run during the handshake")
			}
			checkSecretsCleared(t, c, nil) // the bytes are checked through c.res.secret being dropped
		})
	}
}

// closeReadOnFinishedConn is a client's connection that runs CloseRead on
// its Conn right after the ClientFinished has gone out, while the handshake
// is still in progress.
type closeReadOnFinishedConn struct {
	*net.TCPConn
	c *Conn
}

func (w *closeReadOnFinishedConn) Write(b []byte) (int, error) {
	n, err := w.TCPConn.Write(b)
	if len(b) == clientFinishedLen {
		w.c.CloseRead()
	}
	return n, err
}

// TestCloseReadDuringHandshake checks that a CloseRead that runs before the
// record layer is installed still reaches it: a Read then reports
// net.ErrClosed, not a stream cut by an attacker.
func TestCloseReadDuringHandshake(t *testing.T) {
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		t.Run(mode.String(), func(t *testing.T) {
			rc, rs := pipeTCP(t)
			cfg := &Config{Keys: []Key{recordTestKey()}, Mode: mode}
			scfg := &Config{Keys: []Key{recordTestKey()}, Mode: mode}
			w := &closeReadOnFinishedConn{TCPConn: rc}
			c, s := Client(w, cfg), Server(rs, scfg)
			w.c = c
			defer c.Close()
			defer s.Close()
			if cerr, serr := handshakeBoth(c, s); cerr != nil || serr != nil {
				t.Fatalf("handshake: client %v, server %v", cerr, serr)
			}
			c.SetReadDeadline(time.Now().Add(waitLimit))
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) || errors.Is(err, ErrIntegrity) {
				t.Fatalf("Read after CloseRead = %v, want net.ErrClosed", err)
			}
		})
	}
}

// TestCloseHonorsWriteDeadline checks that a write deadline set on the Conn
// bounds the close record Close sends, when it comes before Close's own
// bound: one already past makes Close give up on it at once.
func TestCloseHonorsWriteDeadline(t *testing.T) {
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		t.Run(mode.String(), func(t *testing.T) {
			c, s := connPair(t, pairOptions{mode: mode})
			defer s.Close()
			c.SetWriteDeadline(time.Now().Add(-time.Second))
			if err := c.Close(); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Close after the write deadline passed = %v, want os.ErrDeadlineExceeded", err)
			}
		})
	}
}
