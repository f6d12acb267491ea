package hmacauth

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"testing"
)

// TestMacTo checks macTo against crypto/hmac on both sides of its limits:
// keys up to and over one block, messages up to and over macMaxInput, in
// one part or several.
func TestMacTo(t *testing.T) {
	msg := seededBytes("message", macMaxInput+2)
	for _, keyLen := range []int{0, 1, 32, sha256.BlockSize - 1, sha256.BlockSize, sha256.BlockSize + 1, 100} {
		key := seededBytes("key", keyLen)
		for _, n := range []int{0, 1, 55, 56, 64, 119, 120, macMaxInput - 1, macMaxInput, macMaxInput + 1} {
			m := hmac.New(sha256.New, key)
			m.Write(msg[:n])
			want := m.Sum(nil)
			for _, parts := range [][][]byte{
				{msg[:n]},
				{msg[:n/3], nil, msg[n/3 : n/2], msg[n/2 : n]},
			} {
				var got [sha256.Size]byte
				macTo(&got, key, parts...)
				if !bytes.Equal(got[:], want) {
					t.Fatalf("key %d bytes, message %d bytes in %d parts: %x, want %x", keyLen, n, len(parts), got, want)
				}
			}
		}
	}
}

// TestMacAllocs: the handshake's MACs allocate nothing.
func TestMacAllocs(t *testing.T) {
	key := macKey(seededBytes("key", sha256.Size))
	transcript := seededBytes("transcript", transcriptLen)
	var out [macLen]byte
	if n := testing.AllocsPerRun(100, func() {
		mac(out[:0], &key, transcript[:clientHelloLen], transcript[clientHelloLen:])
	}); n != 0 {
		t.Errorf("mac allocates %v times", n)
	}
}
