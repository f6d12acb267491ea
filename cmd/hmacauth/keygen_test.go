package main

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hmacauth/hmacauth"
)

// parseKeyLine checks that s is exactly one key-file line and returns the key.
func parseKeyLine(t *testing.T, s string) hmacauth.Key {
	t.Helper()
	line, ok := strings.CutSuffix(s, "\n")
	if !ok || strings.Contains(line, "\n") {
		t.Fatalf("key output %q is not one line", s)
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		t.Fatalf("key line %q: want \"ID BASE64SECRET\"", line)
	}
	secret, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		t.Fatalf("key line secret is not base64: %v", err)
	}
	k := hmacauth.Key{ID: f[0], Secret: secret}
	if err := k.Validate(); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeygenStdout(t *testing.T) {
	r1 := runBin(t, "keygen")
	r2 := runBin(t, "keygen")
	if r1.code != 0 || r2.code != 0 {
		t.Fatalf("keygen exited %d, %d; stderr: %s %s", r1.code, r2.code, r1.stderr, r2.stderr)
	}
	k1, k2 := parseKeyLine(t, r1.stdout), parseKeyLine(t, r2.stdout)
	if k1.ID != "default" {
		t.Errorf("default key ID = %q, want \"default\"", k1.ID)
	}
	if len(k1.Secret) != hmacauth.MinSecretLen {
		t.Errorf("secret has %d bytes, want %d", len(k1.Secret), hmacauth.MinSecretLen)
	}
	if string(k1.Secret) == string(k2.Secret) {
		t.Error("two runs of keygen printed the same secret")
	}
}

func TestKeygenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tunnel.keys")
	r := runBin(t, "keygen", "-id", "app-2026", "-o", path)
	if r.code != 0 {
		t.Fatalf("keygen -o exited %d: %s", r.code, r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("keygen -o printed to stdout: %q", r.stdout)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode = %v, want 0600", perm)
	}
	b, _ := os.ReadFile(path)
	first := parseKeyLine(t, string(b))
	if first.ID != "app-2026" {
		t.Errorf("key ID = %q, want app-2026", first.ID)
	}
	keys, err := hmacauth.LoadKeys(path)
	if err != nil || len(keys) != 1 || keys[0].ID != "app-2026" {
		t.Fatalf("loading the written key file: %v, %v", keys, err)
	}

	// No silent overwrite.
	r = runBin(t, "keygen", "-id", "other", "-o", path)
	if r.code != exitFail || !strings.Contains(r.stderr, "-force") {
		t.Errorf("keygen over an existing file: exit %d, stderr %q; want exit 1 and a hint at -force", r.code, r.stderr)
	}
	if b2, _ := os.ReadFile(path); string(b2) != string(b) {
		t.Error("keygen without -force changed the existing file")
	}

	r = runBin(t, "keygen", "-id", "other", "-o", path, "-force")
	if r.code != 0 {
		t.Fatalf("keygen -force exited %d: %s", r.code, r.stderr)
	}
	b3, _ := os.ReadFile(path)
	if k := parseKeyLine(t, string(b3)); k.ID != "other" || string(k.Secret) == string(first.Secret) {
		t.Errorf("keygen -force did not write a fresh key %q", "other")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("replaced key file mode = %v, want 0600", fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("keygen -force left %d files in the directory, want 1", len(ents))
	}
}
