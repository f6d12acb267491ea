package hmacauth

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// waitLimit bounds every wait in the tests, so that a broken build fails a
// test instead of hanging it. It is a backstop, not a speed assertion: a
// healthy build finishes each of these waits in milliseconds, and where a
// test checks that something ends early (a cancelled handshake, Close), the
// broken alternative takes the one-minute handshake timeout.
const waitLimit = 20 * time.Second

// testKey returns a key whose secret is derived from id, so that tests can
// build matching and mismatching keys without sharing variables.
func testKey(id string) Key {
	return Key{ID: id, Secret: seededBytes(id, MinSecretLen)}
}

// cmpKeys is the cmp option for comparing Keys: by ID and secret, with a
// secret printed as its length and SHA-256, never its bytes.
var cmpKeys = cmp.Transformer("Redact", func(k Key) redactedKey {
	return redactedKey{k.ID, fmt.Sprintf("%d bytes, SHA-256 %x", len(k.Secret), sha256.Sum256(k.Secret))}
})

type redactedKey struct{ ID, Secret string }

// seededBytes returns n bytes determined by seed.
func seededBytes(seed string, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8(seedOf(seed)).Read(b)
	return b
}

// events records the HandshakeEvents a Listener reports.
type events struct {
	mu      sync.Mutex
	list    []HandshakeEvent
	changed chan struct{} // closed and replaced on every event
}

func newEvents() *events { return &events{changed: make(chan struct{})} }

func (e *events) record(ev HandshakeEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, ev)
	close(e.changed)
	e.changed = make(chan struct{})
}

// all returns the events so far.
func (e *events) all() []HandshakeEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]HandshakeEvent(nil), e.list...)
}

// waitFor returns the first event that match accepts, waiting for it.
func (e *events) waitFor(t testing.TB, what string, match func(HandshakeEvent) bool) HandshakeEvent {
	t.Helper()
	timeout := time.NewTimer(waitLimit)
	defer timeout.Stop()
	for {
		e.mu.Lock()
		for _, ev := range e.list {
			if match(ev) {
				e.mu.Unlock()
				return ev
			}
		}
		changed := e.changed
		e.mu.Unlock()
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("no handshake event for %s after %v; events: %v", what, waitLimit, e.all())
		}
	}
}

// waitFrom returns the event for the connection whose client side has
// address local.
func (e *events) waitFrom(t testing.TB, local net.Addr) HandshakeEvent {
	t.Helper()
	return e.waitFor(t, local.String(), func(ev HandshakeEvent) bool {
		return ev.RemoteAddr.String() == local.String()
	})
}

// count returns how many events match.
func (e *events) count(match func(HandshakeEvent) bool) int {
	n := 0
	for _, ev := range e.all() {
		if match(ev) {
			n++
		}
	}
	return n
}

// newTestConfig returns a Config with the given keys (or one test key) whose
// events are recorded.
func newTestConfig(keys ...Key) (*Config, *events) {
	if len(keys) == 0 {
		keys = []Key{testKey("test-key")}
	}
	ev := newEvents()
	return &Config{Keys: keys, OnHandshake: ev.record}, ev
}

// configWith returns a Config with the one key k: a client proves it, a
// server accepts it.
func configWith(k Key) *Config { return &Config{Keys: []Key{k}} }

// server is a Listener whose accepted connections are served by a handler,
// each on its own goroutine, all of which end before the test does.
type server struct {
	*Listener

	mu       sync.Mutex
	accepted []net.Addr // remote addresses of accepted connections
}

// startServer listens on 127.0.0.1 with cfg and runs handle on each
// accepted connection until the test ends. handle must return once the
// connection is closed.
func startServer(t testing.TB, cfg *Config, handle func(*Conn)) *server {
	t.Helper()
	l, err := Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	return serveListener(t, l, handle)
}

// listenEngine returns a Listener on 127.0.0.1 made by NewListener over a
// plain net.Listen socket, which NewListener leaves as it is. Unlike a
// socket of Listen (TCP_DEFER_ACCEPT on Linux), it hands a client that
// sends nothing to the accept engine at once, so tests of the engine's
// caps, timeouts and Close can stall handshakes with silent clients. The
// Listener is closed when the test ends.
func listenEngine(t testing.TB, cfg *Config) *Listener {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewListener(inner, cfg)
	if err != nil {
		inner.Close()
		t.Fatalf("NewListener: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// startEngineEcho is startEcho over listenEngine.
func startEngineEcho(t testing.TB, cfg *Config) *server {
	t.Helper()
	return serveListener(t, listenEngine(t, cfg), echo)
}

func serveListener(t testing.TB, l *Listener, handle func(*Conn)) *server {
	s := &server{Listener: l}
	t.Cleanup(serveConns(l, func(c net.Conn) {
		s.mu.Lock()
		s.accepted = append(s.accepted, c.RemoteAddr())
		s.mu.Unlock()
		handle(c.(*Conn))
	}))
	return s
}

// wasAccepted reports whether Accept returned a connection from remote.
func (s *server) wasAccepted(remote net.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.accepted {
		if a.String() == remote.String() {
			return true
		}
	}
	return false
}

// echo copies everything it reads back, then half-closes.
func echo(c *Conn) {
	io.Copy(c, c)
	c.CloseWrite()
}

// startEcho starts an echo server with cfg and returns it.
func startEcho(t testing.TB, cfg *Config) *server {
	t.Helper()
	return startServer(t, cfg, echo)
}

// dialTest dials addr with cfg and fails the test on error. The connection
// is closed when the test ends.
func dialTest(t testing.TB, addr net.Addr, cfg *Config) *Conn {
	t.Helper()
	c, err := Dial("tcp", addr.String(), cfg)
	if err != nil {
		t.Fatalf("Dial %v: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends msg over c and checks that the echo server returns it.
func roundTrip(t testing.TB, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("Write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

// checkGoodClient dials the echo server s with cfg, from 127.0.0.1, and
// checks an echo round trip and the key IDs on both sides.
func checkGoodClient(t testing.TB, s *server, cfg *Config) {
	t.Helper()
	c := dialTest(t, s.Addr(), cfg)
	roundTrip(t, c, "still serving")
	if got, want := c.KeyID(), cfg.Keys[0].ID; got != want {
		t.Errorf("client KeyID = %q, want %q", got, want)
	}
	c.Close()
}

// rawDial opens a plain TCP connection to addr from the local IP laddr
// ("" for any). It is closed when the test ends.
func rawDial(t testing.TB, addr net.Addr, laddr string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{}
	if laddr != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(laddr)}
	}
	c, err := d.Dial("tcp", addr.String())
	if err != nil {
		t.Fatalf("dial %v from %q: %v", addr, laddr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// waitClosed reads from c until the peer closes it, and fails the test if
// the peer sends anything first.
func waitClosed(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	b, err := io.ReadAll(c)
	if len(b) > 0 {
		t.Errorf("the server sent %q to a refused client; it must say nothing", b)
	}
	if err != nil && !isClosedByPeer(err) {
		t.Errorf("waiting for the server to close: %v", err)
	}
}

// waitFor polls cond until it holds, failing t after waitLimit.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting: %s", waitLimit, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// pipeTCP returns the two ends of a fresh loopback TCP connection.
func pipeTCP(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		ch <- result{c, err}
	}()
	cc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		cc.Close()
		t.Fatal(r.err)
	}
	t.Cleanup(func() { cc.Close(); r.c.Close() })
	return cc.(*net.TCPConn), r.c.(*net.TCPConn)
}

// handshakePair runs both sides of a handshake over a fresh loopback TCP
// connection and returns them, with their handshake errors.
func handshakePair(t testing.TB, clientCfg, serverCfg *Config) (cc, sc *Conn, cerr, serr error) {
	t.Helper()
	rc, rs := pipeTCP(t)
	cc, sc = Client(rc, clientCfg), Server(rs, serverCfg)
	cerr, serr = handshakeBoth(cc, sc)
	return cc, sc, cerr, serr
}

// handshakeBoth runs the handshakes of cc and sc at once. A side whose
// handshake fails closes its connection, as a refusing server does.
func handshakeBoth(cc, sc *Conn) (cerr, serr error) {
	done := make(chan error, 1)
	go func() {
		err := sc.Handshake()
		if err != nil {
			sc.conn.Close()
		}
		done <- err
	}()
	if cerr = cc.Handshake(); cerr != nil {
		cc.conn.Close()
	}
	return cerr, <-done
}

// mustBe fails the test unless errors.Is(err, target).
func mustBe(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want one wrapping %v", err, target)
	}
}

// validClientHello returns the bytes of a ClientHello for k with a nonce
// from seed.
func validClientHello(k Key, seed string) []byte {
	h := &handshake{rand: rand.NewChaCha8(seedOf(seed))}
	if err := h.writeClientHello(deriveKeySchedule(k), hsParams{}); err != nil {
		panic(err)
	}
	return bytes.Clone(h.ch())
}

func seedOf(s string) [32]byte {
	var b [32]byte
	copy(b[:], s)
	return b
}

// tlsClientHello returns the first record a crypto/tls client sends: a real
// TLS ClientHello.
func tlsClientHello(t testing.TB) []byte {
	t.Helper()
	c, s := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tc := tls.Client(c, &tls.Config{ServerName: "example.com"})
		tc.Handshake() // fails when s is closed
		c.Close()
	}()
	defer func() { s.Close(); <-done }()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(s, hdr); err != nil {
		t.Fatalf("reading the TLS record header: %v", err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(s, body); err != nil {
		t.Fatalf("reading the TLS ClientHello: %v", err)
	}
	return append(hdr, body...)
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newTextLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// secretEncodings lists the ways a secret could show in output: raw, in the
// usual encodings, and its first 8 bytes raw or in hex.
func secretEncodings(secret []byte) []string {
	prefix := secret[:min(len(secret), 8)]
	return []string{
		string(secret),
		hex.EncodeToString(secret),
		strings.ToUpper(hex.EncodeToString(secret)),
		base64.StdEncoding.EncodeToString(secret),
		base64.RawStdEncoding.EncodeToString(secret),
		base64.URLEncoding.EncodeToString(secret),
		base64.RawURLEncoding.EncodeToString(secret),
		fmt.Sprint(secret), // [1 2 3 ...]
		fmt.Sprintf("%#v", secret),
		strings.Trim(fmt.Sprintf("%#v", secret), "[]byte{}"),
		fmt.Sprintf("%q", secret),
		strconv.QuoteToASCII(string(secret)),
		string(prefix),
		hex.EncodeToString(prefix),
		strings.Trim(fmt.Sprint(prefix), "[]"),               // inside a longer []byte or array, %v %d
		strings.Trim(fmt.Sprintf("%o", prefix), "[]"),        // %o
		strings.Trim(fmt.Sprintf("%#v", prefix), "[]byte{}"), // %#v
	}
}

// printVerbs are the fmt verbs a value of the package is printed with in
// the no-secret tests: every verb that prints a []byte's contents.
var printVerbs = []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%o"}

// printedEveryWay returns vs formatted with every verb of printVerbs, each
// alone and inside a struct and a slice, and logged by slog's text and JSON
// handlers.
func printedEveryWay(vs ...any) string {
	var out strings.Builder
	for _, v := range vs {
		for _, verb := range printVerbs {
			fmt.Fprintf(&out, verb+"\n", v)
			fmt.Fprintf(&out, verb+"\n", struct{ V any }{v})
			fmt.Fprintf(&out, verb+"\n", []any{v})
		}
		slog.New(slog.NewTextHandler(&out, nil)).Info("value", "v", v)
		slog.New(slog.NewJSONHandler(&out, nil)).Info("value", "v", v)
	}
	return out.String()
}

// checkNoSecret fails the test if out contains any of the secrets, raw or
// in a usual encoding.
func checkNoSecret(t testing.TB, out string, secrets ...[]byte) {
	t.Helper()
	for _, s := range secrets {
		for _, enc := range secretEncodings(s) {
			if strings.Contains(out, enc) {
				t.Errorf("output contains the secret (as %q): %s", enc, out)
			}
		}
	}
}

// startRawServer runs handle on every connection to a plain TCP listener
// on 127.0.0.1, until the test ends, and closes the connection after it.
func startRawServer(t testing.TB, handle func(net.Conn)) net.Addr {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(serveConns(l, handle))
	return l.Addr()
}

// serveEcho accepts from l until it is closed and echoes each connection.
// The returned func closes l and waits for every goroutine.
func serveEcho(l net.Listener) (stop func()) {
	return serveConns(l, func(c net.Conn) { io.Copy(c, c) })
}

// serveConns runs handle on every connection accepted from l, and closes
// the connection after it. The returned func closes l and every connection,
// and waits for every goroutine.
func serveConns(l net.Listener, handle func(net.Conn)) (stop func()) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
}

// drain reads c until it is closed.
func drain(c net.Conn) { io.Copy(io.Discard, c) }

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

// memConn feeds a Conn's record layer from memory, in chunks of a chosen
// size, so that fuzzing exercises every way a record can be split across
// reads. Only Read, Write and RemoteAddr are used by the record layer.
type memConn struct {
	net.Conn
	r     io.Reader
	w     bytes.Buffer
	chunk int
}

func (m *memConn) Read(b []byte) (int, error) {
	if m.chunk > 0 && len(b) > m.chunk {
		b = b[:m.chunk]
	}
	return m.r.Read(b)
}

func (m *memConn) Write(b []byte) (int, error) { return m.w.Write(b) }

func (m *memConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

func (m *memConn) SetWriteDeadline(time.Time) error { return nil }

// fuzzSecret is the session secret of the fuzz targets' connections.
var fuzzSecret = bytes.Repeat([]byte{0xa5}, 32)

// recordConn returns a Conn in the given mode whose record layer runs over
// mc with keys from fuzzSecret, as the client or the server.
func recordConn(mc *memConn, mode Mode, chacha, client bool) *Conn {
	return recordConnSecret(mc, mode, chacha, client, fuzzSecret)
}

func recordConnSecret(mc *memConn, mode Mode, chacha, client bool, secret []byte) *Conn {
	c := &Conn{conn: mc, isClient: client}
	c.res = hsResult{keyID: "fuzz", mode: mode, secret: secret}
	if chacha {
		c.res.flags |= flagChaCha20
	}
	c.rl = newRecordLayer(mc, secret, recordParams{client: client, sealed: mode == ModeSealed, chacha: chacha})
	c.hsDone.Store(true)
	return c
}

// sealRecords returns the wire bytes a client in the given mode sends for
// the payloads, one Write each, then the close record if closed.
func sealRecords(mode Mode, chacha bool, updateAt uint64, closed bool, payloads ...[]byte) []byte {
	mc := &memConn{}
	c := recordConn(mc, mode, chacha, true)
	if updateAt > 0 {
		c.rl.testingOnlyKeyUpdateBytes = updateAt
	}
	for _, p := range payloads {
		c.Write(p)
	}
	if closed {
		c.CloseWrite() // the close record; memConn has no CloseWrite
	}
	return mc.w.Bytes()
}

var allModes = []Mode{ModeAuth, ModeIntegrity, ModeSealed}

func recordTestKey() Key {
	return Key{ID: "records", Secret: bytes.Repeat([]byte{0x5a}, MinSecretLen)}
}

// pairOptions shapes the connections connPair makes.
type pairOptions struct {
	mode       Mode
	fs         bool
	chacha     bool                                         // the client acts as if it had no AES hardware
	recordSize int                                          // 0: default
	updateAt   uint64                                       // 0: default
	through    func(t testing.TB, serverAddr string) string // a proxy in between
}

// connPair returns a client and a server Conn over real loopback TCP, with
// their handshakes done. With a proxy, the client dials the proxy.
func connPair(t testing.TB, o pairOptions) (client, server *Conn) {
	t.Helper()
	cc, sc, cerr, serr := connPairErr(t, o)
	if cerr != nil || serr != nil {
		t.Fatalf("handshake: client: %v; server: %v", cerr, serr)
	}
	return cc, sc
}

func connPairErr(t testing.TB, o pairOptions) (client, server *Conn, cerr, serr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := &Config{Keys: []Key{recordTestKey()}, Mode: o.mode, ForwardSecrecy: o.fs}
	addr := ln.Addr().String()
	if o.through != nil {
		addr = o.through(t, addr)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		raw, _ := ln.Accept() // nil after an error
		accepted <- raw
	}()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	rs := <-accepted
	if rs == nil {
		raw.Close()
		t.Fatal("accept failed")
	}
	client, server = Client(raw, cfg), Server(rs, &Config{Keys: cfg.Keys})
	client.testingOnlyNoAES = o.chacha
	client.testingOnlyRecordSize, client.testingOnlyKeyUpdateBytes = o.recordSize, o.updateAt
	server.testingOnlyRecordSize, server.testingOnlyKeyUpdateBytes = o.recordSize, o.updateAt
	cerr, serr = handshakeBoth(client, server)
	if serr != nil {
		client.Close()
	}
	return client, server, cerr, serr
}

// errNoDeadlines is what noDeadlineConn's deadline setters return.
var errNoDeadlines = errors.New("deadlines not supported")

// noDeadlineConn is a connection that refuses deadlines, as
// golang.org/x/crypto/ssh's channels and some users' wrappers do, over
// real loopback TCP. reading, if set, is closed at the first Read, when
// the handshake is waiting for the peer.
type noDeadlineConn struct {
	net.Conn
	once    sync.Once
	reading chan struct{}
}

func (c *noDeadlineConn) Read(b []byte) (int, error) {
	if c.reading != nil {
		c.once.Do(func() { close(c.reading) })
	}
	return c.Conn.Read(b)
}

func (*noDeadlineConn) SetDeadline(time.Time) error { return errNoDeadlines }

func (*noDeadlineConn) SetReadDeadline(time.Time) error { return errNoDeadlines }

func (*noDeadlineConn) SetWriteDeadline(time.Time) error { return errNoDeadlines }

// waitHandshake returns the error of the handshake that done reports,
// failing the test if it is still running after waitLimit: nothing else
// would end it.
func waitHandshake(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(waitLimit):
		t.Fatalf("handshake still running after %v on a connection without deadlines", waitLimit)
		return nil
	}
}

// noDeadlineListener yields connections that refuse deadlines; accepted
// receives each before the Listener sees it.
type noDeadlineListener struct {
	net.Listener
	accepted chan *noDeadlineConn
}

func (l *noDeadlineListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	nc := &noDeadlineConn{Conn: c, reading: make(chan struct{})}
	l.accepted <- nc
	return nc, nil
}
