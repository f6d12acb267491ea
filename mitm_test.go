package hmacauth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Directions through the proxy.
const (
	c2s = 0 // client to server
	s2c = 1 // server to client
)

// mitm is an on-path attacker: a TCP proxy on loopback that parses the
// hmacauth handshake and records, and may rewrite, drop, duplicate,
// reorder, inject, reflect or cut them.
type mitm struct {
	ln net.Listener
	// hs may rewrite a handshake message in place.
	hs func(dir int, msg []byte)
	// rec decides what to send on for record i of a direction: the
	// returned byte slices, in order; cut closes both connections
	// instead, after sending them.
	rec func(m *mitm, dir, i int, rec []byte) (out [][]byte, cut bool)

	wg    sync.WaitGroup
	mu    sync.Mutex
	dst   [2]net.Conn // where each direction goes: server, client
	wmu   [2]sync.Mutex
	wire  [2]bytes.Buffer // every byte received, per direction
	types [2][]byte       // record types seen, per direction
}

// startMITM starts a proxy to serverAddr and returns its address. It stops
// when the test ends.
func startMITM(t testing.TB, serverAddr string, m *mitm) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.ln = ln
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		client, err := ln.Accept()
		ln.Close()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", serverAddr)
		if err != nil {
			client.Close()
			return
		}
		m.mu.Lock()
		m.dst = [2]net.Conn{server, client}
		m.mu.Unlock()
		m.wg.Add(2)
		go m.pump(c2s, client, server, clientHelloLen, clientFinishedLen)
		go m.pump(s2c, server, client, serverHelloLen)
	}()
	t.Cleanup(func() {
		ln.Close()
		m.closeAll()
		m.wg.Wait()
	})
	return ln.Addr().String()
}

func (m *mitm) closeAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.dst {
		if c != nil {
			c.Close()
		}
	}
}

// send writes b in direction dir.
func (m *mitm) send(dir int, b []byte) error {
	m.wmu[dir].Lock()
	defer m.wmu[dir].Unlock()
	_, err := m.dst[dir].Write(b)
	return err
}

// pump forwards one direction: the handshake messages of the given sizes,
// then records.
func (m *mitm) pump(dir int, src, dst net.Conn, hsLens ...int) {
	defer m.wg.Done()
	read := func(n int) ([]byte, error) {
		b := make([]byte, n)
		_, err := io.ReadFull(src, b)
		m.mu.Lock()
		m.wire[dir].Write(b)
		m.mu.Unlock()
		return b, err
	}
	for _, n := range hsLens {
		msg, err := read(n)
		if err != nil {
			dst.Close()
			return
		}
		if m.hs != nil {
			m.hs(dir, msg)
		}
		if m.send(dir, msg) != nil {
			return
		}
	}
	for i := 0; ; i++ {
		hdr, err := read(recordHeaderLen)
		if err != nil {
			if err == io.EOF {
				dst.(*net.TCPConn).CloseWrite()
			} else {
				dst.Close()
			}
			return
		}
		n := int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
		rest, err := read(n + recordTagLen)
		rec := append(hdr, rest...)
		m.mu.Lock()
		m.types[dir] = append(m.types[dir], hdr[0])
		m.mu.Unlock()
		if err != nil {
			// A cut record: pass on what came, then the end.
			m.send(dir, rec)
			dst.Close()
			return
		}
		out, cut := [][]byte{rec}, false
		if m.rec != nil {
			out, cut = m.rec(m, dir, i, rec)
		}
		for _, b := range out {
			if m.send(dir, b) != nil {
				return
			}
		}
		if cut {
			m.closeAll()
			return
		}
	}
}

func (m *mitm) wireBytes(dir int) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.wire[dir].Bytes())
}

// onRecord returns a rec function that applies f to record i of
// direction dir and passes every other record on.
func onRecord(dir, i int, f func(rec []byte) ([][]byte, bool)) func(*mitm, int, int, []byte) ([][]byte, bool) {
	return func(_ *mitm, d, j int, rec []byte) ([][]byte, bool) {
		if d == dir && j == i {
			return f(rec)
		}
		return [][]byte{rec}, false
	}
}

func flipBit(off int) func([]byte) ([][]byte, bool) {
	return func(rec []byte) ([][]byte, bool) {
		if off < 0 {
			off += len(rec)
		}
		rec[off] ^= 0x10
		return [][]byte{rec}, false
	}
}

const attackMessages = 8

func attackMessage(k int) []byte {
	return fmt.Appendf(nil, "message %d: %s", k, bytes.Repeat([]byte{'a' + byte(k)}, 100+k))
}

// runAttack sends attackMessages records from the client, one per Write,
// through m, and returns what the server's Read delivered and the error
// it ended with.
func runAttack(t *testing.T, mode Mode, m *mitm, o pairOptions) ([]byte, error) {
	t.Helper()
	o.mode = mode
	o.through = func(t testing.TB, addr string) string { return startMITM(t, addr, m) }
	c, s := connPair(t, o)
	defer s.Close()
	defer c.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for k := range attackMessages {
			if _, err := c.Write(attackMessage(k)); err != nil {
				return
			}
		}
	}()
	// A guard against a hang, not a timed assertion: every attack ends
	// the server's Read long before.
	s.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(s)
	s.Close()
	<-done
	return got, err
}

// firstMessages is what the server may have read before record k failed.
func firstMessages(k int) []byte {
	var b []byte
	for i := range k {
		b = append(b, attackMessage(i)...)
	}
	return b
}

// TestMITMRecordAttacks checks that every manipulation of the record stream
// by an on-path attacker ends the receiver's Read in ErrIntegrity, and that
// exactly the records before the manipulated one were delivered: never a
// byte of wrong data.
func TestMITMRecordAttacks(t *testing.T) {
	const k = 3 // the record attacked
	garbage := []byte("GET / HTTP/1.1\r\nHost: attacker\r\n\r\n")
	forged := append([]byte{recordData, 0, 0, 5}, []byte("evil!0123456789abcdef")...)
	attacks := []struct {
		name string
		f    func([]byte) ([][]byte, bool)
		want int // messages delivered before the error
	}{
		{"flip type", flipBit(0), k},
		{"flip length", flipBit(3), k},
		{"flip payload", flipBit(recordHeaderLen + 2), k},
		{"flip tag", flipBit(-1), k},
		{"drop", func([]byte) ([][]byte, bool) { return nil, false }, k},
		{"duplicate", func(r []byte) ([][]byte, bool) { return [][]byte{r, r}, false }, k + 1},
		{"inject garbage", func(r []byte) ([][]byte, bool) { return [][]byte{garbage, r}, false }, k},
		{"inject forged record", func(r []byte) ([][]byte, bool) { return [][]byte{forged, r}, false }, k},
		{"inject a record prefix", func(r []byte) ([][]byte, bool) { return [][]byte{r[:recordOverhead], r}, false }, k},
		{"truncate at record boundary", func([]byte) ([][]byte, bool) { return nil, true }, k},
		{"truncate mid-record", func(r []byte) ([][]byte, bool) { return [][]byte{r[:len(r)/2]}, true }, k},
	}
	// Reordering needs two records at once.
	var held []byte
	reorder := func(_ *mitm, dir, i int, rec []byte) ([][]byte, bool) {
		switch {
		case dir == c2s && i == k:
			held = rec
			return nil, false
		case dir == c2s && i == k+1:
			return [][]byte{rec, held}, false
		}
		return [][]byte{rec}, false
	}
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		for _, a := range attacks {
			t.Run(mode.String()+"/"+a.name, func(t *testing.T) {
				got, err := runAttack(t, mode, &mitm{rec: onRecord(c2s, k, a.f)}, pairOptions{})
				checkAttack(t, got, err, a.want)
			})
		}
		t.Run(mode.String()+"/reorder", func(t *testing.T) {
			got, err := runAttack(t, mode, &mitm{rec: reorder}, pairOptions{})
			checkAttack(t, got, err, k)
		})
	}
}

func checkAttack(t *testing.T, got []byte, err error, want int) {
	t.Helper()
	if !errors.Is(err, ErrIntegrity) {
		t.Errorf("Read ended with %v, want ErrIntegrity", err)
	}
	if w := firstMessages(want); !bytes.Equal(got, w) {
		t.Errorf("server read %d bytes, want the %d bytes of the first %d records", len(got), len(w), want)
	}
}

// TestMITMTruncationIsNotEOF checks that a cut stream wraps
// io.ErrUnexpectedEOF as well as ErrIntegrity, so it is never mistaken for
// the peer's clean end.
func TestMITMTruncationIsNotEOF(t *testing.T) {
	cut := onRecord(c2s, 2, func([]byte) ([][]byte, bool) { return nil, true })
	_, err := runAttack(t, ModeSealed, &mitm{rec: cut}, pairOptions{})
	if !errors.Is(err, ErrIntegrity) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Read ended with %v, want ErrIntegrity and io.ErrUnexpectedEOF", err)
	}
}

// TestMITMErrorIsSticky checks that after a failed record, later Reads fail
// too, even though valid records follow on the wire.
func TestMITMErrorIsSticky(t *testing.T) {
	m := &mitm{rec: onRecord(c2s, 0, flipBit(recordHeaderLen))}
	c, s := connPair(t, pairOptions{mode: ModeIntegrity, through: func(t testing.TB, a string) string { return startMITM(t, a, m) }})
	defer c.Close()
	defer s.Close()
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		c.Write([]byte("tampered"))
		c.Write([]byte("valid on its own"))
	}()
	defer func() { <-wrote }()
	buf := make([]byte, 64)
	for i := range 3 {
		n, err := s.Read(buf)
		if n != 0 || !errors.Is(err, ErrIntegrity) {
			t.Fatalf("Read %d = %d, %v; want 0, ErrIntegrity", i, n, err)
		}
	}
}

// TestMITMReflection sends the client's own first record back to it: the
// client must refuse it, since each direction has its own keys.
func TestMITMReflection(t *testing.T) {
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

// TestMITMDropKeyUpdate drops the first key update record: the records
// after it are under a key the receiver does not have yet.
func TestMITMDropKeyUpdate(t *testing.T) {
	var dropped atomic.Bool
	m := &mitm{rec: func(_ *mitm, dir, i int, rec []byte) ([][]byte, bool) {
		if dir == c2s && rec[0] == recordKeyUpdate && !dropped.Load() {
			dropped.Store(true)
			return nil, false
		}
		return [][]byte{rec}, false
	}}
	got, err := runAttack(t, ModeSealed, m, pairOptions{updateAt: 300})
	if !dropped.Load() {
		t.Fatal("no key update record went through the proxy")
	}
	if !errors.Is(err, ErrIntegrity) {
		t.Fatalf("Read ended with %v, want ErrIntegrity", err)
	}
	if !bytes.HasPrefix(firstMessages(attackMessages), got) || len(got) == 0 {
		t.Fatalf("server read %d bytes, want a non-empty prefix of what was sent", len(got))
	}
}

// TestMITMAuthModeIsOpen shows what ModeAuth does not protect: bytes an
// on-path attacker injects after the handshake reach the application
// unnoticed. (It also shows that the proxy really can inject.)
func TestMITMAuthModeIsOpen(t *testing.T) {
	m := &mitm{}
	c, s := connPair(t, pairOptions{mode: ModeAuth, through: func(t testing.TB, a string) string { return startMITM(t, a, m) }})
	defer c.Close()
	defer s.Close()
	if err := m.send(c2s, []byte("injected")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "injected" {
		t.Fatalf("ModeAuth server read %q, %v; want the injected bytes", buf, err)
	}
}

// TestSealedHidesPlaintext sends a known pattern both ways and checks it
// never appears on the wire in ModeSealed, while it does in ModeIntegrity.
func TestSealedHidesPlaintext(t *testing.T) {
	pattern := []byte("KNOWN-PLAINTEXT-PATTERN-0123456789")
	payload := bytes.Repeat(pattern, 3000)
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		for _, chacha := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/chacha=%v", mode, chacha), func(t *testing.T) {
				m := &mitm{}
				c, s := connPair(t, pairOptions{mode: mode, chacha: chacha, through: func(t testing.TB, a string) string { return startMITM(t, a, m) }})
				defer c.Close()
				defer s.Close()
				for _, p := range [][2]*Conn{{c, s}, {s, c}} {
					errc := make(chan error, 1)
					go func() {
						_, err := p[0].Write(payload)
						if err == nil {
							err = p[0].CloseWrite()
						}
						errc <- err
					}()
					got, err := io.ReadAll(p[1])
					if err != nil || !bytes.Equal(got, payload) {
						t.Fatalf("read %d bytes, %v", len(got), err)
					}
					if err := <-errc; err != nil {
						t.Fatal(err)
					}
				}
				for dir, name := range []string{"client to server", "server to client"} {
					wire := m.wireBytes(dir)
					if len(wire) < len(payload) {
						t.Fatalf("%s: the proxy saw %d bytes, fewer than were sent", name, len(wire))
					}
					seen := bytes.Contains(wire, pattern)
					if seen != (mode == ModeIntegrity) {
						t.Errorf("%s in %v: pattern on the wire = %v", name, mode, seen)
					}
				}
			})
		}
	}
}

// TestMITMDowngrade rewrites the mode or flags byte of the ClientHello or
// the ServerHello: the handshake must fail, never yield a weaker connection.
func TestMITMDowngrade(t *testing.T) {
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
