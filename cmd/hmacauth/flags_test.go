package main

import (
	"strings"
	"testing"
)

func TestBadFlags(t *testing.T) {
	base := []string{"-listen", "127.0.0.1:0", "-target", "127.0.0.1:1", "-keys", "k.keys"}
	with := func(cmd string, extra ...string) []string {
		return append(append([]string{cmd}, base...), extra...)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"server"}, "-listen is required"},
		{[]string{"client", "-listen", "127.0.0.1:0", "-target", "127.0.0.1:1"}, "-keys is required"},
		{with("client", "-bogus"), "flag provided but not defined: -bogus"},
		{with("server", "-mode", "fast"), `unknown mode "fast"`},
		{with("server", "-max-conns", "0"), "-max-conns is 0"},
		{with("server", "-max-handshakes-per-ip", "-1"), "-max-handshakes-per-ip is -1"},
		{with("client", "-max-handshakes-per-ip", "4"), "flag provided but not defined: -max-handshakes-per-ip"},
		{with("server", "-handshake-timeout", "0s"), "-handshake-timeout is 0s"},
		{with("server", "-connect-timeout", "soon"), "invalid value"},
		{with("client", "-log-format", "xml"), `unknown format "xml"`},
		{with("client", "-watch-keys", "-1s"), "-watch-keys is -1s"},
		{with("client", "-key-share-lifetime", "-1s"), "-key-share-lifetime is -1s"},
		{with("client", "-log-level", "loud"), `unknown level "loud"`},
		{with("client", "stray"), `unexpected argument "stray"`},
		{[]string{"keygen", "-force"}, "-force needs -o FILE"},
		{[]string{"keygen", "-id", "has space"}, "printable ASCII"},
		{[]string{"demo", "now"}, `unexpected argument "now"`},
	} {
		r := runBin(t, tc.args...)
		if r.code != exitUsage {
			t.Errorf("%s: exit %d, want %d", describe(tc.args), r.code, exitUsage)
		}
		if !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "Usage:") {
			t.Errorf("%s: stderr %q; want %q and the usage", describe(tc.args), r.stderr, tc.want)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"-version"}, {"server", "-version"}, {"client", "-version"}} {
		r := runBin(t, args...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "hmacauth ") || !strings.Contains(r.stdout, "go1.") {
			t.Errorf("%s: exit %d, stdout %q; want 0 and \"hmacauth VERSION ... goX\"", describe(args), r.code, r.stdout)
		}
	}
	r := runBin(t, "server", "-h")
	for _, flag := range []string{"-listen", "-target", "-keys", "-mode", "-fs", "-key-share-lifetime", "-max-conns", "-handshake-timeout",
		"-connect-timeout", "-keepalive", "-drain-timeout", "-watch-keys", "-max-handshakes-per-ip", "-unsafe-target", "-status", "-log-format", "-log-level", "-version", "SIGHUP", "unix:"} {
		if !strings.Contains(r.stderr, flag) {
			t.Errorf("server -h does not mention %s", flag)
		}
	}
	if r.code != 0 {
		t.Errorf("server -h exited %d, want 0", r.code)
	}
}
