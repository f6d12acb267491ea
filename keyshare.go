package hmacauth

import (
	"crypto/ecdh"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultKeyShareLifetime is how long one X25519 key share serves a side's
// handshakes when Config.KeyShareLifetime is zero.
const DefaultKeyShareLifetime = time.Second

// maxCachedSecrets bounds the X25519 results one key share remembers: a
// server with more distinct client shares at once computes the rest anew.
const maxCachedSecrets = 256

// keyShares hands out the key share of a Config's handshakes. A key share
// is made at its first use and serves every handshake that starts within
// the lifetime; then a timer drops it, with the X25519 results computed
// with it, so that it is not kept past its lifetime even when no handshake
// comes to replace it. (A handshake that started with it keeps it until it
// ends, at most HandshakeTimeout later.) SECURITY.md says what reuse
// exposes.
type keyShares struct {
	cur atomic.Pointer[keyShare]
}

// keyShare is one X25519 key pair with the results computed with it.
type keyShare struct {
	priv    *ecdh.PrivateKey
	expires time.Time // not used after this, even if the timer runs late

	mu      sync.Mutex
	dropped bool                      // past its lifetime: compute, remember nothing
	secrets map[[shareLen]byte][]byte // X25519 result by peer share
}

// get returns the current key share, making one if there is none.
func (s *keyShares) get(lifetime time.Duration) (*keyShare, error) {
	now := time.Now()
	old := s.cur.Load()
	if old != nil && now.Before(old.expires) {
		return old, nil
	}
	priv, err := ecdh.X25519().GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	share := &keyShare{priv: priv, expires: now.Add(lifetime), secrets: make(map[[shareLen]byte][]byte)}
	if !s.cur.CompareAndSwap(old, share) {
		// Another handshake made one at the same time: use that one,
		// so that its lifetime bounds this handshake's key share too.
		if cur := s.cur.Load(); cur != nil && now.Before(cur.expires) {
			return cur, nil
		}
		// That one has already expired (a very short lifetime, or a
		// late timer): this key share serves this handshake alone.
		share.drop()
		return share, nil
	}
	time.AfterFunc(lifetime, func() {
		s.cur.CompareAndSwap(share, nil)
		share.drop()
	})
	return share, nil
}

// drop forgets the results computed with share; handshakes still holding it
// finish without remembering theirs.
func (share *keyShare) drop() {
	share.mu.Lock()
	share.dropped = true
	clear(share.secrets)
	share.secrets = nil
	share.mu.Unlock()
}

// sharedSecret returns X25519(share, peer), computed once per peer share while
// share lives: a peer that reuses its key share too costs one X25519 per pair
// of key shares rather than one per handshake. The result may be shared
// with other handshakes: callers must not modify it.
func (share *keyShare) sharedSecret(peer []byte) ([]byte, error) {
	k := [shareLen]byte(peer)
	share.mu.Lock()
	dh, ok := share.secrets[k]
	share.mu.Unlock()
	if ok {
		return dh, nil
	}
	dh, err := x25519(share.priv, peer)
	if err != nil {
		return nil, err
	}
	share.mu.Lock()
	if !share.dropped && len(share.secrets) < maxCachedSecrets {
		share.secrets[k] = dh
	}
	share.mu.Unlock()
	return dh, nil
}

// x25519 runs X25519 with the peer's public key.
func x25519(priv *ecdh.PrivateKey, peer []byte) ([]byte, error) {
	pub, err := ecdh.X25519().NewPublicKey(peer)
	if err != nil {
		return nil, errorf(ErrProtocol, "invalid X25519 share: %v", err)
	}
	dh, err := priv.ECDH(pub)
	if err != nil {
		return nil, errorf(ErrProtocol, "X25519 share is a low-order point")
	}
	return dh, nil
}
