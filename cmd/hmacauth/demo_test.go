package main

import (
	"strings"
	"testing"
)

func TestDemo(t *testing.T) {
	r := runBin(t, "demo")
	if r.code != 0 {
		t.Fatalf("demo exited %d; stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	lines := map[string]string{}
	for _, l := range strings.Split(r.stdout, "\n") {
		if name, rest, ok := strings.Cut(l, ": "); ok {
			lines[name] = rest
		}
	}
	for name, want := range map[string][]string{
		"good key":   {`200 OK, handler saw key ID "demo"`},
		"wrong key":  {"refused: ", "authentication failed"},
		"plain HTTP": {"refused: ", "closed the connection"},
	} {
		got, ok := lines[name]
		if !ok {
			t.Errorf("demo printed no %q line; stdout:\n%s", name, r.stdout)
			continue
		}
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("demo %q line = %q, want it to contain %q", name, got, w)
			}
		}
	}
	// The server saw and refused both bad clients.
	if n := strings.Count(r.stdout, "server: refused"); n != 2 {
		t.Errorf("demo shows %d refusals by the server, want 2; stdout:\n%s", n, r.stdout)
	}
	if r.stderr != "" {
		t.Errorf("demo wrote to stderr:\n%s", r.stderr)
	}
}
