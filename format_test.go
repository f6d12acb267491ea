package hmacauth

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoVerbPrintsSecret prints every exported type of the package that
// holds a secret with every fmt verb and with slog, and checks that no key
// secret, session secret, traffic secret or buffered plaintext shows.
func TestNoVerbPrintsSecret(t *testing.T) {
	for _, mode := range []Mode{ModeAuth, ModeIntegrity, ModeSealed} {
		for _, fs := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/fs=%t", mode, fs), func(t *testing.T) {
				k := testKey("visible-id")
				cfg := &Config{Keys: []Key{k}, Mode: mode, ForwardSecrecy: fs}
				scfg := &Config{Keys: []Key{k}, Mode: mode, ForwardSecrecy: fs} // one Config refuses its own dial
				rc, rs := pipeTCP(t)
				cc, sc := Client(rc, cfg), Server(rs, scfg)
				checkNoSecret(t, printedEveryWay(cc, sc, cfg), k.Secret)

				if cerr, serr := handshakeBoth(cc, sc); cerr != nil || serr != nil {
					t.Fatalf("handshake: client %v, server %v", cerr, serr)
				}
				// The client reads one byte of a message: in ModeIntegrity
				// and ModeSealed the rest waits in its buffer, in the clear.
				plaintext := seededBytes("plaintext", 64)
				if _, err := sc.Write(plaintext); err != nil {
					t.Fatal(err)
				}
				if _, err := cc.Read(make([]byte, 1)); err != nil {
					t.Fatal(err)
				}
				secrets := [][]byte{k.Secret, cc.res.secret, plaintext[1:]}
				if mode != ModeAuth {
					secrets = append(secrets, cc.rl.in.secret[:], cc.rl.out.secret[:])
				}
				cs := cc.ConnectionState()
				out := printedEveryWay(cc, sc, cs, &cs, cfg)
				checkNoSecret(t, out, secrets...)
				for _, want := range []string{"visible-id", "client", "server", mode.String(), rc.LocalAddr().String()} {
					if !strings.Contains(fmt.Sprint(cc, sc), want) {
						t.Errorf("the Conns print as %v, %v: want %q in it", cc, sc, want)
					}
				}
			})
		}
	}
	t.Run("handshake failed", func(t *testing.T) {
		a, b := testKey("a"), testKey("b")
		cc, sc, cerr, serr := handshakePair(t, configWith(a), configWith(b))
		if cerr == nil || serr == nil {
			t.Fatalf("handshake with different keys: client %v, server %v", cerr, serr)
		}
		checkNoSecret(t, printedEveryWay(cc, sc), a.Secret, b.Secret)
		if !strings.Contains(fmt.Sprint(cc), "handshake failed") {
			t.Errorf("the Conn prints as %v: want it to say the handshake failed", cc)
		}
	})
	t.Run("others", func(t *testing.T) {
		a, b := testKey("a"), testKey("b")
		ring, err := NewKeyring(a, b)
		if err != nil {
			t.Fatal(err)
		}
		withRing := &Config{Keyring: ring, ForwardSecrecy: true}
		withKeys := &Config{Keys: []Key{a, b}}
		for _, cfg := range []*Config{withRing, withKeys} {
			if _, err := cfg.check(); err != nil { // derives and caches the keys
				t.Fatal(err)
			}
		}
		l, err := Listen("tcp", "127.0.0.1:0", withKeys)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		w := &KeyFileWatcher{Path: filepath.Join(t.TempDir(), "keys"), Keyring: ring}
		d := &Dialer{Config: withRing}
		var nilConn *Conn
		var nilConfig *Config
		out := printedEveryWay(a, &a, []Key{a, b}, ring, withRing, withKeys, l, w, *w, d, *d,
			nilConn, nilConfig)
		checkNoSecret(t, out, a.Secret, b.Secret)
		for _, want := range []string{`"a" "b"`, "hmacauth.Config(nil)", "hmacauth.Conn(nil)"} {
			if !strings.Contains(out, want) {
				t.Errorf("printed values lack %q:\n%s", want, out)
			}
		}
	})
}
