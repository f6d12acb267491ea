package hmacauth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustKeyring(t testing.TB, keys ...Key) *Keyring {
	t.Helper()
	r, err := NewKeyring(keys...)
	if err != nil {
		t.Fatalf("NewKeyring: %v", err)
	}
	return r
}

func TestKeyringRotationAffectsNewHandshakesOnly(t *testing.T) {
	t.Parallel()
	a, b := testKey("key-a"), testKey("key-b")
	serverRing := mustKeyring(t, a)
	l, err := Listen("tcp", "127.0.0.1:0", &Config{Keyring: serverRing})
	if err != nil {
		t.Fatal(err)
	}
	stop := serveEcho(l)
	defer stop()
	addr := l.Addr().String()

	clientRing := mustKeyring(t, a)
	clientCfg := &Config{Keyring: clientRing}
	live, err := Dial("tcp", addr, clientCfg)
	if err != nil {
		t.Fatalf("dial with key-a: %v", err)
	}
	defer live.Close()
	roundTrip(t, live, "before rotation")

	// The servers drop key-a: new handshakes with it fail, the live
	// connection is untouched.
	if err := serverRing.Set(b); err != nil {
		t.Fatal(err)
	}
	if c, err := Dial("tcp", addr, clientCfg); !errors.Is(err, ErrAuthFailed) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial with key-a after the server dropped it: err = %v, want ErrAuthFailed", err)
	}
	roundTrip(t, live, "after rotation")
	if got := live.KeyID(); got != "key-a" {
		t.Errorf("live connection KeyID = %q, want key-a", got)
	}

	// The same client Config, once its Keyring leads with key-b, gets in.
	if err := clientRing.Set(b, a); err != nil {
		t.Fatal(err)
	}
	d := Dialer{Config: clientCfg}
	c, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatalf("dial with key-b: %v", err)
	}
	defer c.Close()
	roundTrip(t, c, "new key")
	if got := c.(*Conn).KeyID(); got != "key-b" {
		t.Errorf("KeyID = %q, want key-b", got)
	}
}

func TestKeyringTakesPrecedenceOverKeys(t *testing.T) {
	t.Parallel()
	a, b := testKey("key-a"), testKey("key-b")
	l, err := Listen("tcp", "127.0.0.1:0", &Config{Keys: []Key{a}, Keyring: mustKeyring(t, b)})
	if err != nil {
		t.Fatal(err)
	}
	stop := serveEcho(l)
	defer stop()
	if c, err := Dial("tcp", l.Addr().String(), &Config{Keys: []Key{a}}); !errors.Is(err, ErrAuthFailed) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("key-a from Config.Keys, ignored by the server: err = %v, want ErrAuthFailed", err)
	}
	c, err := Dial("tcp", l.Addr().String(), &Config{Keys: []Key{a}, Keyring: mustKeyring(t, b)})
	if err != nil {
		t.Fatalf("key-b from the client's Keyring: %v", err)
	}
	defer c.Close()
	roundTrip(t, c, "x")
}

func TestKeyringSetRefusesBadKeysAndKeepsOld(t *testing.T) {
	t.Parallel()
	a := testKey("key-a")
	r := mustKeyring(t, a)
	for _, tc := range []struct {
		name string
		keys []Key
		want error
	}{
		{"empty", nil, ErrConfig},
		{"weak", []Key{{ID: "short", Secret: make([]byte, MinSecretLen-1)}}, ErrWeakKey},
		{"bad ID", []Key{{ID: "has space", Secret: a.Secret}}, ErrConfig},
		{"duplicate", []Key{testKey("x"), testKey("x")}, ErrConfig},
	} {
		err := r.Set(tc.keys...)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: Set err = %v, want %v", tc.name, err, tc.want)
		}
		if got := r.IDs(); len(got) != 1 || got[0] != "key-a" {
			t.Errorf("%s: IDs after a failed Set = %q, want [key-a]", tc.name, got)
		}
		if _, err := NewKeyring(tc.keys...); !errors.Is(err, tc.want) {
			t.Errorf("%s: NewKeyring err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestKeyringCopiesKeys(t *testing.T) {
	t.Parallel()
	k := testKey("key-a")
	orig := bytes.Clone(k.Secret)
	keys := []Key{k}
	r := mustKeyring(t, keys...)
	k.Secret[0] ^= 0xff // the caller reuses its buffer
	keys[0].ID = "changed"
	got := r.Keys()
	if diff := cmp.Diff([]Key{{ID: "key-a", Secret: orig}}, got, cmpKeys); diff != "" {
		t.Fatalf("Keys after changing the input, mismatch (-want +got):\n%s", diff)
	}
	got[0].Secret[0] ^= 0xff
	if again := r.Keys(); !bytes.Equal(again[0].Secret, orig) {
		t.Fatal("changing the result of Keys changed the Keyring")
	}
}

func TestZeroKeyringIsRefused(t *testing.T) {
	t.Parallel()
	_, err := Listen("tcp", "127.0.0.1:0", &Config{Keyring: new(Keyring)})
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("Listen with an empty Keyring: err = %v, want ErrConfig", err)
	}
	if !strings.Contains(err.Error(), "Keyring") {
		t.Errorf("error %q does not name the Keyring", err)
	}
}

// TestKeyringSetDuringHandshakes swaps the keys while clients connect; run
// with -race. Every client proves a key that both generations hold.
func TestKeyringSetDuringHandshakes(t *testing.T) {
	t.Parallel()
	a, b, c := testKey("key-a"), testKey("key-b"), testKey("key-c")
	ring := mustKeyring(t, a, b)
	l, err := Listen("tcp", "127.0.0.1:0", &Config{Keyring: ring})
	if err != nil {
		t.Fatal(err)
	}
	stop := serveEcho(l)
	defer stop()
	var wg sync.WaitGroup
	errs := make(chan error, 4*20)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				conn, err := Dial("tcp", l.Addr().String(), &Config{Keys: []Key{a}})
				if err != nil {
					errs <- fmt.Errorf("client %d, dial %d: %w", i, j, err)
					continue
				}
				conn.Close()
			}
		}()
	}
	for i := range 200 {
		other := b
		if i%2 == 1 {
			other = c
		}
		if err := ring.Set(a, other); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestNothingPrintsSecrets(t *testing.T) {
	t.Parallel()
	secret := []byte("0123456789abcdefghijklmnopqrstuvwxyzXY") // printable, so a raw leak is visible too
	k := Key{ID: "printed", Secret: secret}
	ring := mustKeyring(t, k)
	cfg := &Config{Keys: []Key{k}, Keyring: ring}
	values := map[string]any{"Key": k, "[]Key": []Key{k}, "*Keyring": ring, "*Config": cfg}

	var out []string
	for name, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%d", "%x"} {
			out = append(out, name+" "+verb+": "+fmt.Sprintf(verb, v))
		}
		for _, h := range []func(io.Writer) slog.Handler{
			func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, nil) },
			func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, nil) },
		} {
			var buf bytes.Buffer
			slog.New(h(&buf)).Info("config", "value", v, slog.Any("nested", []any{v}))
			out = append(out, name+" slog: "+buf.String())
		}
	}
	for _, s := range out {
		for _, enc := range secretEncodings(secret) {
			if strings.Contains(s, enc) {
				t.Errorf("output shows the secret (as %q):\n%s", enc, s)
			}
		}
		if !strings.Contains(s, "printed") {
			t.Errorf("output does not name the key ID:\n%s", s)
		}
	}
}
