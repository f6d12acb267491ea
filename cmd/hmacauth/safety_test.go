package main

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestOnThisHost(t *testing.T) {
	for _, tc := range []struct {
		addr       string
		dial, want bool
	}{
		{"127.0.0.1:80", false, true},
		{"127.3.2.1:80", false, true},
		{"[::1]:80", false, true},
		{"[::ffff:127.0.0.1]:80", false, true},
		{"localhost:80", false, true},
		{"LocalHost:80", true, true},
		{"unix:/run/app.sock", false, true},
		{"./app.sock", false, true},
		{":80", false, false},
		{":80", true, true}, // net dials the local system
		{"0.0.0.0:80", false, false},
		{"[::]:80", false, false},
		{"[::]:80", true, true},
		{"192.0.2.1:80", true, false},
		{"[2001:db8::1]:80", false, false},
		{"redis-host:6379", true, false},
		{"localhost.example.com:80", true, false},
		{"127.0.0.1", true, false}, // no port
	} {
		err := onThisHost(tc.addr, tc.dial)
		if (err == nil) != tc.want {
			t.Errorf("onThisHost(%q, dial %v) = %v; want on this host: %v", tc.addr, tc.dial, err, tc.want)
		}
	}
}

// TestSafeDefaults runs the binary: a server refuses a target off this
// host unless -unsafe-target, a client refuses to listen off this host
// unless -unsafe-listen; each refusal is a usage error that names the
// flag. No address off loopback is ever connected to or listened on: the
// targets are never dialed, as no connection comes, and listening on
// 192.0.2.1 (TEST-NET-1) fails, as no interface of this host has it.
func TestSafeDefaults(t *testing.T) {
	keys := writeKeys(t, filepath.Join(t.TempDir(), "k.keys"), newKey(t, "safe"))
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"server", "-listen", "127.0.0.1:0", "-target", "192.0.2.1:6379"}, []string{`-target "192.0.2.1:6379" is not a loopback address`, "-unsafe-target"}},
		{[]string{"server", "-listen", "127.0.0.1:0", "-target", "redis-host:6379"}, []string{`-target "redis-host:6379"`, "-unsafe-target"}},
		{[]string{"client", "-listen", ":6379", "-target", "127.0.0.1:1"}, []string{`-listen ":6379" is every interface`, "-unsafe-listen"}},
		{[]string{"client", "-listen", "0.0.0.0:0", "-target", "127.0.0.1:1"}, []string{`-listen "0.0.0.0:0" is every interface`, "-unsafe-listen"}},
		{[]string{"client", "-listen", "192.0.2.1:0", "-target", "127.0.0.1:1"}, []string{`-listen "192.0.2.1:0" is not a loopback address`, "-unsafe-listen"}},
	} {
		args := append(tc.args, "-keys", keys)
		r := runBin(t, args...)
		if r.code != exitUsage {
			t.Errorf("%s: exit %d, want %d; stderr %q", describe(args), r.code, exitUsage, r.stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%s: stderr %q; want %q", describe(args), r.stderr, w)
			}
		}
	}

	// -unsafe-target lifts the refusal: the server starts (and would
	// dial its target only for a connection, which none makes; the name is
	// under .invalid, which never resolves).
	server := startTunnel(t, "server", "server", "-listen", "127.0.0.1:0", "-target", "redis-host.invalid:6379", "-keys", keys, "-unsafe-target")
	server.signal(syscall.SIGTERM)
	if code := server.wait(); code != exitOK {
		t.Errorf("server with -unsafe-target exited %d, want 0", code)
	}
	// -unsafe-listen lifts the refusal: the client tries to listen, which
	// fails here (exit 1), as 192.0.2.1 is on no interface of this host.
	args := []string{"client", "-listen", "192.0.2.1:0", "-target", "127.0.0.1:1", "-keys", keys, "-unsafe-listen"}
	r := runBin(t, args...)
	if r.code != exitFail || !strings.Contains(r.stderr, "listening on 192.0.2.1:0") || strings.Contains(r.stderr, "-unsafe-listen") {
		t.Errorf("%s: exit %d, stderr %q; want exit 1 from the listen itself", describe(args), r.code, r.stderr)
	}
	// The same flags are usage errors for the other role.
	for _, args := range [][]string{
		{"client", "-listen", "127.0.0.1:0", "-target", "127.0.0.1:1", "-keys", keys, "-unsafe-target"},
		{"server", "-listen", "127.0.0.1:0", "-target", "127.0.0.1:1", "-keys", keys, "-unsafe-listen"},
	} {
		if r := runBin(t, args...); r.code != exitUsage || !strings.Contains(r.stderr, "flag provided but not defined") {
			t.Errorf("%s: exit %d, stderr %q; want a usage error", describe(args), r.code, r.stderr)
		}
	}
	// localhost is on this host.
	client := startTunnel(t, "client", "client", "-listen", "localhost:0", "-target", "127.0.0.1:1", "-keys", keys)
	client.signal(syscall.SIGTERM)
	if code := client.wait(); code != exitOK {
		t.Errorf("client on localhost exited %d, want 0", code)
	}
}
