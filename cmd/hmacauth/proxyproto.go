package main

// The PROXY protocol (https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt)
// on both sides of a server: -proxy-protocol sends a header to the target,
// -accept-proxy-protocol reads one from a trusted load balancer in front of
// the listen socket. github.com/pires/go-proxyproto writes and parses the
// headers; no parser of our own reads peer input here.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"
)

// tlvKeyID is the type of the PROXY protocol v2 TLV in which the server
// role hands its target the ID of the key the client proved: 0xE5, from
// the range the protocol leaves to custom use (0xE0-0xEF), apart from the
// types cloud load balancers put there (0xE0 Google Cloud, 0xEA AWS, 0xEE
// Azure). Its value is the key ID as written in the key file: 1 to 64
// bytes of printable ASCII (hmacauth.MaxKeyIDLen), no terminator, so the
// TLV is 0xE5, a two-byte big-endian length, then the ID. A header read by
// -accept-proxy-protocol is never passed on: its TLVs, this type included,
// are dropped, so the key ID the target sees is always the one this
// server checked.
const tlvKeyID proxyproto.PP2Type = 0xE5

// maxProxyHeader bounds a PROXY header read by -accept-proxy-protocol: the
// 16 fixed bytes of v2 and go-proxyproto's own bound on the rest
// (MaxV2HeaderSize, 4 KiB); a v1 header is at most 107 bytes.
const maxProxyHeader = 16 + 4096

// Refusals of -accept-proxy-protocol, before the hmacauth handshake.
var (
	// errProxyUntrusted: the connection does not come from a network of
	// -proxy-protocol-from.
	errProxyUntrusted = errors.New("PROXY protocol: connection not from a -proxy-protocol-from network; check that the load balancer's address is listed, or that clients do not bypass it")
	// errProxyHeader: the connection did not open with a valid PROXY
	// header in time (-handshake-timeout).
	errProxyHeader = errors.New("PROXY protocol: no valid PROXY header (v1 or v2) at the start of the connection within -handshake-timeout; check that the load balancer sends one (HAProxy send-proxy or send-proxy-v2, nginx proxy_protocol on)")
	// errProxySend: the header could not be written to the target.
	errProxySend = errors.New("PROXY protocol: cannot send the PROXY header to the target")
	// errProxyHealthCheck: a load balancer's health check, not a client:
	// a connection closed before its first byte, or closed after a header
	// with the LOCAL command (v2) or UNKNOWN (v1). Logged at debug, not
	// counted as a refusal.
	errProxyHealthCheck = errors.New("PROXY protocol: a load balancer's health check (closed before any byte, or after a LOCAL or UNKNOWN header)")
)

// Refusal reasons, the "reason" label of proxy_protocol_refused_total.
const (
	reasonProxyUntrusted = "untrusted" // errProxyUntrusted
	reasonProxyHeader    = "header"    // errProxyHeader
)

// parseProxyVersion parses a -proxy-protocol value: "" (off), v1 or v2.
func parseProxyVersion(s string) (byte, error) {
	switch s {
	case "":
		return 0, nil
	case "v1":
		return 1, nil
	case "v2":
		return 2, nil
	}
	return 0, fmt.Errorf("-proxy-protocol: unknown version %q; use v1 or v2", s)
}

// parseNetworks parses a -proxy-protocol-from value: networks in CIDR
// notation or single addresses, separated by commas.
func parseNetworks(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, fmt.Errorf("-proxy-protocol-from: %q is neither a network (10.0.0.0/8, fd00::/8) nor an address", f)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		if p.Addr().Is4In6() && p.Bits() < 96 {
			return nil, fmt.Errorf("-proxy-protocol-from: %q mixes IPv4-mapped and other IPv6 addresses; give the IPv4 network itself (::ffff:10.0.0.0/104 is 10.0.0.0/8)", f)
		}
		out = append(out, unmapPrefix(p).Masked())
	}
	if len(out) == 0 {
		return nil, errors.New("-proxy-protocol-from lists no network")
	}
	return out, nil
}

// unmapPrefix returns p with an IPv4-mapped IPv6 network
// (::ffff:10.0.0.0/104) as the IPv4 network it maps (10.0.0.0/8), since
// the addresses it is matched against are unmapped. A 4-in-6 prefix of
// fewer than 96 bits, which holds other IPv6 addresses too, is returned
// as it is.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

// validateProxy checks the PROXY protocol flags of role r and sets their
// options.
func (f *tunnelFlags) validateProxy(r role) error {
	o := &f.tunnelOptions
	var err error
	if o.proxyProtocol, err = parseProxyVersion(f.proxyProtocolName); err != nil {
		return err
	}
	switch {
	case r != roleServer:
		return nil
	case !f.acceptProxy && f.proxyFrom != "":
		return errors.New("-proxy-protocol-from is given without -accept-proxy-protocol")
	case !f.acceptProxy:
		return nil
	case f.proxyFrom == "":
		return errors.New("-accept-proxy-protocol needs -proxy-protocol-from: the networks of the load balancers trusted to send the header (anyone else could claim any address)")
	}
	// A socket systemd passes (systemd:NAME) is checked once taken
	// (tunnel.listen).
	if network, _ := parseAddr(o.listen); network != "tcp" && network != "systemd" {
		return errors.New("-accept-proxy-protocol needs a TCP -listen address: the source networks of a Unix socket cannot be checked")
	}
	o.acceptProxyFrom, err = parseNetworks(f.proxyFrom)
	return err
}

// sendProxyHeader writes to up, the connection to the target, the PROXY
// header of accepted (-proxy-protocol): its remote and local addresses, the
// client's as a load balancer in front saw them with
// -accept-proxy-protocol, and with v2 the key ID (tlvKeyID). A Unix
// socket's addresses make "PROXY UNKNOWN" (v1) or an AF_UNIX header (v2).
func (t *tunnel) sendProxyHeader(up, accepted net.Conn, keyID string) error {
	h := proxyproto.HeaderProxyFromAddrs(t.opts.proxyProtocol, accepted.RemoteAddr(), accepted.LocalAddr())
	if h.Version == 2 {
		if err := h.SetTLVs([]proxyproto.TLV{{Type: tlvKeyID, Value: []byte(keyID)}}); err != nil {
			return fmt.Errorf("%w: %w", errProxySend, err)
		}
	}
	b, err := h.Format()
	if err == nil {
		// A fresh socket's send buffer takes the header at once; the
		// deadline only bounds a target that is already gone.
		up.SetWriteDeadline(time.Now().Add(t.opts.connectTimeout))
		_, err = up.Write(b)
		up.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		return fmt.Errorf("%w: %w", errProxySend, err)
	}
	return nil
}

// proxyListener reads the PROXY header of each connection accepted from a
// TCP listener (-accept-proxy-protocol) and hands it on with the client's
// addresses from the header, for the hmacauth.Listener over it: its per-IP
// cap, its refusal logs and its handshake events see the client, not the
// load balancer.
//
// The header cannot be read lazily (go-proxyproto's Listener reads it on
// the first Read or RemoteAddr): the hmacauth.Listener's accept loop calls
// RemoteAddr for the per-IP cap as soon as Accept returns, and a peer that
// sends nothing would stall it. So each connection from a trusted network
// gets a goroutine of its own that reads the header, bounded by
// -handshake-timeout and maxProxyHeader; at most cap(slots) (-max-conns)
// do so at once, more wait in the listen backlog. Connections from other
// networks are closed at once, without a byte read. Refusals are logged at
// Info and counted by reason.
type proxyListener struct {
	inner   net.Listener
	trusted []netip.Prefix
	timeout time.Duration
	log     *slog.Logger
	slots   chan struct{}

	ready chan net.Conn // connections whose header was read
	// tempErrs hands a temporary error of the inner Accept (EMFILE) to
	// Accept, so that the hmacauth.Listener above backs off, counts it
	// (accept_retries_total) and logs it, as with a plain listener.
	tempErrs chan error
	ctx      context.Context
	cancel   context.CancelCauseFunc
	wg       sync.WaitGroup

	untrusted, badHeader atomic.Uint64 // refusals, by reason

	mu    sync.Mutex
	conns map[net.Conn]struct{} // reading their header; Close closes them
}

func newProxyListener(inner net.Listener, trusted []netip.Prefix, timeout time.Duration, maxConns int, log *slog.Logger) *proxyListener {
	l := &proxyListener{inner: inner, trusted: trusted, timeout: timeout, log: log,
		slots: make(chan struct{}, maxConns), ready: make(chan net.Conn), tempErrs: make(chan error), conns: make(map[net.Conn]struct{})}
	l.ctx, l.cancel = context.WithCancelCause(context.Background())
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// Accept returns the next connection whose PROXY header was read, a
// *proxiedConn, or a temporary error of the inner listener, which the
// caller retries after a backoff.
func (l *proxyListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case err := <-l.tempErrs:
		return nil, err
	case <-l.ctx.Done():
		return nil, context.Cause(l.ctx)
	}
}

// Close closes the inner listener and the connections whose header is
// being read, and waits for its goroutines.
func (l *proxyListener) Close() error {
	l.cancel(fmt.Errorf("accept on %s: %w", l.inner.Addr(), net.ErrClosed))
	err := l.inner.Close()
	l.mu.Lock()
	for c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
	return err
}

// Addr returns the inner listener's address.
func (l *proxyListener) Addr() net.Addr { return l.inner.Addr() }

// acceptLoop accepts connections and starts the reading of their header.
// A temporary error goes to Accept; the loop waits until it is taken, so
// that the caller's backoff paces the retries.
func (l *proxyListener) acceptLoop() {
	defer l.wg.Done()
	for {
		select {
		case l.slots <- struct{}{}:
		case <-l.ctx.Done():
			return
		}
		c, err := l.inner.Accept()
		if err != nil {
			<-l.slots
			if l.ctx.Err() != nil {
				return
			}
			if isTemporary(err) {
				select {
				case l.tempErrs <- err:
					continue
				case <-l.ctx.Done():
					return
				}
			}
			l.cancel(fmt.Errorf("accept on %s: %w", l.inner.Addr(), err))
			return
		}
		if !l.isTrusted(c.RemoteAddr()) {
			<-l.slots
			l.refuse(c, c.RemoteAddr(), errProxyUntrusted)
			continue
		}
		if !l.track(c, true) {
			<-l.slots
			c.Close()
			return
		}
		l.wg.Add(1)
		go l.readHeader(c)
	}
}

// isTrusted reports whether addr is in a -proxy-protocol-from network.
func (l *proxyListener) isTrusted(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	for _, p := range l.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// track adds c to (or, with !add, takes it off) the connections Close
// closes; it reports false once the listener is closing.
func (l *proxyListener) track(c net.Conn, add bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !add {
		delete(l.conns, c)
		return true
	}
	if l.ctx.Err() != nil {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

// readHeader reads c's PROXY header and hands c on.
func (l *proxyListener) readHeader(c net.Conn) {
	defer l.wg.Done()
	defer func() { <-l.slots }()
	pc, err := readProxyHeader(c, l.timeout)
	l.track(c, false)
	if err != nil {
		if l.ctx.Err() != nil {
			c.Close() // Close cut it: not a refusal
			return
		}
		l.refuse(c, c.RemoteAddr(), err)
		return
	}
	select {
	case l.ready <- pc:
	case <-l.ctx.Done():
		c.Close()
	}
}

// refuse closes c, refused for err, and logs and counts it; a health
// check is logged at debug only.
func (l *proxyListener) refuse(c net.Conn, remote net.Addr, err error) {
	c.Close()
	switch {
	case errors.Is(err, errProxyHealthCheck):
		l.log.Debug("load balancer health check", "remote", remote.String())
		return
	case errors.Is(err, errProxyUntrusted):
		l.untrusted.Add(1)
	default:
		l.badHeader.Add(1)
	}
	l.log.Info("refused connection before the handshake", "remote", remote.String(), "reason", err.Error())
}

// readProxyHeader reads the PROXY header at the start of c, within timeout
// and maxProxyHeader bytes, and returns c with the header's addresses. A
// header with the LOCAL command (a load balancer's health check) or
// UNKNOWN (v1) keeps c's own addresses; other headers must carry TCP
// addresses (a v2 header may also name UDP or Unix sockets, which no
// client of a TCP listener has). A connection closed before its first
// byte, or after a LOCAL or UNKNOWN header, is errProxyHealthCheck.
func readProxyHeader(c net.Conn, timeout time.Duration) (*proxiedConn, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil, fmt.Errorf("%w: not a TCP connection", errProxyHeader)
	}
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, fmt.Errorf("%w: %w", errProxyHeader, err)
	}
	// bufio reads past the header what has arrived (the start of the
	// ClientHello), which Read hands out first.
	lr := &io.LimitedReader{R: c, N: maxProxyHeader}
	br := bufio.NewReaderSize(lr, 256)
	h, err := proxyproto.Read(br)
	if err != nil {
		if lr.N == maxProxyHeader && (errors.Is(err, proxyproto.ErrNoProxyProtocol) || errors.Is(err, syscall.ECONNRESET)) {
			return nil, errProxyHealthCheck
		}
		return nil, fmt.Errorf("%w: %w", errProxyHeader, err)
	}
	pc := &proxiedConn{TCPConn: tc}
	switch {
	case h.Command.IsProxy() && (h.TransportProtocol == proxyproto.TCPv4 || h.TransportProtocol == proxyproto.TCPv6):
		pc.remote, pc.local = h.SourceAddr, h.DestinationAddr
	case h.Command.IsLocal(), h.TransportProtocol.IsUnspec():
		// A health check closes here; a client's bytes follow. Waiting
		// for the first of them costs nothing: the Listener reads it next.
		if _, err := br.Peek(1); errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return nil, errProxyHealthCheck
		}
	default:
		return nil, fmt.Errorf("%w: the header names a %s connection, not TCP; check the load balancer's configuration", errProxyHeader, transportName(h.TransportProtocol))
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("%w: %w", errProxyHeader, err)
	}
	if n := br.Buffered(); n > 0 {
		pc.early, _ = br.Peek(n)
	}
	return pc, nil
}

// transportName names a PROXY v2 address family and protocol for a
// refusal.
func transportName(p proxyproto.AddressFamilyAndProtocol) string {
	switch {
	case p.IsUnix() && p.IsStream():
		return "Unix stream"
	case p.IsUnix():
		return "Unix datagram"
	case p.IsDatagram():
		return "UDP"
	}
	return fmt.Sprintf("0x%02X", byte(p))
}

// proxiedConn is a TCP connection some of whose first bytes were read
// already: past a PROXY header (-accept-proxy-protocol), or past a
// proxy's answer to CONNECT (-connect-proxy). Read and WriteTo hand those
// bytes out first. remote and local, when set, are the client's addresses
// from the PROXY header. It keeps the *net.TCPConn's methods (CloseWrite,
// SetLinger, ReadFrom with splice) that the Listener and the forwarding
// use: abort resets it as a plain TCP connection.
type proxiedConn struct {
	*net.TCPConn
	remote, local net.Addr // nil: the TCPConn's
	early         []byte   // read already; Read returns them first
}

// Read hands out the bytes read already, then reads the connection.
func (c *proxiedConn) Read(b []byte) (int, error) {
	if len(c.early) > 0 {
		n := copy(b, c.early)
		c.early = c.early[n:]
		return n, nil
	}
	return c.TCPConn.Read(b)
}

// WriteTo copies the bytes read already, then the connection, to w, so
// that io.Copy does not skip them through the *net.TCPConn's WriteTo.
func (c *proxiedConn) WriteTo(w io.Writer) (int64, error) {
	var n int64
	if len(c.early) > 0 {
		m, err := w.Write(c.early)
		n, c.early = int64(m), c.early[m:]
		if err != nil {
			return n, err
		}
	}
	m, err := c.TCPConn.WriteTo(w)
	return n + m, err
}

// RemoteAddr returns the client's address from the PROXY header, or the
// connection's own.
func (c *proxiedConn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.TCPConn.RemoteAddr()
}

// LocalAddr returns the address the client connected to, from the PROXY
// header, or the connection's own.
func (c *proxiedConn) LocalAddr() net.Addr {
	if c.local != nil {
		return c.local
	}
	return c.TCPConn.LocalAddr()
}

// collector exports the refusals as proxy_protocol_refused_total.
func (l *proxyListener) collector() prometheus.Collector {
	return proxyCollector{l}
}

// proxyCollector is the Prometheus collector of a proxyListener's
// refusals: it reads its counters at each scrape.
type proxyCollector struct{ l *proxyListener }

var descProxyRefused = prometheus.NewDesc(metricsNS+"_proxy_protocol_refused_total",
	"Connections refused before the handshake by -accept-proxy-protocol, by reason: untrusted (not from a -proxy-protocol-from network), header (no valid PROXY header in time).",
	[]string{"reason"}, nil)

func (c proxyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descProxyRefused }

func (c proxyCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descProxyRefused, prometheus.CounterValue, float64(c.l.untrusted.Load()), reasonProxyUntrusted)
	ch <- prometheus.MustNewConstMetric(descProxyRefused, prometheus.CounterValue, float64(c.l.badHeader.Load()), reasonProxyHeader)
}
