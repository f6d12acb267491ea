package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hmacauth/hmacauth"
)

func TestTunnelEcho(t *testing.T) {
	p := startPair(t, startEcho(t), nil, nil)
	c := dial(t, p.client.addr)
	checkEcho(t, c, "hello through the tunnel")
	checkEcho(t, c, "and again")
	c.Close()
	// Both sides saw the connection with the key it proved.
	p.server.waitLog("connection closed", func(r logRecord) bool { return r.str("key_id") == "pair" })
	p.client.waitLog("connection closed", func(r logRecord) bool { return r.str("key_id") == "pair" })
}

// TestTunnelBigTransfer moves 32 MiB each way through the tunnel in every
// mode and checks every byte arrives, in order.
func TestTunnelBigTransfer(t *testing.T) {
	const size = 32 << 20
	for _, tc := range []struct {
		mode  hmacauth.Mode
		fs    bool
		extra []string
	}{
		{hmacauth.ModeAuth, false, nil},
		{hmacauth.ModeAuth, true, nil},
		{hmacauth.ModeIntegrity, false, nil},
		{hmacauth.ModeSealed, false, nil},
		{hmacauth.ModeSealed, true, []string{"-key-share-lifetime", "0"}},
	} {
		name := tc.mode.String()
		flags := append([]string{"-mode", tc.mode.String()}, tc.extra...)
		if tc.fs {
			name += "-fs"
			flags = append(flags, "-fs")
		}
		t.Run(name, func(t *testing.T) {
			p := startPair(t, startEcho(t), flags, flags)
			c := dial(t, p.client.addr)
			transfer(t, c, size, uint64(tc.mode))
			for _, side := range []*proc{p.client, p.server} {
				rec := side.waitLog("connection opened", nil)
				if rec.str("mode") != tc.mode.String() || rec["fs"] != tc.fs {
					t.Errorf("%s: connection ran in mode %v, fs %v; want %v, %v", side.name, rec["mode"], rec["fs"], tc.mode, tc.fs)
				}
			}
			rec := p.server.waitLog("connection closed", nil)
			if up, down := rec["bytes_up"], rec["bytes_down"]; up != float64(size) || down != float64(size) {
				t.Errorf("server logged %v bytes up and %v down, want %d each", up, down, size)
			}
		})
	}
}

// TestTunnelModes checks on the wire, with a recording relay between the
// client and server tunnels, that -mode takes effect: a connection runs at
// the stronger side's mode; in sealed mode no application byte shows.
func TestTunnelModes(t *testing.T) {
	for _, tc := range []struct {
		server, client, want string
	}{
		{"auth", "auth", "auth"},
		{"sealed", "auth", "sealed"},
		{"auth", "sealed", "sealed"},
		{"integrity", "auth", "integrity"},
		{"integrity", "sealed", "sealed"},
	} {
		t.Run(tc.server+"-"+tc.client, func(t *testing.T) {
			keys := writeKeys(t, filepath.Join(t.TempDir(), "k.keys"), newKey(t, "modes"))
			server := startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", startEcho(t), "-keys", keys, "-mode", tc.server)
			wire := make(chan []byte, 1) // what the client tunnel sent
			relay := startTarget(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
				up, err := net.DialTimeout("tcp", server.addr, bound)
				if err != nil {
					return
				}
				defer up.Close()
				var sent bytes.Buffer
				done := make(chan struct{})
				go func() {
					defer close(done)
					io.Copy(io.MultiWriter(up, &sent), c)
					up.(*net.TCPConn).CloseWrite()
				}()
				io.Copy(c, up)
				c.(*net.TCPConn).CloseWrite()
				<-done
				wire <- sent.Bytes()
			})
			client := startTunnel(t, "client", "client", "-listen", "127.0.0.1:0", "-target", relay, "-keys", keys, "-mode", tc.client)

			const secret = "the quick brown fox jumps over the lazy dog"
			c := dial(t, client.addr)
			io.WriteString(c, strings.Repeat(secret, 100))
			c.(*net.TCPConn).CloseWrite()
			if got, err := io.ReadAll(c); err != nil || string(got) != strings.Repeat(secret, 100) {
				t.Fatalf("echo through the tunnel: %d bytes, %v", len(got), err)
			}
			for _, side := range []*proc{client, server} {
				if rec := side.waitLog("connection opened", nil); rec.str("mode") != tc.want {
					t.Errorf("%s ran the connection in mode %q, want %q", side.name, rec.str("mode"), tc.want)
				}
			}
			onWire := bytes.Contains(<-wire, []byte(secret))
			if want := tc.want != "sealed"; onWire != want {
				t.Errorf("application bytes readable on the wire: %v, want %v", onWire, want)
			}
		})
	}
}

// TestTunnelHalfClose checks that an end of stream crosses the tunnel in
// both directions, each while the other direction still carries data.
func TestTunnelHalfClose(t *testing.T) {
	for _, mode := range []string{"auth", "sealed"} {
		t.Run(mode, func(t *testing.T) { testHalfClose(t, []string{"-mode", mode}) })
	}
}

func testHalfClose(t *testing.T, flags []string) {
	t.Run("client first", func(t *testing.T) {
		// The target answers only after it has read to the end of stream.
		target := startTarget(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
			b, err := io.ReadAll(c)
			if err != nil {
				return
			}
			fmt.Fprintf(c, "read %d bytes: %s", len(b), b)
			c.(*net.TCPConn).CloseWrite()
		})
		p := startPair(t, target, flags, flags)
		c := dial(t, p.client.addr)
		io.WriteString(c, "request")
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "read 7 bytes: request" {
			t.Fatalf("after half-closing: got %q, %v; want the target's answer then EOF", got, err)
		}
	})
	t.Run("target first", func(t *testing.T) {
		// The target greets, half-closes, then reads to the end of stream.
		received := make(chan string, 1)
		target := startTarget(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
			io.WriteString(c, "greeting")
			c.(*net.TCPConn).CloseWrite()
			b, _ := io.ReadAll(c)
			received <- string(b)
		})
		p := startPair(t, target, flags, flags)
		c := dial(t, p.client.addr)
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "greeting" {
			t.Fatalf("reading from a target that half-closed: got %q, %v; want the greeting then EOF", got, err)
		}
		io.WriteString(c, "data after the target's end of stream")
		c.(*net.TCPConn).CloseWrite()
		select {
		case r := <-received:
			if r != "data after the target's end of stream" {
				t.Fatalf("target received %q", r)
			}
		case <-time.After(bound):
			t.Fatal("the target never saw the client's end of stream")
		}
	})
}

func TestTunnelWrongKey(t *testing.T) {
	dir := t.TempDir()
	serverKeys := writeKeys(t, filepath.Join(dir, "server.keys"), newKey(t, "app"))
	// Same ID, another secret.
	clientKeys := writeKeys(t, filepath.Join(dir, "client.keys"), newKey(t, "app"))
	server := startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", startEcho(t), "-keys", serverKeys)
	client := startTunnel(t, "client", "client", "-listen", "127.0.0.1:0", "-target", server.addr, "-keys", clientKeys)

	checkRefused(t, dial(t, client.addr))
	rec := client.waitLog("handshake with the server failed; closing the local connection", nil)
	if !strings.Contains(errField(rec), "authentication failed") {
		t.Errorf("client logged %q, want it to say authentication failed", errField(rec))
	}
	rec = server.waitLog("hmacauth: refused connection", nil)
	if rec.str("key_id") != "app" || !strings.Contains(rec.str("reason"), "authentication failed") {
		t.Errorf("server logged key ID %q, reason %q; want app and authentication failed", rec.str("key_id"), rec.str("reason"))
	}
	// A plain client that talks straight to the server is refused too.
	checkRefused(t, dial(t, server.addr))
	server.waitLog("hmacauth: refused connection", func(r logRecord) bool { return strings.Contains(r.str("reason"), "protocol error") })
}

func TestTunnelUnixSockets(t *testing.T) {
	dir := t.TempDir()
	target := startTarget(t, "unix", filepath.Join(dir, "target.sock"), echo)
	keys := writeKeys(t, filepath.Join(dir, "k.keys"), newKey(t, "unix"))
	serverSock := "unix:" + filepath.Join(dir, "server.sock")
	startTunnel(t, "server", "server", "-listen", serverSock, "-target", target, "-keys", keys)
	clientSock := filepath.Join(dir, "client.sock")
	client := startTunnel(t, "client", "client", "-listen", clientSock, "-target", serverSock, "-keys", keys)
	if client.addr != clientSock {
		t.Errorf("client listens on %q, want %q", client.addr, clientSock)
	}
	c := dial(t, clientSock)
	transfer(t, c, 4<<20, 3)

	// After a graceful stop the socket file is gone, and a new process
	// can listen on the same path.
	client.signal(syscall.SIGTERM)
	if code := client.wait(); code != 0 {
		t.Fatalf("client exited %d", code)
	}
	startTunnel(t, "client again", "client", "-listen", clientSock, "-target", serverSock, "-keys", keys)
	checkEcho(t, dial(t, clientSock), "second life")
}

// TestListenUnixSocketFile covers what listen does with a file already at
// a Unix socket's path: a socket left by a process that is gone is
// replaced, one that accepts connections is not, and a file that is not a
// socket is left alone.
func TestListenUnixSocketFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "stale.sock")
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false) // as a killed process leaves it
	dead.Close()
	ln, err := listen(t.Context(), "unix:"+path, net.KeepAliveConfig{})
	if err != nil {
		t.Fatalf("listening over a stale socket file: %v", err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			echo(c)
		}
	}()
	checkEcho(t, dial(t, path), "replaced")

	if _, err := listen(t.Context(), "unix:"+path, net.KeepAliveConfig{}); err == nil || !strings.Contains(err.Error(), "another process accepts connections there") {
		t.Errorf("listening over a live socket: %v, want a refusal", err)
	}

	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listen(t.Context(), "unix:"+plain, net.KeepAliveConfig{}); err == nil {
		t.Error("listening over a regular file succeeded")
	}
	if b, err := os.ReadFile(plain); err != nil || string(b) != "data" {
		t.Errorf("the regular file was changed: %q, %v", b, err)
	}
}

func TestTunnelMaxConns(t *testing.T) {
	p := startPair(t, startEcho(t), nil, []string{"-max-conns", "1"})
	first := dial(t, p.client.addr)
	checkEcho(t, first, "first")
	second := dial(t, p.client.addr) // waits in the listen backlog
	io.WriteString(second, "second")
	second.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := second.Read(make([]byte, 1)); !errors.Is(err, syscall.ETIMEDOUT) && !isTimeout(err) {
		t.Fatalf("a connection over -max-conns was served while the first is open: read %d, %v", n, err)
	}
	first.Close()
	second.SetReadDeadline(time.Now().Add(bound))
	b := make([]byte, len("second"))
	if _, err := io.ReadFull(second, b); err != nil || string(b) != "second" {
		t.Fatalf("after the first connection closed: got %q, %v", b, err)
	}
	// The client said it waited, once: the second wait came less than
	// capLogEvery after the first.
	if rs := p.client.find(capReachedMsg, nil); len(rs) != 1 || rs[0]["level"] != "INFO" || rs[0]["max_conns"] != 1.0 {
		t.Errorf("records %q: %v, want one at INFO with max_conns 1", capReachedMsg, rs)
	}
}

// capReachedMsg is the message of capWaits' record.
const capReachedMsg = "-max-conns reached: new connections wait in the listen backlog until one ends; raise -max-conns if this is not expected"

func isTimeout(err error) bool {
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}

func TestTunnelSIGTERMDrain(t *testing.T) {
	for _, who := range []string{"client", "server"} {
		t.Run(who, func(t *testing.T) {
			p := startPair(t, startEcho(t), nil, nil)
			stopped := p.client
			if who == "server" {
				stopped = p.server
			}
			live := dial(t, p.client.addr)
			checkEcho(t, live, "before")

			// SIGINT (Ctrl-C) stops as SIGTERM does.
			sig := syscall.SIGTERM
			if who == "client" {
				sig = syscall.SIGINT
			}
			stopped.signal(sig)
			rec := stopped.waitLog("stopping: no longer accepting; draining live connections", nil)
			if rec["live"] != float64(1) || rec.str("signal") != sig.String() {
				t.Errorf("stopping on %v with %v live connections, want %v and 1", rec["signal"], rec["live"], sig)
			}
			// New connections are refused: by the kernel at a stopped client,
			// by the client tunnel closing them at a stopped server.
			if who == "client" {
				if c, err := net.DialTimeout("tcp", p.client.addr, bound); err == nil {
					c.Close()
					t.Fatal("the stopping client tunnel still accepts connections")
				}
			} else {
				waitRefused(t, func() bool {
					c := dial(t, p.client.addr)
					defer c.Close()
					if got, err := roundTrip(c, "served?"); err == nil && got == "served?" {
						return false
					}
					checkRefused(t, c)
					return true
				})
			}
			// The live connection still works both ways, to its end.
			checkEcho(t, live, "during the drain")
			live.(*net.TCPConn).CloseWrite()
			if rest, err := io.ReadAll(live); err != nil || len(rest) != 0 {
				t.Fatalf("end of the drained connection: %q, %v", rest, err)
			}
			if code := stopped.wait(); code != 0 {
				t.Fatalf("%s exited %d after draining, want 0", who, code)
			}
			stopped.waitLog("stopped: all connections finished", nil)
		})
	}
	t.Run("drain timeout", func(t *testing.T) {
		p := startPair(t, startEcho(t), []string{"-drain-timeout", "100ms"}, nil)
		live := dial(t, p.client.addr)
		checkEcho(t, live, "before")
		p.server.signal(syscall.SIGTERM)
		if code := p.server.wait(); code != 0 {
			t.Fatalf("server exited %d after the drain timeout, want 0", code)
		}
		p.server.waitLog("drain timeout: closing live connections", nil)
		// The connection the server closed is closed at the client too.
		if n, err := live.Read(make([]byte, 1)); err == nil {
			t.Fatalf("read %d bytes from a connection closed at the drain timeout", n)
		} else if isTimeout(err) {
			t.Fatal("the connection closed at the drain timeout stays open at the client")
		}
	})
}

func TestTunnelSIGHUPReload(t *testing.T) {
	dir := t.TempDir()
	oldKey, newK := newKey(t, "old"), newKey(t, "new")
	serverKeys := writeKeys(t, filepath.Join(dir, "server.keys"), oldKey)
	oldKeys := writeKeys(t, filepath.Join(dir, "old.keys"), oldKey)
	newKeys := writeKeys(t, filepath.Join(dir, "new.keys"), newK)
	target := startEcho(t)
	server := startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", target, "-keys", serverKeys)
	oldClient := startTunnel(t, "old client", "client", "-listen", "127.0.0.1:0", "-target", server.addr, "-keys", oldKeys)
	newClient := startTunnel(t, "new client", "client", "-listen", "127.0.0.1:0", "-target", server.addr, "-keys", newKeys)

	live := dial(t, oldClient.addr)
	checkEcho(t, live, "old key, before the reload")
	checkRefused(t, dial(t, newClient.addr))

	reloads := 0
	reload := func() logRecord {
		t.Helper()
		reloads++
		server.signal(syscall.SIGHUP)
		n := 0
		return server.waitLog("keys reloaded", func(logRecord) bool { n++; return n == reloads })
	}
	// Rotate: the server takes the new key and drops the old one.
	writeKeys(t, serverKeys, newK)
	rec := reload()
	if ids, _ := rec["keys"].([]any); !slices.Equal(ids, []any{"new"}) {
		t.Errorf("reloaded keys %v, want [new]", rec["keys"])
	}
	checkEcho(t, dial(t, newClient.addr), "new key after the reload")
	checkRefused(t, dial(t, oldClient.addr))
	oldClient.waitLog("handshake with the server failed; closing the local connection", nil)
	// The connection made with the old key is not touched.
	checkEcho(t, live, "old key, after the reload")

	// A broken key file keeps the keys in use.
	writeKeysRaw(t, serverKeys, "new not-base64!\n")
	server.signal(syscall.SIGHUP)
	rec = server.waitLog("key reload failed; keeping the current keys", nil)
	if !strings.Contains(errField(rec), "line 1") {
		t.Errorf("reload error %q does not name the line", errField(rec))
	}
	checkEcho(t, dial(t, newClient.addr), "new key after a failed reload")

	// The client side reloads too.
	writeKeys(t, oldKeys, newK)
	oldClient.signal(syscall.SIGHUP)
	oldClient.waitLog("keys reloaded", nil)
	checkEcho(t, dial(t, oldClient.addr), "client moved to the new key")
}

func writeKeysRaw(t testing.TB, path, content string) {
	t.Helper()
	if err := writeKeyFile(path, []byte(content), true); err != nil {
		t.Fatal(err)
	}
}

func TestTunnelStartFailures(t *testing.T) {
	dir := t.TempDir()
	keys := writeKeys(t, filepath.Join(dir, "k.keys"), newKey(t, "k"))
	busy := startEcho(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing key file", []string{"server", "-listen", "127.0.0.1:0", "-target", busy, "-keys", filepath.Join(dir, "none.keys")}, "no such file"},
		{"empty key file", []string{"server", "-listen", "127.0.0.1:0", "-target", busy, "-keys", writeKeysRawPath(t, filepath.Join(dir, "empty.keys"), "# nothing\n")}, "holds no keys"},
		{"key file readable by others", []string{"server", "-listen", "127.0.0.1:0", "-target", busy, "-keys", chmod(t, writeKeys(t, filepath.Join(dir, "open.keys"), newKey(t, "k")), 0o644)}, "chmod 600"},
		{"weak key", []string{"client", "-listen", "127.0.0.1:0", "-target", busy, "-keys", writeKeysRawPath(t, filepath.Join(dir, "weak.keys"), "k c2hvcnQ=\n")}, "weak key"},
		{"address in use", []string{"server", "-listen", busy, "-target", busy, "-keys", keys}, "address already in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runBin(t, tc.args...)
			if r.code != exitFail || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("%s: exit %d, stderr %q; want exit 1 and %q", describe(tc.args), r.code, r.stderr, tc.want)
			}
			if strings.Contains(r.stderr, "c2hvcnQ") {
				t.Errorf("the error shows the secret: %q", r.stderr)
			}
		})
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) string {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeKeysRawPath(t *testing.T, path, content string) string {
	writeKeysRaw(t, path, content)
	return path
}

func TestBadFlags(t *testing.T) {
	base := []string{"-listen", "127.0.0.1:0", "-target", "127.0.0.1:1", "-keys", "k.keys"}
	with := func(cmd string, extra ...string) []string {
		return append(append([]string{cmd}, base...), extra...)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"server"}, "-listen is required"},
		{[]string{"client", "-listen", "127.0.0.1:0", "-target", "127.0.0.1:1"}, "-keys is required"},
		{with("client", "-bogus"), "flag provided but not defined: -bogus"},
		{with("server", "-mode", "fast"), `unknown mode "fast"`},
		{with("server", "-max-conns", "0"), "-max-conns is 0"},
		{with("server", "-max-handshakes-per-ip", "-1"), "-max-handshakes-per-ip is -1"},
		{with("client", "-max-handshakes-per-ip", "4"), "flag provided but not defined: -max-handshakes-per-ip"},
		{with("server", "-handshake-timeout", "0s"), "-handshake-timeout is 0s"},
		{with("server", "-connect-timeout", "soon"), "invalid value"},
		{with("client", "-log-format", "xml"), `unknown format "xml"`},
		{with("client", "-watch-keys", "-1s"), "-watch-keys is -1s"},
		{with("client", "-key-share-lifetime", "-1s"), "-key-share-lifetime is -1s"},
		{with("client", "-log-level", "loud"), `unknown level "loud"`},
		{with("client", "stray"), `unexpected argument "stray"`},
		{[]string{"keygen", "-force"}, "-force needs -o FILE"},
		{[]string{"keygen", "-id", "has space"}, "printable ASCII"},
		{[]string{"demo", "now"}, `unexpected argument "now"`},
	} {
		r := runBin(t, tc.args...)
		if r.code != exitUsage {
			t.Errorf("%s: exit %d, want %d", describe(tc.args), r.code, exitUsage)
		}
		if !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "Usage:") {
			t.Errorf("%s: stderr %q; want %q and the usage", describe(tc.args), r.stderr, tc.want)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"-version"}, {"server", "-version"}, {"client", "-version"}} {
		r := runBin(t, args...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "hmacauth ") || !strings.Contains(r.stdout, "go1.") {
			t.Errorf("%s: exit %d, stdout %q; want 0 and \"hmacauth VERSION ... goX\"", describe(args), r.code, r.stdout)
		}
	}
	r := runBin(t, "server", "-h")
	for _, flag := range []string{"-listen", "-target", "-keys", "-mode", "-fs", "-key-share-lifetime", "-max-conns", "-handshake-timeout",
		"-connect-timeout", "-keepalive", "-drain-timeout", "-watch-keys", "-max-handshakes-per-ip", "-unsafe-target", "-status", "-log-format", "-log-level", "-version", "SIGHUP", "unix:"} {
		if !strings.Contains(r.stderr, flag) {
			t.Errorf("server -h does not mention %s", flag)
		}
	}
	if r.code != 0 {
		t.Errorf("server -h exited %d, want 0", r.code)
	}
}

// TestTunnelTargetDown: when the server cannot reach its target, the
// connection is closed end to end and the server says why.
func TestTunnelTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close() // nothing listens there now
	p := startPair(t, down, []string{"-connect-timeout", "2s"}, nil)
	checkRefused(t, dial(t, p.client.addr))
	rec := p.server.waitLog("cannot connect to the target; closing the connection", nil)
	if !strings.Contains(errField(rec), "refused") || rec.str("key_id") != "pair" {
		t.Errorf("server logged %v, want the refused dial and the key ID", rec)
	}
}

// TestTunnelConcurrent runs many connections through one tunnel pair at
// once; each must get exactly its own bytes back.
func TestTunnelConcurrent(t *testing.T) {
	p := startPair(t, startEcho(t), nil, nil)
	const conns = 32
	errs := make(chan error, conns)
	for i := range conns {
		go func() {
			c, err := net.DialTimeout("tcp", p.client.addr, bound)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(bound))
			// A message naming its connection, repeated, so that a mix-up
			// between connections shows.
			msg := strings.Repeat(fmt.Sprintf("connection %d;", i), 20000)
			go func() {
				io.WriteString(c, msg)
				c.(*net.TCPConn).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			if err == nil && string(got) != msg {
				err = fmt.Errorf("connection %d got %d bytes back that differ from the %d it sent", i, len(got), len(msg))
			}
			errs <- err
		}()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestTunnelPerIPCap: with -max-handshakes-per-ip, a host's handshakes over
// the cap are shed at once; without it (the default), they are not.
func TestTunnelPerIPCap(t *testing.T) {
	p := startPair(t, startEcho(t), []string{"-max-handshakes-per-ip", "1"}, nil)
	// Two handshakes from 127.0.0.1 at once: a silent client that holds a
	// slot until its handshake times out, and one through the client
	// tunnel. Whichever the server accepts second is shed.
	stalled := dial(t, p.server.addr)
	io.WriteString(stalled, "hmac")
	c := dial(t, p.client.addr)
	io.WriteString(c, "x")
	c.Read(make([]byte, 1)) // the echo, or the end of a shed connection
	p.server.waitLog("hmacauth: refused connection", func(r logRecord) bool {
		return strings.Contains(r.str("reason"), "connection shed")
	})
	stalled.Close()
	// The concurrent test covers the default: 32 handshakes at once from
	// one IP all succeed.
}

// TestTunnelWatchKeys: with -watch-keys, replacing the key file is enough.
func TestTunnelWatchKeys(t *testing.T) {
	dir := t.TempDir()
	oldKey, newK := newKey(t, "old"), newKey(t, "new")
	serverKeys := writeKeys(t, filepath.Join(dir, "server.keys"), oldKey)
	server := startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", startEcho(t), "-keys", serverKeys, "-watch-keys", "20ms")
	client := startTunnel(t, "client", "client", "-listen", "127.0.0.1:0", "-target", server.addr, "-keys", writeKeys(t, filepath.Join(dir, "new.keys"), newK))
	checkRefused(t, dial(t, client.addr))

	writeKeys(t, serverKeys, oldKey, newK)
	server.waitLog("hmacauth: loaded key file", func(r logRecord) bool {
		ids, _ := r["key_ids"].([]any)
		return slices.Equal(ids, []any{"old", "new"})
	})
	checkEcho(t, dial(t, client.addr), "picked up without a signal")
}
