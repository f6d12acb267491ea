package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tinyproxyProc is a tinyproxy process of one test.
type tinyproxyProc struct {
	addr string
	mu   sync.Mutex
	out  bytes.Buffer
	more chan struct{}
}

func (p *tinyproxyProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case p.more <- struct{}{}:
	default:
	}
	return p.out.Write(b)
}

func (p *tinyproxyProc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// startTinyproxy runs tinyproxy in the foreground on a free loopback port,
// allowing CONNECT to connectPort only, with basic auth when user is not
// empty. The test is skipped where tinyproxy is not installed.
func startTinyproxy(t *testing.T, connectPort, user, pass string) *tinyproxyProc {
	t.Helper()
	bin, err := exec.LookPath("tinyproxy")
	if err != nil {
		for _, p := range []string{"/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"} {
			if _, serr := os.Stat(p); serr == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		t.Skip("tinyproxy not found (.ci/run installs it with apt-get): skipping the test through a real CONNECT proxy")
	}
	// tinyproxy takes a port, not a socket: this one was free a moment ago.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf("Port %s\nListen 127.0.0.1\nTimeout 30\nMaxClients 50\nLogLevel Info\nConnectPort %s\n", port, connectPort)
	if user != "" {
		conf += fmt.Sprintf("BasicAuth %s %s\n", user, pass)
	}
	confPath := filepath.Join(t.TempDir(), "tinyproxy.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &tinyproxyProc{addr: addr, more: make(chan struct{}, 1)}
	cmd := exec.Command(bin, "-d", "-c", confPath)
	cmd.Stdout, cmd.Stderr = p, p
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting tinyproxy: %v", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("tinyproxy output:\n%s", p.logs())
		}
	})
	timeout := time.After(bound)
	for !strings.Contains(p.logs(), "Accepting connections") {
		select {
		case <-p.more:
		case <-done:
			t.Fatalf("tinyproxy exited before accepting connections:\n%s", p.logs())
		case <-timeout:
			t.Fatalf("tinyproxy did not accept connections within %v:\n%s", bound, p.logs())
		}
	}
	return p
}

// clearProxyEnv gives the test's processes no NO_PROXY and no credentials
// of the environment it runs in: unset, not empty, as a process started
// without them sees them (t.Setenv restores them at the end).
func clearProxyEnv(t *testing.T) {
	for _, k := range []string{"NO_PROXY", "no_proxy", proxyAuthEnv} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

// TestConnectProxyTinyproxy runs a client tunnel whose server is reached
// through a real tinyproxy, without and with basic auth (from the URL or
// the environment), and checks the refusals: 407 without or with wrong
// credentials, 403 for a port the proxy does not allow. The client's
// /_status checks the target through the proxy too.
func TestConnectProxyTinyproxy(t *testing.T) {
	target := startEcho(t)
	keys := writeKeys(t, filepath.Join(t.TempDir(), "k.keys"), newKey(t, "egress"))
	server := startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", target, "-keys", keys)
	_, serverPort, _ := net.SplitHostPort(server.addr)

	client := func(t *testing.T, proxyURL string) *proc {
		return startTunnel(t, "client", "client", "-listen", "127.0.0.1:0", "-target", server.addr, "-keys", keys,
			"-connect-proxy", proxyURL, "-status", "127.0.0.1:0")
	}
	works := func(t *testing.T, tp *tinyproxyProc, c *proc) {
		t.Helper()
		conn := dial(t, c.addr)
		checkEcho(t, conn, "through the proxy")
		// Not transfer: tinyproxy passes on no half-close (it closes both
		// ways when one ends), so the echo is read before the close.
		msg := strings.Repeat("0123456789abcdef", 1<<16)
		werr := make(chan error, 1)
		go func() { _, err := io.WriteString(conn, msg); werr <- err }()
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, got); err != nil || string(got) != msg {
			t.Errorf("1 MiB echoed through the proxy: %v, same bytes: %v", err, string(got) == msg)
		}
		if err := <-werr; err != nil {
			t.Error(err)
		}
		if want := "CONNECT " + server.addr; !strings.Contains(tp.logs(), want) {
			t.Errorf("tinyproxy did not log %q: the client did not go through it", want)
		}
		if code, rep, body := statusOf(t, c.statusAddr()); code != http.StatusOK || !rep.TargetOK {
			t.Errorf("client /_status through the proxy: %d %s", code, body)
		}
		if strings.Contains(c.logs(), "s3cret") {
			t.Errorf("the client logged the proxy password:\n%s", c.logs())
		}
	}
	refused := func(t *testing.T, c *proc, want error, wantMsg ...string) {
		t.Helper()
		checkRefused(t, dial(t, c.addr))
		rec := c.waitLog("cannot connect to the server; closing the local connection", nil)
		for _, m := range append([]string{want.Error()}, wantMsg...) {
			if !strings.Contains(errField(rec), m) {
				t.Errorf("client error %q does not say %q", errField(rec), m)
			}
		}
		code, rep, body := statusOf(t, c.statusAddr())
		if code != http.StatusServiceUnavailable || !strings.Contains(rep.TargetError, want.Error()) {
			t.Errorf("client /_status: %d %s, want 503 with %q", code, body, want)
		}
	}

	t.Run("no auth", func(t *testing.T) {
		clearProxyEnv(t)
		tp := startTinyproxy(t, serverPort, "", "")
		works(t, tp, client(t, "http://"+tp.addr))
	})
	t.Run("basic auth in the URL", func(t *testing.T) {
		clearProxyEnv(t)
		tp := startTinyproxy(t, serverPort, "alice", "s3cret")
		works(t, tp, client(t, "http://alice:s3cret@"+tp.addr))
	})
	t.Run("basic auth from the environment", func(t *testing.T) {
		clearProxyEnv(t)
		t.Setenv(proxyAuthEnv, "alice:s3cret")
		tp := startTinyproxy(t, serverPort, "alice", "s3cret")
		works(t, tp, client(t, "http://"+tp.addr))
	})
	t.Run("407 without credentials", func(t *testing.T) {
		clearProxyEnv(t)
		tp := startTinyproxy(t, serverPort, "alice", "s3cret")
		refused(t, client(t, "http://"+tp.addr), errConnectAuth, proxyAuthEnv)
	})
	t.Run("407 with wrong credentials", func(t *testing.T) {
		clearProxyEnv(t)
		tp := startTinyproxy(t, serverPort, "alice", "s3cret")
		refused(t, client(t, "http://alice:wrong@"+tp.addr), errConnectAuth, "refused the credentials")
	})
	t.Run("403 port not allowed", func(t *testing.T) {
		clearProxyEnv(t)
		tp := startTinyproxy(t, "1", "", "")
		refused(t, client(t, "http://"+tp.addr), errConnectForbidden, "ConnectPort")
	})
}

// TestConnectProxyNoProxy checks that a target NO_PROXY lists is dialed
// directly, and that one it does not list is not: the proxy here is a
// port nothing listens on.
func TestConnectProxyNoProxy(t *testing.T) {
	pair := startPair(t, startEcho(t), nil, nil)
	keys := pair.client.cmd.Args[slices.Index(pair.client.cmd.Args, "-keys")+1]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadProxy := "http://" + ln.Addr().String()
	ln.Close()
	client := func(t *testing.T) *proc {
		return startTunnel(t, "client", "client", "-listen", "127.0.0.1:0", "-target", pair.server.addr, "-keys", keys, "-connect-proxy", deadProxy)
	}
	for _, list := range []string{"127.0.0.1", "example.com, 127.0.0.0/8", "*", "127.0.0.1:" + portOf(pair.server.addr)} {
		t.Run("listed "+list, func(t *testing.T) {
			clearProxyEnv(t)
			t.Setenv("NO_PROXY", list)
			c := client(t)
			c.waitLog("NO_PROXY lists the target: connecting to it directly, not through -connect-proxy", nil)
			checkEcho(t, dial(t, c.addr), "direct")
		})
	}
	// no_proxy alone, and no_proxy before NO_PROXY, as curl and Go's
	// httpproxy read them.
	for _, env := range [][]string{{"no_proxy", "127.0.0.0/8"}, {"no_proxy", "127.0.0.1", "NO_PROXY", "example.com"}} {
		t.Run("listed "+strings.Join(env, "="), func(t *testing.T) {
			clearProxyEnv(t)
			for i := 0; i < len(env); i += 2 {
				t.Setenv(env[i], env[i+1])
			}
			c := client(t)
			c.waitLog("NO_PROXY lists the target: connecting to it directly, not through -connect-proxy", nil)
			checkEcho(t, dial(t, c.addr), "direct")
		})
	}
	for _, list := range []string{"", "example.com", "127.0.0.2", "127.0.0.1:1"} {
		t.Run("not listed "+list, func(t *testing.T) {
			clearProxyEnv(t)
			t.Setenv("no_proxy", list)
			c := client(t)
			checkRefused(t, dial(t, c.addr))
			rec := c.waitLog("cannot connect to the server; closing the local connection", nil)
			if !strings.Contains(errField(rec), "connecting to the proxy") {
				t.Errorf("client error %q: want a failed connection to the proxy", errField(rec))
			}
		})
	}
}

func portOf(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }

func TestNoProxy(t *testing.T) {
	for _, c := range []struct {
		list, target string
		want         bool
	}{
		{"", "a.example.com:1", false},
		{"*", "a.example.com:1", true},
		{"example.com", "example.com:1", true},
		{"example.com", "a.example.com:1", true},
		{"example.com", "badexample.com:1", false},
		{".example.com", "example.com:1", false},
		{".example.com", "a.b.example.com:1", true},
		{"*.example.com", "a.example.com:1", true},
		{"EXAMPLE.com.", "a.Example.COM.:1", true},
		{"example.com:443", "a.example.com:443", true},
		{"example.com:443", "a.example.com:444", false},
		{"10.0.0.0/8", "10.1.2.3:1", true},
		{"10.0.0.0/8", "11.1.2.3:1", false},
		{"10.0.0.0/8", "ten.example:1", false},
		{"::1", "[::1]:1", true},
		{"[::1]:1", "[::1]:1", true},
		{"[::1]:2", "[::1]:1", false},
		{"fd00::/8", "[fd12::1]:1", true},
		{"a.test,b.test c.test", "c.test:1", true},
		{"127.0.0.1", "localhost:1", false},
		{"127.0.0.1", "127.0.0.2:1", false},
		{"::ffff:10.0.0.0/104", "10.1.2.3:1", true},
		{"::ffff:10.0.0.0/104", "11.1.2.3:1", false},
		{"::ffff:10.0.0.0/104", "[::ffff:10.1.2.3]:1", true},
	} {
		if got := noProxy(c.list, c.target); got != c.want {
			t.Errorf("noProxy(%q, %q) = %v, want %v", c.list, c.target, got, c.want)
		}
	}
}

func TestParseConnectProxy(t *testing.T) {
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	for _, c := range []struct {
		url, env, wantAuth, wantErr string
	}{
		{url: "http://proxy:3128"},
		{url: "http://alice:s3cret@proxy:3128", wantAuth: basic},
		{url: "http://proxy:3128/", env: "alice:s3cret", wantAuth: basic},
		{url: "https://proxy:3128", wantErr: "not supported"},
		{url: "socks5://proxy:1080", wantErr: "only http://"},
		{url: "proxy:3128", wantErr: "only http://"},
		{url: "http://proxy", wantErr: "host and port"},
		{url: "http://alice:s3cret@proxy:3128/x", wantErr: "no path"},
		{url: "http://alice:s3cret@proxy:3128", env: "bob:x", wantErr: "in one place"},
		{url: "http://proxy:3128", env: "nocolon", wantErr: "user:password"},
		{url: "http://alice:s3cret@proxy:3128\x7f", wantErr: "not a URL"},
		// url.Parse ends the host at the password's '#' or '?'.
		{url: "http://alice:1234#s3cret@proxy:3128", wantErr: "percent-encode / # ? in the password"},
		{url: "http://alice:1234?s3cret@proxy:3128", wantErr: "percent-encode / # ? in the password"},
		{url: "http://alice:1234/s3cret@proxy:3128", wantErr: "percent-encode / # ? in the password"},
	} {
		p, err := parseConnectProxy(c.url, c.env)
		switch {
		case c.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("parseConnectProxy(%q, %q): error %v, want one saying %q", c.url, c.env, err, c.wantErr)
			} else if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("parseConnectProxy(%q): error %q shows the password", c.url, err)
			}
		case err != nil:
			t.Errorf("parseConnectProxy(%q, %q): %v", c.url, c.env, err)
		case p.addr != "proxy:3128" || p.auth != c.wantAuth:
			t.Errorf("parseConnectProxy(%q, %q) = %+v", c.url, c.env, p)
		}
	}
}

// TestConnectProxyFlags checks the usage errors of -connect-proxy.
func TestConnectProxyFlags(t *testing.T) {
	keys := writeKeys(t, filepath.Join(t.TempDir(), "k.keys"), newKey(t, "k"))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"client", "-listen", "127.0.0.1:0", "-target", "unix:/tmp/x.sock", "-keys", keys, "-connect-proxy", "http://p:1"}, "Unix socket"},
		{[]string{"client", "-listen", "127.0.0.1:0", "-target", "127.0.0.1:1", "-keys", keys, "-connect-proxy", "https://p:1"}, "not supported"},
		{[]string{"server", "-listen", "127.0.0.1:0", "-target", "127.0.0.1:1", "-keys", keys, "-connect-proxy", "http://p:1"}, "flag provided but not defined"},
	} {
		r := runBin(t, c.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d saying %q", describe(c.args), r.code, r.stderr, exitUsage, c.want)
		}
	}
}

// fakeProxy accepts one connection on loopback, reads the CONNECT request
// and runs answer on the connection; it returns its address and the
// request it read.
func fakeProxy(t *testing.T, answer func(net.Conn)) (string, <-chan *http.Request) {
	t.Helper()
	reqs := make(chan *http.Request, 1)
	addr := startTarget(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		c.SetDeadline(time.Now().Add(bound))
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			close(reqs)
			return
		}
		reqs <- req
		answer(c)
	})
	return addr, reqs
}

// TestConnectProxyExchange checks the CONNECT exchange against answers a
// real proxy does not give on request: bytes of the target right after the
// header, refusals by status, non-HTTP, endless headers, silence.
func TestConnectProxyExchange(t *testing.T) {
	const target = "server.example:7000"
	write := func(s string) func(net.Conn) { return func(c net.Conn) { io.WriteString(c, s) } }
	for _, c := range []struct {
		name   string
		answer func(net.Conn)
		want   error
	}{
		{"ok with early bytes", func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 200 Connection established\r\nX-A: b\r\n\r\nearly bytes")
			io.Copy(c, c)
		}, nil},
		{"407", write("HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=x\r\nContent-Length: 3\r\n\r\nno\n"), errConnectAuth},
		{"403", write("HTTP/1.0 403 Forbidden\r\n\r\n"), errConnectForbidden},
		{"502", write("HTTP/1.1 502 Bad Gateway\r\n\r\n"), errConnectGateway},
		{"418", write("HTTP/1.1 418 I'm a teapot\r\n\r\n"), errConnectRefused},
		{"not HTTP", write("SSH-2.0-OpenSSH_9.2\r\n"), errConnectNotHTTP},
		{"closed", func(net.Conn) {}, errConnectNotHTTP},
		{"endless header", func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\n")
			for range 2 * maxConnectResponse / 16 {
				if _, err := io.WriteString(c, "X-Pad: 0123456\r\n"); err != nil {
					return
				}
			}
		}, errConnectTooLarge},
		{"silence", func(c net.Conn) { io.Copy(io.Discard, c) }, context.DeadlineExceeded},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr, reqs := fakeProxy(t, c.answer)
			p, err := parseConnectProxy("http://alice:s3cret@"+addr, "")
			if err != nil {
				t.Fatal(err)
			}
			d := net.Dialer{Timeout: 300 * time.Millisecond}
			if c.want == nil {
				d.Timeout = bound
			}
			conn, err := p.dial(context.Background(), &d, target)
			if req := <-reqs; req == nil || req.Method != http.MethodConnect || req.Host != target || req.RequestURI != target ||
				req.Header.Get("Proxy-Authorization") != p.auth {
				t.Errorf("the proxy read %+v", req)
			}
			if c.want != nil {
				if !errors.Is(err, c.want) {
					t.Fatalf("dial: %v, want %v", err, c.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(bound))
			// The bytes that came with the header are the tunnel's first.
			got := make([]byte, len("early bytes"))
			if _, err := io.ReadFull(conn, got); err != nil || string(got) != "early bytes" {
				t.Fatalf("first bytes of the tunnel: %q, %v", got, err)
			}
			checkEcho(t, conn, "then the rest")
		})
	}
}

// TestConnectProxyCancel checks that a stop (the tunnel's context) ends a
// CONNECT exchange waiting for the proxy.
func TestConnectProxyCancel(t *testing.T) {
	addr, reqs := fakeProxy(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	p, err := parseConnectProxy("http://"+addr, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-reqs
		cancel()
	}()
	d := net.Dialer{Timeout: bound}
	if _, err := p.dial(ctx, &d, "127.0.0.1:1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("dial: %v, want context.Canceled", err)
	}
}

// FuzzReadConnectResponse feeds the CONNECT answer parser arbitrary bytes:
// it must not panic, and what it hands to the tunnel is exactly the input
// after a header.
func FuzzReadConnectResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 Connection established\r\n\r\n",
		"HTTP/1.0 200 OK\r\nProxy-Agent: x\r\n\r\nHMAC",
		"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabcde",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"SSH-2.0-x\r\n",
		"HTTP/1.1 200\n\nx",
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, sentAuth bool) {
		r := bytes.NewReader(data)
		rest, err := readConnectResponse(r, sentAuth)
		if err != nil {
			if rest != nil {
				t.Fatalf("an error (%v) with %d bytes for the tunnel", err, len(rest))
			}
			return
		}
		// What was read past the header is handed on, whole and in order;
		// the rest stays unread in r.
		read := len(data) - r.Len()
		header := read - len(rest)
		if read > maxConnectResponse || !bytes.Equal(rest, data[header:read]) {
			t.Fatalf("read %d bytes of %d, handed on %q", read, len(data), rest)
		}
		if !strings.HasPrefix(string(data), "HTTP/") || !strings.Contains(string(data[:header]), " 2") {
			t.Fatalf("accepted %q", data)
		}
	})
}

// TestConnectProxyAbortResets checks that a tunnel through the proxy whose
// answer came with bytes of the target is reset when the forwarding aborts
// it (abort), as a plain TCP connection is, not closed with a FIN that the
// server would take for an end of stream.
func TestConnectProxyAbortResets(t *testing.T) {
	readErr := make(chan error, 1)
	addr, reqs := fakeProxy(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\nearly")
		_, err := io.Copy(io.Discard, c)
		readErr <- err
	})
	p, err := parseConnectProxy("http://"+addr, "")
	if err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{Timeout: bound}
	conn, err := p.dial(context.Background(), &d, "127.0.0.1:1")
	<-reqs
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := conn.(*proxiedConn); !ok {
		t.Fatalf("the tunnel with early bytes is a %T, want a *proxiedConn", conn)
	}
	abort(conn)
	select {
	case err := <-readErr:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("the proxy read %v from the aborted tunnel, want a reset (ECONNRESET)", err)
		}
	case <-time.After(bound):
		t.Fatal("the proxy saw no end of the aborted tunnel")
	}
}
