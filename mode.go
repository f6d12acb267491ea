package hmacauth

import (
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
)

// Mode is what a connection protects after the handshake. The modes are
// ordered: ModeAuth < ModeIntegrity < ModeSealed.
type Mode uint8

const (
	// ModeAuth authenticates the peers only; application bytes then flow
	// on the raw connection, unprotected and without any overhead.
	ModeAuth Mode = iota
	// ModeIntegrity adds a MAC to every record: tampering, reordering,
	// replay, reflection and truncation are detected; data is readable on
	// the wire.
	ModeIntegrity
	// ModeSealed encrypts and authenticates every record (AEAD).
	ModeSealed
)

// String returns "auth", "integrity" or "sealed".
func (m Mode) String() string {
	switch m {
	case ModeAuth:
		return "auth"
	case ModeIntegrity:
		return "integrity"
	case ModeSealed:
		return "sealed"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// expandLabel is HKDF-Expand-SHA256(secret, "hmacauth/1 " + label, n).
func expandLabel(secret []byte, label string, n int) []byte {
	b := make([]byte, n)
	expandLabelTo(b, secret, label)
	return b
}

// expandLabelTo sets dst to expandLabel(secret, label, len(dst)) without
// allocating when dst is at most one hash long, as for every key the
// record layer derives: six per connection and side, where crypto/hkdf's
// allocating HMAC cost more CPU than the rest of the record layer's setup.
// Up to one hash length, HKDF-Expand is a single HMAC: T(1) =
// HMAC(secret, info || 0x01) (RFC 5869, section 2.3). TestExpandLabelTo
// checks the result against crypto/hkdf.
func expandLabelTo(dst, secret []byte, label string) {
	const prefix = protocolLabel + " "
	if len(dst) > sha256.Size {
		b, err := hkdf.Expand(sha256.New, secret, prefix+label, len(dst))
		if err != nil {
			panic(err) // unreachable: callers ask for far less than the HKDF limit
		}
		copy(dst, b)
		return
	}
	var t [sha256.Size]byte
	macTo(&t, secret, []byte(prefix), []byte(label), []byte{1})
	copy(dst, t[:])
	clear(t[:])
}
