package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hmacauth/hmacauth"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// statusAddr returns the address a tunnel serves -status on, from its log.
func (p *proc) statusAddr() string {
	p.t.Helper()
	return p.waitLog("serving /_status and /metrics", nil).str("addr")
}

// get fetches path from a -status address (host:port or a Unix socket).
func get(t testing.TB, addr, path string) (int, []byte) {
	t.Helper()
	network, address := parseAddr(addr)
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: bound}
	resp, err := c.Get("http://status" + path)
	if err != nil {
		t.Fatalf("GET %s on %s: %v", path, addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s on %s: reading the body: %v", path, addr, err)
	}
	return resp.StatusCode, body
}

// scrape fetches and parses /metrics.
func scrape(t testing.TB, addr string) families {
	t.Helper()
	code, body := get(t, addr, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: status %d, body %q", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	return families{t, fams}
}

type families struct {
	t    testing.TB
	fams map[string]*dto.MetricFamily
}

// value returns the value of the series of metric name with the labels
// given as name, value pairs: a counter's or gauge's value, or a
// histogram's sample count.
func (f families) value(name string, labels ...string) float64 {
	f.t.Helper()
	fam, ok := f.fams[name]
	if !ok {
		f.t.Fatalf("metric %s missing", name)
	}
next:
	for _, m := range fam.GetMetric() {
		for i := 0; i < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	f.t.Fatalf("metric %s has no series %v", name, labels)
	return 0
}

// tunnelMetrics are the metrics both roles export.
var tunnelMetrics = []string{
	"hmacauth_tunnel_connections_accepted_total", "hmacauth_tunnel_connections_refused_total",
	"hmacauth_tunnel_handshakes_in_flight", "hmacauth_tunnel_connections_live", "hmacauth_tunnel_bytes_total",
	"hmacauth_tunnel_handshake_duration_seconds", "hmacauth_tunnel_target_dial_failures_total",
	"hmacauth_tunnel_target_dial_duration_seconds", "hmacauth_tunnel_key_reloads_total",
	"hmacauth_tunnel_build_info", "hmacauth_tunnel_max_conns", "hmacauth_tunnel_max_conns_waits_total",
	"go_goroutines", "process_cpu_seconds_total",
}

// delta checks that metric name (with labels) moved by want between two
// scrapes.
func delta(t *testing.T, who string, before, after families, want float64, name string, labels ...string) {
	t.Helper()
	if got := after.value(name, labels...) - before.value(name, labels...); got != want {
		t.Errorf("%s: %s%v moved by %v, want %v", who, name, labels, got, want)
	}
}

// TestStatusMetrics scrapes both tunnels' /metrics (the server's on TCP,
// the client's on a Unix socket) while connections run and after, and
// checks that each counter moved by exactly what the test did.
func TestStatusMetrics(t *testing.T) {
	dir := t.TempDir()
	target := startEcho(t)
	key := newKey(t, "metrics")
	keys := writeKeys(t, filepath.Join(dir, "k.keys"), key)
	server := startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", target, "-keys", keys, "-status", "127.0.0.1:0")
	client := startTunnel(t, "client", "client", "-listen", "127.0.0.1:0", "-target", server.addr, "-keys", keys,
		"-status", "unix:"+filepath.Join(dir, "status.sock"))
	sAddr, cAddr := server.statusAddr(), client.statusAddr()
	s0, c0 := scrape(t, sAddr), scrape(t, cAddr)
	for _, name := range tunnelMetrics {
		s0.value(name)
		c0.value(name)
	}
	if v := s0.value("hmacauth_tunnel_build_info", "role", "server"); v != 1 {
		t.Errorf("build_info is %v, want 1", v)
	}

	// One connection is open while the tunnels are scraped.
	first := dial(t, client.addr)
	checkEcho(t, first, "first")
	s1, c1 := scrape(t, sAddr), scrape(t, cAddr)
	for who, f := range map[string]families{"server": s1, "client": c1} {
		if v := f.value("hmacauth_tunnel_connections_live"); v != 1 {
			t.Errorf("%s: connections_live %v with one connection open, want 1", who, v)
		}
	}
	delta(t, "server", s0, s1, 1, "hmacauth_tunnel_connections_accepted_total")
	delta(t, "client", c0, c1, 1, "hmacauth_tunnel_connections_accepted_total")
	first.Close()

	sent := int64(len("first"))
	for i, n := range []int64{1000, 70000} {
		c := dial(t, client.addr)
		transfer(t, c, n, uint64(i))
		c.Close()
		sent += n
	}
	// Refused by the server: a plain client (protocol) and a wrong key (auth).
	checkRefused(t, dial(t, server.addr))
	wrong := mustKeyring(t, newKey(t, key.ID)) // another secret
	if c, err := hmacauth.Dial("tcp", server.addr, &hmacauth.Config{Keyring: wrong}); err == nil {
		c.Close()
		t.Fatal("a wrong key was accepted")
	}

	// Both tunnels count a connection's bytes as it ends, the server its
	// refusals as their handshakes end (a refused connection is drained
	// first): wait for them, then check that nothing counted more.
	var s2, c2 families
	for deadline := time.Now().Add(bound); ; {
		s2, c2 = scrape(t, sAddr), scrape(t, cAddr)
		refused := s2.value("hmacauth_tunnel_connections_refused_total", "reason", reasonAuth) - s0.value("hmacauth_tunnel_connections_refused_total", "reason", reasonAuth) +
			s2.value("hmacauth_tunnel_connections_refused_total", "reason", reasonProtocol) - s0.value("hmacauth_tunnel_connections_refused_total", "reason", reasonProtocol)
		if s2.value("hmacauth_tunnel_connections_live")+c2.value("hmacauth_tunnel_connections_live") == 0 &&
			s2.value("hmacauth_tunnel_handshakes_in_flight") == 0 && refused >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for who, fs := range map[string][2]families{"server": {s0, s2}, "client": {c0, c2}} {
		before, after := fs[0], fs[1]
		delta(t, who, before, after, 3, "hmacauth_tunnel_connections_accepted_total")
		delta(t, who, before, after, 3, "hmacauth_tunnel_handshake_duration_seconds")
		delta(t, who, before, after, float64(sent), "hmacauth_tunnel_bytes_total", "direction", "up")
		delta(t, who, before, after, float64(sent), "hmacauth_tunnel_bytes_total", "direction", "down")
		delta(t, who, before, after, 3, "hmacauth_tunnel_target_dial_duration_seconds")
		delta(t, who, before, after, 0, "hmacauth_tunnel_target_dial_failures_total")
		delta(t, who, before, after, 0, "hmacauth_tunnel_handshakes_in_flight")
		delta(t, who, before, after, 0, "hmacauth_tunnel_max_conns_waits_total")
		delta(t, who, before, after, 0, "hmacauth_tunnel_connections_refused_total", "reason", reasonTimeout)
		delta(t, who, before, after, 0, "hmacauth_tunnel_connections_refused_total", "reason", reasonOther)
	}
	delta(t, "server", s0, s2, 1, "hmacauth_tunnel_connections_refused_total", "reason", reasonAuth)
	delta(t, "server", s0, s2, 1, "hmacauth_tunnel_connections_refused_total", "reason", reasonProtocol)
	delta(t, "server", s0, s2, 0, "hmacauth_tunnel_connections_refused_total", "reason", reasonShed)
	delta(t, "client", c0, c2, 0, "hmacauth_tunnel_connections_refused_total", "reason", reasonAuth)
}

// statusOf fetches /_status and decodes it.
func statusOf(t testing.TB, addr string) (int, statusReport, string) {
	t.Helper()
	code, body := get(t, addr, "/_status")
	var rep statusReport
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatalf("/_status: %v in %q", err, body)
	}
	return code, rep, string(body)
}

// waitStatus polls /_status until it answers code; the target check is
// cached for targetCheckTTL, so a change shows within about that.
func waitStatus(t *testing.T, addr string, code int) statusReport {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		got, rep, body := statusOf(t, addr)
		if got == code {
			return rep
		}
		if time.Now().After(deadline) {
			t.Fatalf("/_status still answers %d, want %d: %s", got, code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStatusTarget checks /_status: 200 while the target accepts
// connections, 503 when it stops listening, 200 again when it is back;
// the key reloads it reports; 503 while the tunnel stops.
func TestStatusTarget(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().String()
	serveTarget := func(ln net.Listener) chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { echo(c); c.Close() }()
			}
		}()
		return done
	}
	served := serveTarget(ln)
	dir := t.TempDir()
	keyA := newKey(t, "a")
	keys := writeKeys(t, filepath.Join(dir, "k.keys"), keyA)
	server := startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", target, "-keys", keys, "-status", "127.0.0.1:0")
	addr := server.statusAddr()

	rep := waitStatus(t, addr, http.StatusOK)
	if !rep.OK || rep.Status != "ok" || rep.Role != "server" || rep.Listen != server.addr || rep.Target != target ||
		!rep.TargetOK || strings.Join(rep.KeyIDs, ",") != "a" || rep.LastReload.Source != "start" || !rep.LastReload.OK ||
		!strings.HasPrefix(rep.Version, "hmacauth ") {
		t.Errorf("/_status of a healthy server: %+v", rep)
	}

	ln.Close()
	<-served
	rep = waitStatus(t, addr, http.StatusServiceUnavailable)
	if rep.OK || rep.TargetOK || rep.Status != "target unreachable" || !strings.Contains(rep.TargetError, "connection refused") {
		t.Errorf("/_status with the target down: %+v", rep)
	}
	ln, err = net.Listen("tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	served = serveTarget(ln)
	defer func() {
		ln.Close()
		<-served
	}()
	waitStatus(t, addr, http.StatusOK)

	// A failed reload keeps the keys and says why; a good one replaces them.
	writeKeysRaw(t, keys, "# no keys\n")
	server.signal(syscall.SIGHUP)
	server.waitLog("key reload failed; keeping the current keys", nil)
	_, rep, _ = statusOf(t, addr)
	if rep.LastReload.Source != "sighup" || rep.LastReload.OK || !strings.Contains(rep.LastReload.Error, "holds no keys") || strings.Join(rep.KeyIDs, ",") != "a" {
		t.Errorf("/_status after a failed reload: %+v", rep)
	}
	keyB := newKey(t, "b")
	writeKeys(t, keys, keyB)
	server.signal(syscall.SIGHUP)
	server.waitLog("keys reloaded", nil)
	_, rep, body := statusOf(t, addr)
	if rep.LastReload.Source != "sighup" || !rep.LastReload.OK || strings.Join(rep.KeyIDs, ",") != "b" {
		t.Errorf("/_status after a reload: %+v", rep)
	}
	m := scrape(t, addr)
	if ok, bad := m.value("hmacauth_tunnel_key_reloads_total", "result", "ok"), m.value("hmacauth_tunnel_key_reloads_total", "result", "error"); ok != 1 || bad != 1 {
		t.Errorf("key_reloads_total: ok %v, error %v; want 1 and 1", ok, bad)
	}
	_, metricsBody := get(t, addr, "/metrics")
	for _, k := range []hmacauth.Key{keyA, keyB} {
		secret := base64.StdEncoding.EncodeToString(k.Secret)
		if strings.Contains(body, secret) || strings.Contains(string(metricsBody), secret) {
			t.Errorf("a secret shows in /_status or /metrics")
		}
	}

	// While the tunnel drains, it says it is stopping.
	c, err := hmacauth.Dial("tcp", server.addr, &hmacauth.Config{Keyring: mustKeyring(t, keyB)})
	if err != nil {
		t.Fatal(err)
	}
	checkEcho(t, c, "draining")
	server.signal(syscall.SIGTERM)
	server.waitLog("stopping: no longer accepting; draining live connections", nil)
	if code, rep, body := statusOf(t, addr); code != http.StatusServiceUnavailable || rep.Status != "stopping" {
		t.Errorf("/_status while stopping: %d %s", code, body)
	}
	c.Close()
	if code := server.wait(); code != exitOK {
		t.Errorf("server exited %d", code)
	}
}

func mustKeyring(t testing.TB, keys ...hmacauth.Key) *hmacauth.Keyring {
	t.Helper()
	r, err := hmacauth.NewKeyring(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestStatusWatchKeys checks that /_status and /metrics see the reloads
// of -watch-keys, and not its first load.
func TestStatusWatchKeys(t *testing.T) {
	keys := writeKeys(t, filepath.Join(t.TempDir(), "k.keys"), newKey(t, "a"))
	server := startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", startEcho(t), "-keys", keys,
		"-status", "127.0.0.1:0", "-watch-keys", "20ms")
	addr := server.statusAddr()
	server.waitLog("hmacauth: loaded key file", nil) // the watcher's first read, before the change
	writeKeys(t, keys, newKey(t, "b"))
	deadline := time.Now().Add(bound)
	for {
		_, rep, body := statusOf(t, addr)
		if rep.LastReload.Source == "watch" {
			if !rep.LastReload.OK || strings.Join(rep.KeyIDs, ",") != "b" {
				t.Errorf("/_status after -watch-keys reloaded: %s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/_status did not see the reload: %s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	m := scrape(t, addr)
	if ok := m.value("hmacauth_tunnel_key_reloads_total", "result", "ok"); ok != 1 {
		t.Errorf("key_reloads_total{result=ok} is %v, want 1", ok)
	}
}

// TestStatusClientCheckQuiet checks that a client's check of its target,
// the hmacauth server, is not one of the server's refusals: it connects
// and resets without writing, which the server's kernel drops before the
// server accepts it (TCP_DEFER_ACCEPT), where a plain close would be
// accepted and refused as a protocol error.
func TestStatusClientCheckQuiet(t *testing.T) {
	p := startPair(t, startEcho(t), []string{"-status", "127.0.0.1:0"}, []string{"-status", "127.0.0.1:0"})
	sAddr, cAddr := p.server.statusAddr(), p.client.statusAddr()
	if code, rep, body := statusOf(t, cAddr); code != http.StatusOK || !rep.TargetOK {
		t.Fatalf("client /_status: %d %s", code, body)
	}
	// The check's connection was made before this one, and a refusal of
	// it would end at its first read, where this one takes round trips:
	// once this one is through, a refusal would have been counted.
	checkEcho(t, dial(t, p.client.addr), "after the check")
	m := scrape(t, sAddr)
	if n := m.value("hmacauth_tunnel_connections_accepted_total"); n != 1 {
		t.Errorf("server accepted %v connections, want 1", n)
	}
	for _, reason := range []string{reasonProtocol, reasonOther, reasonTimeout, reasonAuth} {
		if n := m.value("hmacauth_tunnel_connections_refused_total", "reason", reason); n != 0 {
			t.Errorf("the client's target check cost the server %v refusals (%s)", n, reason)
		}
	}
	if rs := p.server.find("hmacauth: refused connection", nil); len(rs) > 0 {
		t.Errorf("the server logged the client's target check as a refusal: %v", rs)
	}
}

// TestStatusPprof checks that /debug/pprof/ is served only with
// -status-pprof, and that a CPU profile runs through it.
func TestStatusPprof(t *testing.T) {
	target := startEcho(t)
	keys := writeKeys(t, filepath.Join(t.TempDir(), "k.keys"), newKey(t, "pprof"))
	off := startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", target, "-keys", keys, "-status", "127.0.0.1:0")
	if code, _ := get(t, off.statusAddr(), "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/ without -status-pprof: %d, want 404", code)
	}
	on := startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", target, "-keys", keys, "-status", "127.0.0.1:0", "-status-pprof")
	addr := on.statusAddr()
	if code, body := get(t, addr, "/debug/pprof/"); code != http.StatusOK || !strings.Contains(string(body), "goroutine") {
		t.Errorf("GET /debug/pprof/ with -status-pprof: %d %q", code, body)
	}
	if code, body := get(t, addr, "/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.Contains(string(body), "acceptLoop") {
		t.Errorf("GET /debug/pprof/goroutine?debug=1: %d, no acceptLoop in %q", code, body)
	}
	// A profile is gzipped protobuf.
	if code, body := get(t, addr, "/debug/pprof/profile?seconds=1"); code != http.StatusOK || len(body) < 2 || body[0] != 0x1f || body[1] != 0x8b {
		t.Errorf("GET /debug/pprof/profile?seconds=1: %d, %d bytes, want a gzipped profile", code, len(body))
	}
	// The command line holds the -connect-proxy password: not served.
	client := startTunnel(t, "client", "client", "-listen", "127.0.0.1:0", "-target", "127.0.0.1:1", "-keys", keys,
		"-status", "127.0.0.1:0", "-status-pprof", "-connect-proxy", "http://alice:pprof-s3cret@127.0.0.1:1")
	if code, body := get(t, client.statusAddr(), "/debug/pprof/cmdline"); code == http.StatusOK || strings.Contains(string(body), "pprof-s3cret") {
		t.Errorf("GET /debug/pprof/cmdline: %d %q; want no command line (it holds the proxy password)", code, body)
	}
	r := runBin(t, "server", "-listen", "127.0.0.1:0", "-target", target, "-keys", keys, "-status-pprof")
	if r.code != exitUsage || !strings.Contains(r.stderr, "give -status ADDR too") {
		t.Errorf("-status-pprof without -status: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestStatusTargetCheckProxyProtocol checks that with -proxy-protocol the
// target check of /_status sends the target a health check header, LOCAL
// (v2) or UNKNOWN (v1), which go-proxyproto's reader (as nginx) takes, not
// a connection without a header.
func TestStatusTargetCheckProxyProtocol(t *testing.T) {
	keys := writeKeys(t, filepath.Join(t.TempDir(), "k.keys"), newKey(t, "pp"))
	for _, v := range []string{"v1", "v2"} {
		t.Run(v, func(t *testing.T) {
			target, headers := startHeaderReader(t, "127.0.0.1")
			p := startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", target, "-keys", keys,
				"-status", "127.0.0.1:0", "-proxy-protocol", v)
			waitStatus(t, p.statusAddr(), http.StatusOK)
			h := recvHeader(t, headers)
			if !h.Command.IsLocal() || h.Version != v[1]-'0' {
				t.Errorf("the target check sent a header of version %d, command %v; want %s LOCAL", h.Version, h.Command, v)
			}
		})
	}
}
