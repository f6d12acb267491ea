package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hmacauth/hmacauth"
)

// role is the side of the tunnel a process runs.
type role string

const (
	// roleServer accepts hmacauth connections and forwards plain TCP.
	roleServer role = "server"
	// roleClient accepts plain connections and forwards through hmacauth.
	roleClient role = "client"
)

const tunnelUsage = `Usage: hmacauth %[1]s -listen ADDR -target ADDR -keys FILE [flags]

%[2]s

An ADDR is host:port, or a Unix socket path: "unix:PATH", or any value
containing a "/". The key file holds one key per line, "ID BASE64SECRET"
(blank lines and # comments allowed), must not be readable by other users
(mode 0600 or 0640); make one with "hmacauth keygen -o FILE".
%[3]s

Signals: SIGTERM or SIGINT stops accepting (a server still finishes the
handshakes in flight and forwards them), lets live connections finish
for up to -drain-timeout, then resets those still running (a stream that
had already ended gets its close record) and exits 0 (a second signal
does so at once); SIGHUP reloads the key file without touching live
connections (on a bad file, the old keys stay and an error is logged);
-watch-keys does the same whenever the file changes.

Flags:
`

var roleHelp = map[role][2]string{
	roleServer: {
		"Accepts hmacauth connections on -listen from clients that prove a key of\n" +
			"the key file, and forwards each as a plain connection to -target. In\n" +
			"integrity and sealed modes a stream cut short or tampered with resets\n" +
			"the plain connection.",
		"The server accepts every key in the file: to rotate, add the new key,\n" +
			"SIGHUP, move the clients to it, then drop the old key and SIGHUP again.",
	},
	roleClient: {
		"Accepts plain connections on -listen and forwards each through hmacauth\n" +
			"to the server at -target. No byte goes to a server that has not proven\n" +
			"the key; a refused connection is closed and the reason logged. In\n" +
			"integrity and sealed modes a stream from the server cut short or\n" +
			"tampered with resets the local connection.",
		"The client proves the first key of the file.",
	},
}

// tunnelOptions are the parsed flags of server and client.
type tunnelOptions struct {
	listen, target, keyFile string
	mode                    hmacauth.Mode
	forwardSecrecy          bool
	keyShareLifetime        time.Duration // 0: a new key share per handshake
	maxConns                int
	maxPerIP                int // server: handshakes in flight per client IP; 0 means no cap
	handshakeTimeout        time.Duration
	connectTimeout          time.Duration
	keepAlive               net.KeepAliveConfig
	drainTimeout            time.Duration
	watchKeys               time.Duration // poll the key file this often; 0: only on SIGHUP
	status                  string        // ADDR of the status server; "": none
}

func runTunnel(r role, args []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet(string(r), flag.ContinueOnError)
	fset.SetOutput(stderr)
	var (
		o         tunnelOptions
		mode      string
		keepAlive time.Duration
		logFormat string
		logLevel  string
		showVer   bool
		unsafeTgt bool // server: allow a -target off this host
		unsafeLst bool // client: allow a -listen off this host
	)
	if r == roleServer {
		fset.StringVar(&o.listen, "listen", "", "`ADDR` to accept hmacauth connections on (required)")
		fset.StringVar(&o.target, "target", "", "`ADDR` of the plain TCP service to forward to (required)")
	} else {
		fset.StringVar(&o.listen, "listen", "", "`ADDR` to accept plain local connections on (required)")
		fset.StringVar(&o.target, "target", "", "`ADDR` of the hmacauth server (required)")
	}
	if r == roleServer {
		fset.BoolVar(&unsafeTgt, "unsafe-target", false, "allow a -target that is not on this host (loopback or a Unix socket): the forwarded connections cross the network unprotected")
	} else {
		fset.BoolVar(&unsafeLst, "unsafe-listen", false, "allow a -listen that is not on this host (loopback or a Unix socket): whoever reaches it uses the key")
	}
	fset.StringVar(&o.keyFile, "keys", "", "key `FILE` (required)")
	fset.StringVar(&mode, "mode", "auth", "least protection after the handshake, `MODE`: auth (authenticate only; data in the clear, no overhead), integrity (MAC on every record) or sealed (encrypted); a connection runs at the stronger of the two sides' modes")
	fset.BoolVar(&o.forwardSecrecy, "fs", false, "forward secrecy: mix an ephemeral X25519 exchange into the session keys (used if either side asks)")
	fset.DurationVar(&o.keyShareLifetime, "key-share-lifetime", hmacauth.DefaultKeyShareLifetime, "with forward secrecy, how long one X25519 key share serves this side's handshakes before it is dropped; longer saves CPU, shorter narrows what a memory thief learns (see SECURITY.md); 0: a new key share per handshake")
	fset.IntVar(&o.maxConns, "max-conns", 100, "most connections forwarded at once; more wait in the listen backlog, which is logged at info at most every 10s (a server also runs at most this many handshakes at once)")
	if r == roleServer {
		// One client tunnel carries every connection of its host, so a
		// per-IP cap is off unless asked for.
		fset.IntVar(&o.maxPerIP, "max-handshakes-per-ip", 0, "most handshakes in flight from one client IP (for IPv6, one /64); more are closed at once (0: no cap)")
	}
	fset.DurationVar(&o.handshakeTimeout, "handshake-timeout", hmacauth.DefaultHandshakeTimeout, "bound on one hmacauth handshake")
	fset.DurationVar(&o.connectTimeout, "connect-timeout", 5*time.Second, "bound on connecting to -target")
	fset.DurationVar(&keepAlive, "keepalive", 15*time.Second, "TCP keepalive `PERIOD` on both ends; 0 turns keepalives off")
	fset.DurationVar(&o.drainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM or SIGINT, how long live connections may run before they are closed")
	fset.DurationVar(&o.watchKeys, "watch-keys", 0, "also reload the key file when it changes, checking every `PERIOD` (for files replaced by rename and Kubernetes secret volumes); 0: only on SIGHUP")
	fset.StringVar(&o.status, "status", "", "serve GET /_status (health, JSON; 200 or 503) and GET /metrics (Prometheus) on `ADDR` (host:port or a Unix socket); off by default")
	fset.StringVar(&logFormat, "log-format", "text", "log `FORMAT` on standard error: text or json")
	fset.StringVar(&logLevel, "log-level", "info", "least `LEVEL` logged: debug (one line per connection), info, warn or error")
	fset.BoolVar(&showVer, "version", false, "print the version and exit")
	fset.Usage = func() {
		h := roleHelp[r]
		fmt.Fprintf(fset.Output(), tunnelUsage, r, h[0], h[1])
		fset.PrintDefaults()
	}
	if code := parseFlags(fset, args); code >= 0 {
		return code
	}
	if showVer {
		fmt.Fprintln(stdout, versionString())
		return exitOK
	}
	for _, f := range []struct{ name, val string }{{"listen", o.listen}, {"target", o.target}, {"keys", o.keyFile}} {
		if f.val == "" {
			return usageError(fset, "-%s is required", f.name)
		}
	}
	if msg := checkSafe(r, &o, unsafeTgt, unsafeLst); msg != "" {
		return usageError(fset, "%s", msg)
	}
	var err error
	if o.mode, err = parseMode(mode); err != nil {
		return usageError(fset, "-mode: %v", err)
	}
	switch {
	case o.maxConns < 1:
		return usageError(fset, "-max-conns is %d; it must be at least 1", o.maxConns)
	case o.maxPerIP < 0:
		return usageError(fset, "-max-handshakes-per-ip is %d; it must not be negative (0: no cap)", o.maxPerIP)
	case o.handshakeTimeout <= 0:
		return usageError(fset, "-handshake-timeout is %v; it must be positive", o.handshakeTimeout)
	case o.connectTimeout <= 0:
		return usageError(fset, "-connect-timeout is %v; it must be positive", o.connectTimeout)
	case o.keyShareLifetime < 0:
		return usageError(fset, "-key-share-lifetime is %v; it must not be negative (0: a new key share per handshake)", o.keyShareLifetime)
	case o.drainTimeout < 0:
		return usageError(fset, "-drain-timeout is %v; it must not be negative", o.drainTimeout)
	case o.watchKeys < 0:
		return usageError(fset, "-watch-keys is %v; it must not be negative (0: reload only on SIGHUP)", o.watchKeys)
	case keepAlive < 0:
		return usageError(fset, "-keepalive is %v; it must not be negative (0 turns keepalives off)", keepAlive)
	}
	// Probes every period after a period of silence; the probe count stays
	// the system's (Count -1), which spares a system call per connection.
	o.keepAlive = net.KeepAliveConfig{Enable: keepAlive > 0, Idle: keepAlive, Interval: keepAlive, Count: -1}
	logger, err := newLogger(stderr, logFormat, logLevel)
	if err != nil {
		return usageError(fset, "%v", err)
	}

	// Signals are caught before the "listening" record is written, so that
	// whoever waits for it may signal at once.
	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigc)
	t, err := newTunnel(r, o, logger.With("role", string(r)))
	if err != nil {
		logger.Error("cannot start", "role", string(r), "err", err.Error())
		return exitFail
	}
	return t.run(sigc)
}

// parseMode parses a -mode value.
func parseMode(s string) (hmacauth.Mode, error) {
	for _, m := range []hmacauth.Mode{hmacauth.ModeAuth, hmacauth.ModeIntegrity, hmacauth.ModeSealed} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("unknown mode %q; use auth, integrity or sealed", s)
}

// newLogger returns a logger writing to w in format ("text" or "json") at
// the named level.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level: unknown level %q; use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format: unknown format %q; use text or json", format)
}

// parseAddr splits a command-line ADDR into a network and an address.
func parseAddr(s string) (network, address string) {
	if p, ok := strings.CutPrefix(s, "unix:"); ok {
		return "unix", p
	}
	if strings.Contains(s, "/") {
		return "unix", s
	}
	return "tcp", s
}

// newConfig returns the hmacauth configuration of the tunnel. Its keys come
// from ring, which SIGHUP refills.
func (o *tunnelOptions) newConfig(ring *hmacauth.Keyring, log *slog.Logger) *hmacauth.Config {
	return &hmacauth.Config{
		Keyring:          ring,
		Mode:             o.mode,
		ForwardSecrecy:   o.forwardSecrecy,
		KeyShareLifetime: cmp.Or(o.keyShareLifetime, -1),
		HandshakeTimeout: o.handshakeTimeout,
		Logger:           log,
		// Handshakes in flight and authenticated connections waiting
		// for a slot are bounded by -max-conns too.
		MaxHandshakes:      o.maxConns,
		MaxHandshakesPerIP: cmp.Or(o.maxPerIP, -1),
	}
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

	slots    chan struct{} // one per connection, -max-conns
	stopping chan struct{} // closed when the graceful stop begins
	// ctx is cancelled when the remaining connections are closed by
	// force; it aborts dials in progress (handshakes end when closeAll
	// closes their connections) and ends the forwarding ones (pipe).
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup // one per connection goroutine
	nextID  atomic.Uint64
	serving atomic.Int64 // connection goroutines running
	waits   capWaits     // the accept loop waiting for a slot

	metrics *metrics
	keys    keyReloads    // the last load of the key file
	status  *statusServer // nil without -status

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
		slots:    make(chan struct{}, o.maxConns),
		stopping: make(chan struct{}),
		conns:    make(map[net.Conn]struct{}),
	}
	t.config = o.newConfig(ring, log)
	t.targetNet, t.targetAddr = parseAddr(o.target)
	t.ctx, t.cancel = context.WithCancel(context.Background())
	if t.ln, err = t.listen(); err != nil {
		t.cancel()
		return nil, err
	}
	t.metrics = newMetrics(t)
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
	if t.role == roleServer && network == "tcp" {
		// hmacauth.Listen also has the kernel defer each connection until
		// its ClientHello has arrived (TCP_DEFER_ACCEPT on Linux).
		ln, err := hmacauth.Listen(network, address, t.config)
		if err != nil {
			return nil, fmt.Errorf("listening on %s: %w", t.opts.listen, err)
		}
		return ln, nil
	}
	ln, err := listen(t.ctx, t.opts.listen, t.opts.keepAlive)
	if err != nil || t.role == roleClient {
		return ln, err
	}
	hl, err := hmacauth.NewListener(ln, t.config)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return hl, nil
}

// dialer returns the dialer of the tunnel's outgoing TCP connections.
func (o *tunnelOptions) dialer() net.Dialer {
	return net.Dialer{Timeout: o.connectTimeout, KeepAlive: keepAliveOff(o.keepAlive), KeepAliveConfig: o.keepAlive}
}

// keepAliveOff returns the KeepAlive of a net.Dialer or net.ListenConfig
// with cfg: -1 when cfg is off, since net turns keepalives off only when
// both say so (a zero KeepAlive means Go's default, 15 s).
func keepAliveOff(cfg net.KeepAliveConfig) time.Duration {
	if cfg.Enable {
		return 0
	}
	return -1
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

// run serves until a stop signal and returns the exit status.
func (t *tunnel) run(sigc <-chan os.Signal) int {
	defer t.cancel()
	if t.status != nil {
		go t.status.serve()
		defer t.status.close()
	}
	if t.opts.watchKeys > 0 {
		ctx, stop := context.WithCancel(context.Background())
		watched := make(chan struct{})
		defer func() {
			stop()
			<-watched
		}()
		w := &hmacauth.KeyFileWatcher{Path: t.opts.keyFile, Keyring: t.config.Keyring, Interval: t.opts.watchKeys,
			Logger:  slog.New(newWatchObserver(t.log.Handler(), &t.keys)),
			OnError: func(err error) { t.keys.loaded("watch", err) }}
		go func() {
			defer close(watched)
			// Run logs the reloads and the later errors itself; it
			// returns an error only if the first read fails.
			if err := w.Run(ctx); err != nil && ctx.Err() == nil {
				t.keys.loaded("watch", err)
				t.log.Error("watching the key file failed; reload it with SIGHUP", "err", err.Error())
			}
		}()
	}
	acceptDone := make(chan error, 1)
	go func() { acceptDone <- t.acceptLoop() }()
	for {
		select {
		case sig := <-sigc:
			if sig == syscall.SIGHUP {
				t.reload()
				continue
			}
			return t.stop(sig, sigc, acceptDone)
		case err := <-acceptDone:
			t.log.Error("accepting connections failed; closing all connections", "err", err.Error())
			t.ln.Close()
			t.closeAll()
			t.wg.Wait()
			return exitFail
		}
	}
}

// stop stops gracefully: no new connections, live ones drain for up to
// -drain-timeout (or until a second stop signal), then the rest is closed.
// A server's handshakes in flight finish and are forwarded too, as are the
// connections its Listener had queued.
func (t *tunnel) stop(sig os.Signal, sigc <-chan os.Signal, acceptDone <-chan error) int {
	close(t.stopping)
	shutDone := make(chan struct{})
	if hl, ok := t.ln.(*hmacauth.Listener); ok {
		// closeAll cancels t.ctx, which ends the Shutdown as a Close.
		go func() {
			defer close(shutDone)
			hl.Shutdown(t.ctx)
		}()
	} else {
		t.ln.Close()
		close(shutDone)
	}
	t.log.Info("stopping: no longer accepting; draining live connections",
		"signal", sig.String(), "live", t.live(), "drain_timeout", t.opts.drainTimeout.String())
	drained := make(chan struct{})
	go func() {
		// The accept loop ends first: it is the only one to add to t.wg.
		<-acceptDone
		<-shutDone
		t.wg.Wait()
		close(drained)
	}()
	timer := time.NewTimer(t.opts.drainTimeout)
	defer timer.Stop()
	for {
		select {
		case <-drained:
			t.log.Info("stopped: all connections finished")
			return exitOK
		case s := <-sigc:
			if s == syscall.SIGHUP {
				t.reload()
				continue
			}
			t.log.Warn("second stop signal: closing live connections", "signal", s.String(), "live", t.live())
		case <-timer.C:
			t.log.Warn("drain timeout: closing live connections", "live", t.live())
		}
		t.closeAll()
		<-drained
		t.log.Info("stopped")
		return exitOK
	}
}

// reload replaces the keys with the key file's; live connections keep
// running, new handshakes use the new keys.
func (t *tunnel) reload() {
	keys, err := hmacauth.LoadKeys(t.opts.keyFile)
	if err == nil {
		err = t.config.Keyring.Set(keys...)
	}
	t.keys.loaded("sighup", err)
	if err != nil {
		t.log.Error("key reload failed; keeping the current keys", "err", err.Error())
		return
	}
	t.log.Info("keys reloaded", "keys", t.config.Keyring.IDs())
}

// acceptLoop accepts connections until the listener is closed, holding a
// slot for each so that at most -max-conns run at once.
func (t *tunnel) acceptLoop() error {
	// A client stops accepting as the stop begins; a server goes on taking
	// what its Listener's Shutdown hands over until Accept fails, or until
	// the connections are closed by force.
	var quit <-chan struct{} = t.stopping
	if t.role == roleServer {
		quit = t.ctx.Done()
	}
	var backoff time.Duration
	for {
		select {
		case t.slots <- struct{}{}:
		default:
			t.waits.reached(t.log, t.opts.maxConns, t.live())
			select {
			case t.slots <- struct{}{}:
			case <-quit:
				return nil
			}
		}
		c, err := t.ln.Accept()
		if err != nil {
			<-t.slots
			select {
			case <-t.stopping:
				return nil
			default:
			}
			if !isTemporary(err) {
				return err
			}
			// Out of file descriptors, say: wait for connections to end
			// rather than spin or quit.
			backoff = acceptBackoff(backoff)
			t.log.Warn("accept failed; retrying", "err", err.Error(), "retry_in", backoff.String())
			if !sleep(backoff, quit) {
				return nil
			}
			continue
		}
		backoff = 0
		t.wg.Add(1)
		t.serving.Add(1) // here, not in serve: live() counts it at once
		go t.serve(c)
	}
}

// live returns the number of open connections.
func (t *tunnel) live() int64 { return t.serving.Load() }

// track records c for closeAll. It returns false, having closed c, when
// closeAll has run (it cancels t.ctx before it takes t.mu).
func (t *tunnel) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ctx.Err() != nil {
		c.Close()
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *tunnel) untrack(c net.Conn) {
	t.handOff(c)
	c.Close()
}

// handOff takes conns off closeAll's list: pipe ends them itself (with a
// close record only for a stream that had ended), where closeAll's Close
// would send one for a stream it cuts.
func (t *tunnel) handOff(conns ...net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range conns {
		delete(t.conns, c)
	}
}

// closeAll aborts every dial in progress and closes every connection
// being set up, which ends the handshakes in progress too; cancelling t.ctx
// also has pipe end the connections it forwards.
func (t *tunnel) closeAll() {
	t.cancel()
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.conns {
		c.Close()
	}
}

// serve forwards one accepted connection.
func (t *tunnel) serve(accepted net.Conn) {
	defer func() { <-t.slots }()
	defer t.wg.Done()
	defer t.serving.Add(-1)
	if !t.track(accepted) {
		return
	}
	defer t.untrack(accepted)
	id, start := t.nextID.Add(1), time.Now()
	log := func(level slog.Level, msg string, attrs ...slog.Attr) {
		// Attributes are only formatted for records that are written: most
		// connections write none.
		if t.log.Enabled(context.Background(), level) {
			attrs = append([]slog.Attr{slog.Uint64("conn", id), slog.String("remote", accepted.RemoteAddr().String())}, attrs...)
			t.log.LogAttrs(context.Background(), level, msg, attrs...)
		}
	}

	var state hmacauth.ConnectionState
	dialFailed := "cannot connect to the server; closing the local connection"
	if t.role == roleClient {
		t.metrics.accepted.Inc()
		// The key the client is about to prove, for the logs before its
		// handshake has succeeded.
		if ids := t.config.Keyring.IDs(); len(ids) > 0 {
			state.KeyID = ids[0]
		}
	} else {
		hc := accepted.(*hmacauth.Conn) // the Listener ran the handshake
		state = hc.ConnectionState()
		if tc, ok := hc.NetConn().(*net.TCPConn); ok && t.opts.keepAlive.Idle != defaultKeepAlive {
			tc.SetKeepAliveConfig(t.opts.keepAlive)
		}
		dialFailed = "cannot connect to the target; closing the connection"
	}
	dialStart := time.Now()
	up, err := t.dialer.DialContext(t.ctx, t.targetNet, t.targetAddr)
	t.metrics.dialed(time.Since(dialStart), err)
	if err != nil {
		log(slog.LevelError, dialFailed, slog.String("key_id", state.KeyID), slog.Any("err", err))
		return
	}
	if !t.track(up) {
		return
	}
	defer t.untrack(up)
	front, back := accepted, up
	if t.role == roleClient {
		c := hmacauth.Client(up, t.config)
		// Bounded by -handshake-timeout; closeAll interrupts it by closing
		// up, so it needs no context (which would cost an AfterFunc).
		done := t.metrics.handshakeStarted()
		err := c.Handshake()
		done(err)
		if err != nil {
			log(slog.LevelError, "handshake with the server failed; closing the local connection", slog.String("key_id", state.KeyID), slog.Any("err", err))
			return
		}
		state = c.ConnectionState()
		back = c
	}
	t.handOff(accepted, up)
	log(slog.LevelDebug, "connection opened", slog.String("key_id", state.KeyID),
		slog.String("mode", state.Mode.String()), slog.Bool("fs", state.ForwardSecrecy))
	nUp, nDown, err := pipe(t.ctx, front, back)
	t.metrics.up.Add(float64(nUp))
	t.metrics.down.Add(float64(nDown))
	level, attrs := slog.LevelDebug, []slog.Attr{slog.String("key_id", state.KeyID), slog.Int64("bytes_up", nUp), slog.Int64("bytes_down", nDown),
		slog.Duration("duration", time.Since(start))}
	if err != nil {
		level, attrs = slog.LevelInfo, append(attrs, slog.Any("err", err))
	}
	log(level, "connection closed", attrs...)
}

// errStopped is pipe's error for a connection ended by a forced stop.
var errStopped = errors.New("closed by the stop (drain timeout or second signal)")

// pipe copies front to back and back to front until both directions end,
// passing on each end of stream as a half-close, then closes both. One of
// them is an *hmacauth.Conn, whose end of stream is a verified close record
// in a record mode: anything else (a cut, a tampered record, a reset, any
// error of either direction) aborts both connections (abort), so that the
// plain application sees an error and never takes a cut stream for a
// whole one. When ctx ends (a forced stop), pipe ends both itself
// (endStopped): a connection whose stream is cut short is reset, so that no
// application takes part of a stream for the whole of it, while an
// hmacauth connection whose outgoing stream had ended gets its close
// record, so that the peer tunnel does not report a cut. It returns the
// bytes copied each way and the first error.
//
// io.Copy lets the kernel splice between the sockets where the mode keeps
// bytes as they are (hmacauth.Conn implements io.ReaderFrom and
// io.WriterTo).
func pipe(ctx context.Context, front, back net.Conn) (up, down int64, err error) {
	var once sync.Once
	aborted, upDone := false, false
	fail := func(e error) {
		once.Do(func() {
			err = e
			if ctx.Err() == nil {
				// Also ends the other direction's copy.
				aborted = true
				abort(front)
				abort(back)
			}
		})
	}
	// A forced stop wakes both copies, reads and writes; the connections
	// are ended below once neither copy uses them.
	woken := make(chan struct{})
	stopWaking := context.AfterFunc(ctx, func() {
		defer close(woken)
		front.SetDeadline(aLongTimeAgo)
		back.SetDeadline(aLongTimeAgo)
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var e error
		if up, e = copyHalf(back, front); e != nil {
			fail(e)
		} else {
			upDone = true
		}
	}()
	var e error
	downDone := false
	if down, e = copyHalf(front, back); e != nil {
		fail(e)
	} else {
		downDone = true
	}
	<-done
	forced := false
	if !stopWaking() {
		<-woken
		forced = err != nil // both directions may have ended cleanly
	}
	switch {
	case aborted:
	case forced:
		err = errStopped
		endStopped(front, downDone)
		endStopped(back, upDone)
	default:
		front.Close()
		back.Close()
	}
	return up, down, err
}

// aLongTimeAgo is a deadline in the past, which wakes a blocked Read or
// Write at once.
var aLongTimeAgo = time.Unix(1, 0)

// abort closes c so that its peer reads an error, not an end of stream: a
// TCP connection with a reset (SO_LINGER 0). An *hmacauth.Conn is reset
// underneath, so that it sends no close record and the tunnel at the other
// end aborts its side too, then closed, which clears its secrets. A Unix
// socket has no reset: its peer reads an end of stream.
func abort(c net.Conn) {
	raw := c
	if hc, ok := c.(*hmacauth.Conn); ok {
		raw = hc.NetConn()
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	raw.Close()
	if raw != c {
		c.Close()
	}
}

// endStopped ends c at a forced stop. The stream written into c is cut
// unless finished (it had ended, and its end was passed on): then an
// *hmacauth.Conn is closed with its close record (bounded by hmacauth's own
// 5 s); otherwise c is aborted, so that the peer sees an error.
func endStopped(c net.Conn, finished bool) {
	if hc, ok := c.(*hmacauth.Conn); ok && finished {
		hc.SetWriteDeadline(time.Time{}) // pipe's wake-up deadline
		hc.Close()
		return
	}
	abort(c)
}

// copyHalf copies src to dst until src ends, then half-closes dst so the
// peer sees the end of stream too.
func copyHalf(dst, src net.Conn) (int64, error) {
	n, err := io.Copy(dst, src)
	if err != nil {
		return n, err
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		return n, cw.CloseWrite()
	}
	return n, nil
}
