package hmacauth

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
)

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
