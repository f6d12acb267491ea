package hmacauth

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
)

const (
	// MinSecretLen is the shortest secret a Key may have: 32 bytes, which
	// should come from a cryptographic random source (see NewKey).
	MinSecretLen = 32
	// MaxKeyIDLen is the longest key ID.
	MaxKeyIDLen = 64
)

// Key is a shared secret with a name. Both sides of a connection must hold
// the same Key.
//
// ID names the key on the wire, in the clear: 1 to 64 printable ASCII bytes
// (0x21 to 0x7e). Secret is at least MinSecretLen random bytes; a password
// is not a good secret (an eavesdropper can test guesses against a recorded
// handshake offline), so make one with NewKey or `hmacauth keygen`.
//
// String, GoString, LogValue and MarshalJSON never show the secret.
type Key struct {
	ID     string
	Secret []byte
}

// NewKey returns a Key with the given ID and a fresh 32-byte secret from
// crypto/rand.
func NewKey(id string) (Key, error) {
	k := Key{ID: id, Secret: make([]byte, MinSecretLen)}
	if err := checkKeyID(id); err != nil {
		return Key{}, err
	}
	rand.Read(k.Secret) // never fails; see crypto/rand.Read
	return k, nil
}

// String returns the key ID and the secret's length, never the secret.
func (k Key) String() string {
	return fmt.Sprintf("hmacauth.Key{ID: %q, Secret: [%d bytes redacted]}", k.ID, len(k.Secret))
}

// GoString is like String, so that %#v does not print the secret either.
func (k Key) GoString() string { return k.String() }

// Format prints String for every verb, so that none (%d and %o included,
// which would print the secret's bytes) shows the secret.
func (k Key) Format(f fmt.State, _ rune) { io.WriteString(f, k.String()) }

// LogValue implements slog.LogValuer: the key ID only.
func (k Key) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", k.ID), slog.String("secret", "REDACTED"))
}

// MarshalJSON encodes the key ID only, so that a key that reaches
// encoding/json (a slog JSON handler, a config dump) does not leak its
// secret as base64. Keys are meant to be stored as key files; see LoadKeys.
func (k Key) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}{k.ID, "REDACTED"})
}

// Validate reports whether k can be used: an error wrapping ErrConfig for a
// bad ID, or ErrWeakKey for a short secret.
func (k Key) Validate() error {
	if err := checkKeyID(k.ID); err != nil {
		return err
	}
	if len(k.Secret) < MinSecretLen {
		return errorf(ErrWeakKey, "key %q has a %d-byte secret; use at least %d random bytes, e.g. from `hmacauth keygen` or hmacauth.NewKey",
			k.ID, len(k.Secret), MinSecretLen)
	}
	return nil
}

func checkKeyID(id string) error {
	if len(id) == 0 || len(id) > MaxKeyIDLen {
		return errorf(ErrConfig, "key ID %q has %d bytes; it must have 1 to %d", id, len(id), MaxKeyIDLen)
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return errorf(ErrConfig, "key ID %q has byte %#02x at offset %d; use printable ASCII without spaces", id, id[i], i)
		}
	}
	return nil
}

// keySet is a validated list of keys with their schedules.
type keySet struct {
	first *keySchedule            // the key a client proves
	byID  map[string]*keySchedule // the keys a server accepts
	err   error                   // why the list cannot be used
}

// newKeySet validates the keys of Config.Keys and derives their schedules.
func newKeySet(keys []Key) *keySet { return newKeySetFrom(keys, "Config.Keys") }

// newKeySetFrom is newKeySet for keys from elsewhere; source names them in
// error messages.
func newKeySetFrom(keys []Key, source string) *keySet {
	if len(keys) == 0 {
		return &keySet{err: errorf(ErrConfig, "%s is empty; add at least one key", source)}
	}
	ks := &keySet{byID: make(map[string]*keySchedule, len(keys))}
	for _, k := range keys {
		if err := k.Validate(); err != nil {
			return &keySet{err: err}
		}
		if _, dup := ks.byID[k.ID]; dup {
			return &keySet{err: errorf(ErrConfig, "key ID %q appears twice in %s", k.ID, source)}
		}
		s := deriveKeySchedule(k)
		ks.byID[k.ID] = s
		if ks.first == nil {
			ks.first = s
		}
	}
	return ks
}
