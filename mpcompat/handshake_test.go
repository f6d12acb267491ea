package mpcompat

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestGoToGo(t *testing.T) {
	for _, d := range []Digest{"", DigestSHA256, DigestSHA384, DigestSHA3_256, DigestSHA3_384} {
		for _, legacy := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/legacy=%t", d, legacy), func(t *testing.T) {
				cfg := Config{AuthKey: keyA, Digest: d, AllowLegacyMD5: legacy}
				l, ev := listen(t, cfg)
				accepted := acceptOne(t, l)
				c, err := dial(l.Addr(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				e := ev.next(t)
				if e.Err != nil || e.Digest != cfg.digest() {
					t.Fatalf("listener event: digest %q, err %v; want %q, nil", e.Digest, e.Err, cfg.digest())
				}
				s := <-accepted
				if _, ok := s.(*net.TCPConn); !ok {
					t.Fatalf("Accept returned %T, want the *net.TCPConn itself", s)
				}
				if _, ok := c.(*net.TCPConn); !ok {
					t.Fatalf("Dial returned %T, want the *net.TCPConn itself", c)
				}
				exchange(t, c, s)
			})
		}
	}
}

func TestPackageListenDial(t *testing.T) {
	l, err := Listen("tcp", "127.0.0.1:0", keyA)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := acceptOne(t, l)
	c, err := Dial("tcp", l.Addr().String(), keyA)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exchange(t, c, <-accepted)

	if _, err := Dial("tcp", l.Addr().String(), keyB); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("Dial with another key: %v, want ErrAuthFailed", err)
	}
}

func TestWrongKey(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy=%t", legacy), func(t *testing.T) {
			l, ev := listen(t, Config{AuthKey: keyA, AllowLegacyMD5: legacy})
			_, err := dial(l.Addr(), Config{AuthKey: keyB, AllowLegacyMD5: legacy})
			if !errors.Is(err, ErrAuthFailed) {
				t.Fatalf("dialer: %v, want ErrAuthFailed", err)
			}
			if !strings.Contains(err.Error(), "different authkeys") || !strings.Contains(err.Error(), l.Addr().String()) {
				t.Errorf("dialer error %q does not name the cause and the server", err)
			}
			if e := ev.next(t); !errors.Is(e.Err, ErrAuthFailed) {
				t.Fatalf("listener: %v, want ErrAuthFailed", e.Err)
			}
		})
	}
}

// TestDigestStrength checks that neither side accepts a digest weaker
// than its Config.Digest, whichever side asks for it.
func TestDigestStrength(t *testing.T) {
	t.Run("listener stronger", func(t *testing.T) {
		l, ev := listen(t, Config{AuthKey: keyA, Digest: DigestSHA384})
		// The client answers {sha384} (not weaker than its sha256), then
		// challenges with {sha256}, which the listener refuses to answer.
		_, err := dial(l.Addr(), Config{AuthKey: keyA})
		if !errors.Is(err, ErrProtocol) {
			t.Errorf("dialer: %v, want ErrProtocol (listener hung up)", err)
		}
		if e := ev.next(t); !errors.Is(e.Err, ErrWeakDigest) || e.Digest != DigestSHA384 {
			t.Fatalf("listener: %q, %v; want sha384, ErrWeakDigest", e.Digest, e.Err)
		}
	})
	t.Run("dialer stronger", func(t *testing.T) {
		l, ev := listen(t, Config{AuthKey: keyA})
		_, err := dial(l.Addr(), Config{AuthKey: keyA, Digest: DigestSHA3_384})
		if !errors.Is(err, ErrWeakDigest) {
			t.Errorf("dialer: %v, want ErrWeakDigest", err)
		}
		if e := ev.next(t); !errors.Is(e.Err, ErrProtocol) {
			t.Fatalf("listener: %v, want ErrProtocol (client hung up)", e.Err)
		}
	})
}

// TestDowngradeRefused plays a client that answers the listener's sha256
// challenge with HMAC-MD5 under the right key, in the raw form of Python
// 3.11 and in the {md5} form; Python 3.12's own listener accepts both.
func TestDowngradeRefused(t *testing.T) {
	forms := map[string]func(m []byte) []byte{
		"raw":    func(m []byte) []byte { return hmacMD5(keyA, m) },
		"prefix": func(m []byte) []byte { return append([]byte("{md5}"), hmacMD5(keyA, m)...) },
	}
	for name, answer := range forms {
		t.Run(name, func(t *testing.T) {
			l, ev := listen(t, Config{AuthKey: keyA})
			p := rawClient(t, l)
			ch := p.recv()
			m, ok := bytes.CutPrefix(ch, []byte("#CHALLENGE#{sha256}"))
			if !ok || len(m) != 40 {
				t.Fatalf("challenge %q: want #CHALLENGE#{sha256} and 40 random bytes", ch)
			}
			p.send(answer(ch[len("#CHALLENGE#"):]))
			if got := p.recv(); string(got) != "#FAILURE#" {
				t.Errorf("listener said %q to a downgraded answer, want #FAILURE#", got)
			}
			if e := ev.next(t); !errors.Is(e.Err, ErrWeakDigest) || e.Digest != DigestMD5 {
				t.Fatalf("listener: %q, %v; want md5, ErrWeakDigest", e.Digest, e.Err)
			}
		})
	}
}

// TestLegacyClient plays a Python 3.11 client: raw HMAC-MD5 answers and a
// bare 20-byte challenge.
func TestLegacyClient(t *testing.T) {
	l, ev := listen(t, Config{AuthKey: keyA, AllowLegacyMD5: true})
	accepted := acceptOne(t, l)
	p := rawClient(t, l)
	ch := p.recv()
	p.send(hmacMD5(keyA, ch[len("#CHALLENGE#"):]))
	if got := p.recv(); string(got) != "#WELCOME#" {
		t.Fatalf("listener said %q, want #WELCOME#", got)
	}
	m := pattern(20, 9)
	p.send(append([]byte("#CHALLENGE#"), m...))
	if got, want := p.recv(), hmacMD5(keyA, m); !bytes.Equal(got, want) {
		t.Fatalf("listener answered % x, want the raw HMAC-MD5 % x", got, want)
	}
	p.send([]byte("#WELCOME#"))
	if e := ev.next(t); e.Err != nil || e.Digest != DigestMD5 {
		t.Fatalf("listener: %q, %v; want md5, nil", e.Digest, e.Err)
	}
	exchange(t, p.Conn, <-accepted)
}

// TestLegacyServer plays a Python 3.11 listener: a bare 20-byte challenge.
func TestLegacyServer(t *testing.T) {
	m := pattern(20, 3)
	t.Run("refused", func(t *testing.T) {
		addr := rawServer(t, func(p rawPeer) {
			p.send(append([]byte("#CHALLENGE#"), m...))
			if _, err := ReadMessage(p.Conn, 256); err == nil {
				t.Error("the dialer answered a legacy challenge without AllowLegacyMD5")
			}
		})
		_, err := dial(addr, Config{AuthKey: keyA})
		if !errors.Is(err, ErrWeakDigest) || !strings.Contains(err.Error(), "AllowLegacyMD5") {
			t.Fatalf("dialer: %v, want ErrWeakDigest naming AllowLegacyMD5", err)
		}
	})
	t.Run("allowed", func(t *testing.T) {
		addr := rawServer(t, func(p rawPeer) {
			p.send(append([]byte("#CHALLENGE#"), m...))
			if got, want := p.recv(), hmacMD5(keyA, m); !bytes.Equal(got, want) {
				t.Errorf("dialer answered % x, want the raw HMAC-MD5 % x", got, want)
			}
			p.send([]byte("#WELCOME#"))
			ch := p.recv()
			// A 3.11 listener answers any challenge with a raw HMAC-MD5.
			p.send(hmacMD5(keyA, ch[len("#CHALLENGE#"):]))
			if got := p.recv(); string(got) != "#WELCOME#" {
				t.Errorf("dialer said %q, want #WELCOME#", got)
			}
		})
		c, err := dial(addr, Config{AuthKey: keyA, AllowLegacyMD5: true})
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})
	t.Run("md5 named by a modern listener", func(t *testing.T) {
		addr := rawServer(t, func(p rawPeer) {
			p.send(append([]byte("#CHALLENGE#{md5}"), pattern(40, 1)...))
			ReadMessage(p.Conn, 256)
		})
		if _, err := dial(addr, Config{AuthKey: keyA}); !errors.Is(err, ErrWeakDigest) {
			t.Fatalf("dialer: %v, want ErrWeakDigest", err)
		}
	})
}

// TestForeignPeers checks what a dialer and a listener make of peers that
// do not speak the handshake.
func TestForeignPeers(t *testing.T) {
	servers := map[string]func(p rawPeer){
		"http":         func(p rawPeer) { p.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")) },
		"no challenge": func(p rawPeer) { p.send([]byte("#WELCOME#")) },
		"short":        func(p rawPeer) { p.send([]byte("#CHALLENGE#{sha256}abc")) },
		"unknown":      func(p rawPeer) { p.send(append([]byte("#CHALLENGE#{sha512}"), pattern(40, 0)...)) },
		"closes":       func(p rawPeer) {},
		"odd verdict": func(p rawPeer) {
			p.send(append([]byte("#CHALLENGE#{sha256}"), pattern(40, 0)...))
			p.recv()
			p.send([]byte("#MAYBE#"))
		},
	}
	for name, play := range servers {
		t.Run("server "+name, func(t *testing.T) {
			_, err := dial(rawServer(t, play), Config{AuthKey: keyA})
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("dialer: %v, want ErrProtocol", err)
			}
		})
	}
	t.Run("client garbage", func(t *testing.T) {
		l, ev := listen(t, Config{AuthKey: keyA})
		p := rawClient(t, l)
		p.recv()
		p.send([]byte("{sha256" + strings.Repeat("x", 40)))
		if got := p.recv(); string(got) != "#FAILURE#" {
			t.Errorf("listener said %q, want #FAILURE#", got)
		}
		if e := ev.next(t); !errors.Is(e.Err, ErrProtocol) {
			t.Fatalf("listener: %v, want ErrProtocol", e.Err)
		}
	})
	t.Run("client oversized", func(t *testing.T) {
		l, ev := listen(t, Config{AuthKey: keyA})
		p := rawClient(t, l)
		p.recv()
		p.send(make([]byte, 257))
		if e := ev.next(t); !errors.Is(e.Err, ErrProtocol) || !errors.Is(e.Err, ErrMessageTooLarge) {
			t.Fatalf("listener: %v, want ErrProtocol and ErrMessageTooLarge", e.Err)
		}
	})
}

func TestHandshakeTimeout(t *testing.T) {
	t.Run("listener", func(t *testing.T) {
		l, ev := listen(t, Config{AuthKey: keyA, HandshakeTimeout: 50 * time.Millisecond})
		p := rawClient(t, l) // reads nothing, sends nothing
		_ = p
		e := ev.next(t)
		var ne net.Error
		if !errors.Is(e.Err, ErrHandshakeTimeout) || !errors.As(e.Err, &ne) || !ne.Timeout() {
			t.Fatalf("listener: %v, want ErrHandshakeTimeout, a net.Error with Timeout", e.Err)
		}
	})
	t.Run("dialer", func(t *testing.T) {
		silent := make(chan struct{})
		addr := rawServer(t, func(p rawPeer) { <-silent })
		defer close(silent)
		_, err := dial(addr, Config{AuthKey: keyA, HandshakeTimeout: 50 * time.Millisecond})
		if !errors.Is(err, ErrHandshakeTimeout) {
			t.Fatalf("dialer: %v, want ErrHandshakeTimeout", err)
		}
	})
	t.Run("dialer context", func(t *testing.T) {
		silent := make(chan struct{})
		addr := rawServer(t, func(p rawPeer) { <-silent })
		defer close(silent)
		ctx, cancel := context.WithCancelCause(context.Background())
		cause := errors.New("the caller gave up")
		time.AfterFunc(20*time.Millisecond, func() { cancel(cause) })
		d := Dialer{Config: &Config{AuthKey: keyA, HandshakeTimeout: -1}}
		_, err := d.DialContext(ctx, "tcp", addr.String())
		if !errors.Is(err, cause) {
			t.Fatalf("dialer: %v, want the context's cause", err)
		}
	})
}

// TestSlowClientDoesNotBlock checks that a client that never answers does
// not hold up the next one.
// TestHandshakeLeavesDeadlines checks that ServerHandshake and
// ClientHandshake leave a deadline set on the conn as it was: the
// handshake bounds itself through its context, not the conn's deadlines.
func TestHandshakeLeavesDeadlines(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := acceptOne(t, ln)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	if err := c.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	cfg := &Config{AuthKey: keyA}
	serr := make(chan error, 1)
	go func() { serr <- ServerHandshake(context.Background(), s, cfg) }()
	if err := ClientHandshake(context.Background(), c, cfg); err != nil {
		t.Fatalf("ClientHandshake: %v", err)
	}
	if err := <-serr; err != nil {
		t.Fatalf("ServerHandshake: %v", err)
	}
	// Nothing more comes: only the deadline set before the handshake
	// ends the read; were it cleared, closing s after bound ends it.
	stop := time.AfterFunc(bound, func() { s.Close() })
	defer stop.Stop()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read after the handshake: %v, want the deadline set before it to pass", err)
	}
}

func TestSecretsNotPrinted(t *testing.T) {
	var logs bytes.Buffer
	cfg := Config{AuthKey: keyA, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	l, ev := listen(t, cfg)
	if _, err := dial(l.Addr(), Config{AuthKey: keyB}); err == nil {
		t.Fatal("dial with another key succeeded")
	}
	ev.next(t)
	l.Close() // the log record is written before the event; Close orders it
	d := &Dialer{Config: &cfg}
	plain := &Dialer{Config: &Config{AuthKey: keyB}}
	values := []any{cfg, &cfg, d, *d, plain, *plain, l}
	var js bytes.Buffer
	for _, v := range values {
		slog.New(slog.NewJSONHandler(&js, nil)).Info("value", "v", v)
		slog.New(slog.NewTextHandler(&js, nil)).Info("value", "v", v)
	}
	printed := logs.String() + js.String()
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%o"} {
		for _, v := range values {
			printed += fmt.Sprintf(verb, v) + fmt.Sprintf(verb, []any{v})
		}
	}
	if !strings.Contains(logs.String(), "refused connection") {
		t.Errorf("no log record of the refused client: %q", logs.String())
	}
	for _, k := range [][]byte{keyA, keyB} {
		if strings.Contains(printed, string(k)) || strings.Contains(printed, fmt.Sprintf("%x", k)) ||
			strings.Contains(printed, fmt.Sprintf("%X", k)) || strings.Contains(printed, fmt.Sprintf("%o", k)) ||
			strings.Contains(printed, fmt.Sprint(k)) || strings.Contains(printed, base64.StdEncoding.EncodeToString(k)) {
			t.Fatalf("an authkey was printed: %s", printed)
		}
	}
}

// TestReflectedChallengeRefused plays a server without the authkey that
// gets two concurrent dials from this process. A client answers the
// server's challenge before the server has proved anything, and its own
// challenge has the same form, so the server sends dial A's challenge to
// dial B as its own, and hands B's answer back to A. Without the
// process-wide set of the dialers' challenges, A accepts the answer and
// sends its first application message to the server.
func TestReflectedChallengeRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// got receives what the attacker read on dial A's connection after
	// it welcomed A; empty if the handshake did not get that far.
	got := make(chan []byte, 1)
	go func() {
		var got1 []byte
		defer func() { got <- got1 }()
		var conns [2]rawPeer
		for i := range conns {
			c, err := ln.Accept()
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(bound))
			conns[i] = rawPeer{t, c}
		}
		a, b := conns[0], conns[1]
		// Any challenge will do for A: it answers without checking.
		a.send(append([]byte("#CHALLENGE#{sha256}"), pattern(40, 5)...))
		if _, err := ReadMessage(a, 256); err != nil {
			t.Errorf("dial A did not answer: %v", err)
			return
		}
		a.send([]byte("#WELCOME#"))
		challengeA, err := ReadMessage(a, 256)
		if err != nil {
			t.Errorf("dial A did not challenge: %v", err)
			return
		}
		b.send(challengeA) // reflected
		answer, err := ReadMessage(b, 256)
		if err != nil {
			return // B refused to answer its own process's challenge
		}
		a.send(answer)
		if v, err := ReadMessage(a, 256); err != nil || string(v) != "#WELCOME#" {
			return
		}
		got1, _ = ReadMessage(a, 1024)
	}()

	cfg := Config{AuthKey: keyA}
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			c, err := dial(ln.Addr(), cfg)
			if err == nil {
				WriteMessage(c, []byte("the application's first message"))
				c.Close()
			}
			errs <- err
		}()
	}
	if b := <-got; len(b) > 0 {
		t.Errorf("the attacker without the authkey received %q", b)
	}
	ln.Close()
	var reflected int
	for range 2 {
		err := <-errs
		if err == nil {
			t.Error("a dial to a server without the authkey succeeded")
		}
		if errors.Is(err, ErrReflection) {
			reflected++
			if !strings.Contains(err.Error(), "reflect") {
				t.Errorf("the refusal %q does not say what happened", err)
			}
		}
	}
	if reflected != 1 {
		t.Errorf("%d dials refused a reflected challenge, want 1", reflected)
	}
}

// TestConcurrentDials checks that concurrent dials from one process to a
// listener in the same process all succeed: only a dialer's challenge
// coming back to a dialer is refused.
func TestConcurrentDials(t *testing.T) {
	const n = 20
	l, ev := listen(t, Config{AuthKey: keyA, AcceptQueue: n, MaxHandshakesPerIP: -1})
	errs := make(chan error, n)
	for range n {
		go func() {
			c, err := dial(l.Addr(), Config{AuthKey: keyA})
			if err == nil {
				c.Close()
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
		if e := ev.next(t); e.Err != nil {
			t.Errorf("listener: %v", e.Err)
		}
	}
	// Every dial has ended: none may leave its challenge in the set.
	dialerChallenges.Lock()
	left := len(dialerChallenges.m)
	dialerChallenges.Unlock()
	if left != 0 {
		t.Errorf("%d challenges left in the process-wide set after every dial ended", left)
	}
}
