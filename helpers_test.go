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
