package main

import (
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

// systemd support, through github.com/coreos/go-systemd (no protocol code
// of our own):
//
//   - Socket activation: "-listen systemd:NAME" and "-status systemd:NAME"
//     take the listening socket that systemd passed under NAME (the
//     socket unit's FileDescriptorName=; contrib/systemd names them
//     "listen" and "status") instead of opening one. Only these addresses
//     look at LISTEN_FDS; without them the command opens its sockets
//     itself, whatever the environment holds.
//   - Notification, when NOTIFY_SOCKET is set (Type=notify): READY=1 once
//     the listener is up and serving, RELOADING=1 with MONOTONIC_USEC
//     then READY=1 around a SIGHUP reload, STOPPING=1 when the drain
//     begins, a one-line STATUS= with READY=1 and STOPPING=1 (not with
//     RELOADING=1) and on its own every statusRefresh when it changed,
//     and WATCHDOG=1 every half
//     WATCHDOG_USEC when systemd asks for it (WATCHDOG_PID, if set, is
//     this process).

// systemdPrefix marks an ADDR that names a socket passed by systemd.
const systemdPrefix = "systemd:"

// statusRefresh is how often STATUS= is sent again when it changed (the
// live connection count, mostly).
const statusRefresh = 10 * time.Second

// testingOnlyStatusRefreshEnv, a duration, replaces statusRefresh in the
// tests' binary (systemd_testingonly.go, -tags testingonly), so that the
// tests see the refresh without waiting 10 s. Other builds do not read it.
const testingOnlyStatusRefreshEnv = "HMACAUTH_TESTING_ONLY_STATUS_REFRESH"

// activatedSockets are the listening sockets systemd passed, by name.
type activatedSockets struct {
	byName map[string][]net.Listener
	names  string // LISTEN_FDNAMES as passed, for error messages
}

// usesActivation reports whether an ADDR of o names a socket systemd
// passes.
func (o *tunnelOptions) usesActivation() bool {
	return strings.HasPrefix(o.listen, systemdPrefix) || strings.HasPrefix(o.status, systemdPrefix)
}

// takeActivated takes the sockets systemd passed to this process; it
// unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, as sd_listen_fds does,
// so that no child takes them for its own. Descriptors passed for another
// process (LISTEN_PID is not this one) are left alone.
func takeActivated() (*activatedSockets, error) {
	names, fds := os.Getenv("LISTEN_FDNAMES"), os.Getenv("LISTEN_FDS")
	if pid := os.Getenv("LISTEN_PID"); pid != strconv.Itoa(os.Getpid()) {
		return nil, fmt.Errorf("systemd passed no socket to this process (LISTEN_PID is %q, LISTEN_FDS %q; this process is %d): "+
			"start it from a service unit with Sockets= or a matching socket unit", pid, fds, os.Getpid())
	}
	byName, err := activation.ListenersWithNames()
	if err != nil {
		return nil, fmt.Errorf("taking the sockets systemd passed: %w", err)
	}
	return &activatedSockets{byName: byName, names: names}, nil
}

// take returns the socket passed under name.
func (a *activatedSockets) take(name string) (net.Listener, error) {
	lns := a.byName[name]
	switch len(lns) {
	case 1:
		delete(a.byName, name)
		return lns[0], nil
	case 0:
		return nil, fmt.Errorf("listening on %s%s: systemd passed no listening socket named %q (LISTEN_FDNAMES=%q); "+
			"set FileDescriptorName=%s in the socket unit, which must be a stream socket (ListenStream=)",
			systemdPrefix, name, name, a.names, name)
	}
	return nil, fmt.Errorf("listening on %s%s: systemd passed %d sockets named %q; give each ListenStream= a socket unit of its own with a distinct FileDescriptorName=",
		systemdPrefix, name, len(lns), name)
}

// closeRest closes the sockets no flag took, and logs them: the socket
// unit passes more than the command line uses.
func (a *activatedSockets) closeRest(log *slog.Logger) {
	for _, name := range slices.Sorted(maps.Keys(a.byName)) {
		for _, ln := range a.byName[name] {
			log.Warn("closing a socket systemd passed that no flag names", "name", name, "addr", ln.Addr().String())
			ln.Close()
		}
		delete(a.byName, name)
	}
}

// listenOn listens on the ADDR of flag: the socket systemd passed for
// "systemd:NAME", or a new one.
func (t *tunnel) listenOn(flag, addr string) (net.Listener, error) {
	name, ok := strings.CutPrefix(addr, systemdPrefix)
	if !ok {
		return listen(t.ctx, addr, t.opts.keepAlive)
	}
	ln, err := t.activated.take(name)
	if err != nil {
		return nil, err
	}
	if flag == "-listen" && t.opts.localListenOnly {
		if err := passedOnThisHost(ln.Addr()); err != nil {
			ln.Close()
			return nil, fmt.Errorf("-listen %s: the socket systemd passed is %v; whoever connects to a client tunnel uses its key, "+
				"so it listens only on this host: bind the socket unit to loopback, or give -unsafe-listen", addr, err)
		}
	}
	if tl, ok := ln.(*net.TCPListener); ok {
		// A socket from a file accepts with Go's default keepalive, not
		// -keepalive.
		return keepAliveListener{tl, t.opts.keepAlive}, nil
	}
	return ln, nil
}

// passedOnThisHost reports whether a socket systemd passed listens only on
// this host. The address's type decides, not its string: an abstract Unix
// socket's, "@name", is no host:port.
func passedOnThisHost(a net.Addr) error {
	switch a := a.(type) {
	case *net.UnixAddr:
		return nil
	case *net.TCPAddr:
		return onThisHost(a.String(), false)
	}
	return fmt.Errorf("%s %q, neither TCP nor a Unix socket", a.Network(), a.String())
}

// keepAliveListener sets the -keepalive configuration on each connection
// it accepts.
type keepAliveListener struct {
	*net.TCPListener
	cfg net.KeepAliveConfig
}

func (l keepAliveListener) Accept() (net.Conn, error) {
	c, err := l.AcceptTCP()
	if err != nil {
		return nil, err
	}
	c.SetKeepAliveConfig(l.cfg)
	return c, nil
}

// notifier tells systemd the tunnel's state (sd_notify) when it runs
// under a service manager that asked for it (NOTIFY_SOCKET); otherwise
// it does nothing.
type notifier struct {
	t        *tunnel
	on       bool          // NOTIFY_SOCKET is set
	watchdog time.Duration // WATCHDOG_USEC for this process; 0: none
	refresh  time.Duration // how often STATUS= is refreshed: statusRefresh

	mu         sync.Mutex
	lastStatus string
	failed     bool // a send failed: logged once
}

func newNotifier(t *tunnel) *notifier {
	n := &notifier{t: t, on: os.Getenv("NOTIFY_SOCKET") != "", refresh: statusRefresh}
	n.testingOnlySetRefresh()
	if !n.on {
		return n
	}
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		t.log.Warn("systemd watchdog not served: WATCHDOG_USEC is not valid", "err", err.Error())
	}
	n.watchdog = wd
	return n
}

// send sends state; the first failure is logged.
func (n *notifier) send(state string) {
	if !n.on {
		return
	}
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.mu.Lock()
		first := !n.failed
		n.failed = true
		n.mu.Unlock()
		if first {
			n.t.log.Warn("cannot notify systemd (NOTIFY_SOCKET); the service manager may think the tunnel is not ready or hung",
				"err", err.Error())
		}
	}
}

// summary is the one-line STATUS= of the tunnel.
func (n *notifier) summary(stopping bool) string {
	t := n.t
	s := fmt.Sprintf("%s %s => %s, %d live connections", t.role, t.ln.Addr(), t.opts.target, t.live())
	if stopping {
		s = "stopping, draining: " + s
	}
	if r := t.keys.last(); !r.OK {
		s += "; last key reload failed, old keys kept"
	}
	return s
}

// withStatus returns state followed by the STATUS= line, and records it.
func (n *notifier) withStatus(state string, stopping bool) string {
	s := n.summary(stopping)
	n.mu.Lock()
	n.lastStatus = s
	n.mu.Unlock()
	return state + "\nSTATUS=" + s
}

// ready says that the tunnel serves: at start, and after a reload.
func (n *notifier) ready() {
	if n.on {
		n.send(n.withStatus("READY=1", false))
	}
}

// reloading says that a reload begins; ready must follow.
func (n *notifier) reloading() {
	if !n.on {
		return
	}
	state := "RELOADING=1"
	if us, ok := monotonicUsec(); ok {
		// systemd 253+ wants the time of the request, on CLOCK_MONOTONIC,
		// to tell this reload from an earlier one.
		state += "\nMONOTONIC_USEC=" + strconv.FormatUint(us, 10)
	}
	n.send(state)
}

// stopping says that the drain begins.
func (n *notifier) stopping() {
	if n.on {
		n.send(n.withStatus("STOPPING=1", true))
	}
}

// run pings the watchdog and refreshes STATUS= until done is closed.
func (n *notifier) run(done <-chan struct{}) {
	if !n.on {
		return
	}
	var ping <-chan time.Time
	if n.watchdog > 0 {
		// Half the timeout, as sd_watchdog_enabled(3) advises.
		tk := time.NewTicker(n.watchdog / 2)
		defer tk.Stop()
		ping = tk.C
		n.send("WATCHDOG=1")
	}
	refresh := time.NewTicker(n.refresh)
	defer refresh.Stop()
	for {
		select {
		case <-done:
			return
		case <-ping:
			n.send("WATCHDOG=1")
		case <-refresh.C:
			stopping := false
			select {
			case <-n.t.stopping:
				stopping = true
			default:
			}
			s := n.summary(stopping)
			n.mu.Lock()
			changed := s != n.lastStatus
			n.lastStatus = s
			n.mu.Unlock()
			if changed {
				n.send("STATUS=" + s)
			}
		}
	}
}
