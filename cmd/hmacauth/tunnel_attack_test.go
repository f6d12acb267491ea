package main

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hmacauth/hmacauth"
)

// attack is what the man in the middle of startMITM does to the records
// of the direction it attacks.
type attack string

const (
	attackNone attack = "clean" // relays every byte as it is
	attackCut  attack = "cut"   // relays the first record, then ends the stream (FIN) where no close record is
	attackFlip attack = "flip"  // relays the first record, flips a bit in the second's body
)

// Handshake bytes before the first record of each direction (PROTOCOL.md
// section 5): ClientHello and ClientFinished, ServerHello.
const (
	c2sHandshakeLen = 141 + 65
	s2cHandshakeLen = 108
)

// startMITM relays every connection it accepts to addr and applies atk to
// the records sent client to server if c2s, else server to client. The
// other direction is relayed as it is.
func startMITM(t *testing.T, addr string, c2s bool, atk attack) string {
	t.Helper()
	return startTarget(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		s, err := net.DialTimeout("tcp", addr, bound)
		if err != nil {
			return
		}
		defer s.Close()
		// A relay that fails closes both, which ends the other.
		end := func(dst net.Conn, err error) {
			if err == nil {
				dst.(*net.TCPConn).CloseWrite()
				return
			}
			c.Close()
			s.Close()
		}
		attackedSrc, attackedDst, skip := c, s, c2sHandshakeLen
		if !c2s {
			attackedSrc, attackedDst, skip = s, c, s2cHandshakeLen
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, err := io.Copy(attackedSrc, attackedDst)
			end(attackedSrc, err)
		}()
		end(attackedDst, relayRecords(attackedDst, attackedSrc, skip, atk))
		<-done
	})
}

// relayRecords copies skip handshake bytes, then the records of src to dst
// one by one, applying atk. It returns nil at a clean end of src.
func relayRecords(dst, src net.Conn, skip int, atk attack) error {
	if _, err := io.CopyN(dst, src, int64(skip)); err != nil {
		return err
	}
	for n := 0; ; n++ {
		hdr := make([]byte, 4) // type, 24-bit length; a 16-byte tag follows the body
		if _, err := io.ReadFull(src, hdr); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		rec := make([]byte, 4+(int(hdr[1])<<16|int(hdr[2])<<8|int(hdr[3]))+16)
		copy(rec, hdr)
		if _, err := io.ReadFull(src, rec[4:]); err != nil {
			return err
		}
		if n == 1 && atk == attackFlip {
			rec[4] ^= 0x01
		}
		if _, err := dst.Write(rec); err != nil {
			return err
		}
		if n == 0 && atk == attackCut {
			return nil // the FIN, with no close record before it
		}
	}
}

// readResult is what a target read from a connection, and how it ended.
type readResult struct {
	data string
	err  error // nil for a clean end of stream
}

// startRecorder starts a target that echoes what it reads, and reports
// on results, when the stream ends, what it read and how it ended.
func startRecorder(t *testing.T) (addr string, results <-chan readResult) {
	ch := make(chan readResult, 1)
	addr = startTarget(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		c.SetDeadline(time.Now().Add(bound))
		var got strings.Builder
		b := make([]byte, 1024)
		for {
			n, err := c.Read(b)
			got.Write(b[:n])
			if n > 0 && err == nil {
				// A reset shows once, to a read or to this write.
				_, err = c.Write(b[:n])
			}
			if err != nil {
				if err == io.EOF {
					err = nil
					c.(*net.TCPConn).CloseWrite()
				}
				ch <- readResult{got.String(), err}
				return
			}
		}
	})
	return addr, ch
}

// TestTunnelAttackResetsPlainSide: when a man in the middle cuts an
// integrity or sealed stream short or tampers with a record, the tunnel
// that detects it resets its plain connection, so the application there
// reads an error after the data that was verified, never a clean end of
// stream; an untouched stream still ends cleanly.
func TestTunnelAttackResetsPlainSide(t *testing.T) {
	for _, mode := range []string{"integrity", "sealed"} {
		for _, atk := range []attack{attackNone, attackCut, attackFlip} {
			// The server tunnel detects an attack on what the client
			// sends, and resets its target; the client tunnel detects one
			// on what the server sends, and resets the local application.
			t.Run(mode+"/"+string(atk)+"/target", func(t *testing.T) { testAttack(t, mode, atk, true) })
			t.Run(mode+"/"+string(atk)+"/app", func(t *testing.T) { testAttack(t, mode, atk, false) })
		}
	}
}

func testAttack(t *testing.T, mode string, atk attack, c2s bool) {
	target, results := startRecorder(t)
	flags := []string{"-mode", mode}
	keys := writeKeys(t, t.TempDir()+"/k.keys", newKey(t, "mitm"))
	server := startTunnel(t, "server", append([]string{"server", "-listen", "127.0.0.1:0", "-target", target, "-keys", keys}, flags...)...)
	mitm := startMITM(t, server.addr, c2s, atk)
	client := startTunnel(t, "client", append([]string{"client", "-listen", "127.0.0.1:0", "-target", mitm, "-keys", keys}, flags...)...)
	detector := server
	if !c2s {
		detector = client
	}

	app := dial(t, client.addr)
	io.WriteString(app, "first") // the first record each way
	if atk != attackCut || !c2s {
		// Cut after its first record, the client's stream may end
		// before the echo comes back.
		checkEchoed(t, app, "first")
	}
	if atk == attackFlip {
		io.WriteString(app, "second") // the second record each way
	}
	if atk == attackNone {
		app.(*net.TCPConn).CloseWrite()
	}

	// Both applications see the attack as a reset: the one behind the
	// tunnel that detected it, and through the abort of the hmacauth
	// connection (no close record), the one behind the other tunnel.
	var r readResult
	select {
	case r = <-results:
	case <-time.After(bound):
		t.Fatal("the target's connection did not end")
	}
	appRest, appErr := io.ReadAll(app)
	wantTarget := "first"
	if atk == attackFlip && !c2s {
		wantTarget = "firstsecond" // only the echo of "second" was tampered with
	}
	if r.data != wantTarget {
		t.Errorf("the target read %q, want %q", r.data, wantTarget)
	}
	if atk == attackNone {
		if r.err != nil || appErr != nil || len(appRest) != 0 {
			t.Errorf("an untouched stream ended with %v at the target, %q and %v at the application; want a clean end of stream at both", r.err, appRest, appErr)
		}
	} else {
		if !errors.Is(r.err, syscall.ECONNRESET) {
			t.Errorf("after the attack the target's read ended with %v, want a reset (a clean end of stream would pass the attack off as the whole stream)", r.err)
		}
		if !errors.Is(appErr, syscall.ECONNRESET) {
			t.Errorf("after the attack the application's read ended with %v, want a reset (a clean end of stream would pass the attack off as the whole stream)", appErr)
		}
	}
	if atk != attackNone {
		rec := detector.waitLog("connection closed", nil)
		if !strings.Contains(errField(rec), "integrity") {
			t.Errorf("the %s tunnel logged %q, want the integrity failure", detector.name, errField(rec))
		}
	}
}

// checkEchoed reads len(msg) bytes from c and checks they are msg.
func checkEchoed(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(c, b); err != nil || string(b) != msg {
		t.Fatalf("reading %q back: got %q, %v", msg, b, err)
	}
}

// TestTunnelResetPassedOn: a target that resets its connection has the
// client tunnel reset the application's, in every mode: the tunnels abort
// the hmacauth connection between them rather than end it cleanly.
func TestTunnelResetPassedOn(t *testing.T) {
	for _, mode := range []string{"auth", "sealed"} {
		t.Run(mode, func(t *testing.T) {
			target := startTarget(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
				b := make([]byte, len("first"))
				if _, err := io.ReadFull(c, b); err != nil {
					return
				}
				c.Write(b)
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			})
			flags := []string{"-mode", mode}
			p := startPair(t, target, flags, flags)
			app := dial(t, p.client.addr)
			io.WriteString(app, "first")
			rest, err := io.ReadAll(app)
			// A reset may overtake bytes still in flight, never add any.
			if !strings.HasPrefix("first", string(rest)) || !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("the application read %q, %v; want at most %q, then the target's reset", rest, err, "first")
			}
		})
	}
}

// TestPipeAbortClosesConn: when pipe aborts (here on a reset by the
// hmacauth peer), it also closes the *hmacauth.Conn, which clears its
// session secret, rather than only its socket.
func TestPipeAbortClosesConn(t *testing.T) {
	k := newKey(t, "pipe")
	ln, err := hmacauth.Listen("tcp", "127.0.0.1:0", &hmacauth.Config{Keys: []hmacauth.Key{k}, Mode: hmacauth.ModeSealed})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	back, err := hmacauth.Dial("tcp", ln.Addr().String(), &hmacauth.Config{Keys: []hmacauth.Key{k}})
	if err != nil {
		t.Fatal(err)
	}
	peer, ok := <-accepted
	if !ok {
		t.Fatal("the Listener accepted nothing")
	}
	raw := peer.(*hmacauth.Conn).NetConn().(*net.TCPConn)
	raw.SetLinger(0)
	raw.Close() // a reset under the record layer

	app := startTarget(t, "tcp", "127.0.0.1:0", func(c net.Conn) { io.Copy(io.Discard, c) })
	front, err := net.Dial("tcp", app)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := pipe(t.Context(), front, back); err == nil {
		t.Fatal("pipe over a reset connection reported no error")
	}
	_, err = back.ConnectionState().ExportKeyingMaterial("after", nil, 16)
	if !errors.Is(err, net.ErrClosed) {
		t.Errorf("the hmacauth.Conn after an aborted pipe still exports keying material (%v): it was not closed", err)
	}
}
