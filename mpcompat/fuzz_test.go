package mpcompat

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// The seed corpora are in testdata/fuzz; go test runs them.

func FuzzReadMessage(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		const max = 1 << 16
		msg, err := ReadMessage(bytes.NewReader(in), max)
		if err != nil {
			return
		}
		if len(msg) > max {
			t.Fatalf("returned %d bytes over the limit %d", len(msg), max)
		}
		n := binary.BigEndian.Uint32(in)
		if n == 0xffffffff {
			if got := binary.BigEndian.Uint64(in[4:]); got != uint64(len(msg)) || !bytes.Equal(in[12:12+len(msg)], msg) {
				t.Fatalf("64-bit form: length %d, returned %d bytes", got, len(msg))
			}
			return
		}
		var out bytes.Buffer
		WriteMessage(&out, msg)
		if !bytes.HasPrefix(in, out.Bytes()) {
			t.Fatalf("re-encoding gives % x, not a prefix of the input % x", out.Bytes(), in)
		}
	})
}

func FuzzParseChallenge(f *testing.F) {
	f.Fuzz(func(t *testing.T, msg []byte) {
		m, d, legacy, err := parseChallenge(msg)
		if err != nil {
			return
		}
		if !bytes.HasPrefix(msg, []byte(challengePrefix)) || !bytes.Equal(msg[len(challengePrefix):], m) {
			t.Fatalf("M %q is not what follows %q in %q", m, challengePrefix, msg)
		}
		if legacy != (len(m) == legacyChallengeLen) || legacy && d != DigestMD5 {
			t.Fatalf("legacy=%t, digest %q for a %d-byte M", legacy, d, len(m))
		}
		if !legacy {
			if pd, _, ok := parseDigestPrefix(m); !ok || pd != d || !bytes.HasPrefix(m, []byte("{"+d+"}")) {
				t.Fatalf("digest %q does not head M %q", d, m)
			}
		}
		if d.hashFunc() == nil {
			t.Fatalf("unknown digest %q accepted", d)
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	f.Fuzz(func(t *testing.T, r []byte) {
		d, mac, err := parseResponse(r)
		if err != nil {
			return
		}
		if d.hashFunc() == nil || !bytes.HasSuffix(r, mac) {
			t.Fatalf("digest %q, MAC % x from % x", d, mac, r)
		}
		raw := len(r) == legacyResponseLen || len(r) == legacyChallengeLen
		if raw != bytes.Equal(r, mac) || raw && d != DigestMD5 {
			t.Fatalf("a %d-byte answer read as %q", len(r), d)
		}
		if !raw && !bytes.Equal(r, append([]byte("{"+d+"}"), mac...)) {
			t.Fatalf("answer % x is not {%s} + MAC", r, d)
		}
	})
}

// FuzzCheckAnswer checks that a listener accepts an answer only if it
// carries the right MAC in a digest at least as strong as configured.
func FuzzCheckAnswer(f *testing.F) {
	m := []byte("{sha256}0123456789abcdefghijklmnopqrstuvwxyzABCD") // as in the seeds
	f.Fuzz(func(t *testing.T, answer []byte, legacy bool) {
		h := handshake{cfg: &Config{AuthKey: keyA, AllowLegacyMD5: legacy}, server: true}
		if err := h.checkAnswer(m, answer); err != nil {
			return
		}
		d, mac, err := parseResponse(answer)
		if err != nil || d != h.peerDigest {
			t.Fatalf("accepted an answer that parses as %q, %v", d, err)
		}
		if d == DigestMD5 && !legacy || d != DigestMD5 && d.size() < DigestSHA256.size() {
			t.Fatalf("accepted a %s answer with AllowLegacyMD5=%t", d, legacy)
		}
		if !bytes.Equal(mac, d.mac(keyA, m)) {
			t.Fatalf("accepted a wrong %s MAC", d)
		}
	})
}
