package hmacauth

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
)

// A Keyring holds keys that can be replaced while listeners and dialers
// use them, to rotate keys without a restart. Point Config.Keyring at it;
// one Keyring may serve many configs.
//
// Replacing the keys affects handshakes that start afterwards only: a
// connection keeps the key it proved, and a handshake in progress finishes
// with the keys it started with. A dialer proves the first key; a listener
// accepts any of them. To rotate: Set(old, new) on the servers, then
// Set(new) on the clients, then Set(new) on the servers. KeyFileWatcher
// keeps a Keyring in step with a key file.
//
// The zero Keyring holds no keys; handshakes with it fail with ErrConfig
// until Set succeeds. A Keyring is safe for concurrent use and must not be
// copied. Its String, GoString and LogValue show key IDs, never secrets.
type Keyring struct {
	state atomic.Pointer[ringState]
}

// ringState is one generation of a Keyring's keys, swapped as a whole.
type ringState struct {
	set  *keySet // validated, with derived keys
	keys []Key   // private copies, for Keys
}

// NewKeyring returns a Keyring holding keys. It fails as Set does.
func NewKeyring(keys ...Key) (*Keyring, error) {
	r := new(Keyring)
	if err := r.Set(keys...); err != nil {
		return nil, err
	}
	return r, nil
}

// Set replaces the keys, atomically: a handshake uses either all the old
// keys or all the new ones. Set copies the keys; the caller may reuse the
// slice and the secrets. If a key is invalid (ErrWeakKey, ErrConfig), the
// list is empty or an ID appears twice, Set returns the error and the
// Keyring keeps its old keys.
func (r *Keyring) Set(keys ...Key) error {
	ks := newKeySetFrom(keys, "the key list for the Keyring")
	if ks.err != nil {
		return ks.err
	}
	r.state.Store(&ringState{set: ks, keys: copyKeys(keys)})
	return nil
}

// Keys returns a copy of the keys, first (the key a dialer proves) first.
func (r *Keyring) Keys() []Key {
	st := r.state.Load()
	if st == nil {
		return nil
	}
	return copyKeys(st.keys)
}

// IDs returns the key IDs in order.
func (r *Keyring) IDs() []string {
	st := r.state.Load()
	if st == nil {
		return nil
	}
	return keyIDs(st.keys)
}

// String returns the key IDs, never the secrets.
func (r *Keyring) String() string {
	if r == nil {
		return "hmacauth.Keyring(nil)"
	}
	ids := r.IDs()
	q := make([]string, len(ids))
	for i, id := range ids {
		q[i] = fmt.Sprintf("%q", id)
	}
	return "hmacauth.Keyring{IDs: [" + strings.Join(q, " ") + "], secrets redacted}"
}

// GoString is like String, so that %#v does not print secrets either.
func (r *Keyring) GoString() string { return r.String() }

// Format prints String for every verb, so that none shows a secret.
func (r *Keyring) Format(f fmt.State, _ rune) { io.WriteString(f, r.String()) }

// LogValue implements slog.LogValuer: the key IDs only.
func (r *Keyring) LogValue() slog.Value {
	if r == nil {
		return slog.StringValue("<nil>")
	}
	return slog.GroupValue(slog.Any("ids", r.IDs()))
}

// keySet returns the current keys, or why there are none.
func (r *Keyring) keySet() (*keySet, error) {
	st := r.state.Load()
	if st == nil {
		return nil, errorf(ErrConfig, "the Keyring holds no keys; fill it with NewKeyring or Keyring.Set")
	}
	return st.set, nil
}

func copyKeys(keys []Key) []Key {
	out := make([]Key, len(keys))
	for i, k := range keys {
		out[i] = Key{ID: k.ID, Secret: append([]byte(nil), k.Secret...)}
	}
	return out
}

func keyIDs(keys []Key) []string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	return ids
}
