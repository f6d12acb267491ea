//go:build linux

package main

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	pings   []time.Time         // when each WATCHDOG=1 message was read
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
				n.pings = append(n.pings, time.Now())
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

// flush returns every message sent before it was called, bare WATCHDOG=1
// left out: it sends one of its own and waits for that to come back
// (datagrams on a Unix socket keep their order).
func (n *notifySocket) flush(t *testing.T) []map[string]string {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("TEST_FLUSH=1")); err != nil {
		t.Fatal(err)
	}
	var msgs []map[string]string
	n.waitFor(t, "the test's own TEST_FLUSH=1", func() bool {
		i := slices.IndexFunc(n.msgs, func(m map[string]string) bool { return m["TEST_FLUSH"] == "1" })
		if i < 0 {
			return false
		}
		msgs = append(msgs, n.msgs[:i]...)
		return true
	})
	return msgs
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
	const watchdog = 300 * time.Millisecond // WATCHDOG_USEC
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
				[]string{"NOTIFY_SOCKET=" + n.path, "WATCHDOG_USEC=" + strconv.Itoa(int(watchdog/time.Microsecond))},
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
			// Pings every half WATCHDOG_USEC: their mean spacing, within
			// loose bounds that a loaded machine keeps (a late read
			// stretches one gap and shortens the next).
			var pings []time.Time
			n.waitFor(t, "five watchdog pings", func() bool {
				pings = slices.Clone(n.pings)
				return len(pings) >= 5
			})
			if mean := pings[len(pings)-1].Sub(pings[0]) / time.Duration(len(pings)-1); mean < watchdog/4 || mean > watchdog {
				t.Errorf("watchdog pings %v apart on average, want about half WATCHDOG_USEC (%v), between %v and %v",
					mean, watchdog/2, watchdog/4, watchdog)
			}

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
// warning fails the test. systemd-analyze security --offline then rates the
// service's exposure.
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
	// The exposure README.md states, 1.1 ("OK"): --threshold=11 fails
	// above it.
	out, err = exec.Command(analyze, "security", "--offline=true", "--threshold=11", "--root="+root, args[0]).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security --offline=true --threshold=11 %s: %v\n%s", args[0], err, out)
	}
}

// TestSystemdNotNotifiedFromTestEnv runs the tests as if under a
// Type=notify unit with a watchdog and passed sockets: the variables are
// in the test's own environment, and a child that command starts without
// setting them must not see them, or it would tell that service manager
// READY=1 and STOPPING=1 for a tunnel of the tests.
func TestSystemdNotNotifiedFromTestEnv(t *testing.T) {
	n := listenNotify(t)
	t.Setenv("NOTIFY_SOCKET", n.path)
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", "")
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_FDNAMES", "listen")
	t.Setenv("LISTEN_PID", "")
	keys := writeKeys(t, filepath.Join(t.TempDir(), "k.keys"), newKey(t, "sd"))
	p := startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", startEcho(t), "-keys", keys)
	p.signal(syscall.SIGTERM)
	if code := p.wait(); code != 0 {
		t.Fatalf("exited %d after SIGTERM, want 0", code)
	}
	n.mu.Lock()
	pings := len(n.pings)
	n.mu.Unlock()
	if msgs := n.flush(t); len(msgs) > 0 || pings > 0 {
		t.Errorf("a tunnel started without NOTIFY_SOCKET of its own notified the test's: %q and %d watchdog pings", msgs, pings)
	}
}

// TestSystemdStatusRefresh checks that STATUS= is sent again, on its own,
// when the live connection count changes, with the refresh period cut from
// 10 s to 50 ms in the tests' binary.
func TestSystemdStatusRefresh(t *testing.T) {
	keys := writeKeys(t, filepath.Join(t.TempDir(), "k.keys"), newKey(t, "sd"))
	server := startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", startEcho(t), "-keys", keys)
	n := listenNotify(t)
	cmd := command("client", "-log-format", "json", "-log-level", "debug",
		"-listen", "127.0.0.1:0", "-target", server.addr, "-keys", keys)
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+n.path, testingOnlyStatusRefreshEnv+"=50ms")
	p := startProc(t, "client", cmd)
	p.addr = p.waitLog("listening", nil).str("addr")
	prefix := "client " + p.addr + " => " + server.addr + ", "
	if ready := n.next(t, 0); ready["READY"] != "1" || ready["STATUS"] != prefix+"0 live connections" {
		t.Fatalf("first notification %q, want READY=1 and STATUS=%q", ready, prefix+"0 live connections")
	}
	// The next message that is a STATUS= alone, after message i.
	statusAfter := func(i int, want string) int {
		t.Helper()
		for ; ; i++ {
			msg := n.next(t, i+1)
			if len(msg) != 1 || msg["STATUS"] == "" {
				t.Fatalf("message %d is %q, want STATUS=%q alone", i+1, msg, want)
			}
			if msg["STATUS"] == want {
				return i + 1
			}
		}
	}
	c := dial(t, p.addr)
	checkEcho(t, c, "through the client")
	i := statusAfter(0, prefix+"1 live connections")
	c.Close()
	statusAfter(i, prefix+"0 live connections")
	p.signal(syscall.SIGTERM)
	if code := p.wait(); code != 0 {
		t.Errorf("exited %d after SIGTERM, want 0", code)
	}
}

// TestSystemdActivationAbstract passes a client an abstract Unix socket
// (ListenStream=@name), whose address "@name" is no host:port: it is on
// this host, and the client serves on it.
func TestSystemdActivationAbstract(t *testing.T) {
	keys := writeKeys(t, filepath.Join(t.TempDir(), "k.keys"), newKey(t, "sd"))
	server := startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", startEcho(t), "-keys", keys)
	name := "@hmacauth-test-" + strconv.Itoa(os.Getpid())
	ln, err := net.Listen("unix", name)
	if err != nil {
		t.Skipf("no abstract Unix sockets here: %v", err)
	}
	defer ln.Close()
	p := startProc(t, "activated client", activated(t, []net.Listener{ln}, []string{"listen"}, nil,
		"client", "-log-format", "json", "-log-level", "debug", "-listen", "systemd:listen", "-target", server.addr, "-keys", keys))
	if got := p.waitLog("listening", nil).str("addr"); got != name {
		t.Errorf("listening on %q, want the abstract socket passed, %q", got, name)
	}
	ln.Close()
	c, err := net.DialTimeout("unix", name, bound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(bound))
	checkEcho(t, c, "through a client on an abstract Unix socket")
}
