package hmacauth

// The key schedule (PROTOCOL.md, "Key schedule"): the values derived from
// a key, the handshake's MACs, the session secret, and HKDF-Expand with
// the protocol's labels, which the record layer and the exporter use too.

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
)

// keySchedule holds the values derived from one key that do not depend on a
// connection; see "Key schedule" in PROTOCOL.md.
type keySchedule struct {
	id          string
	hello       macKey // proves the ClientHello (no oracle for strangers)
	serverHello macKey // proves the ServerHello (K_sh; its label says "server finished")
	clientFin   macKey // client's proof
	session     []byte // input to the session secret
}

// deriveKeySchedule derives the key schedule of k: HKDF-Extract with the
// protocol label as salt, then one HKDF-Expand per label.
func deriveKeySchedule(k Key) *keySchedule {
	prk, err := hkdf.Extract(sha256.New, k.Secret, []byte(protocolLabel))
	if err != nil {
		panic(err) // unreachable: SHA-256 accepts any input
	}
	expand := func(label string) []byte { return expandLabel(prk, label, sha256.Size) }
	return &keySchedule{
		id:          k.ID,
		hello:       macKey(expand("client hello")),
		serverHello: macKey(expand("server finished")),
		clientFin:   macKey(expand("client finished")),
		session:     expand("session"),
	}
}

// macKey is the HMAC-SHA256 key of one handshake message.
type macKey [sha256.Size]byte

// sessionSecret derives the session secret from the whole transcript:
// HKDF-Extract(salt = SHA-256(transcript), session key || DH), which is one
// HMAC keyed with the salt (RFC 5869, section 2.2).
func sessionSecret(sched *keySchedule, transcript, dh []byte) []byte {
	th := sha256.Sum256(transcript)
	secret := new([sha256.Size]byte)
	macTo(secret, th[:], sched.session, dh)
	return secret[:]
}

// mac returns HMAC-SHA256(key, parts...) appended to dst.
func mac(dst []byte, key *macKey, parts ...[]byte) []byte {
	var out [macLen]byte
	macTo(&out, key[:], parts...)
	return append(dst, out[:]...)
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

// macMaxInput is the longest message macTo hashes on the stack: a handshake
// MAC covers at most the transcript.
const macMaxInput = transcriptLen

// macTo sets out to HMAC-SHA256(key, parts...). For a key of at most one
// SHA-256 block and at most macMaxInput bytes of parts, which is every
// handshake MAC, the session secret and every record key, both hashes run
// over stack buffers and nothing is allocated; crypto/hmac's clone of a
// keyed state cost more than the hashing. Other inputs go to crypto/hmac.
// The vectors in testdata/vectors and TestMacTo check it.
func macTo(out *[sha256.Size]byte, key []byte, parts ...[]byte) {
	const block = sha256.BlockSize
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if len(key) > block || n > macMaxInput {
		// Key and parts are copied first, so that no argument escapes
		// through crypto/hmac and the stack path stays allocation-free.
		msg := make([]byte, 0, n)
		for _, p := range parts {
			msg = append(msg, p...)
		}
		m := hmac.New(sha256.New, bytes.Clone(key))
		m.Write(msg)
		copy(out[:], m.Sum(nil))
		return
	}
	// RFC 2104: a key of at most one block is zero-padded to one block.
	var in [block + macMaxInput]byte // key^ipad || parts
	var outer [block + sha256.Size]byte
	copy(in[:], key)
	copy(outer[:], key)
	for i := range block {
		in[i] ^= 0x36
		outer[i] ^= 0x5c
	}
	n = block
	for _, p := range parts {
		n += copy(in[n:], p)
	}
	ih := sha256.Sum256(in[:n])
	copy(outer[block:], ih[:])
	*out = sha256.Sum256(outer[:])
	clear(in[:n])
	clear(outer[:])
}
