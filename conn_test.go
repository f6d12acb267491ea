package hmacauth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/nettest"
)

var (
	_ net.Conn                        = (*Conn)(nil)
	_ io.ReaderFrom                   = (*Conn)(nil)
	_ io.WriterTo                     = (*Conn)(nil)
	_ net.Listener                    = (*Listener)(nil)
	_ interface{ CloseWrite() error } = (*Conn)(nil)
	_ interface{ CloseRead() error }  = (*Conn)(nil)
)

func TestClientServerHandshake(t *testing.T) {
	t.Parallel()
	k := testKey("test-key")
	cc, sc, cerr, serr := handshakePair(t, configWith(k), configWith(k))
	if cerr != nil || serr != nil {
		t.Fatalf("handshake: client %v, server %v", cerr, serr)
	}
	for _, c := range []*Conn{cc, sc} {
		st := c.ConnectionState()
		if !st.HandshakeComplete || st.KeyID != k.ID || st.Mode != ModeAuth || st.ForwardSecrecy || c.KeyID() != k.ID {
			t.Errorf("state = %+v, KeyID %q", st, c.KeyID())
		}
	}
	if _, ok := cc.NetConn().(*net.TCPConn); !ok {
		t.Errorf("NetConn = %T, want the *net.TCPConn it wraps", cc.NetConn())
	}
	// A second Handshake is a no-op.
	if err := cc.Handshake(); err != nil {
		t.Errorf("second Handshake: %v", err)
	}
	go io.WriteString(cc, "ping")
	b := make([]byte, 4)
	if _, err := io.ReadFull(sc, b); err != nil || string(b) != "ping" {
		t.Errorf("read %q, %v", b, err)
	}
	if err := sc.CloseRead(); err != nil {
		t.Errorf("CloseRead: %v", err)
	}
	if n, err := sc.Read(b); n != 0 || err != io.EOF {
		t.Errorf("Read after CloseRead = %d, %v; want EOF", n, err)
	}
}

func TestLazyHandshake(t *testing.T) {
	t.Parallel()
	k := testKey("test-key")
	rc, rs := pipeTCP(t)
	cc, sc := Client(rc, configWith(k)), Server(rs, configWith(k))
	if cc.KeyID() != "" || cc.ConnectionState().HandshakeComplete {
		t.Error("a Conn reports a key before its handshake")
	}
	if _, err := cc.ConnectionState().ExportKeyingMaterial("x", nil, 16); !errors.Is(err, ErrExport) {
		t.Errorf("ExportKeyingMaterial before the handshake = %v, want ErrExport", err)
	}
	read := make(chan string, 1)
	go func() {
		b := make([]byte, 5)
		n, _ := io.ReadFull(sc, b) // runs the server handshake
		read <- string(b[:n])
	}()
	if _, err := cc.Write([]byte("first")); err != nil { // runs the client handshake
		t.Fatal(err)
	}
	if got := <-read; got != "first" {
		t.Errorf("server read %q, want %q", got, "first")
	}
	if cc.KeyID() != k.ID || sc.KeyID() != k.ID {
		t.Errorf("KeyIDs after lazy handshake: client %q, server %q", cc.KeyID(), sc.KeyID())
	}
}

func TestStickyHandshakeError(t *testing.T) {
	t.Parallel()
	k := testKey("test-key")
	wrong := Key{ID: k.ID, Secret: seededBytes("wrong", MinSecretLen)}
	cc, sc, cerr, serr := handshakePair(t, configWith(wrong), configWith(k))
	mustBe(t, cerr, ErrAuthFailed)
	mustBe(t, serr, ErrAuthFailed)
	for name, c := range map[string]*Conn{"client": cc, "server": sc} {
		err := c.Handshake()
		_, rerr := c.Read(make([]byte, 1))
		_, werr := c.Write([]byte("x"))
		_, rferr := c.ReadFrom(strings.NewReader("x"))
		_, wterr := c.WriteTo(io.Discard)
		cwerr := c.CloseWrite()
		for _, e := range []error{err, rerr, werr, rferr, wterr, cwerr} {
			if e != c.hsErr || e == nil {
				t.Errorf("%s: got %v, want the first handshake error %v again", name, e, c.hsErr)
			}
		}
		if c.KeyID() != "" || c.ConnectionState().HandshakeComplete {
			t.Errorf("%s: failed Conn reports key %q / state %+v", name, c.KeyID(), c.ConnectionState())
		}
	}
}

func TestHandshakeContext(t *testing.T) {
	k := testKey("test-key")
	t.Run("already cancelled", func(t *testing.T) {
		rc, _ := pipeTCP(t)
		c := Client(rc, configWith(k))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := c.HandshakeContext(ctx)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("HandshakeContext = %v, want context.Canceled", err)
		}
		if err2 := c.Handshake(); err2 != err {
			t.Errorf("Handshake after a cancelled one = %v, want the same error", err2)
		}
	})
	t.Run("cancelled while reading", func(t *testing.T) {
		rc, rs := pipeTCP(t)
		cfg := configWith(k)
		cfg.HandshakeTimeout = time.Minute
		c := Client(rc, cfg)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.HandshakeContext(ctx) }()
		// Once its ClientHello arrives, the client waits for a reply.
		if _, err := io.ReadFull(rs, make([]byte, clientHelloLen)); err != nil {
			t.Fatal(err)
		}
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("HandshakeContext = %v, want context.Canceled", err)
			}
		case <-time.After(waitLimit): // far less than the handshake timeout
			t.Fatal("HandshakeContext did not return after its context was cancelled")
		}
	})
	t.Run("deadline", func(t *testing.T) {
		rc, _ := pipeTCP(t)
		cfg := configWith(k)
		cfg.HandshakeTimeout = time.Minute
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		err := Client(rc, cfg).HandshakeContext(ctx)
		mustBe(t, err, ErrHandshakeTimeout)
	})
	t.Run("no timeout", func(t *testing.T) {
		// A negative HandshakeTimeout means no bound: the handshake waits
		// for a peer that is slower than any default.
		rc, rs := pipeTCP(t)
		cfg := configWith(k)
		cfg.HandshakeTimeout = -1
		done := make(chan error, 1)
		go func() { done <- Server(rs, cfg).Handshake() }()
		rc.Write(validClientHello(k, "slow")[:50])
		rc.CloseWrite()
		mustBe(t, <-done, ErrProtocol)
	})
}

// TestDeadlinesAfterHandshake checks that the handshake's own deadline is
// gone afterwards and that deadlines the user set before it are in force.
func TestDeadlinesAfterHandshake(t *testing.T) {
	k := testKey("test-key")
	t.Run("handshake deadline removed", func(t *testing.T) {
		cfg, scfg := configWith(k), configWith(k) // one Config would refuse its own dial (reflection)
		cfg.HandshakeTimeout, scfg.HandshakeTimeout = 300*time.Millisecond, 300*time.Millisecond
		cc, sc, cerr, serr := handshakePair(t, cfg, scfg)
		if cerr != nil || serr != nil {
			t.Fatal(cerr, serr)
		}
		got := make(chan error, 1)
		go func() {
			_, err := io.ReadFull(sc, make([]byte, 1))
			got <- err
		}()
		// The handshake started before this point, so sleeping for the
		// handshake timeout guarantees that a deadline left behind by the
		// handshake would have fired.
		time.Sleep(cfg.HandshakeTimeout + 50*time.Millisecond)
		cc.Write([]byte("x"))
		if err := <-got; err != nil {
			t.Errorf("Read after the handshake timeout passed: %v", err)
		}
	})
	t.Run("user deadline restored", func(t *testing.T) {
		cfg, scfg := configWith(k), configWith(k)
		cfg.HandshakeTimeout, scfg.HandshakeTimeout = time.Minute, time.Minute
		rc, rs := pipeTCP(t)
		cc, sc := Client(rc, cfg), Server(rs, scfg)
		if err := sc.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		go cc.Handshake()
		if err := sc.Handshake(); err != nil {
			t.Fatal(err)
		}
		// The client sends nothing, so only the user's deadline ends this Read.
		_, err := sc.Read(make([]byte, 1))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Read = %v, want the user's deadline to fire", err)
		}
		sc.SetReadDeadline(time.Time{})
		go cc.Write([]byte("y"))
		if _, err := io.ReadFull(sc, make([]byte, 1)); err != nil {
			t.Errorf("Read after clearing the deadline: %v", err)
		}
	})
	// A deadline set on the underlying connection, as grpc.Server sets
	// one before the handshake and lifts it once the HTTP/2 preface has
	// arrived, is left in force too.
	t.Run("underlying deadline kept", func(t *testing.T) {
		cfg, scfg := configWith(k), configWith(k)
		cfg.HandshakeTimeout, scfg.HandshakeTimeout = time.Minute, time.Minute
		rc, rs := pipeTCP(t)
		if err := rs.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
			t.Fatal(err)
		}
		cc, sc := Client(rc, cfg), Server(rs, scfg)
		if cerr, serr := handshakeBoth(cc, sc); cerr != nil || serr != nil {
			t.Fatal(cerr, serr)
		}
		// Should the deadline be gone, this byte ends the Read instead.
		late := time.AfterFunc(waitLimit, func() { cc.Write([]byte("z")) })
		defer late.Stop()
		if _, err := sc.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Read = %v, want the underlying connection's deadline to fire", err)
		}
	})
	t.Run("user deadline bounds handshake", func(t *testing.T) {
		cfg := configWith(k)
		cfg.HandshakeTimeout = time.Minute
		rc, _ := pipeTCP(t)
		c := Client(rc, cfg)
		c.SetDeadline(time.Now().Add(50 * time.Millisecond))
		mustBe(t, c.Handshake(), ErrHandshakeTimeout)
	})
}

// TestEarlyBytes checks that application bytes that arrive in the same
// segment as the last handshake message are not lost, in both directions.
func TestEarlyBytes(t *testing.T) {
	t.Parallel()
	k := testKey("test-key")
	sched := deriveKeySchedule(k)

	t.Run("client to server", func(t *testing.T) {
		rc, rs := pipeTCP(t)
		sc := Server(rs, configWith(k))
		got := make(chan string, 1)
		go func() {
			b, _ := io.ReadAll(sc)
			got <- string(b)
		}()
		h := &handshake{}
		if err := h.writeClientHello(sched, hsParams{}); err != nil {
			t.Fatal(err)
		}
		rc.Write(h.ch())
		if _, err := io.ReadFull(rc, h.sh()); err != nil {
			t.Fatal(err)
		}
		sh, err := h.readServerHello(sched, hsParams{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.writeClientFinished(sched, sh); err != nil {
			t.Fatal(err)
		}
		rc.Write(append(bytes.Clone(h.cf()), "early bytes"...)) // one write, one segment
		rc.CloseWrite()
		if s := <-got; s != "early bytes" {
			t.Errorf("server read %q, want %q", s, "early bytes")
		}
	})
	t.Run("server to client", func(t *testing.T) {
		rc, rs := pipeTCP(t)
		go func() {
			h := &handshake{}
			if _, err := io.ReadFull(rs, h.ch()); err != nil {
				return
			}
			ch, _, err := h.readClientHello(newKeySet([]Key{k}))
			if err != nil {
				return
			}
			h.writeServerHello(sched, ch, hsParams{})
			rs.Write(append(bytes.Clone(h.sh()), "half a round trip early"...))
			rs.CloseWrite()
		}()
		cc := Client(rc, configWith(k))
		b, err := io.ReadAll(cc)
		if err != nil || string(b) != "half a round trip early" {
			t.Errorf("client read %q, %v", b, err)
		}
	})
}

// TestBulkRightAfterDial writes 8 MiB as soon as Dial returns and checks
// that the echo returns every byte, then half-closes.
func TestBulkRightAfterDial(t *testing.T) {
	t.Parallel()
	cfg, _ := newTestConfig()
	s := startEcho(t, cfg)
	c := dialTest(t, s.Addr(), configWith(cfg.Keys[0]))
	data := seededBytes("bulk", 8<<20)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, c) // WriteTo: the echo, until the server half-closes
	if err != nil {
		t.Fatal(err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(data); n != int64(len(data)) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Errorf("echo returned %d bytes with a different checksum; want %d intact", n, len(data))
	}
}

// TestBothSidesSpeakFirst has each side write as soon as its handshake is
// done, without waiting for the other.
func TestBothSidesSpeakFirst(t *testing.T) {
	t.Parallel()
	cfg, _ := newTestConfig()
	fromClient := make(chan string, 1)
	s := startServer(t, cfg, func(c *Conn) {
		io.WriteString(c, "server speaks first")
		b := make([]byte, len("client speaks first"))
		io.ReadFull(c, b)
		fromClient <- string(b)
	})
	for range 20 {
		c := dialTest(t, s.Addr(), configWith(cfg.Keys[0]))
		io.WriteString(c, "client speaks first")
		b := make([]byte, len("server speaks first"))
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "server speaks first" {
			t.Fatalf("client read %q, %v", b, err)
		}
		if got := <-fromClient; got != "client speaks first" {
			t.Fatalf("server read %q", got)
		}
		c.Close()
	}
}

func TestHalfClose(t *testing.T) {
	t.Parallel()
	k := testKey("test-key")
	cc, sc, cerr, serr := handshakePair(t, configWith(k), configWith(k))
	if cerr != nil || serr != nil {
		t.Fatal(cerr, serr)
	}
	go func() {
		b, _ := io.ReadAll(sc) // until the client's CloseWrite
		fmt.Fprintf(sc, "got %d bytes", len(b))
		sc.CloseWrite()
	}()
	io.WriteString(cc, "request")
	if err := cc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(cc)
	if err != nil || string(b) != "got 7 bytes" {
		t.Errorf("reply %q, %v", b, err)
	}
}

func TestHalfCloseUnsupported(t *testing.T) {
	t.Parallel()
	k := testKey("test-key")
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cc, sc := Client(a, configWith(k)), Server(b, configWith(k))
	go sc.Handshake()
	err := cc.CloseWrite()
	if !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), "half-close") {
		t.Errorf("CloseWrite over net.Pipe = %v, want errors.ErrUnsupported about half-close", err)
	}
	if err := cc.CloseRead(); err == nil {
		t.Error("CloseRead over net.Pipe succeeded")
	}
}

// recordingConn wraps a TCP connection and records which of its
// copy paths were used.
type recordingConn struct {
	*net.TCPConn
	readFrom, writeTo atomic.Int32
}

func (c *recordingConn) ReadFrom(r io.Reader) (int64, error) {
	c.readFrom.Add(1)
	return c.TCPConn.ReadFrom(r)
}

func (c *recordingConn) WriteTo(w io.Writer) (int64, error) {
	c.writeTo.Add(1)
	return c.TCPConn.WriteTo(w)
}

// TestCopyDelegates checks that io.Copy through a Conn reaches the
// underlying connection's ReadFrom and WriteTo (sendfile and splice), and
// that the bytes arrive intact.
func TestCopyDelegates(t *testing.T) {
	t.Parallel()
	k := testKey("test-key")
	rc, rs := pipeTCP(t)
	crec, srec := &recordingConn{TCPConn: rc}, &recordingConn{TCPConn: rs}
	cc, sc := Client(crec, configWith(k)), Server(srec, configWith(k))

	data := seededBytes("file", 1<<20)
	f, err := os.CreateTemp(t.TempDir(), "copy")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Write(data)
	f.Seek(0, io.SeekStart)

	sent := make(chan error, 1)
	go func() {
		_, err := io.Copy(cc, f) // Conn.ReadFrom, then TCPConn.ReadFrom: sendfile
		if err == nil {
			err = cc.CloseWrite()
		}
		sent <- err
	}()
	out, err := os.Create(f.Name() + ".out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, sc); err != nil { // *os.File.ReadFrom(Conn)
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out.Name())
	if !bytes.Equal(got, data) {
		t.Errorf("file copy: %d bytes arrived, want %d intact", len(got), len(data))
	}
	if crec.readFrom.Load() != 1 {
		t.Errorf("io.Copy into the Conn did not use the TCP connection's ReadFrom")
	}

	// Conn to a plain writer: WriteTo must reach the TCP connection's.
	go func() {
		io.WriteString(sc, "through WriteTo")
		sc.CloseWrite()
	}()
	var buf bytes.Buffer
	if _, err := io.Copy(struct{ io.Writer }{&buf}, cc); err != nil || buf.String() != "through WriteTo" {
		t.Errorf("WriteTo copied %q, %v", buf.String(), err)
	}
	if crec.writeTo.Load() != 1 {
		t.Errorf("io.Copy from the Conn did not use the TCP connection's WriteTo")
	}
}

func TestExportKeyingMaterial(t *testing.T) {
	t.Parallel()
	k := testKey("test-key")
	export := func(c *Conn, label string, ctx []byte) []byte {
		t.Helper()
		b, err := c.ConnectionState().ExportKeyingMaterial(label, ctx, 32)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cc1, sc1, cerr, serr := handshakePair(t, configWith(k), configWith(k))
	if cerr != nil || serr != nil {
		t.Fatal(cerr, serr)
	}
	cc2, sc2, cerr, serr := handshakePair(t, configWith(k), configWith(k))
	if cerr != nil || serr != nil {
		t.Fatal(cerr, serr)
	}
	a := export(cc1, "label", []byte("ctx"))
	if !bytes.Equal(a, export(sc1, "label", []byte("ctx"))) {
		t.Error("the two sides of a connection export different bytes")
	}
	if !bytes.Equal(export(cc2, "label", nil), export(sc2, "label", nil)) {
		t.Error("the two sides of a second connection export different bytes")
	}
	if !bytes.Equal(export(cc1, "label", nil), export(cc1, "label", []byte{})) {
		t.Error("nil and empty contexts export different bytes")
	}
	for name, b := range map[string][]byte{
		"other connection": export(cc2, "label", []byte("ctx")),
		"other label":      export(cc1, "labels", []byte("ctx")),
		"other context":    export(cc1, "label", []byte("ctx2")),
		"no context":       export(cc1, "label", nil),
		"label/ctx shift":  export(cc1, "labelc", []byte("tx")),
	} {
		if bytes.Equal(a, b) {
			t.Errorf("%s exports the same bytes", name)
		}
	}
	long, err := cc1.ConnectionState().ExportKeyingMaterial("label", []byte("ctx"), 64)
	if err != nil || !bytes.Equal(long[:32], a) {
		t.Errorf("a longer export does not extend the shorter one: %v", err)
	}
}

// ExportKeyingMaterial's refusals wrap ErrExport, not ErrConfig, which is
// about keys and settings, and say what was wrong.
func TestExportKeyingMaterialErrors(t *testing.T) {
	t.Parallel()
	k := testKey("test-key")
	cc, _, cerr, serr := handshakePair(t, configWith(k), configWith(k))
	if cerr != nil || serr != nil {
		t.Fatal(cerr, serr)
	}
	cs := cc.ConnectionState()
	for _, tc := range []struct {
		name    string
		cs      ConnectionState
		label   string
		context []byte
		length  int
		want    string
	}{
		{"before the handshake", ConnectionState{}, "label", nil, 32, "before a successful handshake"},
		{"negative length", cs, "label", nil, -1, "length -1"},
		{"length too long", cs, "label", nil, 255*32 + 1, "length 8161"},
		{"label too long", cs, strings.Repeat("l", 1<<16), nil, 32, "label of 65536 bytes"},
		{"context too long", cs, "label", make([]byte, 1<<16), 32, "context of 65536 bytes"},
	} {
		_, err := tc.cs.ExportKeyingMaterial(tc.label, tc.context, tc.length)
		if !errors.Is(err, ErrExport) || errors.Is(err, ErrConfig) || !strings.Contains(fmt.Sprint(err), tc.want) {
			t.Errorf("%s: %v, want an ErrExport error that says %q", tc.name, err, tc.want)
		}
	}
	if _, err := cs.ExportKeyingMaterial(strings.Repeat("l", 0xffff), make([]byte, 0xffff), 255*32); err != nil {
		t.Errorf("the largest label, context and length: %v", err)
	}
}

func TestForwardSecrecy(t *testing.T) {
	t.Parallel()
	k := testKey("test-key")
	for _, tc := range []struct{ client, server, want bool }{
		{false, false, false},
		{true, false, true},
		{false, true, true},
		{true, true, true},
	} {
		t.Run(fmt.Sprintf("client=%v,server=%v", tc.client, tc.server), func(t *testing.T) {
			ccfg, scfg := configWith(k), configWith(k)
			ccfg.ForwardSecrecy, scfg.ForwardSecrecy = tc.client, tc.server
			cc, sc, cerr, serr := handshakePair(t, ccfg, scfg)
			if cerr != nil || serr != nil {
				t.Fatal(cerr, serr)
			}
			if cs, ss := cc.ConnectionState(), sc.ConnectionState(); cs.ForwardSecrecy != tc.want || ss.ForwardSecrecy != tc.want {
				t.Errorf("ForwardSecrecy: client %v, server %v; want %v", cs.ForwardSecrecy, ss.ForwardSecrecy, tc.want)
			}
			a, _ := cc.ConnectionState().ExportKeyingMaterial("fs", nil, 32)
			b, _ := sc.ConnectionState().ExportKeyingMaterial("fs", nil, 32)
			if !bytes.Equal(a, b) {
				t.Error("the sides export different bytes")
			}
		})
	}
}

func TestUnknownModeRefused(t *testing.T) {
	t.Parallel()
	k := testKey("test-key")
	cfg := configWith(k)
	cfg.Mode = ModeSealed + 1
	_, _, cerr, _ := handshakePair(t, cfg, configWith(k))
	if !errors.Is(cerr, ErrConfig) {
		t.Errorf("client with %v: %v, want ErrConfig", cfg.Mode, cerr)
	}
	if s := Mode(7).String(); s != "Mode(7)" {
		t.Errorf("Mode(7).String() = %q", s)
	}
}

// TestConcurrentHandshakeCalls runs Handshake from several goroutines at
// once: one handshake runs, all see its result.
func TestConcurrentHandshakeCalls(t *testing.T) {
	t.Parallel()
	k := testKey("test-key")
	rc, rs := pipeTCP(t)
	cc, sc := Client(rc, configWith(k)), Server(rs, configWith(k))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for _, c := range []*Conn{cc, cc, cc, cc, sc, sc, sc, sc} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.Handshake()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// TestCloseDuringHandshake closes a Conn while another goroutine runs its
// handshake against a silent peer: the handshake must end, with an error.
func TestCloseDuringHandshake(t *testing.T) {
	t.Parallel()
	k := testKey("test-key")
	cfg := configWith(k)
	cfg.HandshakeTimeout = time.Minute
	rc, rs := pipeTCP(t)
	c := Client(rc, cfg)
	done := make(chan error, 1)
	go func() { done <- c.Handshake() }()
	// Once the ClientHello has arrived, the client is waiting for a reply.
	if _, err := io.ReadFull(rs, make([]byte, clientHelloLen)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	err := <-done
	if err == nil || !errors.Is(err, net.ErrClosed) {
		t.Errorf("Handshake after Close = %v, want an error wrapping net.ErrClosed", err)
	}
	if _, werr := c.Write([]byte("x")); werr != err {
		t.Errorf("Write after the failed handshake = %v, want %v", werr, err)
	}
}

// TestCloseWriteRecordsWithoutHalfClose: in a record mode the close record
// ends the stream for the peer, so CloseWrite succeeds over a connection
// without half-close, and writing is over.
func TestCloseWriteRecordsWithoutHalfClose(t *testing.T) {
	t.Parallel()
	k := testKey("test-key")
	cfg, scfg := configWith(k), configWith(k)
	cfg.Mode, scfg.Mode = ModeSealed, ModeSealed
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cc, sc := Client(a, cfg), Server(b, scfg)
	got := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(sc) // the handshake, then until the close record
		got <- err
	}()
	if err := cc.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite in ModeSealed over net.Pipe: %v", err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the peer read %v, want a clean end", err)
	}
	if _, err := cc.Write([]byte("x")); err == nil {
		t.Error("Write after CloseWrite succeeded")
	}
}

// TestConnConformance runs the x/net net.Conn conformance suite over real
// loopback TCP in every mode, including the three subtests crypto/tls
// fails (PastTimeout, FutureTimeout, ConcurrentMethods): a deadline must
// leave the connection usable.
func TestConnConformance(t *testing.T) {
	t.Parallel()
	for _, mode := range allModes {
		t.Run(mode.String(), func(t *testing.T) {
			nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
				cc, sc := connPair(t, pairOptions{mode: mode})
				return cc, sc, func() { cc.Close(); sc.Close() }, nil
			})
		})
	}
}

// TestNoVerbPrintsSecret prints every exported type of the package that
// holds a secret with every fmt verb and with slog, and checks that no key
// secret, session secret, traffic secret or buffered plaintext shows.
func TestNoVerbPrintsSecret(t *testing.T) {
	t.Parallel()
	for _, mode := range []Mode{ModeAuth, ModeIntegrity, ModeSealed} {
		for _, fs := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/fs=%t", mode, fs), func(t *testing.T) {
				k := testKey("visible-id")
				cfg := &Config{Keys: []Key{k}, Mode: mode, ForwardSecrecy: fs}
				scfg := &Config{Keys: []Key{k}, Mode: mode, ForwardSecrecy: fs} // one Config refuses its own dial
				rc, rs := pipeTCP(t)
				cc, sc := Client(rc, cfg), Server(rs, scfg)
				checkNoSecret(t, printedEveryWay(cc, sc, cfg), k.Secret)

				if cerr, serr := handshakeBoth(cc, sc); cerr != nil || serr != nil {
					t.Fatalf("handshake: client %v, server %v", cerr, serr)
				}
				// The client reads one byte of a message: in ModeIntegrity
				// and ModeSealed the rest waits in its buffer, in the clear.
				plaintext := seededBytes("plaintext", 64)
				if _, err := sc.Write(plaintext); err != nil {
					t.Fatal(err)
				}
				if _, err := cc.Read(make([]byte, 1)); err != nil {
					t.Fatal(err)
				}
				secrets := [][]byte{k.Secret, cc.res.secret, plaintext[1:]}
				if mode != ModeAuth {
					secrets = append(secrets, cc.rl.in.secret[:], cc.rl.out.secret[:])
				}
				cs := cc.ConnectionState()
				out := printedEveryWay(cc, sc, cs, &cs, cfg)
				checkNoSecret(t, out, secrets...)
				for _, want := range []string{"visible-id", "client", "server", mode.String(), rc.LocalAddr().String()} {
					if !strings.Contains(fmt.Sprint(cc, sc), want) {
						t.Errorf("the Conns print as %v, %v: want %q in it", cc, sc, want)
					}
				}
			})
		}
	}
	t.Run("handshake failed", func(t *testing.T) {
		a, b := testKey("a"), testKey("b")
		cc, sc, cerr, serr := handshakePair(t, configWith(a), configWith(b))
		if cerr == nil || serr == nil {
			t.Fatalf("handshake with different keys: client %v, server %v", cerr, serr)
		}
		checkNoSecret(t, printedEveryWay(cc, sc), a.Secret, b.Secret)
		if !strings.Contains(fmt.Sprint(cc), "handshake failed") {
			t.Errorf("the Conn prints as %v: want it to say the handshake failed", cc)
		}
	})
	t.Run("others", func(t *testing.T) {
		a, b := testKey("a"), testKey("b")
		ring, err := NewKeyring(a, b)
		if err != nil {
			t.Fatal(err)
		}
		withRing := &Config{Keyring: ring, ForwardSecrecy: true}
		withKeys := &Config{Keys: []Key{a, b}}
		for _, cfg := range []*Config{withRing, withKeys} {
			if _, err := cfg.check(); err != nil { // derives and caches the keys
				t.Fatal(err)
			}
		}
		l, err := Listen("tcp", "127.0.0.1:0", withKeys)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		w := &KeyFileWatcher{Path: filepath.Join(t.TempDir(), "keys"), Keyring: ring}
		d := &Dialer{Config: withRing}
		var nilConn *Conn
		var nilConfig *Config
		out := printedEveryWay(a, &a, []Key{a, b}, ring, withRing, withKeys, l, w, *w, d, *d,
			nilConn, nilConfig)
		checkNoSecret(t, out, a.Secret, b.Secret)
		for _, want := range []string{`"a" "b"`, "hmacauth.Config(nil)", "hmacauth.Conn(nil)"} {
			if !strings.Contains(out, want) {
				t.Errorf("printed values lack %q:\n%s", want, out)
			}
		}
	})
}

func TestConnectionStateDoesNotPrintSessionSecret(t *testing.T) {
	t.Parallel()
	k := testKey("state-key")
	l, err := Listen("tcp", "127.0.0.1:0", &Config{Keys: []Key{k}})
	if err != nil {
		t.Fatal(err)
	}
	stop := serveEcho(l)
	defer stop()
	c, err := Dial("tcp", l.Addr().String(), &Config{Keys: []Key{k}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cs := c.ConnectionState()
	if len(cs.secret) == 0 {
		t.Fatal("no session secret to look for")
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("state", "cs", cs)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("state", "cs", cs)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%d", "%x"} {
		buf.WriteString(fmt.Sprintf(verb, cs))
	}
	for _, enc := range secretEncodings(cs.secret) {
		if strings.Contains(buf.String(), enc) {
			t.Fatalf("output shows the session secret (as %q):\n%s", enc, buf.String())
		}
	}
	if !strings.Contains(buf.String(), "state-key") {
		t.Errorf("output lacks the key ID:\n%s", buf.String())
	}
}

// Config.HandshakeTimeout ends a handshake on a connection that refuses
// deadlines, with ErrHandshakeTimeout, on either side, by closing it: the
// handshake does not hang (nor hold a shared key share) on a silent peer.
func TestHandshakeTimeoutWithoutDeadlines(t *testing.T) {
	for _, client := range []bool{false, true} {
		t.Run(map[bool]string{false: "server", true: "client"}[client], func(t *testing.T) {
			_, rs := pipeTCP(t) // the other end never writes
			cfg := &Config{Keys: []Key{testKey("k")}, HandshakeTimeout: 50 * time.Millisecond}
			raw := &noDeadlineConn{Conn: rs}
			c := Server(raw, cfg)
			if client {
				c = Client(raw, cfg)
			}
			done := make(chan error, 1)
			go func() { done <- c.Handshake() }()
			err := waitHandshake(t, done)
			mustBe(t, err, ErrHandshakeTimeout)
			t.Logf("handshake error: %v", err)
		})
	}
}

// A cancelled context ends a handshake on a connection that refuses
// deadlines, with the context's cause.
func TestHandshakeCancelWithoutDeadlines(t *testing.T) {
	_, rs := pipeTCP(t)
	raw := &noDeadlineConn{Conn: rs, reading: make(chan struct{})}
	c := Server(raw, &Config{Keys: []Key{testKey("k")}, HandshakeTimeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.HandshakeContext(ctx) }()
	<-raw.reading
	cancel()
	mustBe(t, waitHandshake(t, done), context.Canceled)
}

// A connection that refuses deadlines still carries a handshake that
// completes, and then data.
func TestHandshakeWithoutDeadlines(t *testing.T) {
	rc, rs := pipeTCP(t)
	cfg := &Config{Keys: []Key{testKey("k")}, Mode: ModeSealed}
	cc := Client(&noDeadlineConn{Conn: rc}, cfg)
	sc := Server(&noDeadlineConn{Conn: rs}, &Config{Keys: cfg.Keys, Mode: ModeSealed})
	if cerr, serr := handshakeBoth(cc, sc); cerr != nil || serr != nil {
		t.Fatalf("handshake: client %v, server %v", cerr, serr)
	}
	go echo(sc)
	roundTrip(t, cc, "over a connection without deadlines")
	cc.Close()
}
