package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
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
containing a "/". A -listen or -status ADDR may also be "systemd:NAME":
the listening socket systemd passed under NAME (socket activation; NAME
is the socket unit's FileDescriptorName=, see contrib/systemd). The key
file holds one key per line, "ID BASE64SECRET" (blank lines and #
comments allowed), must not be readable by other users (mode 0600 or
0640); make one with "hmacauth keygen -o FILE".
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
	statusPprof             bool          // serve /debug/pprof/ on the status server

	// Server: the PROXY header version sent to -target (0: none), and the
	// networks a PROXY header is read from (nil: none).
	proxyProtocol   byte
	acceptProxyFrom []netip.Prefix
	// connectProxy is the -connect-proxy of a client, nil when none is
	// given or NO_PROXY excludes the target (proxyBypassed).
	connectProxy  *connectProxy
	proxyBypassed bool
	noSandbox     bool

	// Client without -unsafe-listen: a socket systemd passes (-listen
	// systemd:NAME) must be on this host, which only the socket tells.
	localListenOnly bool
}

// tunnelFlags are the command line of server and client: the options, and
// the raw values that validate turns into options. A new flag is one field
// here (or in tunnelOptions), one line in register and, if it has bounds,
// one check in validate.
type tunnelFlags struct {
	tunnelOptions
	modeName     string
	keepAlive    time.Duration // -keepalive; validate sets tunnelOptions.keepAlive
	logFormat    string
	logLevel     string
	showVersion  bool
	unsafeTarget bool // server: allow a -target off this host
	unsafeListen bool // client: allow a -listen off this host
	// -proxy-protocol, -accept-proxy-protocol, -proxy-protocol-from;
	// validateProxy sets tunnelOptions.proxyProtocol and acceptProxyFrom.
	proxyProtocolName, proxyFrom string
	acceptProxy                  bool
	connectProxyURL              string
}

// register defines the flags of role r in fset, each stored into f.
func (f *tunnelFlags) register(fset *flag.FlagSet, r role) {
	o := &f.tunnelOptions
	if r == roleServer {
		fset.StringVar(&o.listen, "listen", "", "`ADDR` to accept hmacauth connections on (required)")
		fset.StringVar(&o.target, "target", "", "`ADDR` of the plain TCP service to forward to (required)")
		fset.BoolVar(&f.unsafeTarget, "unsafe-target", false, "allow a -target that is not on this host (loopback or a Unix socket): the forwarded connections cross the network unprotected")
	} else {
		fset.StringVar(&o.listen, "listen", "", "`ADDR` to accept plain local connections on (required)")
		fset.StringVar(&o.target, "target", "", "`ADDR` of the hmacauth server (required)")
		fset.BoolVar(&f.unsafeListen, "unsafe-listen", false, "allow a -listen that is not on this host (loopback or a Unix socket): whoever reaches it uses the key")
		fset.StringVar(&f.connectProxyURL, "connect-proxy", "", "reach the server through the HTTP proxy at `URL`, http://[user:password@]host:port, with CONNECT; credentials may come from "+proxyAuthEnv+"=user:password instead; a target that NO_PROXY lists is dialed directly")
	}
	fset.StringVar(&o.keyFile, "keys", "", "key `FILE` (required)")
	fset.StringVar(&f.modeName, "mode", "auth", "least protection after the handshake, `MODE`: auth (authenticate only; data in the clear, no overhead), integrity (MAC on every record) or sealed (encrypted); a connection runs at the stronger of the two sides' modes")
	fset.BoolVar(&o.forwardSecrecy, "fs", false, "forward secrecy: mix an ephemeral X25519 exchange into the session keys (used if either side asks)")
	fset.DurationVar(&o.keyShareLifetime, "key-share-lifetime", hmacauth.DefaultKeyShareLifetime, "with forward secrecy, how long one X25519 key share serves this side's handshakes before it is dropped; longer saves CPU, shorter narrows what a memory thief learns (see SECURITY.md); 0: a new key share per handshake")
	fset.IntVar(&o.maxConns, "max-conns", 100, "most connections forwarded at once; more wait in the listen backlog, which is logged at info at most every 10s (a server also runs at most this many handshakes at once)")
	if r == roleServer {
		// One client tunnel carries every connection of its host, so a
		// per-IP cap is off unless asked for.
		fset.IntVar(&o.maxPerIP, "max-handshakes-per-ip", 0, "most handshakes in flight from one client IP (for IPv6, one /64); more are closed at once (0: no cap)")
		fset.StringVar(&f.proxyProtocolName, "proxy-protocol", "", "send the target a PROXY protocol header of `VERSION` v1 or v2 with the client's address before any byte; v2 adds the authenticated key ID as TLV 0xE5 (see README)")
		fset.BoolVar(&f.acceptProxy, "accept-proxy-protocol", false, "read a PROXY protocol header (v1 or v2) from a TCP load balancer before the handshake (within -handshake-timeout), so that the per-IP cap, the logs and -proxy-protocol see the real client; needs -proxy-protocol-from")
		fset.StringVar(&f.proxyFrom, "proxy-protocol-from", "", "with -accept-proxy-protocol, the `NETWORKS` (CIDR or addresses, comma-separated) of the load balancers trusted to send the header; connections from elsewhere are refused")
	}
	fset.DurationVar(&o.handshakeTimeout, "handshake-timeout", hmacauth.DefaultHandshakeTimeout, "bound on one hmacauth handshake; with -accept-proxy-protocol, also on reading the PROXY header before it (a full bound of its own)")
	fset.DurationVar(&o.connectTimeout, "connect-timeout", 5*time.Second, "bound on connecting to -target; with -connect-proxy, on the connection to the proxy and the CONNECT exchange together")
	fset.DurationVar(&f.keepAlive, "keepalive", 15*time.Second, "TCP keepalive `PERIOD` on both ends; 0 turns keepalives off")
	fset.DurationVar(&o.drainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM or SIGINT, how long live connections may run before they are closed")
	fset.DurationVar(&o.watchKeys, "watch-keys", 0, "also reload the key file when it changes, checking every `PERIOD` (for files replaced by rename and Kubernetes secret volumes); 0: only on SIGHUP")
	fset.StringVar(&o.status, "status", "", "serve GET /_status (health, JSON; 200 or 503) and GET /metrics (Prometheus) on `ADDR` (host:port, a Unix socket, or systemd:NAME for a socket systemd passes); off by default")
	fset.BoolVar(&o.noSandbox, "no-sandbox", false, "do not restrict the process with Landlock (Linux) after start: by default it may read only the key file's directory (and everything below it) and a few system files, write nowhere, and connect over TCP only to the target's (or proxy's) port and, for a host name, port 53; Unix sockets and UDP are not restricted")
	fset.BoolVar(&o.statusPprof, "status-pprof", false, "also serve Go's profiler, /debug/pprof/, on the -status server (unauthenticated, as the rest of it; off by default)")
	fset.StringVar(&f.logFormat, "log-format", "text", "log `FORMAT` on standard error: text or json")
	fset.StringVar(&f.logLevel, "log-level", "info", "least `LEVEL` logged: debug (one line per connection), info, warn or error")
	fset.BoolVar(&f.showVersion, "version", false, "print the version and exit")
	fset.Usage = func() {
		h := roleHelp[r]
		fmt.Fprintf(fset.Output(), tunnelUsage, r, h[0], h[1])
		fset.PrintDefaults()
	}
}

// validate checks the parsed flags of role r and completes the options
// from the raw values. Its error is the usage error to print.
func (f *tunnelFlags) validate(r role) error {
	o := &f.tunnelOptions
	for _, fl := range []struct{ name, val string }{{"listen", o.listen}, {"target", o.target}, {"keys", o.keyFile}} {
		if fl.val == "" {
			return fmt.Errorf("-%s is required", fl.name)
		}
	}
	if network, _ := parseAddr(o.target); network == "systemd" {
		return fmt.Errorf("-target %s: a target is connected to, so it cannot be a socket systemd passes (systemd:NAME is for -listen and -status)", o.target)
	}
	if o.statusPprof && o.status == "" {
		return errors.New("-status-pprof serves on the -status server: give -status ADDR too")
	}
	o.localListenOnly = r == roleClient && !f.unsafeListen
	if msg := checkSafe(r, o, f.unsafeTarget, f.unsafeListen); msg != "" {
		return errors.New(msg)
	}
	var err error
	if o.mode, err = parseMode(f.modeName); err != nil {
		return fmt.Errorf("-mode: %w", err)
	}
	if err := f.validateProxy(r); err != nil {
		return err
	}
	switch {
	case o.maxConns < 1:
		return fmt.Errorf("-max-conns is %d; it must be at least 1", o.maxConns)
	case o.maxPerIP < 0:
		return fmt.Errorf("-max-handshakes-per-ip is %d; it must not be negative (0: no cap)", o.maxPerIP)
	case o.handshakeTimeout <= 0:
		return fmt.Errorf("-handshake-timeout is %v; it must be positive", o.handshakeTimeout)
	case o.connectTimeout <= 0:
		return fmt.Errorf("-connect-timeout is %v; it must be positive", o.connectTimeout)
	case o.keyShareLifetime < 0:
		return fmt.Errorf("-key-share-lifetime is %v; it must not be negative (0: a new key share per handshake)", o.keyShareLifetime)
	case o.drainTimeout < 0:
		return fmt.Errorf("-drain-timeout is %v; it must not be negative", o.drainTimeout)
	case o.watchKeys < 0:
		return fmt.Errorf("-watch-keys is %v; it must not be negative (0: reload only on SIGHUP)", o.watchKeys)
	case f.keepAlive < 0:
		return fmt.Errorf("-keepalive is %v; it must not be negative (0 turns keepalives off)", f.keepAlive)
	}
	if f.connectProxyURL != "" {
		if err := o.setConnectProxy(f.connectProxyURL, os.Getenv(proxyAuthEnv), noProxyEnv()); err != nil {
			return fmt.Errorf("-connect-proxy: %w", err)
		}
	}
	// Probes every period after a period of silence; the probe count stays
	// the system's (Count -1), which spares a system call per connection.
	o.keepAlive = net.KeepAliveConfig{Enable: f.keepAlive > 0, Idle: f.keepAlive, Interval: f.keepAlive, Count: -1}
	return nil
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
// The network "systemd" names a socket systemd passes (see listenOn).
func parseAddr(s string) (network, address string) {
	if name, ok := strings.CutPrefix(s, systemdPrefix); ok {
		return "systemd", name
	}
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
