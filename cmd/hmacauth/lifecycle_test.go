package main

import (
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

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
