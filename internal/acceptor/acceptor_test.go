package acceptor

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// waitLimit bounds every wait of these tests for something that should
// happen; a wait that ends there fails the test.
const waitLimit = 10 * time.Second

// quiet is how long a test watches for something that must not happen
// (there is no signal for an absence): long enough that the accept loop,
// were it wrong, would have acted, short against evictGrace's multiples.
const quiet = 200 * time.Millisecond

var (
	errRefused = errors.New("client sent no 'y'")
	errShed    = errors.New("test: connection shed")
)

// testHandshake is a Handshake that reads one byte from the client and
// succeeds if it is 'y', claiming "claim". It tells started of each
// handshake that begins, sends each outcome the Listener reports to
// reports (and the whole event to events), and counts the handshakes
// running at once.
type testHandshake struct {
	started    chan net.Addr
	reports    chan error
	events     chan Event
	open, peak atomic.Int64
	aborted    atomic.Int64 // handshakes that ended with ctx cancelled
}

func newTestHandshake() *testHandshake {
	return &testHandshake{started: make(chan net.Addr, 64), reports: make(chan error, 64), events: make(chan Event, 64)}
}

// config completes cfg with the handshake and its reports.
func (h *testHandshake) config(cfg Config) Config {
	cfg.Handshake, cfg.ErrShed, cfg.Name, cfg.ClaimAttr = h.run, errShed, "test", "claim"
	if cfg.Report == nil {
		cfg.Report = h.report
	}
	return cfg
}

func (h *testHandshake) report(ev Event) {
	h.events <- ev
	h.reports <- ev.Err
}

func (h *testHandshake) run(ctx context.Context, raw net.Conn) (net.Conn, string, error) {
	n := h.open.Add(1)
	for p := h.peak.Load(); n > p && !h.peak.CompareAndSwap(p, n); p = h.peak.Load() {
	}
	defer h.open.Add(-1)
	h.started <- raw.RemoteAddr()

	// A handshake honours ctx, as the real ones do (netx.Interrupt).
	stop := context.AfterFunc(ctx, func() { raw.SetReadDeadline(time.Unix(1, 0)) })
	var b [1]byte
	_, err := io.ReadFull(raw, b[:])
	if !stop() {
		h.aborted.Add(1)
		return nil, "claim", context.Cause(ctx)
	}
	if err != nil {
		return nil, "claim", err
	}
	if b[0] != 'y' {
		return nil, "claim", errRefused
	}
	return raw, "claim", nil
}

// countingListener is a real listener that counts the connections its
// Accept returned and signals each one, so that a test sees what the
// accept loop took from the kernel.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
	accepts  chan struct{}
}

func (cl *countingListener) Accept() (net.Conn, error) {
	c, err := cl.Listener.Accept()
	if err == nil {
		cl.accepted.Add(1)
		cl.accepts <- struct{}{}
	}
	return c, err
}

// listen starts a Listener over a counting loopback listener, closed when
// the test ends.
func listen(t *testing.T, cfg Config) (*Listener, *countingListener) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: inner, accepts: make(chan struct{}, 64)}
	l := New(cl, cfg)
	t.Cleanup(func() { l.Close() })
	return l, cl
}

// dial connects to l, with a deadline on the connection's I/O; the
// connection is closed when the test ends.
func dial(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(waitLimit))
	t.Cleanup(func() { c.Close() })
	return c
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatal(err)
	}
}

// recv waits for a value from ch, failing the test after waitLimit.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out after %v waiting for %s", waitLimit, what)
		var zero T
		return zero
	}
}

// none checks that nothing arrives on ch for a while.
func none[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("%s: got %v", what, v)
	case <-time.After(quiet):
	}
}

// waitFor polls cond, for state that has no signal of its own (the
// Listener's counters), failing the test after waitLimit.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting: %s", waitLimit, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// closedByServer checks that the server closed c without writing to it.
func closedByServer(t *testing.T, c net.Conn) {
	t.Helper()
	var b [1]byte
	n, err := c.Read(b[:])
	if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read from a connection the server should have closed: %d bytes, %v; want none and EOF or reset", n, err)
	}
}

// checkStats checks that l's counters settle at want within waitLimit: a
// handshake's goroutine lowers InFlight after its outcome is reported and
// its connection closed, so a test that has heard of the outcome may read
// the counters a moment before they settle.
func checkStats(t *testing.T, l *Listener, want Stats) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	got := l.Stats()
	for got != want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		got = l.Stats()
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Stats() mismatch (-want +got):\n%s", diff)
	}
}

// TestMaxInFlight checks that no more than MaxInFlight handshakes run at
// once: with every slot taken, a new connection waits in the kernel, and
// gets a slot only by the eviction of a stalled handshake, which ends
// before the new one starts.
func TestMaxInFlight(t *testing.T) {
	const maxInFlight = 3
	h := newTestHandshake()
	l, cl := listen(t, h.config(Config{MaxInFlight: maxInFlight, QueueLen: 1}))
	for range maxInFlight {
		dial(t, l)
		recv(t, h.started, "a handshake to start")
	}
	checkStats(t, l, Stats{InFlight: maxInFlight})

	dial(t, l) // one too many: taken only once a stalled handshake is evicted
	select {
	case a := <-h.started:
		t.Fatalf("handshake for %v started with all %d slots taken and none evicted", a, maxInFlight)
	case err := <-h.reports:
		if !errors.Is(err, errShed) || !strings.Contains(err.Error(), "evicted") {
			t.Fatalf("report = %v, want an eviction, wrapping Config.ErrShed", err)
		}
	case <-time.After(waitLimit):
		t.Fatalf("timed out after %v waiting for a handshake evicted", waitLimit)
	}
	recv(t, h.started, "the new connection's handshake to start")
	if p := h.peak.Load(); p != maxInFlight {
		t.Errorf("at most %d handshakes ran at once, want %d (MaxInFlight)", p, maxInFlight)
	}
	if n := cl.accepted.Load(); n != maxInFlight+1 {
		t.Errorf("inner listener accepted %d connections, want %d", n, maxInFlight+1)
	}
	checkStats(t, l, Stats{InFlight: maxInFlight, Evicted: 1})
}

// TestMaxPerIP checks that a connection over its IP's cap is closed
// unread and reported, with an error wrapping Config.ErrShed, on a
// goroutine other than the accept loop's: while that Report blocks, other
// connections are still served.
func TestMaxPerIP(t *testing.T) {
	h := newTestHandshake()
	shed := make(chan Event, 1)
	release := make(chan struct{})
	l, _ := listen(t, h.config(Config{MaxInFlight: 8, QueueLen: 8, MaxPerIP: 2,
		Report: func(ev Event) {
			if !errors.Is(ev.Err, errShed) {
				h.report(ev)
				return
			}
			shed <- ev
			<-release
		}}))
	t.Cleanup(func() { close(release) }) // before l.Close, which waits for the report
	first := dial(t, l)
	recv(t, h.started, "the first handshake to start")
	dial(t, l)
	recv(t, h.started, "the second handshake to start")

	over := dial(t, l) // 127.0.0.1 has two handshakes in flight already
	ev := recv(t, shed, "the shed connection's report")
	if ev.RemoteAddr.String() != over.LocalAddr().String() || ev.Claim != "" || ev.Duration != 0 || !strings.Contains(ev.Err.Error(), "Config.MaxHandshakesPerIP") {
		t.Errorf("shed reported as %+v, want the shed client's address %v, no claim nor duration, and a reason that names Config.MaxHandshakesPerIP", ev, over.LocalAddr())
	}
	closedByServer(t, over)
	checkStats(t, l, Stats{InFlight: 2, Shed: 1})

	// The report still blocks; the accept loop goes on.
	write(t, first, "y")
	if err := recv(t, h.reports, "the first handshake's outcome"); err != nil {
		t.Fatalf("first handshake: %v", err)
	}
	next := dial(t, l)
	if a := recv(t, h.started, "a handshake to start while the report blocks"); a.String() != next.LocalAddr().String() {
		t.Errorf("handshake started for %v, want %v", a, next.LocalAddr())
	}
}

// TestBackpressure checks that when the queue is full and the application
// does not call Accept, the Listener stops taking connections from the
// inner listener (they wait in the kernel's backlog), and takes the next
// one once Accept makes room.
func TestBackpressure(t *testing.T) {
	const maxInFlight, queueLen = 2, 1
	h := newTestHandshake()
	l, cl := listen(t, h.config(Config{MaxInFlight: maxInFlight, QueueLen: queueLen}))
	// A finished connection holds its slot until it is in the queue, so the
	// Listener holds a full queue and a finished connection in every slot.
	const held = maxInFlight + queueLen
	for i := range held + 2 {
		write(t, dial(t, l), "y")
		if i < held {
			recv(t, cl.accepts, "an accept from the inner listener")
			if err := recv(t, h.reports, "a handshake's outcome"); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor(t, "the finished connections to wait for Accept", func() bool { return l.Stats().Queued >= held })
	none(t, cl.accepts, "inner listener accepted a connection while the queue was full")

	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	recv(t, cl.accepts, "an accept from the inner listener once Accept made room")
	none(t, cl.accepts, "inner listener accepted a second connection for one Accept")
	if n := cl.accepted.Load(); n != held+1 {
		t.Errorf("inner listener accepted %d connections, want %d", n, held+1)
	}
}

// TestFailedHandshake checks that a connection whose handshake fails never
// reaches Accept and is closed.
func TestFailedHandshake(t *testing.T) {
	h := newTestHandshake()
	l, _ := listen(t, h.config(Config{MaxInFlight: 4, QueueLen: 4}))
	bad := dial(t, l)
	write(t, bad, "n")
	if err := recv(t, h.reports, "the failed handshake's outcome"); !errors.Is(err, errRefused) {
		t.Fatalf("report = %v, want %v", err, errRefused)
	}
	closedByServer(t, bad)

	good := dial(t, l)
	write(t, good, "y")
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.RemoteAddr().String() != good.LocalAddr().String() {
		t.Errorf("Accept returned the connection from %v, want the good client's, %v (the failed one is %v)", c.RemoteAddr(), good.LocalAddr(), bad.LocalAddr())
	}
	checkStats(t, l, Stats{})
}

// TestCloseAbortsHandshakes checks that Close cancels the handshakes in
// flight, unblocks Accept with net.ErrClosed, and returns only once every
// handshake has ended and reported.
func TestCloseAbortsHandshakes(t *testing.T) {
	const n = 3
	h := newTestHandshake()
	l, _ := listen(t, h.config(Config{MaxInFlight: n, QueueLen: 1}))
	for range n {
		dial(t, l)
		recv(t, h.started, "a handshake to start")
	}
	acceptErr := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if c != nil {
			c.Close()
		}
		acceptErr <- err
	}()

	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	// No waiting from here: Close has returned, so every handshake has.
	if a := h.aborted.Load(); a != n {
		t.Errorf("%d handshakes saw ctx cancelled when Close returned, want %d", a, n)
	}
	if len(h.reports) != n {
		t.Errorf("%d handshakes reported when Close returned, want %d", len(h.reports), n)
	}
	for range len(h.reports) {
		if err := <-h.reports; !errors.Is(err, net.ErrClosed) {
			t.Errorf("report = %v, want an error wrapping net.ErrClosed", err)
		}
	}
	checkStats(t, l, Stats{})
	if err := recv(t, acceptErr, "Accept to return"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept = %v, want an error wrapping net.ErrClosed", err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, want an error wrapping net.ErrClosed", err)
	}
	if err := l.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
}

// TestCloseClosesQueued checks that Close closes the connections waiting
// for Accept.
func TestCloseClosesQueued(t *testing.T) {
	const n = 2
	h := newTestHandshake()
	l, _ := listen(t, h.config(Config{MaxInFlight: n, QueueLen: n}))
	var clients []net.Conn
	for range n {
		c := dial(t, l)
		write(t, c, "y")
		clients = append(clients, c)
	}
	waitFor(t, "both connections to wait for Accept", func() bool { return l.Stats().Queued == n })
	l.Close()
	checkStats(t, l, Stats{})
	for _, c := range clients {
		closedByServer(t, c)
	}
}

// TestShutdown checks that Shutdown refuses new connections, lets the
// handshake in flight finish, and hands over every finished connection
// before Accept fails with net.ErrClosed.
func TestShutdown(t *testing.T) {
	h := newTestHandshake()
	l, _ := listen(t, h.config(Config{MaxInFlight: 2, QueueLen: 2}))
	queued := dial(t, l)
	write(t, queued, "y")
	waitFor(t, "a connection to wait for Accept", func() bool { return l.Stats().Queued == 1 })
	inFlight := dial(t, l)
	recv(t, h.started, "the first handshake to start")
	recv(t, h.started, "the second handshake to start")

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	shutdown := make(chan error, 1)
	go func() { shutdown <- l.Shutdown(ctx) }()

	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if c.RemoteAddr().String() != queued.LocalAddr().String() {
		t.Errorf("first Accept: connection from %v, want %v", c.RemoteAddr(), queued.LocalAddr())
	}
	write(t, inFlight, "y")
	c, err = l.Accept()
	if err != nil {
		t.Fatalf("Accept of the connection whose handshake was in flight: %v", err)
	}
	c.Close()
	if c.RemoteAddr().String() != inFlight.LocalAddr().String() {
		t.Errorf("second Accept: connection from %v, want %v", c.RemoteAddr(), inFlight.LocalAddr())
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after the last connection = %v, want an error wrapping net.ErrClosed", err)
	}
	if err := recv(t, shutdown, "Shutdown to return"); err != nil {
		t.Errorf("Shutdown = %v, want nil", err)
	}
	if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
		c.Close()
		t.Errorf("dial after Shutdown succeeded; want the inner listener closed")
	}
}

// errTemporary is a temporary net.Error, as an Accept on a process out of
// file descriptors returns.
type errTemporary struct{}

func (errTemporary) Error() string   { return "too many open files (fake)" }
func (errTemporary) Timeout() bool   { return false }
func (errTemporary) Temporary() bool { return true }

// failingListener is a real listener whose Accept first fails with the
// errors in errs, one per call.
type failingListener struct {
	net.Listener
	errs chan error
}

func (fl *failingListener) Accept() (net.Conn, error) {
	select {
	case err := <-fl.errs:
		return nil, err
	default:
		return fl.Listener.Accept()
	}
}

func listenFailing(t *testing.T, errs ...error) (*Listener, *testHandshake) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &failingListener{Listener: inner, errs: make(chan error, len(errs))}
	for _, err := range errs {
		fl.errs <- err
	}
	h := newTestHandshake()
	l := New(fl, h.config(Config{MaxInFlight: 2, QueueLen: 2}))
	t.Cleanup(func() { l.Close() })
	return l, h
}

// TestTemporaryAcceptError checks that temporary errors of the inner
// listener are retried and counted, and do not reach Accept.
func TestTemporaryAcceptError(t *testing.T) {
	const n = 3
	var errs []error
	for range n {
		errs = append(errs, errTemporary{})
	}
	l, _ := listenFailing(t, errs...)
	write(t, dial(t, l), "y")
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept = %v, want the connection after %d temporary errors", err, n)
	}
	c.Close()
	checkStats(t, l, Stats{Retries: n})
}

// TestPermanentAcceptError checks that a permanent error of the inner
// listener makes Accept fail with it.
func TestPermanentAcceptError(t *testing.T) {
	errBroken := errors.New("listener broken (fake)")
	l, _ := listenFailing(t, errBroken)
	if _, err := l.Accept(); !errors.Is(err, errBroken) {
		t.Errorf("Accept = %v, want an error wrapping %v", err, errBroken)
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
}

// TestIPKey checks the buckets of MaxPerIP: one per IPv4 address, one per
// IPv6 /64 and zone, IPv4-mapped IPv6 counted as IPv4, none without an IP.
func TestIPKey(t *testing.T) {
	tcp := func(s string) net.Addr {
		ap := netip.MustParseAddrPort(s)
		return &net.TCPAddr{IP: ap.Addr().AsSlice(), Port: int(ap.Port()), Zone: ap.Addr().Zone()}
	}
	for _, tc := range []struct {
		name string
		a, b net.Addr
		same bool
	}{
		{"IPv4, two ports", tcp("192.0.2.1:1000"), tcp("192.0.2.1:2000"), true},
		{"IPv4, neighbours", tcp("192.0.2.1:1000"), tcp("192.0.2.2:1000"), false},
		{"IPv6, one /64", tcp("[2001:db8:1:2::1]:1000"), tcp("[2001:db8:1:2:ffff:ffff:ffff:ffff]:2000"), true},
		{"IPv6, next /64", tcp("[2001:db8:1:2::1]:1000"), tcp("[2001:db8:1:3::1]:1000"), false},
		{"IPv6, same /48 other /64", tcp("[2001:db8:1:2::1]:1000"), tcp("[2001:db8:1:8000::1]:1000"), false},
		{"IPv4-mapped is IPv4", tcp("[::ffff:192.0.2.1]:1000"), tcp("192.0.2.1:2000"), true},
		{"IPv4-mapped neighbours", tcp("[::ffff:192.0.2.1]:1000"), tcp("[::ffff:192.0.2.2]:1000"), false},
		{"IPv4 is not its /64 in IPv6", tcp("192.0.2.1:1000"), tcp("[::c000:201]:1000"), false},
		{"link-local, one zone", tcp("[fe80::1%eth0]:1000"), tcp("[fe80::2%eth0]:1000"), true},
		{"link-local, two zones", tcp("[fe80::1%eth0]:1000"), tcp("[fe80::1%eth1]:1000"), false},
		{"UDP and TCP alike", &net.UDPAddr{IP: net.ParseIP("2001:db8::1")}, tcp("[2001:db8::2]:1"), true},
	} {
		ka, kb := ipKey(tc.a), ipKey(tc.b)
		if !ka.IsValid() || !kb.IsValid() {
			t.Errorf("%s: ipKey(%v) = %v, ipKey(%v) = %v: want valid keys", tc.name, tc.a, ka, tc.b, kb)
		}
		if (ka == kb) != tc.same {
			t.Errorf("%s: ipKey(%v) = %v, ipKey(%v) = %v; same bucket = %v, want %v", tc.name, tc.a, ka, tc.b, kb, ka == kb, tc.same)
		}
	}
	if k := ipKey(tcp("[2001:db8:1:2:3:4:5:6]:1")); k != netip.MustParseAddr("2001:db8:1:2::") {
		t.Errorf("IPv6 key = %v, want its /64, 2001:db8:1:2::", k)
	}
	for _, a := range []net.Addr{
		&net.UnixAddr{Name: "/tmp/s", Net: "unix"},
		&net.TCPAddr{},                    // no IP
		&net.TCPAddr{IP: net.IP{1, 2, 3}}, // malformed
		nil,
	} {
		if k := ipKey(a); k.IsValid() {
			t.Errorf("ipKey(%#v) = %v, want no bucket (not capped)", a, k)
		}
	}
}

// TestReport checks what the Listener reports of each connection: to the
// Logger, a record at Debug for a success and at Info for a refusal, with
// the remote address, the claim named by Config.ClaimAttr, the duration
// and the reason; then the Event to Report, with the claim and duration
// the handshake took. Refuse runs for a failed handshake before its report.
func TestReport(t *testing.T) {
	h := newTestHandshake()
	// A plain buffer: the Listener logs before it reports, and the test
	// reads the log only after it has the report.
	var logs bytes.Buffer
	refused := make(chan net.Addr, 1)
	l, _ := listen(t, h.config(Config{MaxInFlight: 4, QueueLen: 4,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Refuse: func(ctx context.Context, raw net.Conn) {
			refused <- raw.RemoteAddr()
			raw.Close()
		}}))

	good := dial(t, l)
	write(t, good, "y")
	ev := recv(t, h.events, "the good handshake's report")
	if ev.Err != nil || ev.Claim != "claim" || ev.Duration <= 0 || ev.RemoteAddr.String() != good.LocalAddr().String() {
		t.Errorf("success reported as %+v", ev)
	}
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if out := logs.String(); !strings.Contains(out, `level=DEBUG msg="test: accepted connection" remote=`+good.LocalAddr().String()+" claim=claim duration=") {
		t.Errorf("success logged as %q", out)
	}

	bad := dial(t, l)
	write(t, bad, "n")
	if a := recv(t, refused, "Refuse"); a.String() != bad.LocalAddr().String() {
		t.Errorf("Refuse(%v), want the refused client %v", a, bad.LocalAddr())
	}
	ev = recv(t, h.events, "the refused handshake's report")
	if !errors.Is(ev.Err, errRefused) || ev.Claim != "claim" {
		t.Errorf("refusal reported as %+v", ev)
	}
	if out := logs.String(); !strings.Contains(out, `level=INFO msg="test: refused connection" remote=`+bad.LocalAddr().String()+" claim=claim duration=") ||
		!strings.Contains(out, `reason="client sent no 'y'"`) {
		t.Errorf("refusal logged as %q", out)
	}
	closedByServer(t, bad)
}
