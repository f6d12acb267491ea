package hmacauth

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// These tests pin down rules of PROTOCOL.md section 7 that a peer's bytes
// decide: which error wins when a message is wrong in several ways, and
// that a reset counts as a close. Each runs a real Conn against a raw peer
// over loopback TCP.

// protoKey is the key of this file's handshakes.
func protoKey() Key { return testKey("proto") }

// rawPeer runs a Conn's handshake on one end of a loopback connection while
// peer plays the other side on the raw other end, and returns the Conn's
// handshake error.
func rawPeer(t *testing.T, client bool, cfg *Config, peer func(raw *net.TCPConn)) error {
	t.Helper()
	rc, rs := pipeTCP(t)
	own, raw := net.Conn(rc), rs
	if !client {
		own, raw = rs, rc
	}
	raw.SetDeadline(time.Now().Add(time.Minute)) // a bound, not a synchronisation
	done := make(chan struct{})
	go func() {
		defer close(done)
		peer(raw)
	}()
	var c *Conn
	if client {
		c = Client(own, cfg)
	} else {
		c = Server(own, cfg)
	}
	c.SetDeadline(time.Now().Add(time.Minute))
	err := c.Handshake()
	own.Close()
	<-done
	return err
}

// reset closes raw with a TCP reset (RST) instead of a FIN.
func reset(raw *net.TCPConn) {
	raw.SetLinger(0)
	raw.Close()
}

// rawServerHello builds a ServerHello answering ch with the given type, mode
// and flags; the MAC is right unless badMAC.
func rawServerHello(sched *keySchedule, ch []byte, typ, mode, flags byte, badMAC bool) []byte {
	sh := make([]byte, serverHelloLen)
	copy(sh, magic)
	sh[len(magic)], sh[len(magic)+1] = version1, typ
	sh[headerLen], sh[headerLen+1] = mode, flags
	mac(sh[:serverHelloLen-macLen], &sched.serverHello, ch, sh[:serverHelloLen-macLen])
	if badMAC {
		sh[serverHelloLen-1] ^= 1
	}
	return sh
}

// TestServerHelloErrorPrecedence checks the order in which a client checks
// a ServerHello (PROTOCOL.md 7.1): the header first (ErrProtocol even when
// the MAC is wrong too), then the MAC (ErrAuthFailed even when mode or flags
// are wrong too), then mode and flags (ErrProtocol), including the refusal
// of a ServerHello without the ChaCha20-Poly1305 bit the client asked for.
func TestServerHelloErrorPrecedence(t *testing.T) {
	sched := deriveKeySchedule(protoKey())
	cases := []struct {
		name             string
		chacha           bool // the client has no AES hardware
		typ, mode, flags byte
		badMAC           bool
		want             error
	}{
		{"wrong type and wrong MAC", false, msgClientFinished, 0, 0, true, ErrProtocol},
		{"unknown flag and wrong MAC", false, msgServerHello, 0, 0x04, true, ErrAuthFailed},
		{"unknown mode and wrong MAC", false, msgServerHello, 3, 0, true, ErrAuthFailed},
		{"unknown flag", false, msgServerHello, 0, 0x04, false, ErrProtocol},
		{"unknown mode", false, msgServerHello, 3, 0, false, ErrProtocol},
		{"ChaCha20 asked, not granted", true, msgServerHello, 0, 0, false, ErrProtocol},
		{"ChaCha20 asked, not granted, wrong MAC", true, msgServerHello, 0, 0, true, ErrAuthFailed},
		{"ChaCha20 asked and granted", true, msgServerHello, 0, flagChaCha20, false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &Config{Keys: []Key{protoKey()}}
			rc, rs := pipeTCP(t)
			c := Client(rc, cfg)
			c.testingOnlyNoAES = tc.chacha
			done := make(chan struct{})
			go func() {
				defer close(done)
				ch := make([]byte, clientHelloLen)
				if _, err := io.ReadFull(rs, ch); err != nil {
					return
				}
				rs.Write(rawServerHello(sched, ch, tc.typ, tc.mode, tc.flags, tc.badMAC))
				io.Copy(io.Discard, rs) // until the client closes
			}()
			c.SetDeadline(time.Now().Add(time.Minute)) // a bound, not a synchronisation
			err := c.Handshake()
			rc.Close()
			<-done
			if tc.want == nil {
				if err != nil {
					t.Fatalf("handshake: %v", err)
				}
				return
			}
			mustBe(t, err, tc.want)
		})
	}
}

// TestClientHelloErrorPrecedence checks that a server parses a ClientHello
// before it checks the MAC (PROTOCOL.md 7.2): a malformed ClientHello is
// ErrProtocol even when its MAC is wrong or its key ID unknown.
func TestClientHelloErrorPrecedence(t *testing.T) {
	cfg := &Config{Keys: []Key{protoKey()}}
	for _, tc := range []struct {
		name string
		edit func(ch []byte)
		want error
	}{
		{"unknown mode and wrong MAC", func(ch []byte) { ch[headerLen] = 3 }, ErrProtocol},
		{"unknown mode and unknown key ID", func(ch []byte) { ch[headerLen] = 3; ch[headerLen+3] = 'X' }, ErrProtocol},
		{"bad key ID length and wrong MAC", func(ch []byte) { ch[headerLen+2] = 0 }, ErrProtocol},
		{"wrong MAC", func(ch []byte) { ch[clientHelloLen-1] ^= 1 }, ErrAuthFailed},
		{"unknown flags (ignored) and wrong MAC", func(ch []byte) { ch[headerLen+1] = 0xfc }, ErrAuthFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := rawPeer(t, false, cfg, func(raw *net.TCPConn) {
				ch := validClientHello(protoKey(), tc.name)
				tc.edit(ch)
				raw.Write(ch)
				io.Copy(io.Discard, raw)
			})
			mustBe(t, err, tc.want)
		})
	}
}

// TestClientFinishedErrorPrecedence checks the order in which a server
// checks a ClientFinished (PROTOCOL.md 7.2): the type first (ErrProtocol
// even with a wrong MAC), then the MAC (ErrAuthFailed even with a share
// that must be zeros), then the share (ErrProtocol).
func TestClientFinishedErrorPrecedence(t *testing.T) {
	cfg := &Config{Keys: []Key{protoKey()}}
	sched := deriveKeySchedule(protoKey())
	for _, tc := range []struct {
		name   string
		typ    byte
		share  byte // the first byte of the share; without forward secrecy it must be 0
		badMAC bool
		want   error
	}{
		{"wrong type and wrong MAC", msgServerHello, 0, true, ErrProtocol},
		{"share without forward secrecy and wrong MAC", msgClientFinished, 9, true, ErrAuthFailed},
		{"share without forward secrecy", msgClientFinished, 9, false, ErrProtocol},
		{"wrong MAC", msgClientFinished, 0, true, ErrAuthFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := rawPeer(t, false, cfg, func(raw *net.TCPConn) {
				h := &handshake{}
				if err := h.writeClientHello(sched, hsParams{}); err != nil {
					t.Error(err)
					return
				}
				raw.Write(h.ch())
				if _, err := io.ReadFull(raw, h.sh()); err != nil {
					t.Errorf("reading the ServerHello: %v", err)
					return
				}
				cf := h.cf()
				cf[0], cf[1] = tc.typ, tc.share
				mac(cf[:1+shareLen], &sched.clientFin, h.ch(), h.sh(), cf[:1+shareLen])
				if tc.badMAC {
					cf[clientFinishedLen-1] ^= 1
				}
				raw.Write(cf)
				io.Copy(io.Discard, raw)
			})
			mustBe(t, err, tc.want)
		})
	}
}

// TestResetCountsAsClose checks that a TCP reset during the handshake is
// classified as a close (PROTOCOL.md 7.1 and 7.2) by both sides.
func TestResetCountsAsClose(t *testing.T) {
	cfg := &Config{Keys: []Key{protoKey()}}
	t.Run("server resets before a byte", func(t *testing.T) {
		err := rawPeer(t, true, cfg, func(raw *net.TCPConn) {
			io.ReadFull(raw, make([]byte, clientHelloLen))
			reset(raw)
		})
		mustBe(t, err, ErrAuthFailed)
	})
	t.Run("server resets after the header", func(t *testing.T) {
		err := rawPeer(t, true, cfg, func(raw *net.TCPConn) {
			io.ReadFull(raw, make([]byte, clientHelloLen))
			raw.Write(rawServerHello(deriveKeySchedule(protoKey()), nil, msgServerHello, 0, 0, false)[:headerLen+5])
			reset(raw)
		})
		mustBe(t, err, ErrProtocol)
	})
	t.Run("client resets inside the ClientHello", func(t *testing.T) {
		err := rawPeer(t, false, cfg, func(raw *net.TCPConn) {
			raw.Write(validClientHello(protoKey(), "reset")[:50])
			reset(raw)
		})
		mustBe(t, err, ErrProtocol)
	})
	t.Run("client resets instead of its ClientFinished", func(t *testing.T) {
		err := rawPeer(t, false, cfg, func(raw *net.TCPConn) {
			raw.Write(validClientHello(protoKey(), "reset"))
			io.ReadFull(raw, make([]byte, serverHelloLen))
			reset(raw)
		})
		mustBe(t, err, ErrAuthFailed)
	})
}

// TestRecordResetIsNotEOF checks PROTOCOL.md 9.3 on a reset in a record
// mode: Read reports the reset itself, then, as the stream has ended
// without a close record, an integrity failure; never io.EOF.
func TestRecordResetIsNotEOF(t *testing.T) {
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		t.Run(mode.String(), func(t *testing.T) {
			c, s := connPair(t, pairOptions{mode: mode})
			defer s.Close()
			reset(c.conn.(*net.TCPConn))
			b := make([]byte, 10)
			if _, err := s.Read(b); !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("Read after a reset: %v, want ECONNRESET", err)
			}
			_, err := s.Read(b)
			mustBe(t, err, ErrIntegrity)
			mustBe(t, err, io.ErrUnexpectedEOF)
		})
	}
}
