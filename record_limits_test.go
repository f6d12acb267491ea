package hmacauth

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// testRecordWriter builds records as PROTOCOL.md section 9 describes them,
// with its own code rather than the record layer's, and sends them on the
// raw connection under a Conn: it can send what the Go sender never does,
// such as empty data records and key updates in a row.
type testRecordWriter struct {
	t      testing.TB
	c      *Conn
	sealed bool
	chacha bool
	secret []byte // the current traffic secret
	aead   cipher.AEAD
	iv     []byte
	seq    uint64
}

// newTestRecordWriter returns a writer for c's sending direction, which must
// not have sent a record yet.
func newTestRecordWriter(t testing.TB, c *Conn) *testRecordWriter {
	label := "s2c traffic"
	if c.isClient {
		label = "c2s traffic"
	}
	w := &testRecordWriter{
		t:      t,
		c:      c,
		sealed: c.res.mode == ModeSealed,
		chacha: c.res.flags&flagChaCha20 != 0,
		secret: expandLabel(c.res.secret, label, 32),
	}
	w.keys()
	return w
}

func (w *testRecordWriter) keys() {
	key := expandLabel(w.secret, "key", 32)
	w.iv = expandLabel(w.secret, "iv", 12)
	w.seq = 0
	var err error
	if w.chacha {
		w.aead, err = chacha20poly1305.New(key)
	} else {
		var b cipher.Block
		if b, err = aes.NewCipher(key); err == nil {
			w.aead, err = cipher.NewGCM(b)
		}
	}
	if err != nil {
		w.t.Fatal(err)
	}
}

// send writes one record of type typ; after a key update it moves to the
// next generation.
func (w *testRecordWriter) send(typ byte, payload []byte) {
	n := len(payload)
	header := []byte{typ, byte(n >> 16), byte(n >> 8), byte(n)}
	nonce := append([]byte(nil), w.iv...)
	for i := range 8 {
		nonce[4+i] ^= byte(w.seq >> (56 - 8*i))
	}
	var rec []byte
	if w.sealed {
		rec = w.aead.Seal(append([]byte(nil), header...), nonce, payload, header)
	} else {
		ad := append(append([]byte(nil), header...), payload...)
		rec = w.aead.Seal(append([]byte(nil), ad...), nonce, nil, ad)
	}
	if _, err := w.c.conn.Write(rec); err != nil {
		w.t.Fatal(err)
	}
	w.seq++
	if typ == recordKeyUpdate {
		w.secret = expandLabel(w.secret, "traffic update", 32)
		w.keys()
	}
}

// TestUselessRecordFlood sends records without application data (empty
// data records, key updates) over loopback with the test's own record
// writer: up to 16 in a row are accepted, as crypto/tls accepts 16
// useless records; the 17th is refused with ErrProtocol, since each
// authenticated (only a holder of the key can send them) and the peer,
// not the network, is at fault.
func TestUselessRecordFlood(t *testing.T) {
	type step struct {
		typ byte
		n   int
	}
	cases := []struct {
		name  string
		steps []step
		fail  bool
	}{
		{"16 empty data records", []step{{recordData, 16}}, false},
		{"16 key updates", []step{{recordKeyUpdate, 16}}, false},
		{"16 mixed", []step{{recordData, 8}, {recordKeyUpdate, 8}}, false},
		{"17 empty data records", []step{{recordData, 17}}, true},
		{"17 key updates", []step{{recordKeyUpdate, 17}}, true},
		{"17 mixed", []step{{recordKeyUpdate, 9}, {recordData, 8}}, true},
	}
	for _, mode := range []Mode{ModeIntegrity, ModeSealed} {
		for _, chacha := range []bool{false, true} {
			for _, tc := range cases {
				t.Run(fmt.Sprintf("%v/chacha=%v/%s", mode, chacha, tc.name), func(t *testing.T) {
					c, s := connPair(t, pairOptions{mode: mode, chacha: chacha})
					defer c.Close()
					defer s.Close()
					s.SetReadDeadline(time.Now().Add(time.Minute)) // a bound, not a synchronisation
					w := newTestRecordWriter(t, c)
					// Data resets the count: the flood starts after it.
					w.send(recordData, []byte("a"))
					for _, st := range tc.steps {
						for range st.n {
							w.send(st.typ, nil)
						}
					}
					w.send(recordData, []byte("b"))
					buf := make([]byte, 8)
					got, err := io.ReadAtLeast(s, buf, 2)
					if !tc.fail {
						if err != nil || string(buf[:got]) != "ab" {
							t.Fatalf("Read = %q, %v; want \"ab\"", buf[:got], err)
						}
						return
					}
					if !errors.Is(err, ErrProtocol) || errors.Is(err, ErrIntegrity) {
						t.Fatalf("Read = %q, %v; want ErrProtocol", buf[:got], err)
					}
					if string(buf[:got]) != "a" {
						t.Errorf("delivered %q before the flood, want \"a\"", buf[:got])
					}
					if _, err2 := s.Read(buf); err2 != err {
						t.Errorf("the error is not sticky: then %v, now %v", err, err2)
					}
				})
			}
		}
	}
}

// recordTypes splits wire into records and returns their types.
func recordTypes(t *testing.T, wire []byte) []byte {
	t.Helper()
	var types []byte
	for len(wire) > 0 {
		if len(wire) < recordOverhead {
			t.Fatalf("%d bytes left, not a record", len(wire))
		}
		n := int(wire[1])<<16 | int(wire[2])<<8 | int(wire[3])
		types = append(types, wire[0])
		wire = wire[recordOverhead+n:]
	}
	return types
}

// TestKeyUpdateBoundaries checks the sender's rule of PROTOCOL.md 9.4
// exactly: before a data or close record, and only then, it sends a key
// update if the current generation has protected updateAt payload bytes or
// more, or 2^48 records or more; so the last data record may take the
// generation past updateAt bytes, and the key update is the generation's
// record 2^48 (sequence number 2^48), after which the next generation
// starts at 0. A receiver in the same state reads it all.
func TestKeyUpdateBoundaries(t *testing.T) {
	t.Run("bytes", func(t *testing.T) {
		mc := &memConn{}
		c := recordConn(mc, ModeSealed, false, true)
		c.rl.updateAt = 10
		for _, p := range []string{"123456789", "abcde", "z"} { // 9 < 10, 14 >= 10
			if _, err := c.Write([]byte(p)); err != nil {
				t.Fatal(err)
			}
		}
		c.CloseWrite()
		want := []byte{recordData, recordData, recordKeyUpdate, recordData, recordClose}
		if got := recordTypes(t, mc.w.Bytes()); string(got) != string(want) {
			t.Fatalf("record types %v, want %v", got, want)
		}
		r := recordConn(&memConn{r: bytes.NewReader(mc.w.Bytes())}, ModeSealed, false, false)
		if got, err := io.ReadAll(r); err != nil || string(got) != "123456789abcdez" {
			t.Fatalf("the receiver read %q, %v", got, err)
		}
	})
	t.Run("records", func(t *testing.T) {
		mc := &memConn{}
		c := recordConn(mc, ModeIntegrity, true, true)
		c.rl.out.seq = keyUpdateRecords - 1
		for _, p := range []string{"last", "first"} {
			if _, err := c.Write([]byte(p)); err != nil {
				t.Fatal(err)
			}
		}
		if c.rl.out.gen != 1 || c.rl.out.seq != 1 {
			t.Errorf("sender at generation %d, seq %d; want 1, 1", c.rl.out.gen, c.rl.out.seq)
		}
		want := []byte{recordData, recordKeyUpdate, recordData}
		if got := recordTypes(t, mc.w.Bytes()); string(got) != string(want) {
			t.Fatalf("record types %v, want %v", got, want)
		}
		r := recordConn(&memConn{r: bytes.NewReader(mc.w.Bytes())}, ModeIntegrity, true, false)
		r.rl.in.seq = keyUpdateRecords - 1 // the receiver does not enforce the limit
		buf := make([]byte, 9)
		if n, err := io.ReadAtLeast(r, buf, 9); err != nil || string(buf[:n]) != "lastfirst" {
			t.Fatalf("the receiver read %q, %v", buf[:n], err)
		}
		if r.rl.in.gen != 1 || r.rl.in.seq != 1 {
			t.Errorf("receiver at generation %d, seq %d; want 1, 1", r.rl.in.gen, r.rl.in.seq)
		}
	})
}
