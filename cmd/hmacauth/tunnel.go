package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hmacauth/hmacauth"
)

// runTunnel runs the server or client command line args and returns the
// exit status.
func runTunnel(r role, args []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet(string(r), flag.ContinueOnError)
	fset.SetOutput(stderr)
	var f tunnelFlags
	f.register(fset, r)
	if code := parseFlags(fset, args); code >= 0 {
		return code
	}
	if f.showVersion {
		fmt.Fprintln(stdout, versionString())
		return exitOK
	}
	if err := f.validate(r); err != nil {
		return usageError(fset, "%v", err)
	}
	logger, err := newLogger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		return usageError(fset, "%v", err)
	}

	// Signals are caught before the "listening" record is written, so that
	// whoever waits for it may signal at once.
	sigc, stopSignals := notifySignals()
	defer stopSignals()
	logConnectProxy(logger.With("role", string(r)), &f.tunnelOptions)
	t, err := newTunnel(r, f.tunnelOptions, logger.With("role", string(r)))
	if err != nil {
		logger.Error("cannot start", "role", string(r), "err", err.Error())
		return exitFail
	}
	t.sandbox()
	return t.run(sigc)
}

// tunnel is a running server or client.
type tunnel struct {
	role   role
	opts   tunnelOptions
	log    *slog.Logger
	config *hmacauth.Config // its Keyring is refilled on SIGHUP
	// ln accepts the connections to forward: a *hmacauth.Listener for a
	// server, whose handshakes run concurrently under its caps (in flight,
	// per remote IP) and refusals are logged through the config's Logger.
	ln     net.Listener
	dialer net.Dialer
	// targetNet and targetAddr are where each connection is forwarded.
	targetNet, targetAddr string

	// capped is ln under -max-conns, which the accept loop accepts from.
	capped   *capListener
	stopping chan struct{} // closed when the graceful stop begins
	// ctx is cancelled when the remaining connections are closed by
	// force; it aborts dials in progress (handshakes end when closeAll
	// closes their connections) and ends the forwarding ones (pipe).
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup // one per connection goroutine
	nextID  atomic.Uint64
	serving atomic.Int64 // connection goroutines running
	waits   capWaits     // the accept loop waiting for a slot (capped)

	metrics *metrics
	keys    keyReloads    // the last load of the key file
	status  *statusServer // nil without -status

	// proxyIn reads the PROXY headers under ln (-accept-proxy-protocol);
	// nil without.
	proxyIn *proxyListener

	// sandboxDirs are the directories the sandbox lets the process read
	// (Linux); nil when it is not applied.
	sandboxDirs []string

	activated *activatedSockets // passed by systemd; nil unless an ADDR is systemd:NAME
	notify    *notifier         // tells systemd the tunnel's state

	mu sync.Mutex
	// conns are the connections being set up (dial, client handshake),
	// which closeAll closes; pipe ends the forwarding ones itself.
	conns map[net.Conn]struct{}
}

func newTunnel(r role, o tunnelOptions, log *slog.Logger) (*tunnel, error) {
	keys, err := hmacauth.LoadKeys(o.keyFile)
	if err != nil {
		return nil, err
	}
	ring, err := hmacauth.NewKeyring(keys...)
	if err != nil {
		return nil, err
	}
	t := &tunnel{
		role:     r,
		opts:     o,
		log:      log,
		dialer:   o.dialer(),
		stopping: make(chan struct{}),
		conns:    make(map[net.Conn]struct{}),
	}
	t.config = o.newConfig(ring, log)
	t.targetNet, t.targetAddr = parseAddr(o.target)
	t.ctx, t.cancel = context.WithCancel(context.Background())
	if o.usesActivation() {
		if t.activated, err = takeActivated(); err != nil {
			t.cancel()
			return nil, err
		}
	}
	if t.ln, err = t.listen(); err != nil {
		t.cancel()
		return nil, err
	}
	// A client stops accepting as the stop begins; a server goes on taking
	// what its Listener's Shutdown hands over until Accept fails, or until
	// the connections are closed by force.
	var quit <-chan struct{} = t.stopping
	if r == roleServer {
		quit = t.ctx.Done()
	}
	t.capped = &capListener{Listener: t.ln, slots: make(chan struct{}, o.maxConns), quit: quit,
		full: func() { t.waits.reached(t.log, t.opts.maxConns, t.live()) }}
	t.metrics = newMetrics(t)
	if t.proxyIn != nil {
		t.metrics.reg.MustRegister(t.proxyIn.collector())
	}
	t.keys.m = t.metrics
	t.keys.loaded("start", nil)
	if o.status != "" {
		if t.status, err = newStatusServer(t, o.status); err != nil {
			t.ln.Close()
			t.cancel()
			return nil, err
		}
		log.Info("serving /_status and /metrics", "addr", t.status.ln.Addr().String())
	}
	if t.activated != nil {
		t.activated.closeRest(log)
	}
	t.notify = newNotifier(t)
	log.Info("listening", "addr", t.ln.Addr().String(), "target", o.target,
		"mode", o.mode.String(), "fs", o.forwardSecrecy, "keys", ring.IDs(), "max_conns", o.maxConns)
	return t, nil
}

// defaultKeepAlive is the keepalive of a connection accepted by
// hmacauth.Listen: Go's default, which -keepalive 15s asks for too.
const defaultKeepAlive = 15 * time.Second

// listen listens on -listen: for a server, a *hmacauth.Listener.
func (t *tunnel) listen() (net.Listener, error) {
	network, address := parseAddr(t.opts.listen)
	if t.role == roleServer && network == "tcp" && t.opts.acceptProxyFrom == nil {
		// hmacauth.Listen also has the kernel defer each connection until
		// its ClientHello has arrived (TCP_DEFER_ACCEPT on Linux).
		ln, err := hmacauth.Listen(network, address, t.config)
		if err != nil {
			return nil, fmt.Errorf("listening on %s: %w", t.opts.listen, err)
		}
		return ln, nil
	}
	ln, err := t.listenOn("-listen", t.opts.listen)
	if err != nil || t.role == roleClient {
		return ln, err
	}
	if t.opts.acceptProxyFrom != nil {
		if _, ok := ln.Addr().(*net.TCPAddr); !ok {
			ln.Close()
			return nil, fmt.Errorf("-listen %s: the socket systemd passed is %s %s, not TCP, and -accept-proxy-protocol checks the source network of each connection: "+
				"give the socket unit a host:port ListenStream=", t.opts.listen, ln.Addr().Network(), ln.Addr())
		}
		t.proxyIn = newProxyListener(ln, t.opts.acceptProxyFrom, t.opts.handshakeTimeout, t.opts.maxConns, t.log)
		ln = t.proxyIn
	}
	hl, err := hmacauth.NewListener(ln, t.config)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return hl, nil
}

// listen listens on a command-line ADDR. A Unix socket file left behind by
// a process that is gone is replaced; one in use is not.
func listen(ctx context.Context, addr string, keepAlive net.KeepAliveConfig) (net.Listener, error) {
	network, address := parseAddr(addr)
	lc := net.ListenConfig{KeepAlive: keepAliveOff(keepAlive), KeepAliveConfig: keepAlive}
	ln, err := lc.Listen(ctx, network, address)
	if network == "unix" && errors.Is(err, syscall.EADDRINUSE) {
		if fi, serr := os.Lstat(address); serr == nil && fi.Mode().Type() == os.ModeSocket {
			c, derr := net.DialTimeout("unix", address, time.Second)
			if derr == nil {
				c.Close()
				return nil, fmt.Errorf("listening on %s: another process accepts connections there", address)
			}
			if errors.Is(derr, syscall.ECONNREFUSED) && os.Remove(address) == nil {
				ln, err = lc.Listen(ctx, network, address)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	return ln, nil
}
