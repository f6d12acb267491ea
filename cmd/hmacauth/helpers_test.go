package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hmacauth/hmacauth"
)

// bound is the longest any single wait in these tests may take; it only
// stops a broken test from hanging, it asserts nothing about speed.
const bound = 30 * time.Second

// logRecord is one JSON log line of a tunnel process.
type logRecord map[string]any

func (r logRecord) str(k string) string { s, _ := r[k].(string); return s }

// proc is a running tunnel process whose JSON logs are collected.
type proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	addr string // from its "listening" record

	mu      sync.Mutex
	records []logRecord
	stderr  bytes.Buffer
	more    chan struct{} // signalled after each new line

	done     chan struct{} // closed once the process has exited
	exitCode int
}

// startTunnel starts "hmacauth args..." with JSON debug logs and returns once
// it listens. The process is killed at the end of the test if still running.
func startTunnel(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	// The caller's flags come last, so they override these.
	args = append([]string{args[0], "-log-format", "json", "-log-level", "debug"}, args[1:]...)
	p := startProc(t, name, command(args...))
	rec := p.waitLog("listening", nil)
	p.addr = rec.str("addr")
	return p
}

// startProc starts cmd, a tunnel command with JSON logs, and returns at
// once. The process is killed at the end of the test if still running.
func startProc(t testing.TB, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{t: t, name: name, cmd: cmd, more: make(chan struct{}, 1), done: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go p.collect(stderr)
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		checkNoRace(t, p.logs())
		if t.Failed() {
			t.Logf("%s stderr:\n%s", p.name, p.logs())
		}
	})
	return p
}

func (p *proc) collect(r io.Reader) {
	defer close(p.done)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var rec logRecord
		err := json.Unmarshal(sc.Bytes(), &rec)
		p.mu.Lock()
		p.stderr.Write(sc.Bytes())
		p.stderr.WriteByte('\n')
		if err == nil {
			p.records = append(p.records, rec)
		}
		p.mu.Unlock()
		select {
		case p.more <- struct{}{}:
		default:
		}
	}
	io.Copy(io.Discard, r)
	err := p.cmd.Wait()
	p.exitCode = 0
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		p.exitCode = ee.ExitCode()
	} else if err != nil {
		p.exitCode = -1
	}
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// find returns the records with message msg that match.
func (p *proc) find(msg string, match func(logRecord) bool) []logRecord {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []logRecord
	for _, r := range p.records {
		if r.str("msg") == msg && (match == nil || match(r)) {
			out = append(out, r)
		}
	}
	return out
}

// waitLog waits for a record with message msg that matches, and returns
// the first one.
func (p *proc) waitLog(msg string, match func(logRecord) bool) logRecord {
	p.t.Helper()
	timeout := time.After(bound)
	for {
		if rs := p.find(msg, match); len(rs) > 0 {
			return rs[0]
		}
		select {
		case <-p.more:
		case <-p.done:
			if rs := p.find(msg, match); len(rs) > 0 {
				return rs[0]
			}
			p.t.Fatalf("%s exited (status %d) without logging %q; stderr:\n%s", p.name, p.exitCode, msg, p.logs())
		case <-timeout:
			p.t.Fatalf("%s did not log %q within %v; stderr:\n%s", p.name, msg, bound, p.logs())
		}
	}
}

func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signalling %s: %v", p.name, err)
	}
}

// wait waits for the process to exit and returns its status.
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.exitCode
	case <-time.After(bound):
		p.t.Fatalf("%s did not exit within %v; stderr:\n%s", p.name, bound, p.logs())
		return -1
	}
}

// errField returns the "err" of a record.
func errField(r logRecord) string { return r.str("err") }

// startTarget runs handle on every connection accepted on network/address
// until the end of the test, and returns the listening address.
func startTarget(t testing.TB, network, address string, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen(network, address)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// echo copies a connection back to itself, then half-closes it.
func echo(c net.Conn) {
	if _, err := io.Copy(c, c); err == nil {
		c.(interface{ CloseWrite() error }).CloseWrite()
	}
}

// startEcho starts a TCP echo target on loopback.
func startEcho(t testing.TB) string { return startTarget(t, "tcp", "127.0.0.1:0", echo) }

// writeKeys writes a key file holding keys, atomically.
func writeKeys(t testing.TB, path string, keys ...hmacauth.Key) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# test keys\n\n")
	for _, k := range keys {
		b.WriteString(formatKey(k))
	}
	writeKeysRaw(t, path, b.String())
	return path
}

func newKey(t testing.TB, id string) hmacauth.Key {
	t.Helper()
	k, err := hmacauth.NewKey(id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// tunnelPair is a client tunnel in front of a server tunnel in front of a
// target.
type tunnelPair struct {
	server, client *proc
}

// startPair starts a server tunnel to target and a client tunnel to it, both
// with the same fresh key and the given extra flags.
func startPair(t testing.TB, target string, serverFlags, clientFlags []string) tunnelPair {
	t.Helper()
	keys := writeKeys(t, filepath.Join(t.TempDir(), "k.keys"), newKey(t, "pair"))
	server := startTunnel(t, "server", append([]string{"server", "-listen", "127.0.0.1:0", "-target", target, "-keys", keys}, serverFlags...)...)
	client := startTunnel(t, "client", append([]string{"client", "-listen", "127.0.0.1:0", "-target", server.addr, "-keys", keys}, clientFlags...)...)
	return tunnelPair{server, client}
}

// dial connects to a tunnel's listening address, bounded by a deadline.
func dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	network, address := parseAddr(addr)
	c, err := net.DialTimeout(network, address, bound)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(bound))
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg on c and reads the same number of bytes back.
func roundTrip(c net.Conn, msg string) (string, error) {
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	b := make([]byte, len(msg))
	n, err := io.ReadFull(c, b)
	return string(b[:n]), err
}

func checkEcho(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	got, err := roundTrip(c, msg)
	if err != nil || got != msg {
		t.Fatalf("echo of %q through the tunnel: got %q, %v", msg, got, err)
	}
}

// checkRefused checks that a connection through a tunnel is closed without
// passing any byte: the read ends with EOF or a reset, not a timeout.
func checkRefused(t *testing.T, c net.Conn) {
	t.Helper()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: tunnel\r\n\r\n")
	b := make([]byte, 16)
	n, err := c.Read(b)
	if n > 0 {
		t.Fatalf("refused connection delivered %q", b[:n])
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("refused connection: read error %v, want EOF or a reset", err)
	}
}

// transfer sends n pseudo-random bytes through c while reading the echo
// back, half-closes, and checks that the same bytes came back in order.
func transfer(t *testing.T, c net.Conn, n int64, seed uint64) {
	t.Helper()
	src := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	sent := sha256.New()
	werr := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, io.TeeReader(io.LimitReader(src, n), sent))
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		werr <- err
	}()
	got := sha256.New()
	m, rerr := io.Copy(got, c)
	if err := <-werr; err != nil {
		t.Fatalf("writing %d bytes: %v", n, err)
	}
	if rerr != nil {
		t.Fatalf("reading the echo: %v after %d bytes", rerr, m)
	}
	if m != n {
		t.Fatalf("echo has %d bytes, sent %d", m, n)
	}
	if !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		t.Fatalf("the %d bytes echoed differ from those sent (SHA-256 %x, sent %x)", n, got.Sum(nil), sent.Sum(nil))
	}
}

func describe(args []string) string { return fmt.Sprintf("hmacauth %s", strings.Join(args, " ")) }

// tcpPair returns both ends of a loopback TCP connection, closed at the
// test's end, with deadlines bound from now.
func tcpPair(t testing.TB) (near, far *net.TCPConn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	c.SetDeadline(time.Now().Add(bound))
	s.SetDeadline(time.Now().Add(bound))
	return c.(*net.TCPConn), s.(*net.TCPConn)
}
