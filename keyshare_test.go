package hmacauth

import (
	"bytes"
	"crypto/ecdh"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// tapConn records the bytes a client reads and writes.
type tapConn struct {
	net.Conn
	mu      sync.Mutex
	in, out []byte
}

func (c *tapConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	c.in = append(c.in, b[:n]...)
	c.mu.Unlock()
	return n, err
}

func (c *tapConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.mu.Lock()
	c.out = append(c.out, b[:n]...)
	c.mu.Unlock()
	return n, err
}

// fsHandshake runs a handshake with forward secrecy and returns the key
// shares both sides sent, as seen on the wire, and the exported secret.
func fsHandshake(t *testing.T, ccfg, scfg *Config) (clientShare, serverShare, export []byte) {
	t.Helper()
	rc, rs := pipeTCP(t)
	tap := &tapConn{Conn: rc}
	cc, sc := Client(tap, ccfg), Server(rs, scfg)
	done := make(chan error, 1)
	go func() { done <- sc.Handshake() }()
	if err := cc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !cc.ConnectionState().ForwardSecrecy {
		t.Fatal("no forward secrecy")
	}
	a, _ := cc.ConnectionState().ExportKeyingMaterial("test", nil, 32)
	b, _ := sc.ConnectionState().ExportKeyingMaterial("test", nil, 32)
	if !bytes.Equal(a, b) {
		t.Fatal("the sides export different bytes")
	}
	tap.mu.Lock()
	defer tap.mu.Unlock()
	if len(tap.in) != serverHelloLen || len(tap.out) != clientHelloLen+clientFinishedLen {
		t.Fatalf("client read %d and wrote %d handshake bytes", len(tap.in), len(tap.out))
	}
	off := headerLen + 2 + nonceLen
	serverShare = bytes.Clone(tap.in[off : off+shareLen])
	clientShare = bytes.Clone(tap.out[clientHelloLen+1 : clientHelloLen+1+shareLen])
	return clientShare, serverShare, a
}

func TestKeyShareReuse(t *testing.T) {
	t.Parallel()
	k := testKey("test-key")
	for _, tc := range []struct {
		lifetime time.Duration
		reuse    bool
	}{
		{time.Hour, true},
		{-1, false},
	} {
		t.Run(fmt.Sprint(tc.lifetime), func(t *testing.T) {
			ccfg := &Config{Keys: []Key{k}, ForwardSecrecy: true, KeyShareLifetime: tc.lifetime}
			scfg := &Config{Keys: []Key{k}, KeyShareLifetime: tc.lifetime}
			clientShares, serverShares, exports := map[string]bool{}, map[string]bool{}, map[string]bool{}
			const n = 3
			for range n {
				c, s, e := fsHandshake(t, ccfg, scfg)
				clientShares[string(c)], serverShares[string(s)], exports[string(e)] = true, true, true
			}
			want := n
			if tc.reuse {
				want = 1
			}
			if len(clientShares) != want || len(serverShares) != want {
				t.Errorf("%d handshakes sent %d client and %d server key shares, want %d each", n, len(clientShares), len(serverShares), want)
			}
			if len(exports) != n {
				t.Errorf("%d handshakes gave %d distinct session secrets", n, len(exports))
			}
			if tc.reuse {
				share := scfg.shares.cur.Load()
				if share == nil {
					t.Fatal("the server keeps no key share")
				}
				share.mu.Lock()
				cached := len(share.secrets)
				share.mu.Unlock()
				if cached != 1 {
					t.Errorf("the server's key share remembers %d X25519 results after %d handshakes with one client key share, want 1", cached, n)
				}
			} else if scfg.shares.cur.Load() != nil || ccfg.shares.cur.Load() != nil {
				t.Error("a key share is kept with a negative KeyShareLifetime")
			}
		})
	}
}

func TestKeyShareDefaultLifetime(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		set, want time.Duration
		reuse     bool
	}{
		{0, DefaultKeyShareLifetime, true},
		{time.Minute, time.Minute, true},
		{-1, 0, false},
	} {
		cfg := &Config{KeyShareLifetime: tc.set}
		shares, lifetime := cfg.keyShares()
		if (shares != nil) != tc.reuse || lifetime != tc.want {
			t.Errorf("KeyShareLifetime %v: reuse %v for %v; want %v for %v", tc.set, shares != nil, lifetime, tc.reuse, tc.want)
		}
	}
}

func TestKeyShareExpires(t *testing.T) {
	k := testKey("test-key")
	const lifetime = 50 * time.Millisecond
	ccfg := &Config{Keys: []Key{k}, ForwardSecrecy: true, KeyShareLifetime: lifetime}
	scfg := &Config{Keys: []Key{k}, KeyShareLifetime: lifetime}
	// Taken before the handshake, so that a slow handshake cannot make
	// the test miss it; the handshake uses it unless it has expired.
	old, err := scfg.shares.get(lifetime)
	if err != nil {
		t.Fatal(err)
	}
	c1, s1, _ := fsHandshake(t, ccfg, scfg)
	// Without any further handshake, the timer drops both sides' key
	// shares and what the server computed with its own.
	waitFor(t, "the key shares are dropped", func() bool {
		return scfg.shares.cur.Load() == nil && ccfg.shares.cur.Load() == nil
	})
	old.mu.Lock()
	dropped, secrets := old.dropped, old.secrets
	old.mu.Unlock()
	if !dropped || secrets != nil {
		t.Error("a dropped key share still holds its X25519 results")
	}
	c2, s2, _ := fsHandshake(t, ccfg, scfg)
	if bytes.Equal(c1, c2) || bytes.Equal(s1, s2) {
		t.Error("a key share was used past its lifetime")
	}
}

func TestKeyShareSecrets(t *testing.T) {
	t.Parallel()
	var shares keyShares
	share, err := shares.get(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(share.drop)
	// Concurrent first uses agree on one key share: those that lose the
	// race to install theirs take the winner's.
	var racing keyShares
	start := make(chan struct{})
	got := make([]*keyShare, 8)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			<-start
			var err error
			if got[i], err = racing.get(time.Hour); err != nil {
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	winner := racing.cur.Load()
	t.Cleanup(winner.drop)
	for i, g := range got {
		if g != winner {
			t.Errorf("concurrent first get %d: key share %p, want the installed one, %p", i, g, winner)
		}
	}
	if got, err := shares.get(time.Hour); err != nil || got != share {
		t.Errorf("a later get: %p, %v; want %p", got, err, share)
	}

	// More distinct peers than the cache holds: every result is right, and
	// the cache stops growing at its bound.
	for i := range maxCachedSecrets + 8 {
		peer, err := ecdh.X25519().GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		want, err := peer.ECDH(share.priv.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // computed, then (while the cache has room) remembered
			got, err := share.sharedSecret(peer.PublicKey().Bytes())
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("peer %d: X25519 result %x, %v; want %x", i, got, err, want)
			}
		}
	}
	share.mu.Lock()
	n := len(share.secrets)
	share.mu.Unlock()
	if n != maxCachedSecrets {
		t.Errorf("the key share remembers %d results, want the bound %d", n, maxCachedSecrets)
	}

	// A low-order peer share is refused every time, and not remembered.
	var fresh keyShares
	ks2, err := fresh.get(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ks2.drop)
	zero := make([]byte, shareLen)
	for range 2 {
		_, err := ks2.sharedSecret(zero)
		mustBe(t, err, ErrProtocol)
	}
	ks2.mu.Lock()
	n = len(ks2.secrets)
	ks2.mu.Unlock()
	if n != 0 {
		t.Errorf("a refused share left %d results behind", n)
	}
}

// TestKeyShareExpiredNotReused: a key share past its lifetime is not handed
// out again even while its timer has not yet dropped it (a late timer, or a
// Config copied after use).
func TestKeyShareExpiredNotReused(t *testing.T) {
	var shares keyShares
	stale := &keyShare{expires: time.Now().Add(-time.Second), secrets: map[[shareLen]byte][]byte{}}
	shares.cur.Store(stale)
	share, err := shares.get(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(share.drop)
	if share == stale || shares.cur.Load() != share {
		t.Error("an expired key share was handed out again")
	}
}

// TestKeyShareTinyLifetime runs concurrent handshakes with a lifetime so
// short that key shares expire while others are being made: each
// handshake must still get a key share, and the sides must agree.
func TestKeyShareTinyLifetime(t *testing.T) {
	k := testKey("test-key")
	ccfg := &Config{Keys: []Key{k}, ForwardSecrecy: true, KeyShareLifetime: time.Nanosecond}
	scfg := &Config{Keys: []Key{k}, KeyShareLifetime: time.Nanosecond}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 4 {
				cc, sc, cerr, serr := handshakePair(t, ccfg, scfg)
				if cerr != nil || serr != nil {
					t.Error(cerr, serr)
					return
				}
				a, _ := cc.ConnectionState().ExportKeyingMaterial("test", nil, 32)
				b, _ := sc.ConnectionState().ExportKeyingMaterial("test", nil, 32)
				if !bytes.Equal(a, b) {
					t.Error("the sides export different bytes")
				}
			}
		})
	}
	wg.Wait()
}
