package hmacauth

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A process that listens and dials with one Config refuses its own
// ClientHello when its dial is sent back to its own listener (a
// reflection), at once and with ErrAuthFailed on the dialing side; two
// Configs of one process that share a key still connect to each other.
func TestReflectionRefused(t *testing.T) {
	var logs syncBuffer
	cfg, ev := newTestConfig()
	cfg.Logger = newTextLogger(&logs)
	// A refusal must come at once: a dial left to the handshake timeout
	// would end at the context's deadline below, with ErrHandshakeTimeout.
	cfg.HandshakeTimeout = time.Hour
	s := startEcho(t, cfg)

	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	d := &Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", s.Addr().String())
	if err == nil {
		c.Close()
		t.Fatal("a Config's dial to its own listener was accepted")
	}
	if errors.Is(err, ErrHandshakeTimeout) {
		t.Fatalf("the reflected dial was left to time out: %v", err)
	}
	mustBe(t, err, ErrAuthFailed)

	e := ev.waitFor(t, "the reflected handshake", func(e HandshakeEvent) bool { return e.Err != nil })
	mustBe(t, e.Err, ErrAuthFailed)
	if !strings.Contains(e.Err.Error(), "reflection") {
		t.Errorf("the refusal does not say what happened: %v", e.Err)
	}
	if out := logs.String(); !strings.Contains(out, "refused connection") || !strings.Contains(out, "reflection") {
		t.Errorf("the Listener's log does not report the reflection: %s", out)
	}

	// Two Configs with the same key: each dials the other's listener.
	other, _ := newTestConfig(cfg.Keys...)
	s2 := startEcho(t, other)
	checkGoodClient(t, s2, cfg)
	checkGoodClient(t, s, other)

	// Every client handshake has ended: none may leave its nonce behind.
	clientNonces.Range(func(nonce, _ any) bool {
		t.Errorf("client nonce %x left in flight after every handshake ended", nonce)
		return false
	})
}

// readAfterRefusal reads what the server sends a refused prober until it
// closes, and fails the test unless that is nothing and an orderly end of
// stream: no byte, no reset.
func readAfterRefusal(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	b, err := io.ReadAll(c)
	if len(b) > 0 {
		t.Errorf("the server sent %q to a prober", b)
	}
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		t.Errorf("the server reset the connection instead of closing it: %v", err)
	case err != nil:
		t.Errorf("waiting for the server to close: %v", err)
	}
}

// Every probe of someone without a key sees the same thing: no byte, then
// an orderly close, never a reset, whatever it sent; the server's log says
// why it refused. A probe that is not hmacauth is refused at its first
// wrong byte, not at the handshake timeout.
func TestProbesSeeTheSame(t *testing.T) {
	k := testKey("test-key")
	wrong := Key{ID: k.ID, Secret: seededBytes("other secret", MinSecretLen)}
	random := seededBytes("random probe", 1000)
	random[0] = 0 // not an 'h'
	httpReq := "GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: a-scanner/1.0\r\n" +
		"Accept: */*\r\nAccept-Language: en\r\nCookie: " + strings.Repeat("c", 200) + "\r\n\r\n"
	sslRequest := []byte{0x00, 0x00, 0x00, 0x08, 0x04, 0xd2, 0x16, 0x2f} // PostgreSQL's, sent by psql and pgbench

	// A refusal must tell the prober at once (by a half-close), not when
	// the drain of what it sent ends.
	// (Restored after the Listeners below have closed: cleanups run last
	// registered first.)
	drain := refusalDrainTime
	t.Cleanup(func() { refusalDrainTime = drain })
	refusalDrainTime = 2 * waitLimit

	cfg, ev := newTestConfig(k)
	var logs syncBuffer
	cfg.Logger = newTextLogger(&logs)
	cfg.HandshakeTimeout = time.Hour // a refusal that waits for it fails the test at waitLimit
	s := startEcho(t, cfg)
	// The magic and version alone are a valid start, held until the
	// handshake timeout.
	slowCfg, slowEv := newTestConfig(k)
	slowCfg.HandshakeTimeout = 50 * time.Millisecond
	slow := startEcho(t, slowCfg)

	for _, tc := range []struct {
		name   string
		probe  []byte
		server *server
		ev     *events
		want   error
		reason string
	}{
		{"HTTP request", []byte(httpReq), s, ev, ErrProtocol, "does not speak hmacauth"},
		{"random bytes", random, s, ev, ErrProtocol, "does not speak hmacauth"},
		{"PostgreSQL SSLRequest", sslRequest, s, ev, ErrProtocol, "does not speak hmacauth"},
		{"TLS ClientHello", tlsClientHello(t), s, ev, ErrProtocol, "does not speak hmacauth"},
		{"other version", []byte("hmacauth\x02\x01"), s, ev, ErrProtocol, "version 2"},
		{"ClientHello with a wrong key", validClientHello(wrong, "probe"), s, ev, ErrAuthFailed, "different secret"},
		{"ClientHello with a wrong key and one byte more", append(validClientHello(wrong, "probe"), 'x'), s, ev, ErrAuthFailed, "different secret"},
		{"ClientHello naming an unknown key", validClientHello(testKey("no-such-key"), "probe"), s, ev, ErrAuthFailed, "does not have"},
		{"magic prefix alone", []byte("hmacauth\x01\x01"), slow, slowEv, ErrHandshakeTimeout, "timed out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rawDial(t, tc.server.Addr(), "")
			if _, err := c.Write(tc.probe); err != nil {
				t.Fatal(err)
			}
			readAfterRefusal(t, c)
			c.Close()
			e := tc.ev.waitFrom(t, c.LocalAddr())
			if !errors.Is(e.Err, tc.want) || !strings.Contains(e.Err.Error(), tc.reason) {
				t.Errorf("reason %v, want %v saying %q", e.Err, tc.want, tc.reason)
			}
		})
	}
	if out := logs.String(); !strings.Contains(out, "does not speak hmacauth") || !strings.Contains(out, "different secret") {
		t.Errorf("the Listener's log lacks the reasons: %s", out)
	}
	// A client with a wrong key still gets its clear error.
	_, err := Dial("tcp", s.Addr().String(), configWith(wrong))
	mustBe(t, err, ErrAuthFailed)
	checkGoodClient(t, s, configWith(k))
}

// A server handshake with no deadline at all (HandshakeTimeout negative)
// does not hold the key share other handshakes reuse: a replayed
// ClientHello followed by silence would keep it, and the sessions made
// with it, past its lifetime without bound (PROTOCOL.md 7.3).
func TestUnboundedHandshakeOwnKeyShare(t *testing.T) {
	t.Parallel()
	k := testKey("test-key")
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		shared  bool
	}{
		{"with a handshake timeout", time.Hour, true},
		{"without", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &Config{Keys: []Key{k}, ForwardSecrecy: true, KeyShareLifetime: time.Hour, HandshakeTimeout: tc.timeout}
			l := listenEngine(t, cfg)
			// share sends a valid ClientHello (as a replay would) and
			// returns the key share of the ServerHello.
			share := func(seed string) []byte {
				c := rawDial(t, l.Addr(), "")
				if _, err := c.Write(validClientHello(k, seed)); err != nil {
					t.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(waitLimit))
				sh := make([]byte, serverHelloLen)
				if _, err := io.ReadFull(c, sh); err != nil {
					t.Fatalf("reading the ServerHello: %v", err)
				}
				return sh[headerLen+2+nonceLen : headerLen+2+nonceLen+shareLen]
			}
			if a, b := share("one"), share("two"); bytes.Equal(a, b) != tc.shared {
				t.Errorf("two handshakes in flight share a key share: %v, want %v", bytes.Equal(a, b), tc.shared)
			}
		})
	}
}

// A ServerHello with a mode the client does not know is refused with a
// message that says so, not one about the client's least mode.
func TestServerHelloUnknownMode(t *testing.T) {
	t.Parallel()
	k := testKey("test-key")
	keys, err := configWith(k).check()
	if err != nil {
		t.Fatal(err)
	}
	addr := startRawServer(t, func(c net.Conn) {
		h := &handshake{}
		h.runServer(c, keys, hsParams{mode: modeMax + 1}) // ends when the client closes
	})
	_, err = Dial("tcp", addr.String(), configWith(k))
	mustBe(t, err, ErrProtocol)
	if msg := err.Error(); !strings.Contains(msg, "mode 3, which this client does not know") || strings.Contains(msg, "at least") {
		t.Errorf("error %q does not say that the mode is unknown", msg)
	}
}

// A ClientHello replayed while the handshake it was recorded from (or
// another replay of it) is in flight is refused at once, before it takes a
// step a Listener counts as progress, so that replays of one recorded
// ClientHello cannot hold handshake slots. Once that handshake has ended,
// the same ClientHello is answered again (it cannot finish without the
// key).
func TestReplayInFlightRefused(t *testing.T) {
	t.Parallel()
	cfg, ev := newTestConfig()
	cfg.HandshakeTimeout = time.Minute
	s := startEngineEcho(t, cfg)
	hello := validClientHello(cfg.Keys[0], "recorded")
	answered := func(c net.Conn) {
		t.Helper()
		if _, err := c.Write(hello); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(waitLimit))
		if _, err := io.ReadFull(c, make([]byte, serverHelloLen)); err != nil {
			t.Fatalf("the ClientHello was not answered: %v", err)
		}
	}

	first := rawDial(t, s.Addr(), "")
	answered(first)
	second := rawDial(t, s.Addr(), "")
	if _, err := second.Write(hello); err != nil {
		t.Fatal(err)
	}
	readAfterRefusal(t, second)
	e := ev.waitFrom(t, second.LocalAddr())
	mustBe(t, e.Err, ErrAuthFailed)
	if !strings.Contains(e.Err.Error(), "replay") {
		t.Errorf("the refusal does not say what happened: %v", e.Err)
	}

	first.Close()
	ev.waitFrom(t, first.LocalAddr())
	answered(rawDial(t, s.Addr(), ""))
}

// TestReadMessage checks the one reader of handshake messages over
// loopback TCP: a whole message, a wrong header refused at its first
// wrong byte, and a close before the whole message explained by the
// caller's closed, given the bytes that came.
func TestReadMessage(t *testing.T) {
	t.Parallel()
	sh := make([]byte, serverHelloLen)
	copy(sh, magic)
	sh[len(magic)], sh[len(magic)+1] = version1, msgServerHello
	for _, tc := range []struct {
		name   string
		typ    byte
		msgLen int
		send   []byte
		close  bool
		want   error // nil: the message is read whole
		closed int   // bytes closed is told of; -1: closed is not called
	}{
		{name: "whole ServerHello", typ: msgServerHello, msgLen: serverHelloLen, send: sh, closed: -1},
		{name: "close at once", typ: msgServerHello, msgLen: serverHelloLen, close: true, want: errClosedEarly, closed: 0},
		{name: "close in the header", typ: msgServerHello, msgLen: serverHelloLen, send: sh[:3], close: true, want: errClosedEarly, closed: 3},
		{name: "close after the header", typ: msgServerHello, msgLen: serverHelloLen, send: sh[:headerLen+5], close: true, want: errClosedEarly, closed: headerLen + 5},
		{name: "HTTP instead", typ: msgServerHello, msgLen: serverHelloLen, send: []byte("HTTP/1.1 400"), want: ErrProtocol, closed: -1},
		{name: "ClientHello type", typ: msgServerHello, msgLen: serverHelloLen, send: []byte(magic + "\x01\x01"), want: ErrProtocol, closed: -1},
		{name: "ClientFinished, no header", typ: msgClientFinished, msgLen: clientFinishedLen, send: bytes.Repeat([]byte{msgClientFinished}, clientFinishedLen), closed: -1},
		{name: "ClientFinished cut", typ: msgClientFinished, msgLen: clientFinishedLen, send: []byte{msgClientFinished}, close: true, want: errClosedEarly, closed: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, s := pipeTCP(t)
			c.SetDeadline(time.Now().Add(waitLimit))
			s.Write(tc.send)
			if tc.close {
				s.Close()
			}
			closed := -1
			b := make([]byte, tc.msgLen)
			err := readMessage(c, b, tc.typ, "message", func(n int) error {
				closed = n
				return errClosedEarly
			})
			if !errors.Is(err, tc.want) {
				t.Fatalf("readMessage = %v, want %v", err, tc.want)
			}
			if closed != tc.closed {
				t.Errorf("closed told of %d bytes, want %d (-1: not called)", closed, tc.closed)
			}
			if tc.want == nil && !bytes.Equal(b, tc.send) {
				t.Errorf("read %q, want %q", b, tc.send)
			}
		})
	}
}

var errClosedEarly = errors.New("closed early")

// TestServerHelloErrorPrecedence checks the order in which a client checks
// a ServerHello (PROTOCOL.md 7.1): the header first (ErrProtocol even when
// the MAC is wrong too), then the MAC (ErrAuthFailed even when mode or flags
// are wrong too), then mode and flags (ErrProtocol), including the refusal
// of a ServerHello without the ChaCha20-Poly1305 bit the client asked for.
func TestServerHelloErrorPrecedence(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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

// TestMITMReflection sends the client's own first record back to it: the
// client must refuse it, since each direction has its own keys.
func TestMITMReflection(t *testing.T) {
	t.Parallel()
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		t.Run(mode.String(), func(t *testing.T) {
			m := &mitm{rec: func(m *mitm, dir, i int, rec []byte) ([][]byte, bool) {
				if dir == c2s && i == 0 {
					m.send(s2c, rec)
				}
				return [][]byte{rec}, false
			}}
			c, s := connPair(t, pairOptions{mode: mode, through: func(t testing.TB, a string) string { return startMITM(t, a, m) }})
			defer c.Close()
			defer s.Close()
			if _, err := c.Write([]byte("reflect me")); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(20 * time.Second)) // a hang guard
			n, err := c.Read(make([]byte, 64))
			if n != 0 || !errors.Is(err, ErrIntegrity) {
				t.Fatalf("client Read = %d, %v; want 0, ErrIntegrity", n, err)
			}
		})
	}
}

// TestMITMDowngrade rewrites the mode or flags byte of the ClientHello or
// the ServerHello: the handshake must fail, never yield a weaker connection.
func TestMITMDowngrade(t *testing.T) {
	t.Parallel()
	const modeOff, flagsOff = headerLen, headerLen + 1
	cases := []struct {
		name    string
		dir     int
		off     int
		val     byte
		client  pairOptions
		clientM Mode
	}{
		{"ClientHello mode sealed to auth", c2s, modeOff, byte(ModeAuth), pairOptions{mode: ModeSealed}, ModeSealed},
		{"ClientHello mode integrity to auth", c2s, modeOff, byte(ModeAuth), pairOptions{mode: ModeIntegrity}, ModeIntegrity},
		{"ClientHello drops forward secrecy", c2s, flagsOff, 0, pairOptions{mode: ModeSealed, fs: true}, ModeSealed},
		{"ClientHello drops ChaCha20", c2s, flagsOff, 0, pairOptions{mode: ModeSealed, chacha: true}, ModeSealed},
		{"ServerHello mode sealed to auth", s2c, modeOff, byte(ModeAuth), pairOptions{mode: ModeSealed}, ModeSealed},
		{"ServerHello mode sealed to integrity", s2c, modeOff, byte(ModeIntegrity), pairOptions{mode: ModeSealed}, ModeSealed},
		{"ServerHello drops forward secrecy", s2c, flagsOff, 0, pairOptions{mode: ModeSealed, fs: true}, ModeSealed},
		{"ServerHello sets ChaCha20", s2c, flagsOff, flagChaCha20, pairOptions{mode: ModeSealed}, ModeSealed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rewritten := false
			m := &mitm{hs: func(dir int, msg []byte) {
				if dir == tc.dir && len(msg) > tc.off {
					if msg[tc.off] != tc.val {
						rewritten = true
					}
					msg[tc.off] = tc.val
				}
			}}
			o := tc.client
			o.through = func(t testing.TB, a string) string { return startMITM(t, a, m) }
			c, s, cerr, serr := connPairErr(t, o)
			if c != nil {
				c.Close()
			}
			if s != nil {
				s.Close()
			}
			if !rewritten {
				t.Fatal("the proxy did not change the byte: the test would prove nothing")
			}
			if cerr == nil {
				t.Fatalf("client handshake succeeded after a rewrite (mode %v); server: %v", c.ConnectionState().Mode, serr)
			}
			if !errors.Is(cerr, ErrAuthFailed) {
				t.Errorf("client error %v, want ErrAuthFailed", cerr)
			}
			if serr == nil && tc.dir == c2s {
				t.Errorf("server accepted a rewritten ClientHello")
			}
		})
	}
}
