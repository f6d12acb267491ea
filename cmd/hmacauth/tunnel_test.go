package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
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

func isTimeout(err error) bool {
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
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
