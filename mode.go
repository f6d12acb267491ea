package hmacauth

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
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

// ConnectionState describes an established connection.
type ConnectionState struct {
	// HandshakeComplete is true once the handshake succeeded; the other
	// fields are zero until then.
	HandshakeComplete bool
	// KeyID is the ID of the key both sides proved.
	KeyID string
	// Mode is the mode the connection runs at: the stronger of the two
	// sides' Config.Mode. Both sides report the same.
	Mode Mode
	// ForwardSecrecy is true when an ephemeral X25519 exchange was mixed
	// into the session keys.
	ForwardSecrecy bool

	secret []byte
}

// String describes the state without the session secret, so that printing
// a ConnectionState (fmt's %v prints unexported fields) does not leak it.
func (cs ConnectionState) String() string {
	return fmt.Sprintf("hmacauth.ConnectionState{HandshakeComplete: %v, KeyID: %q, Mode: %v, ForwardSecrecy: %v}",
		cs.HandshakeComplete, cs.KeyID, cs.Mode, cs.ForwardSecrecy)
}

// GoString is like String, so that %#v does not print the secret either.
func (cs ConnectionState) GoString() string { return cs.String() }

// Format prints String for every verb, so that none shows the secret.
func (cs ConnectionState) Format(f fmt.State, _ rune) { io.WriteString(f, cs.String()) }

// ConnectionState returns the state of the connection. It holds its own
// copy of the session secret, so its exporter keeps working after Close;
// a ConnectionState taken after Close has none, and its exporter fails.
func (c *Conn) ConnectionState() ConnectionState { return c.connectionState(true) }

// connectionState is ConnectionState, with a copy of the session secret
// only if withSecret: a copy is never cleared, so what only prints the
// state (String, LogValue) takes none.
func (c *Conn) connectionState(withSecret bool) ConnectionState {
	if !c.hsDone.Load() || c.hsErr != nil {
		return ConnectionState{}
	}
	cs := ConnectionState{
		HandshakeComplete: true,
		KeyID:             c.res.keyID,
		Mode:              Mode(c.res.mode),
		ForwardSecrecy:    c.res.flags&flagForwardSecrecy != 0,
	}
	if withSecret {
		c.secretMu.Lock()
		cs.secret = bytes.Clone(c.res.secret) // nil after Close
		c.secretMu.Unlock()
	}
	return cs
}

// clearSessionSecret overwrites the session secret with zeros at Close.
// The handshake is done: nothing else writes c.res.
func (c *Conn) clearSessionSecret() {
	c.secretMu.Lock()
	clear(c.res.secret)
	c.res.secret = nil
	c.secretMu.Unlock()
}

// ExportKeyingMaterial returns length bytes derived from the session
// secret, the label and the context, in the manner of RFC 5705: both sides
// of a connection get the same bytes, no other connection does, and they
// reveal nothing about the keys. A nil and an empty context are the same,
// as in TLS 1.3 (RFC 8446, section 7.5) and unlike RFC 5705: do not use a
// label both with and without a context. The exporter is defined in
// PROTOCOL.md section 8. Errors wrap ErrExport.
func (cs ConnectionState) ExportKeyingMaterial(label string, context []byte, length int) ([]byte, error) {
	if !cs.HandshakeComplete {
		return nil, errorf(ErrExport, "ExportKeyingMaterial before a successful handshake")
	}
	if cs.secret == nil {
		return nil, fmt.Errorf("%w: the connection was closed before ConnectionState was called, and Close cleared the session secret; call ConnectionState before Close: %w", ErrExport, net.ErrClosed)
	}
	if len(label) > 0xffff || len(context) > 0xffff || length < 0 || length > 255*sha256.Size {
		return nil, errorf(ErrExport, "label of %d bytes, context of %d bytes, length %d: label and context must be under 64 KiB and length 0 to %d",
			len(label), len(context), length, 255*sha256.Size)
	}
	exp := expandLabel(cs.secret, "exporter", sha256.Size)
	info := make([]byte, 0, 4+len(label)+len(context))
	info = binary.BigEndian.AppendUint16(info, uint16(len(label)))
	info = append(info, label...)
	info = binary.BigEndian.AppendUint16(info, uint16(len(context)))
	info = append(info, context...)
	return hkdf.Expand(sha256.New, exp, string(info), length)
}
