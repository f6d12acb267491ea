package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hmacauth/hmacauth"
	"github.com/pires/go-proxyproto"
)

// loopbacks are the hosts the PROXY protocol tests run on: IPv4 and IPv6.
var loopbacks = []string{"127.0.0.1", "::1"}

// skipNoIPv6 skips a test on host ::1 where the machine has no IPv6
// loopback.
func skipNoIPv6(t *testing.T, host string) {
	t.Helper()
	if host != "::1" {
		return
	}
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback (::1): %v", err)
	}
	ln.Close()
}

// ppKeys writes a key file with one key, "pp-key", and returns its path and
// a client configuration that proves it.
func ppKeys(t *testing.T) (string, *hmacauth.Config) {
	t.Helper()
	k := newKey(t, "pp-key")
	return writeKeys(t, filepath.Join(t.TempDir(), "pp.keys"), k), &hmacauth.Config{Keys: []hmacauth.Key{k}}
}

// hmacDial connects to addr, sends prefix (a PROXY header, say) and runs
// the hmacauth handshake; it returns the connection and its plain socket.
func hmacDial(t *testing.T, addr string, cfg *hmacauth.Config, prefix string) (*hmacauth.Conn, net.Conn) {
	t.Helper()
	raw := dial(t, addr)
	if _, err := io.WriteString(raw, prefix); err != nil {
		t.Fatal(err)
	}
	c := hmacauth.Client(raw, cfg)
	if err := c.Handshake(); err != nil {
		t.Fatalf("handshake through %s: %v", addr, err)
	}
	return c, raw
}

// startHeaderReader starts a target on host that reads a PROXY header with
// go-proxyproto, sends it on the returned channel, then echoes.
func startHeaderReader(t *testing.T, host string) (string, <-chan *proxyproto.Header) {
	t.Helper()
	headers := make(chan *proxyproto.Header, 4)
	addr := startTarget(t, "tcp", net.JoinHostPort(host, "0"), func(c net.Conn) {
		br := bufio.NewReader(c)
		h, err := proxyproto.Read(br)
		if err != nil {
			t.Errorf("target: reading the PROXY header: %v", err)
			return
		}
		headers <- h
		io.Copy(c, br)
	})
	return addr, headers
}

func recvHeader(t *testing.T, headers <-chan *proxyproto.Header) *proxyproto.Header {
	t.Helper()
	select {
	case h := <-headers:
		return h
	case <-time.After(bound):
		t.Fatal("the target received no PROXY header")
		return nil
	}
}

// checkHeader checks that h is a PROXY header of version with the client
// address src and the server address dst, and with v2 the key ID TLV.
func checkHeader(t *testing.T, h *proxyproto.Header, version byte, src, dst net.Addr, keyID string) {
	t.Helper()
	if h.Version != version || !h.Command.IsProxy() {
		t.Errorf("header version %d, command %v; want %d, PROXY", h.Version, h.Command, version)
	}
	if h.SourceAddr.String() != src.String() || h.DestinationAddr.String() != dst.String() {
		t.Errorf("header says %v -> %v; want the client's %v -> %v", h.SourceAddr, h.DestinationAddr, src, dst)
	}
	tlvs, err := h.TLVs()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tlv := range tlvs {
		if tlv.Type == tlvKeyID {
			got = append(got, string(tlv.Value))
		}
	}
	want := []string{keyID}
	if version == 1 {
		want = nil
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("key ID TLVs (0x%02X): %q, want %q", byte(tlvKeyID), got, want)
	}
}

// TestProxyProtocolToTarget checks with go-proxyproto's reader that the
// target gets a PROXY header with the client's address before any byte,
// and with v2 the key ID.
func TestProxyProtocolToTarget(t *testing.T) {
	for _, v := range []byte{1, 2} {
		for _, host := range loopbacks {
			t.Run(fmt.Sprintf("v%d/%s", v, host), func(t *testing.T) {
				skipNoIPv6(t, host)
				target, headers := startHeaderReader(t, host)
				keys, cfg := ppKeys(t)
				server := startTunnel(t, "server", "server", "-listen", net.JoinHostPort(host, "0"), "-target", target, "-keys", keys,
					"-proxy-protocol", fmt.Sprintf("v%d", v))
				c, raw := hmacDial(t, server.addr, cfg, "")
				checkEcho(t, c, "after the header")
				checkHeader(t, recvHeader(t, headers), v, raw.LocalAddr(), raw.RemoteAddr(), "pp-key")
			})
		}
	}
}

// TestProxyProtocolUnixListen checks the header of a server that listens
// on a Unix socket: "PROXY UNKNOWN" with v1, an AF_UNIX header with the key
// ID with v2.
func TestProxyProtocolUnixListen(t *testing.T) {
	for _, v := range []byte{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			target, headers := startHeaderReader(t, "127.0.0.1")
			keys, cfg := ppKeys(t)
			sock := "unix:" + filepath.Join(t.TempDir(), "s.sock")
			startTunnel(t, "server", "server", "-listen", sock, "-target", target, "-keys", keys, "-proxy-protocol", fmt.Sprintf("v%d", v))
			c, _ := hmacDial(t, sock, cfg, "")
			checkEcho(t, c, "over a Unix socket")
			h := recvHeader(t, headers)
			want := proxyproto.UNSPEC
			if v == 2 {
				want = proxyproto.UnixStream
			}
			if h.Version != v || h.TransportProtocol != want {
				t.Errorf("header version %d, transport %v; want %d, %v", h.Version, h.TransportProtocol, v, want)
			}
			tlvs, _ := h.TLVs()
			if v == 2 && (len(tlvs) != 1 || tlvs[0].Type != tlvKeyID || string(tlvs[0].Value) != "pp-key") {
				t.Errorf("v2 TLVs %+v, want one key ID TLV with pp-key", tlvs)
			}
		})
	}
}

// freeAddr returns host:port with a port free at the time of the call, for
// programs that cannot report the port they were given.
func freeAddr(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// program returns the path of a third-party program, or skips the test.
func program(t *testing.T, name string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Skipf("%s is not installed (.ci/run installs it with apt-get): skipping the test against a real %s", name, name)
	return ""
}

// startProgram runs cmd until the end of the test and waits until addr
// accepts connections.
func startProgram(t *testing.T, cmd *exec.Cmd, addr string) {
	t.Helper()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(bound):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", cmd.Path, out.String())
		}
	})
	// The program tells nothing when it listens: try until it accepts,
	// bounded.
	deadline := time.Now().Add(bound)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-exited:
			t.Fatalf("%s exited (%v) before listening on %s:\n%s", cmd.Path, err, addr, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not listen on %s after %v", cmd.Path, addr, bound)
		}
	}
}

// httpThrough sends an HTTP/1.0 GET on c and returns the response body.
func httpThrough(t *testing.T, c net.Conn) string {
	t.Helper()
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: target\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the response: %v (got %q)", err, resp)
	}
	head, body, ok := strings.Cut(string(resp), "\r\n\r\n")
	if !ok || !strings.Contains(head, " 200 ") {
		t.Fatalf("response %q, want a 200", resp)
	}
	return strings.TrimSpace(body)
}

// wantAddr is how nginx and HAProxy print the client address src: "IP PORT".
func wantAddr(src net.Addr) string {
	a := src.(*net.TCPAddr)
	return a.IP.String() + " " + strconv.Itoa(a.Port)
}

// TestProxyProtocolNginx checks that nginx, listening with proxy_protocol,
// takes the server's v1 and v2 headers and reports the client's address
// and port ($proxy_protocol_addr, $proxy_protocol_port).
func TestProxyProtocolNginx(t *testing.T) {
	nginx := program(t, "nginx")
	for _, v := range []string{"v1", "v2"} {
		for _, host := range loopbacks {
			t.Run(v+"/"+host, func(t *testing.T) {
				skipNoIPv6(t, host)
				dir := t.TempDir()
				addr := freeAddr(t, host)
				conf := fmt.Sprintf(`worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 64; }
http {
	access_log %[1]s/access.log;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen %[2]s proxy_protocol;
		location / {
			default_type text/plain;
			return 200 "$proxy_protocol_addr $proxy_protocol_port\n";
		}
	}
}
`, dir, addr)
				if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o600); err != nil {
					t.Fatal(err)
				}
				startProgram(t, exec.Command(nginx, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;"), addr)
				keys, cfg := ppKeys(t)
				server := startTunnel(t, "server", "server", "-listen", net.JoinHostPort(host, "0"), "-target", addr, "-keys", keys, "-proxy-protocol", v)
				c, raw := hmacDial(t, server.addr, cfg, "")
				if got, want := httpThrough(t, c), wantAddr(raw.LocalAddr()); got != want {
					t.Errorf("nginx saw the client as %q, want %q", got, want)
				}
			})
		}
	}
}

// haproxyDefaults is the start of every HAProxy configuration here.
const haproxyDefaults = `global
	maxconn 64
defaults
	timeout connect 5s
	timeout client 30s
	timeout server 30s
`

// startHAProxy runs HAProxy with the configuration conf in the foreground
// and waits until addr accepts connections.
func startHAProxy(t *testing.T, haproxy, conf, addr string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(haproxyDefaults+conf), 0o600); err != nil {
		t.Fatal(err)
	}
	startProgram(t, exec.Command(haproxy, "-f", path, "-db"), addr)
}

// TestProxyProtocolHAProxyAccepts checks that HAProxy, binding with
// accept-proxy, takes the server's v1 and v2 headers and reports the
// client's address and port (src, src_port).
func TestProxyProtocolHAProxyAccepts(t *testing.T) {
	haproxy := program(t, "haproxy")
	for _, v := range []string{"v1", "v2"} {
		for _, host := range loopbacks {
			t.Run(v+"/"+host, func(t *testing.T) {
				skipNoIPv6(t, host)
				addr := freeAddr(t, host)
				startHAProxy(t, haproxy, fmt.Sprintf(`frontend target
	mode http
	bind %s accept-proxy
	http-request return status 200 content-type text/plain lf-string "%%[src] %%[src_port]\n"
`, addr), addr)
				keys, cfg := ppKeys(t)
				server := startTunnel(t, "server", "server", "-listen", net.JoinHostPort(host, "0"), "-target", addr, "-keys", keys, "-proxy-protocol", v)
				c, raw := hmacDial(t, server.addr, cfg, "")
				if got, want := httpThrough(t, c), wantAddr(raw.LocalAddr()); got != want {
					t.Errorf("HAProxy saw the client as %q, want %q", got, want)
				}
			})
		}
	}
}

// TestProxyProtocolBehindHAProxy puts HAProxy, sending a PROXY header
// (send-proxy, send-proxy-v2), in front of a server with
// -accept-proxy-protocol: the server's logs and the header it passes on to
// the target (read by go-proxyproto) show the client, not HAProxy.
func TestProxyProtocolBehindHAProxy(t *testing.T) {
	haproxy := program(t, "haproxy")
	for _, send := range []string{"send-proxy", "send-proxy-v2"} {
		for _, host := range loopbacks {
			t.Run(send+"/"+host, func(t *testing.T) {
				skipNoIPv6(t, host)
				target, headers := startHeaderReader(t, host)
				keys, cfg := ppKeys(t)
				server := startTunnel(t, "server", "server", "-listen", net.JoinHostPort(host, "0"), "-target", target, "-keys", keys,
					"-accept-proxy-protocol", "-proxy-protocol-from", "127.0.0.1/32,::1", "-proxy-protocol", "v2")
				front := freeAddr(t, host)
				startHAProxy(t, haproxy, fmt.Sprintf(`listen lb
	mode tcp
	bind %s
	server tunnel %s %s
`, front, server.addr, send), front)
				c, raw := hmacDial(t, front, cfg, "")
				checkEcho(t, c, "behind a load balancer")
				checkHeader(t, recvHeader(t, headers), 2, raw.LocalAddr(), raw.RemoteAddr(), "pp-key")
				server.waitLog("connection opened", func(r logRecord) bool { return r.str("remote") == raw.LocalAddr().String() })
			})
		}
	}
}

// TestAcceptProxyProtocol checks -accept-proxy-protocol with headers
// written here: the per-IP cap and the logs go by the header's address;
// a peer that sends nothing does not hold up others; connections from
// other networks and without a valid header are refused, logged and
// counted.
func TestAcceptProxyProtocol(t *testing.T) {
	target, headers := startHeaderReader(t, "127.0.0.1")
	keys, cfg := ppKeys(t)
	// The handshake timeout (which bounds the header too) is longer than
	// any wait here: a connection that waits for a silent one fails.
	server := startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", target, "-keys", keys,
		"-accept-proxy-protocol", "-proxy-protocol-from", "127.0.0.0/8", "-proxy-protocol", "v2",
		"-max-handshakes-per-ip", "1", "-handshake-timeout", "1h", "-status", "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(server.addr)
	v1 := func(src string, srcPort int) string {
		return fmt.Sprintf("PROXY TCP4 %s 127.0.0.1 %d %s\r\n", src, srcPort, port)
	}

	// A peer that connects and sends nothing stays open throughout.
	silent := dial(t, server.addr)
	defer silent.Close()
	// Two connections whose headers claim 127.0.0.2 and that send no
	// ClientHello: the per-IP cap of 1 refuses one of them by the
	// header's address.
	for i := range 2 {
		io.WriteString(dial(t, server.addr), v1("127.0.0.2", 40001+i))
	}
	shed := server.waitLog("hmacauth: refused connection", func(r logRecord) bool {
		return strings.HasPrefix(r.str("remote"), "127.0.0.2:") && strings.Contains(r.str("reason"), "MaxHandshakesPerIP")
	})
	t.Logf("shed by the header's address: %v", shed)
	// Another address is not capped, and is not held up by the silent
	// peer or the handshake in flight; the target sees it too.
	c, _ := hmacDial(t, server.addr, cfg, v1("127.0.0.3", 40003))
	checkEcho(t, c, "from behind the load balancer")
	src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3), Port: 40003}
	dst, _ := net.ResolveTCPAddr("tcp", server.addr)
	checkHeader(t, recvHeader(t, headers), 2, src, dst, "pp-key")
	server.waitLog("connection opened", func(r logRecord) bool { return r.str("remote") == "127.0.0.3:40003" })

	// A 0xE5 TLV from the load balancer is dropped: the target gets the
	// key this server checked, once.
	src6 := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 4), Port: 40004}
	forged := proxyproto.HeaderProxyFromAddrs(2, src6, dst)
	if err := forged.SetTLVs([]proxyproto.TLV{{Type: tlvKeyID, Value: []byte("forged-key")}}); err != nil {
		t.Fatal(err)
	}
	c, _ = hmacDial(t, server.addr, cfg, string(formatHeader(t, forged)))
	checkEcho(t, c, "with a TLV of the balancer's")
	checkHeader(t, recvHeader(t, headers), 2, src6, dst, "pp-key")

	// Health checks of the balancer, a connection closed at once and one
	// closed after a LOCAL header: logged at debug, neither refused nor
	// counted, by this listener or the handshake's.
	hc := dial(t, server.addr)
	hc.Close()
	local := dial(t, server.addr)
	localAddr := local.LocalAddr().String()
	local.Write(formatHeader(t, &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL}))
	local.Close()
	server.waitLog("load balancer health check", func(r logRecord) bool { return r.str("remote") == localAddr && r.str("level") == "DEBUG" })
	if rs := server.find("hmacauth: refused connection", func(r logRecord) bool { return r.str("remote") == localAddr }); len(rs) > 0 {
		t.Errorf("a health check with a LOCAL header was logged as a refusal: %v", rs)
	}

	// No valid header: refused before the handshake, logged and counted.
	bad := dial(t, server.addr)
	checkRefused(t, bad)
	server.waitLog("refused connection before the handshake", func(r logRecord) bool {
		return strings.Contains(r.str("reason"), "no valid PROXY header")
	})
	m := scrape(t, server.statusAddr())
	if got := m.value(metricsNS+"_proxy_protocol_refused_total", "reason", reasonProxyHeader); got != 1 {
		t.Errorf("proxy_protocol_refused_total{reason=header} = %v, want 1", got)
	}

	// Not from a trusted network: refused without a byte read.
	other := startTunnel(t, "other", "server", "-listen", "127.0.0.1:0", "-target", target, "-keys", keys,
		"-accept-proxy-protocol", "-proxy-protocol-from", "::1/128", "-status", "127.0.0.1:0")
	checkRefused(t, dial(t, other.addr))
	other.waitLog("refused connection before the handshake", func(r logRecord) bool {
		return strings.Contains(r.str("reason"), "not from a -proxy-protocol-from network")
	})
	m = scrape(t, other.statusAddr())
	if got := m.value(metricsNS+"_proxy_protocol_refused_total", "reason", reasonProxyUntrusted); got != 1 {
		t.Errorf("proxy_protocol_refused_total{reason=untrusted} = %v, want 1", got)
	}
}

// readHeaderOf sends data, then a half-close if closeAfter, over loopback
// TCP and runs readProxyHeader on the accepted end; it returns its result
// and the sending end.
func readHeaderOf(t *testing.T, data []byte, closeAfter bool) (*proxiedConn, net.Conn, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := dial(t, ln.Addr().String())
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	if closeAfter {
		c.(*net.TCPConn).CloseWrite()
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	pc, err := readProxyHeader(s, bound)
	return pc, c, err
}

func formatHeader(t *testing.T, h *proxyproto.Header) []byte {
	t.Helper()
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReadProxyHeader checks what readProxyHeader takes from a header: the
// TCP addresses of a PROXY header; the balancer's own address with LOCAL
// (v2) or UNKNOWN (v1); a refusal of a header that names UDP or Unix
// sockets; a health check for a connection closed before its first byte
// or right after a LOCAL header.
func TestReadProxyHeader(t *testing.T) {
	src := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 40000}
	dst := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 443}
	local := &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL}
	unknown := []byte("PROXY UNKNOWN\r\n")
	for _, c := range []struct {
		name       string
		data       []byte
		closeAfter bool
		want       error
		balancer   bool // RemoteAddr is the sender's own
	}{
		{name: "tcp4", data: formatHeader(t, proxyproto.HeaderProxyFromAddrs(2, src, dst))},
		{name: "local", data: append(formatHeader(t, local), "hello"...), balancer: true},
		{name: "unknown", data: append(unknown, "hello"...), balancer: true},
		{name: "udp", data: formatHeader(t, proxyproto.HeaderProxyFromAddrs(2, &net.UDPAddr{IP: src.IP, Port: 1}, &net.UDPAddr{IP: dst.IP, Port: 2})), want: errProxyHeader},
		{name: "unix", data: formatHeader(t, proxyproto.HeaderProxyFromAddrs(2, &net.UnixAddr{Net: "unix", Name: "/a"}, &net.UnixAddr{Net: "unix", Name: "/b"})), want: errProxyHeader},
		{name: "unixgram", data: formatHeader(t, proxyproto.HeaderProxyFromAddrs(2, &net.UnixAddr{Net: "unixgram", Name: "/a"}, &net.UnixAddr{Net: "unixgram", Name: "/b"})), want: errProxyHeader},
		{name: "closed at once", closeAfter: true, want: errProxyHealthCheck},
		{name: "local then closed", data: formatHeader(t, local), closeAfter: true, want: errProxyHealthCheck},
		{name: "unknown then closed", data: unknown, closeAfter: true, want: errProxyHealthCheck},
	} {
		t.Run(c.name, func(t *testing.T) {
			pc, sender, err := readHeaderOf(t, c.data, c.closeAfter)
			if c.want != nil {
				if !errors.Is(err, c.want) {
					t.Fatalf("readProxyHeader: %v, want %v", err, c.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			wantRemote, wantLocal := src.String(), dst.String()
			if c.balancer {
				wantRemote, wantLocal = sender.LocalAddr().String(), sender.RemoteAddr().String()
			}
			if pc.RemoteAddr().String() != wantRemote || pc.LocalAddr().String() != wantLocal {
				t.Errorf("addresses %v -> %v, want %v -> %v", pc.RemoteAddr(), pc.LocalAddr(), wantRemote, wantLocal)
			}
		})
	}
}

// TestParseNetworks checks that an IPv4-mapped network of
// -proxy-protocol-from matches the IPv4 addresses it maps, as they are
// matched unmapped, and that one that also holds other IPv6 addresses is
// refused.
func TestParseNetworks(t *testing.T) {
	nets, err := parseNetworks("::ffff:10.0.0.0/104, ::ffff:192.0.2.1, fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	l := &proxyListener{trusted: nets}
	for addr, want := range map[string]bool{"10.1.2.3": true, "11.1.2.3": false, "192.0.2.1": true, "192.0.2.2": false, "fd00::1": true, "::ffff:10.9.9.9": true} {
		if got := l.isTrusted(&net.TCPAddr{IP: net.ParseIP(addr), Port: 1}); got != want {
			t.Errorf("%s trusted by %v: %v, want %v", addr, nets, got, want)
		}
	}
	if _, err := parseNetworks("::ffff:0:0/90"); err == nil || !strings.Contains(err.Error(), "IPv4-mapped") {
		t.Errorf("parseNetworks(::ffff:0:0/90): %v, want a refusal of the mixed network", err)
	}
}

// TestProxyProtocolFlags checks the refusals of the PROXY protocol flags.
func TestProxyProtocolFlags(t *testing.T) {
	keys, _ := ppKeys(t)
	base := []string{"server", "-listen", "127.0.0.1:0", "-target", "127.0.0.1:1", "-keys", keys}
	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{[]string{"-proxy-protocol", "v3"}, `unknown version "v3"`},
		{[]string{"-accept-proxy-protocol"}, "needs -proxy-protocol-from"},
		{[]string{"-proxy-protocol-from", "127.0.0.1"}, "without -accept-proxy-protocol"},
		{[]string{"-accept-proxy-protocol", "-proxy-protocol-from", "localhost"}, "neither a network"},
		{[]string{"-accept-proxy-protocol", "-proxy-protocol-from", " , "}, "lists no network"},
	} {
		r := runBin(t, append(base, tc.flags...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d and %q", describe(tc.flags), r.code, r.stderr, exitUsage, tc.want)
		}
	}
	r := runBin(t, "server", "-h")
	for _, flag := range []string{"-proxy-protocol", "-accept-proxy-protocol", "-proxy-protocol-from"} {
		if !strings.Contains(r.stderr, "\n  "+flag+" ") && !strings.Contains(r.stderr, "\n  "+flag+"\n") {
			t.Errorf("server -h does not list %s", flag)
		}
	}
	r = runBin(t, "client", "-listen", "127.0.0.1:0", "-target", "127.0.0.1:1", "-keys", keys, "-proxy-protocol", "v1")
	if r.code != exitUsage || !strings.Contains(r.stderr, "not defined") {
		t.Errorf("client -proxy-protocol: exit %d, stderr %q; want a usage error", r.code, r.stderr)
	}
}

// FuzzReadProxyHeader feeds readProxyHeader (go-proxyproto's parser and
// the proxiedConn around it) arbitrary bytes over loopback TCP: it either
// refuses with errProxyHeader or returns a connection whose bytes, through
// Read or through WriteTo, are exactly those after a header of at most
// maxProxyHeader bytes that go-proxyproto parses alone too.
func FuzzReadProxyHeader(f *testing.F) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	// Seeds besides testdata/fuzz: each kind of header go-proxyproto
	// writes, with bytes after it.
	tcp4 := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1}
	tcp6 := &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 2}
	for _, h := range []*proxyproto.Header{
		proxyproto.HeaderProxyFromAddrs(1, tcp4, tcp4),
		proxyproto.HeaderProxyFromAddrs(1, tcp6, tcp6),
		proxyproto.HeaderProxyFromAddrs(2, tcp4, tcp4),
		proxyproto.HeaderProxyFromAddrs(2, tcp6, tcp6),
		proxyproto.HeaderProxyFromAddrs(2, &net.UDPAddr{IP: tcp4.IP, Port: 1}, &net.UDPAddr{IP: tcp4.IP, Port: 1}),
		proxyproto.HeaderProxyFromAddrs(2, &net.UnixAddr{Net: "unix", Name: "/a"}, &net.UnixAddr{Net: "unix", Name: "/b"}),
		{Version: 2, Command: proxyproto.LOCAL},
	} {
		if h.Version == 2 {
			h.SetTLVs([]proxyproto.TLV{{Type: tlvKeyID, Value: []byte("forged")}})
		}
		b, err := h.Format()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append(b, "HMAC"...))
		f.Add(b[:len(b)-1])
	}
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		// A reset at the end leaves no TIME_WAIT behind to use up the
		// ephemeral ports over many runs.
		defer c.Close()
		defer c.(*net.TCPConn).SetLinger(0)
		wrote := make(chan error, 1)
		go func() {
			_, err := c.Write(data)
			c.(*net.TCPConn).CloseWrite()
			wrote <- err
		}()
		defer func() { <-wrote }()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		pc, err := readProxyHeader(s, 5*time.Second)
		if err != nil {
			if !errors.Is(err, errProxyHeader) && !errors.Is(err, errProxyHealthCheck) {
				t.Fatalf("refusal %v is neither errProxyHeader nor errProxyHealthCheck", err)
			}
			return
		}
		s.SetReadDeadline(time.Now().Add(bound))
		var rest bytes.Buffer
		if len(data)%2 == 0 {
			_, err = io.Copy(&rest, pc) // WriteTo
		} else {
			_, err = io.Copy(&rest, struct{ io.Reader }{pc}) // Read
		}
		if err != nil {
			t.Fatal(err)
		}
		n := len(data) - rest.Len()
		if n < 0 || n > maxProxyHeader || !bytes.Equal(data[n:], rest.Bytes()) {
			t.Fatalf("after a header of %d bytes the connection gave %q; the input was %q", n, rest.Bytes(), data)
		}
		if _, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(data[:n]))); err != nil {
			t.Fatalf("the %d header bytes %q do not parse alone: %v", n, data[:n], err)
		}
	})
}

// emfileListener fails its first n Accepts with EMFILE, as a process out
// of file descriptors does, then accepts from the TCP listener inside.
type emfileListener struct {
	net.Listener
	n atomic.Int32
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.n.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestProxyListenerTemporaryErrors checks that a temporary accept error
// under -accept-proxy-protocol reaches the hmacauth.Listener, which backs
// off, counts it (accept_retries_total) and goes on serving.
func TestProxyListenerTemporaryErrors(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	flaky := &emfileListener{Listener: inner}
	flaky.n.Store(2)
	trusted, _ := parseNetworks("127.0.0.0/8")
	pl := newProxyListener(flaky, trusted, bound, 4, slog.New(slog.DiscardHandler))
	k := newKey(t, "emfile")
	hl, err := hmacauth.NewListener(pl, &hmacauth.Config{Keys: []hmacauth.Key{k}})
	if err != nil {
		pl.Close()
		t.Fatal(err)
	}
	defer hl.Close()
	accepted := make(chan error, 1)
	go func() {
		c, err := hl.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	c, _ := hmacDial(t, inner.Addr().String(), &hmacauth.Config{Keys: []hmacauth.Key{k}}, "PROXY TCP4 192.0.2.1 192.0.2.2 40000 443\r\n")
	c.Close()
	if err := <-accepted; err != nil {
		t.Fatalf("Accept after the temporary errors: %v", err)
	}
	if got := hl.Stats().AcceptRetries; got != 2 {
		t.Errorf("AcceptRetries = %d, want 2 (the EMFILE errors of the inner listener)", got)
	}
}
