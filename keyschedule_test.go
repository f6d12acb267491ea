package hmacauth

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"strings"
	"testing"
)

// TestMacTo checks macTo against crypto/hmac on both sides of its limits:
// keys up to and over one block, messages up to and over macMaxInput, in
// one part or several.
func TestMacTo(t *testing.T) {
	t.Parallel()
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

// TestExpandLabelTo checks the record layer's allocation-free HKDF-Expand
// against crypto/hkdf, on both sides of every limit of its fast path:
// output length, secret length and label length.
func TestExpandLabelTo(t *testing.T) {
	t.Parallel()
	const maxFastLabel = sha256.BlockSize - len(protocolLabel) - 2
	for _, secretLen := range []int{0, 1, 32, sha256.BlockSize, sha256.BlockSize + 1, 100} {
		for _, labelLen := range []int{0, 2, maxFastLabel, maxFastLabel + 1, 200} {
			for _, n := range []int{0, 1, 12, sha256.Size, sha256.Size + 1, 100} {
				secret := bytes.Repeat([]byte{byte(secretLen + 1)}, secretLen)
				label := strings.Repeat("k", labelLen)
				want, err := hkdf.Expand(sha256.New, secret, protocolLabel+" "+label, n)
				if err != nil {
					t.Fatal(err)
				}
				got := make([]byte, n)
				expandLabelTo(got, secret, label)
				if !bytes.Equal(got, want) {
					t.Errorf("secret %d bytes, label %d bytes, %d bytes out: got %x, want %x", secretLen, labelLen, n, got, want)
				}
				if got := expandLabel(secret, label, n); !bytes.Equal(got, want) {
					t.Errorf("expandLabel: secret %d bytes, label %d bytes, %d bytes out: got %x, want %x", secretLen, labelLen, n, got, want)
				}
			}
		}
	}
	// The output may overwrite the secret it is derived from, as a key
	// update does.
	secret := bytes.Repeat([]byte{7}, trafficSecretLen)
	want := expandLabel(secret, "traffic update", trafficSecretLen)
	expandLabelTo(secret, secret, "traffic update")
	if !bytes.Equal(secret, want) {
		t.Errorf("in place: got %x, want %x", secret, want)
	}
}

// TestExpandLabelToAllocs checks that the derivations of the record layer
// do not allocate.
func TestExpandLabelToAllocs(t *testing.T) {
	secret := make([]byte, trafficSecretLen)
	var key [32]byte
	for _, label := range []string{"c2s traffic", "s2c traffic", "key", "iv", "traffic update"} {
		if n := testing.AllocsPerRun(10, func() { expandLabelTo(key[:], secret, label) }); n != 0 {
			t.Errorf("expandLabelTo(%q) allocates %v times", label, n)
		}
	}
}
