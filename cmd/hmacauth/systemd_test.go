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
		f, err := ln.(interface{ File() (*os.File, error) }).File()
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
	// -accept-proxy-protocol takes a TCP socket systemd passes, and
	// refuses a Unix one, whose clients' networks cannot be checked.
	t.Run("accept-proxy-protocol", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ppKeys, cfg := ppKeys(t)
		pp := []string{"server", "-log-format", "json", "-log-level", "debug", "-listen", "systemd:listen", "-target", startEcho(t), "-keys", ppKeys,
			"-accept-proxy-protocol", "-proxy-protocol-from", "127.0.0.0/8"}
		p := startProc(t, "activated server", activated(t, []net.Listener{ln}, []string{"listen"}, nil, pp...))
		p.waitLog("listening", nil)
		ln.Close()
		c, _ := hmacDial(t, ln.Addr().String(), cfg, "PROXY TCP4 127.0.0.9 127.0.0.1 40009 443\r\n")
		checkEcho(t, c, "through a passed socket behind a balancer")
		p.waitLog("connection opened", func(r logRecord) bool { return r.str("remote") == "127.0.0.9:40009" })

		ul, err := net.Listen("unix", filepath.Join(shortDir(t), "s"))
		if err != nil {
			t.Fatal(err)
		}
		defer ul.Close()
		exits(t, activated(t, []net.Listener{ul}, []string{"listen"}, nil, pp...), exitFail,
			"-listen systemd:listen: the socket systemd passed is unix", "not TCP")
	})
	t.Run("target", func(t *testing.T) {
		exits(t, command("server", "-listen", "127.0.0.1:0", "-target", "systemd:listen", "-keys", keys), exitUsage,
			"it cannot be a socket systemd passes")
	})
}

// shortDir returns a new directory with a short path, removed at the end
// of the test: a Unix socket's path holds at most 108 bytes, and
// t.TempDir's can be longer.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// waitText waits for s in the process's standard error.
func (p *proc) waitText(s string) {
	p.t.Helper()
	timeout := time.After(bound)
	for !strings.Contains(p.logs(), s) {
		select {
		case <-p.more:
		case <-p.done:
			if strings.Contains(p.logs(), s) {
				return
			}
			p.t.Fatalf("%s exited (status %d) without writing %q; stderr:\n%s", p.name, p.exitCode, s, p.logs())
		case <-timeout:
			p.t.Fatalf("%s did not write %q within %v; stderr:\n%s", p.name, s, bound, p.logs())
		}
	}
}

// lookSystemd returns the path of a systemd tool, or skips the test:
// .ci/run installs the systemd package where it is missing.
func lookSystemd(t *testing.T, tool string) string {
	t.Helper()
	path, err := exec.LookPath(tool)
	if err != nil {
		t.Skipf("%s not found (Debian package systemd, which .ci/run installs): %v", tool, err)
	}
	return path
}

// TestSystemdSocketActivate runs a server tunnel under systemd's own
// socket activator, systemd-socket-activate, which listens on the -listen
// and -status Unix sockets, names them as FileDescriptorName= would, and
// execs the tunnel on the first connection, as systemd starts a service on
// its socket's first connection.
func TestSystemdSocketActivate(t *testing.T) {
	activate := lookSystemd(t, "systemd-socket-activate")
	dir := shortDir(t)
	listenSock, statusSock := filepath.Join(dir, "listen.sock"), filepath.Join(dir, "status.sock")
	keys := writeKeys(t, filepath.Join(dir, "k.keys"), newKey(t, "sd"))
	n := listenNotify(t)
	cmd := command("-l", listenSock, "-l", statusSock, "--fdname=listen:status", "-E", "NOTIFY_SOCKET="+n.path,
		"-E", "GORACE", binPath, // the child has only the variables named
		"server", "-log-format", "json", "-log-level", "debug",
		"-listen", "systemd:listen", "-status", "systemd:status", "-target", startEcho(t), "-keys", keys)
	cmd.Path, cmd.Args[0] = activate, activate
	p := startProc(t, "systemd-socket-activate", cmd)
	p.waitText("Listening on " + statusSock)

	// The first connection starts the tunnel, which then serves it.
	client := startTunnel(t, "client", "client", "-listen", "127.0.0.1:0", "-target", "unix:"+listenSock, "-keys", keys)
	c := dial(t, client.addr)
	checkEcho(t, c, "through the tunnel systemd-socket-activate started")
	if rec := p.waitLog("listening", nil); rec.str("addr") != listenSock {
		t.Errorf("the tunnel listens on %q, want the socket passed as \"listen\", %s", rec.str("addr"), listenSock)
	}
	if ready := n.next(t, 0); ready["READY"] != "1" || !strings.HasPrefix(ready["STATUS"], "server "+listenSock+" => ") {
		t.Errorf("first notification %q, want READY=1 and a STATUS naming the socket", ready)
	}
	if code, rep, body := statusOf(t, "unix:"+statusSock); code != http.StatusOK || !rep.OK {
		t.Errorf("/_status on the status socket passed: %d %s", code, body)
	}
	c.Close()
	p.signal(syscall.SIGTERM)
	if stopping := n.next(t, 1); stopping["STOPPING"] != "1" {
		t.Errorf("after SIGTERM %q, want STOPPING=1", stopping)
	}
	if code := p.wait(); code != 0 {
		t.Errorf("exited %d after SIGTERM, want 0", code)
	}
}

// TestSystemdUnits checks the unit files of contrib/systemd with
// systemd-analyze verify, instantiated as hmacauth@test, in a root of their
// own that holds the binary under test where ExecStart= looks for it: any
// warning fails the test.
func TestSystemdUnits(t *testing.T) {
	analyze := lookSystemd(t, "systemd-analyze")
	root := t.TempDir()
	units := filepath.Join(root, "etc", "systemd", "system")
	copyFile := func(dst, src string, perm os.FileMode) {
		t.Helper()
		b, err := os.ReadFile(src)
		if err == nil {
			err = os.MkdirAll(filepath.Dir(dst), 0o755)
		}
		if err == nil {
			err = os.WriteFile(dst, b, perm)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	copyFile(filepath.Join(root, "usr", "local", "bin", "hmacauth"), binPath, 0o755)
	copyFile(filepath.Join(root, "bin", "kill"), "/bin/kill", 0o755) // ExecReload=
	// The targets the units depend on.
	sys := "/usr/lib/systemd/system"
	ents, err := os.ReadDir(sys)
	if err != nil {
		t.Skipf("no system units to verify against in %s: %v", sys, err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".target") && e.Type().IsRegular() {
			copyFile(filepath.Join(root, sys, e.Name()), filepath.Join(sys, e.Name()), 0o644)
		}
	}
	var args []string
	for _, u := range []string{"hmacauth@.service", "hmacauth@.socket", "hmacauth-status@.socket"} {
		copyFile(filepath.Join(units, u), filepath.Join("..", "..", "contrib", "systemd", u), 0o644)
		inst := strings.Replace(u, "@", "@test", 1)
		if err := os.Symlink(u, filepath.Join(units, inst)); err != nil {
			t.Fatal(err)
		}
		args = append(args, inst)
	}
	out, err := exec.Command(analyze, append([]string{"verify", "--root=" + root}, args...)...).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
