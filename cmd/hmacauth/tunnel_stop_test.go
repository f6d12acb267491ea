package main

import (
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hmacauth/hmacauth"
)

// heldConn holds its second Write (a client's ClientFinished, sent once the
// ServerHello has come) until gate is closed, so that the server's
// handshake stays in flight; held is closed when that Write begins.
type heldConn struct {
	net.Conn
	gate   <-chan struct{}
	held   chan struct{}
	mu     sync.Mutex
	writes int
}

func (c *heldConn) CloseWrite() error { return c.Conn.(*net.TCPConn).CloseWrite() }

func (c *heldConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	n := c.writes
	c.mu.Unlock()
	if n == 2 {
		close(c.held)
		<-c.gate
	}
	return c.Conn.Write(b)
}

// TestTunnelSIGTERMFinishesHandshakes: a server tunnel that stops
// gracefully lets the handshakes in flight finish and forwards their
// connections, and those its Listener had queued, within the drain.
func TestTunnelSIGTERMFinishesHandshakes(t *testing.T) {
	t.Run("in flight", func(t *testing.T) {
		key := newKey(t, "stop")
		keys := writeKeys(t, filepath.Join(t.TempDir(), "k.keys"), key)
		server := startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", startEcho(t), "-keys", keys)

		gate := make(chan struct{})
		held := &heldConn{Conn: dial(t, server.addr), gate: gate, held: make(chan struct{})}
		c := hmacauth.Client(held, &hmacauth.Config{Keys: []hmacauth.Key{key}})
		defer c.Close()
		hs := make(chan error, 1)
		go func() { hs <- c.Handshake() }()
		select {
		case <-held.held: // the server has sent its ServerHello
		case <-time.After(bound):
			t.Fatal("no ServerHello")
		}
		server.signal(syscall.SIGTERM)
		server.waitLog("stopping: no longer accepting; draining live connections", nil)
		waitRefused(t, func() bool {
			nc, err := net.DialTimeout("tcp", server.addr, bound)
			if err == nil {
				nc.Close()
			}
			return err != nil
		})
		close(gate)
		if err := <-hs; err != nil {
			t.Fatalf("handshake: %v", err)
		}
		checkEcho(t, c, "handshake finished during the stop")
		c.CloseWrite()
		if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
			t.Fatalf("end of the connection: %q, %v", rest, err)
		}
		if code := server.wait(); code != 0 {
			t.Fatalf("server exited %d, want 0", code)
		}
		server.waitLog("stopped: all connections finished", nil)
	})
	t.Run("queued", func(t *testing.T) {
		// With -max-conns 1, a second connection waits in the server's
		// Listener, its handshake done, while the first is served.
		p := startPair(t, startEcho(t), []string{"-max-conns", "1"}, nil)
		first := dial(t, p.client.addr)
		checkEcho(t, first, "first")
		second := dial(t, p.client.addr)
		io.WriteString(second, "second, queued")
		firstRemote := p.server.waitLog("hmacauth: accepted connection", nil).str("remote")
		p.server.waitLog("hmacauth: accepted connection", func(r logRecord) bool { return r.str("remote") != firstRemote })

		p.server.signal(syscall.SIGTERM)
		p.server.waitLog("stopping: no longer accepting; draining live connections", nil)
		checkEcho(t, first, "first, during the drain")
		first.(*net.TCPConn).CloseWrite()
		if rest, err := io.ReadAll(first); err != nil || len(rest) != 0 {
			t.Fatalf("end of the first connection: %q, %v", rest, err)
		}
		// The queued connection is forwarded once the first has ended.
		b := make([]byte, len("second, queued"))
		if _, err := io.ReadFull(second, b); err != nil || string(b) != "second, queued" {
			t.Fatalf("the connection queued at the stop: got %q, %v", b, err)
		}
		second.(*net.TCPConn).CloseWrite()
		if rest, err := io.ReadAll(second); err != nil || len(rest) != 0 {
			t.Fatalf("end of the queued connection: %q, %v", rest, err)
		}
		if code := p.server.wait(); code != 0 {
			t.Fatalf("server exited %d, want 0", code)
		}
	})
}

// TestTunnelDrainTimeout: at the drain timeout a server tunnel cuts the
// streams still running. The application behind the client tunnel must
// see that (a reset), never a clean end of stream after part of one, and
// the client tunnel must not report it as an attack on the records.
func TestTunnelDrainTimeout(t *testing.T) {
	for _, mode := range []string{"integrity", "sealed"} {
		t.Run(mode, func(t *testing.T) {
			flags := []string{"-mode", mode}
			p := startPair(t, startEcho(t), append([]string{"-drain-timeout", "100ms"}, flags...), flags)
			live := dial(t, p.client.addr)
			checkEcho(t, live, "before")
			p.server.signal(syscall.SIGTERM)
			if code := p.server.wait(); code != 0 {
				t.Fatalf("server exited %d after the drain timeout, want 0", code)
			}
			if rest, err := io.ReadAll(live); !errors.Is(err, syscall.ECONNRESET) || len(rest) != 0 {
				t.Fatalf("the connection cut at the drain timeout: %q, %v; want a reset", rest, err)
			}
			live.Close()
			rec := p.client.waitLog("connection closed", nil)
			if strings.Contains(errField(rec), "integrity") {
				t.Errorf("the client tunnel logged %q for the server's deliberate stop", errField(rec))
			}
		})
	}
}

// TestTunnelServerDown: a client tunnel that cannot reach its server logs
// the key it was to prove.
func TestTunnelServerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close() // nothing listens there now
	keys := writeKeys(t, filepath.Join(t.TempDir(), "k.keys"), newKey(t, "client-key"))
	client := startTunnel(t, "client", "client", "-listen", "127.0.0.1:0", "-target", down, "-keys", keys)
	checkRefused(t, dial(t, client.addr))
	rec := client.waitLog("cannot connect to the server; closing the local connection", nil)
	if !strings.Contains(errField(rec), "refused") || rec.str("key_id") != "client-key" {
		t.Errorf("client logged %v, want the refused dial and the key ID", rec)
	}
}

// waitRefused waits until refused reports that a new connection was
// refused. A stopping server's Listener closes its socket as its Shutdown
// begins, on a goroutine of its own, right after the "stopping" record: a
// connection that comes just before is still served.
func waitRefused(t *testing.T, refused func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !refused() {
		if time.Now().After(deadline) {
			t.Fatalf("the stopping server still accepts connections after %v", bound)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
