package main

// -connect-proxy: a client tunnel reaches its server through an HTTP proxy
// with CONNECT, its credentials from the URL or HMACAUTH_PROXY_AUTH, and
// NO_PROXY's exclusions. net/http reads the proxy's answer; the hmacauth
// handshake then runs through the tunnel end to end.

import (
	"bufio"
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"
)

// proxyAuthEnv names the environment variable that may hold the
// -connect-proxy credentials, "user:password": unlike the URL's userinfo,
// it does not show in the process list.
const proxyAuthEnv = "HMACAUTH_PROXY_AUTH"

// maxConnectResponse bounds the proxy's answer to CONNECT (status line and
// header): proxies send a few hundred bytes.
const maxConnectResponse = 16 << 10

// Refusals of the CONNECT exchange; errors.Is matches the errors of
// connectProxy.dial against them.
var (
	errConnectAuth      = errors.New("the proxy requires authentication")
	errConnectForbidden = errors.New("the proxy refused the CONNECT (403 Forbidden)")
	errConnectGateway   = errors.New("the proxy could not connect to the target")
	errConnectRefused   = errors.New("the proxy refused the CONNECT")
	errConnectNotHTTP   = errors.New("the proxy's answer is not HTTP")
	errConnectTooLarge  = errors.New("the proxy's answer to CONNECT is too large")
)

// connectProxy reaches the client's target through an HTTP proxy with
// CONNECT (RFC 9110, 9.3.6).
type connectProxy struct {
	addr string // host:port of the proxy
	// auth is the Proxy-Authorization value, "" for none; never logged.
	auth string
}

// parseConnectProxy parses a -connect-proxy URL, http://[user:password@]host:port.
// envAuth is the value of proxyAuthEnv.
func parseConnectProxy(raw, envAuth string) (*connectProxy, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url's error repeats the URL, which may hold a password.
		return nil, errors.New("not a URL; use http://host:port or http://user:password@host:port")
	}
	if u.User == nil {
		if _, rest, ok := strings.Cut(raw, "//"); ok && strings.Contains(rest, "@") {
			// url took the password's "/", "#" or "?" for the end of the
			// host: the rest of the URL, password included, is a path,
			// query or fragment, which no message may repeat.
			return nil, errors.New("the URL has an '@' but no user:password before the host: percent-encode / # ? in the password (%2F %23 %3F), or give the credentials in " + proxyAuthEnv)
		}
	}
	switch {
	case u.Scheme == "https":
		return nil, errors.New("an https:// proxy (TLS to the proxy) is not supported; use the proxy's http:// address (the tunnel's own traffic is authenticated end to end either way)")
	case u.Scheme != "http":
		return nil, fmt.Errorf("scheme %q: only http:// proxies are supported (HTTP CONNECT)", u.Scheme)
	case u.Port() == "" || u.Hostname() == "":
		return nil, fmt.Errorf("%q: give the proxy's host and port, as http://proxy.example:3128", u.Redacted())
	case u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("%q: a proxy URL has no path, query or fragment", u.Redacted())
	}
	p := &connectProxy{addr: u.Host}
	creds := ""
	if u.User != nil {
		pass, _ := u.User.Password()
		creds = u.User.Username() + ":" + pass
	}
	if envAuth != "" {
		if creds != "" {
			return nil, fmt.Errorf("credentials both in the URL and in %s; give them in one place", proxyAuthEnv)
		}
		if !strings.Contains(envAuth, ":") {
			return nil, fmt.Errorf("%s must be user:password", proxyAuthEnv)
		}
		creds = envAuth
	}
	if creds != "" {
		p.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(creds))
	}
	return p, nil
}

// dial connects to the proxy with d and asks it for a tunnel to target
// (host:port). The whole of it is bounded by d.Timeout and ctx.
func (p *connectProxy) dial(ctx context.Context, d *net.Dialer, target string) (net.Conn, error) {
	if d.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.Timeout)
		defer cancel()
	}
	c, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to the proxy %s: %w", p.addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	// A cancelled ctx (timeout, forced stop) wakes the exchange.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(aLongTimeAgo) })
	conn, err := p.connect(c, target)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		c.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The connection's deadline is ctx's, and may pass first.
			switch ctx.Err() {
			case nil, context.DeadlineExceeded:
				err = fmt.Errorf("%w: no complete answer from the proxy within -connect-timeout", context.DeadlineExceeded)
			default:
				err = fmt.Errorf("%w: the tunnel is stopping", ctx.Err())
			}
		}
		return nil, fmt.Errorf("CONNECT %s through the proxy %s: %w", target, p.addr, err)
	}
	c.SetDeadline(time.Time{})
	return conn, nil
}

// connect runs the CONNECT exchange on c, a connection to the proxy, and
// returns the tunnel: c itself, or a *proxiedConn that first hands out the
// bytes that came after the proxy's header.
func (p *connectProxy) connect(c net.Conn, target string) (net.Conn, error) {
	var req strings.Builder
	fmt.Fprintf(&req, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target)
	if p.auth != "" {
		fmt.Fprintf(&req, "Proxy-Authorization: %s\r\n", p.auth)
	}
	req.WriteString("\r\n")
	if _, err := io.WriteString(c, req.String()); err != nil {
		return nil, err
	}
	rest, err := readConnectResponse(c, p.auth != "")
	if err != nil {
		return nil, err
	}
	if len(rest) == 0 {
		return c, nil
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil, fmt.Errorf("the connection to the proxy is a %T, not TCP", c)
	}
	return &proxiedConn{TCPConn: tc, early: rest}, nil
}

// readConnectResponse reads the proxy's answer to CONNECT from r and
// returns the bytes read past its header, which belong to the tunnel, or
// the refusal. sentAuth says whether the request carried credentials.
func readConnectResponse(r io.Reader, sentAuth bool) ([]byte, error) {
	// The limit bounds what the reader may pull from the proxy, including
	// what it reads ahead; its buffer stays within that too.
	lr := &io.LimitedReader{R: r, N: maxConnectResponse}
	br := bufio.NewReaderSize(lr, 4096)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			return nil, err
		case lr.N == 0:
			return nil, fmt.Errorf("%w: more than %d bytes without the end of its header", errConnectTooLarge, maxConnectResponse)
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return nil, fmt.Errorf("%w: the proxy closed the connection before the end of its answer; is -connect-proxy the address of an HTTP proxy?", errConnectNotHTTP)
		}
		return nil, fmt.Errorf("%w (%v); is -connect-proxy the address of an HTTP proxy (not SOCKS, not TLS)?", errConnectNotHTTP, err)
	}
	// The body of a refusal is not read: the connection is closed.
	status := resp.Status
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		// A 2xx answer to CONNECT has no body (ReadResponse knows it):
		// whatever it read past the header is the target's.
		rest, _ := br.Peek(br.Buffered())
		return rest, nil
	case (code == http.StatusProxyAuthRequired || code == http.StatusUnauthorized) && sentAuth:
		// tinyproxy refuses wrong credentials with 401.
		return nil, fmt.Errorf("%w: it refused the credentials given (%s); check the user and password in -connect-proxy or %s", errConnectAuth, status, proxyAuthEnv)
	case code == http.StatusProxyAuthRequired:
		return nil, fmt.Errorf("%w (%s): give credentials as -connect-proxy http://user:password@host:port or in %s=user:password", errConnectAuth, status, proxyAuthEnv)
	case code == http.StatusForbidden:
		return nil, fmt.Errorf("%w: its rules do not allow this target; the proxy must allow CONNECT to the target's port (tinyproxy: ConnectPort; squid: SSL_ports and http_access)", errConnectForbidden)
	case code == http.StatusInternalServerError, code == http.StatusBadGateway, code == http.StatusServiceUnavailable, code == http.StatusGatewayTimeout:
		// tinyproxy answers an unreachable target with 500.
		return nil, fmt.Errorf("%w (%s): is the hmacauth server at -target listening, and reachable from the proxy's host?", errConnectGateway, status)
	}
	return nil, fmt.Errorf("%w: %s", errConnectRefused, status)
}

// noProxyEnv returns the NO_PROXY setting of the environment: no_proxy,
// or NO_PROXY when that is unset or empty, as curl and Go's
// golang.org/x/net/http/httpproxy read them.
func noProxyEnv() string {
	return cmp.Or(os.Getenv("no_proxy"), os.Getenv("NO_PROXY"))
}

// noProxy reports whether target (host:port) is excluded from the proxy by
// list, a NO_PROXY value: comma- or space-separated entries, each "*"
// (everything), an IP address or CIDR prefix, or a host name that matches
// itself and its subdomains ("example.com" and ".example.com" both match
// a.example.com; only the first matches example.com), any of them but the
// CIDR with ":port" to match that port only. This is the syntax of Go's
// net/http and curl. Unlike net/http, loopback targets go through the
// proxy unless listed: -connect-proxy is an explicit choice.
func noProxy(list, target string) bool {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return false
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	hostIP, ipErr := netip.ParseAddr(host)
	for _, e := range strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == ' ' }) {
		e = strings.ToLower(e)
		if e == "*" {
			return true
		}
		if pfx, err := netip.ParsePrefix(e); err == nil {
			if ipErr == nil && unmapPrefix(pfx).Contains(hostIP.Unmap()) {
				return true
			}
			continue
		}
		eHost, ePort := e, ""
		if h, p, err := net.SplitHostPort(e); err == nil {
			eHost, ePort = h, p
		}
		if ePort != "" && ePort != port {
			continue
		}
		eHost = strings.TrimPrefix(strings.TrimSuffix(eHost, "."), "*") // "*.example.com" is ".example.com"
		if ip, err := netip.ParseAddr(eHost); err == nil {
			if ipErr == nil && ip.Unmap() == hostIP.Unmap() {
				return true
			}
			continue
		}
		if d, ok := strings.CutPrefix(eHost, "."); ok {
			if strings.HasSuffix(host, "."+d) {
				return true
			}
			continue
		}
		if eHost != "" && (host == eHost || strings.HasSuffix(host, "."+eHost)) {
			return true
		}
	}
	return false
}

// setConnectProxy sets the -connect-proxy raw of a client, with the
// credentials of envAuth (proxyAuthEnv) and the exclusions of noProxyList.
func (o *tunnelOptions) setConnectProxy(raw, envAuth, noProxyList string) error {
	network, address := parseAddr(o.target)
	if network != "tcp" {
		return fmt.Errorf("-target %s is a Unix socket; a proxy reaches host:port targets only", o.target)
	}
	if _, _, err := net.SplitHostPort(address); err != nil {
		return fmt.Errorf("-target %q is not host:port: %w", o.target, err)
	}
	p, err := parseConnectProxy(raw, envAuth)
	if err != nil {
		return err
	}
	if noProxy(noProxyList, address) {
		o.proxyBypassed = true
		return nil
	}
	o.connectProxy = p
	return nil
}

// dialTarget connects to the target with d, through the -connect-proxy of
// a client that has one.
func (t *tunnel) dialTarget(ctx context.Context, d *net.Dialer) (net.Conn, error) {
	if p := t.opts.connectProxy; p != nil {
		return p.dial(ctx, d, t.targetAddr)
	}
	return d.DialContext(ctx, t.targetNet, t.targetAddr)
}

// logConnectProxy says how a client reaches its server, if through a proxy
// or excluded from one (never the credentials).
func logConnectProxy(log *slog.Logger, o *tunnelOptions) {
	switch {
	case o.connectProxy != nil:
		log.Info("reaching the server through an HTTP proxy (CONNECT)", "proxy", o.connectProxy.addr, "target", o.target, "proxy_auth", o.connectProxy.auth != "")
	case o.proxyBypassed:
		log.Info("NO_PROXY lists the target: connecting to it directly, not through -connect-proxy", "target", o.target)
	}
}
