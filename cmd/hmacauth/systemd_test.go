//go:build linux

package main

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// activated returns a command running the tunnel as systemd starts a
// socket-activated service: the listeners' sockets inherited from fd 3 on,
// LISTEN_FDS, LISTEN_FDNAMES (names joined by ":") and LISTEN_PID set,
// the last to the child's own pid, which only the child knows: a shell
// sets it and execs the binary, which keeps that pid. WATCHDOG_PID is set
// the same way; env adds the rest.
func activated(t *testing.T, lns []net.Listener, names []string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skipf("no sh to start the child with its own pid in LISTEN_PID: %v", err)
	}
	cmd := command(args...)
	cmd.Path = sh
	cmd.Args = append([]string{"sh", "-c", `export LISTEN_PID=$$ WATCHDOG_PID=$$; exec "$0" "$@"`, binPath}, args...)
	for _, ln := range lns {
		f, err := ln.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	}
	cmd.Env = append(cmd.Env, "LISTEN_FDS="+strconv.Itoa(len(lns)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// notifySocket is the sd_notify socket of a service manager: it collects
// the datagrams a child sends to NOTIFY_SOCKET.
type notifySocket struct {
	path string
	c    *net.UnixConn

	mu      sync.Mutex
	msgs    []map[string]string // every message but a bare WATCHDOG=1
	pings   int                 // WATCHDOG=1 messages
	more    chan struct{}       // signalled after each message
	readErr error
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	// A short path: sun_path holds 108 bytes, and t.TempDir's can be longer.
	dir, err := os.MkdirTemp("", "sdnotify")
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{path: filepath.Join(dir, "notify"), more: make(chan struct{}, 1)}
	if n.c, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"}); err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 4096)
		for {
			k, err := n.c.Read(b)
			n.mu.Lock()
			if err != nil {
				n.readErr = err
				n.mu.Unlock()
				n.signal()
				return
			}
			msg := map[string]string{}
			for line := range strings.Lines(string(b[:k])) {
				key, val, _ := strings.Cut(strings.TrimSuffix(line, "\n"), "=")
				msg[key] = val
			}
			if len(msg) == 1 && msg["WATCHDOG"] == "1" {
				n.pings++
			} else {
				n.msgs = append(n.msgs, msg)
			}
			n.mu.Unlock()
			n.signal()
		}
	}()
	t.Cleanup(func() {
		n.c.Close()
		<-done
		os.RemoveAll(dir)
	})
	return n
}

func (n *notifySocket) signal() {
	select {
	case n.more <- struct{}{}:
	default:
	}
}

// waitFor waits until cond, called under the lock, holds.
func (n *notifySocket) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	timeout := time.After(bound)
	for {
		n.mu.Lock()
		ok, err := cond(), n.readErr
		n.mu.Unlock()
		if ok {
			return
		}
		if err != nil {
			t.Fatalf("waiting for %s: reading the notify socket: %v", what, err)
		}
		select {
		case <-n.more:
		case <-timeout:
			t.Fatalf("no %s on the notify socket within %v; got %v", what, bound, n.states())
		}
	}
}

// next returns message i (from 0, in the order sent, bare WATCHDOG=1 left
// out) once it has come.
func (n *notifySocket) next(t *testing.T, i int) map[string]string {
	t.Helper()
	var msg map[string]string
	n.waitFor(t, "message "+strconv.Itoa(i), func() bool {
		if len(n.msgs) > i {
			msg = n.msgs[i]
			return true
		}
		return false
	})
	return msg
}

// states returns the messages so far, for failure reports.
func (n *notifySocket) states() []map[string]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]map[string]string(nil), n.msgs...)
}

// TestSystemdActivation runs each role as a socket-activated Type=notify
// service with a watchdog: its -listen and -status sockets are inherited
// from the test, named as a socket unit's FileDescriptorName= names them,
// and the test reads sd_notify as systemd would: READY with STATUS at
// start, watchdog pings, RELOADING with MONOTONIC_USEC then READY around
// SIGHUP, STOPPING at SIGTERM.
func TestSystemdActivation(t *testing.T) {
	for _, r := range []role{roleServer, roleClient} {
		t.Run(string(r), func(t *testing.T) {
			target := startEcho(t)
			keys := writeKeys(t, filepath.Join(t.TempDir(), "k.keys"), newKey(t, "sd"))
			var server *proc
			if r == roleClient {
				server = startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", target, "-keys", keys)
				target = server.addr
			}
			var lns []net.Listener
			for range 2 {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { ln.Close() })
				lns = append(lns, ln)
			}
			listenAddr, statusAddr := lns[0].Addr().String(), lns[1].Addr().String()
			n := listenNotify(t)
			// Given in the "wrong" order, so that names, not positions, decide.
			cmd := activated(t, []net.Listener{lns[1], lns[0]}, []string{"status", "listen"},
				[]string{"NOTIFY_SOCKET=" + n.path, "WATCHDOG_USEC=200000"},
				string(r), "-log-format", "json", "-log-level", "debug",
				"-listen", "systemd:listen", "-target", target, "-keys", keys, "-status", "systemd:status")
			p := startProc(t, "activated "+string(r), cmd)
			p.addr = p.waitLog("listening", nil).str("addr")
			// The child holds the sockets now: the test's copies go.
			for _, ln := range lns {
				ln.Close()
			}
			if p.addr != listenAddr {
				t.Fatalf("listening on %s, want the socket passed as \"listen\", %s", p.addr, listenAddr)
			}
			if got := p.statusAddr(); got != statusAddr {
				t.Fatalf("status on %s, want the socket passed as \"status\", %s", got, statusAddr)
			}

			ready := n.next(t, 0)
			wantStatus := string(r) + " " + listenAddr + " => " + target + ", 0 live connections"
			if ready["READY"] != "1" || ready["STATUS"] != wantStatus {
				t.Errorf("first notification %q, want READY=1 and STATUS=%q", ready, wantStatus)
			}
			front := p.addr
			if r == roleServer {
				front = startTunnel(t, "client", "client", "-listen", "127.0.0.1:0", "-target", p.addr, "-keys", keys).addr
			}
			c := dial(t, front)
			checkEcho(t, c, "through the activated "+string(r))
			c.Close()
			// /_status on the activated status socket, until the connection
			// is no longer live (it is logged closed just before).
			p.waitLog("connection closed", nil)
			for deadline := time.Now().Add(bound); ; {
				code, rep, body := statusOf(t, statusAddr)
				if code != http.StatusOK || rep.Listen != listenAddr {
					t.Fatalf("/_status on the activated status socket: %d %s", code, body)
				}
				if rep.Live == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the closed connection is still live: %s", body)
				}
				time.Sleep(5 * time.Millisecond)
			}
			n.waitFor(t, "two watchdog pings", func() bool { return n.pings >= 2 })

			before, _ := monotonicUsec()
			p.signal(syscall.SIGHUP)
			reloading := n.next(t, 1)
			p.waitLog("keys reloaded", nil)
			after, _ := monotonicUsec()
			if reloading["RELOADING"] != "1" {
				t.Fatalf("after SIGHUP %q, want RELOADING=1", reloading)
			}
			if us, err := strconv.ParseUint(reloading["MONOTONIC_USEC"], 10, 64); err != nil || us < before || us > after {
				t.Errorf("RELOADING with MONOTONIC_USEC=%q, want CLOCK_MONOTONIC between %d and %d", reloading["MONOTONIC_USEC"], before, after)
			}
			if again := n.next(t, 2); again["READY"] != "1" || again["STATUS"] != wantStatus {
				t.Errorf("after the reload %q, want READY=1 and STATUS=%q", again, wantStatus)
			}

			p.signal(syscall.SIGTERM)
			if stopping := n.next(t, 3); stopping["STOPPING"] != "1" || !strings.HasPrefix(stopping["STATUS"], "stopping") {
				t.Errorf("after SIGTERM %q, want STOPPING=1 and a STATUS saying so", stopping)
			}
			if code := p.wait(); code != 0 {
				t.Errorf("exited %d after SIGTERM, want 0", code)
			}
		})
	}
}

// TestSystemdActivationRefused checks the start failures of systemd:NAME
// addresses: each exits with a message that says what to fix.
func TestSystemdActivationRefused(t *testing.T) {
	keys := writeKeys(t, filepath.Join(t.TempDir(), "k.keys"), newKey(t, "sd"))
	exits := func(t *testing.T, cmd *exec.Cmd, code int, want ...string) {
		t.Helper()
		p := startProc(t, "hmacauth", cmd)
		if got := p.wait(); got != code {
			t.Fatalf("exit status %d, want %d; stderr:\n%s", got, code, p.logs())
		}
		for _, w := range want {
			if !strings.Contains(p.logs(), w) {
				t.Errorf("stderr lacks %q:\n%s", w, p.logs())
			}
		}
	}
	args := []string{"server", "-log-format", "json", "-listen", "systemd:listen", "-target", startEcho(t), "-keys", keys}
	t.Run("not activated", func(t *testing.T) {
		cmd := command(args...)
		cmd.Env = append(cmd.Env, "LISTEN_PID=", "LISTEN_FDS=")
		exits(t, cmd, exitFail, "systemd passed no socket to this process")
	})
	t.Run("another process's sockets", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		cmd := activated(t, []net.Listener{ln}, []string{"listen"}, nil, args...)
		cmd.Args[2] = `export LISTEN_PID=1; exec "$0" "$@"`
		exits(t, cmd, exitFail, "systemd passed no socket to this process", `LISTEN_PID is \"1\"`)
	})
	t.Run("name not passed", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		exits(t, activated(t, []net.Listener{ln}, []string{"hmacauth.socket"}, nil, args...), exitFail,
			`systemd passed no listening socket named \"listen\"`, "FileDescriptorName=listen")
	})
	t.Run("target", func(t *testing.T) {
		exits(t, command("server", "-listen", "127.0.0.1:0", "-target", "systemd:listen", "-keys", keys), exitUsage,
			"it cannot be a socket systemd passes")
	})
}
