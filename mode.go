package hmacauth

import "fmt"

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
