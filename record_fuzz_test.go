package hmacauth

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// memConn feeds a Conn's record layer from memory, in chunks of a chosen
// size, so that fuzzing exercises every way a record can be split across
// reads. Only Read, Write and RemoteAddr are used by the record layer.
type memConn struct {
	net.Conn
	r     io.Reader
	w     bytes.Buffer
	chunk int
}

func (m *memConn) Read(b []byte) (int, error) {
	if m.chunk > 0 && len(b) > m.chunk {
		b = b[:m.chunk]
	}
	return m.r.Read(b)
}

func (m *memConn) Write(b []byte) (int, error)      { return m.w.Write(b) }
func (m *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (m *memConn) SetWriteDeadline(time.Time) error { return nil }

// fuzzSecret is the session secret of the fuzz targets' connections.
var fuzzSecret = bytes.Repeat([]byte{0xa5}, 32)

// recordConn returns a Conn in the given mode whose record layer runs over
// mc with keys from fuzzSecret, as the client or the server.
func recordConn(mc *memConn, mode Mode, chacha, client bool) *Conn {
	return recordConnSecret(mc, mode, chacha, client, fuzzSecret)
}

func recordConnSecret(mc *memConn, mode Mode, chacha, client bool, secret []byte) *Conn {
	c := &Conn{conn: mc, isClient: client}
	c.res = hsResult{keyID: "fuzz", mode: mode, secret: secret}
	if chacha {
		c.res.flags |= flagChaCha20
	}
	c.rl = newRecordLayer(mc, secret, recordParams{client: client, sealed: mode == ModeSealed, chacha: chacha})
	c.hsDone.Store(true)
	return c
}

// fuzzModeByte decodes the first input byte: mode, AEAD, read chunk size.
func fuzzModeByte(b byte) (mode Mode, chacha bool, chunk int) {
	mode = ModeIntegrity
	if b&1 != 0 {
		mode = ModeSealed
	}
	return mode, b&2 != 0, int(b >> 2) // chunk 0: as much as fits
}

// sealRecords returns the wire bytes a client in the given mode sends for
// the payloads, one Write each, then the close record if closed.
func sealRecords(mode Mode, chacha bool, updateAt uint64, closed bool, payloads ...[]byte) []byte {
	mc := &memConn{}
	c := recordConn(mc, mode, chacha, true)
	if updateAt > 0 {
		c.rl.updateAt = updateAt
	}
	for _, p := range payloads {
		c.Write(p)
	}
	if closed {
		c.CloseWrite() // the close record; memConn has no CloseWrite
	}
	return mc.w.Bytes()
}

// FuzzRecordRead feeds arbitrary bytes to the server's record reader. It
// must never panic, never buffer more than one maximum record, and end in
// io.EOF (a close record), ErrIntegrity or ErrProtocol.
func FuzzRecordRead(f *testing.F) {
	for _, mode := range []byte{0, 1, 2, 3, 1 | 4<<2, 16 << 2} {
		m, chacha, _ := fuzzModeByte(mode)
		f.Add(append([]byte{mode}, sealRecords(m, chacha, 0, true, []byte("hello"), []byte("world"))...))
		f.Add(append([]byte{mode}, sealRecords(m, chacha, 5, true, []byte("key"), []byte("update"), []byte("!"))...))
		f.Add(append([]byte{mode}, sealRecords(m, chacha, 0, false, bytes.Repeat([]byte("x"), 3000))...))
	}
	f.Add([]byte{1, recordData, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		mode, chacha, chunk := fuzzModeByte(in[0])
		mc := &memConn{r: bytes.NewReader(in[1:]), chunk: chunk}
		c := recordConn(mc, mode, chacha, false)
		buf := make([]byte, 1000)
		total := 0
		var err error
		for i := 0; i <= len(in); i++ { // each Read consumes at least a byte
			var n int
			n, err = c.Read(buf)
			total += n
			if err != nil {
				break
			}
		}
		if err != io.EOF && !errors.Is(err, ErrIntegrity) && !errors.Is(err, ErrProtocol) {
			t.Fatalf("Read ended with %v", err)
		}
		if total > len(in) {
			t.Fatalf("delivered %d bytes from %d", total, len(in))
		}
		if len(c.rl.in.buf) > recordOverhead+maxRecordPayload {
			t.Fatalf("read buffer grew to %d bytes", len(c.rl.in.buf))
		}
	})
}

// FuzzRecordRoundTrip checks that whatever is written, in any split and
// record size, is read back intact, with key updates on the way.
func FuzzRecordRoundTrip(f *testing.F) {
	f.Add(byte(0), uint16(1), uint16(7), []byte("hello, world"))
	f.Add(byte(1), uint16(100), uint16(0), bytes.Repeat([]byte{0}, 5000))
	f.Add(byte(3), uint16(1), uint16(1), []byte("ab"))
	f.Fuzz(func(t *testing.T, mb byte, recordSize, updateAt uint16, data []byte) {
		mode, chacha, chunk := fuzzModeByte(mb)
		wc := &memConn{}
		w := recordConn(wc, mode, chacha, true)
		w.rl.recordSize = max(int(recordSize), 1)
		if updateAt > 0 {
			w.rl.updateAt = uint64(updateAt)
		}
		if n, err := w.Write(data); n != len(data) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if err := w.rl.shutdown(time.Time{}); err != nil {
			t.Fatal(err)
		}
		rc := &memConn{r: bytes.NewReader(wc.w.Bytes()), chunk: chunk}
		r := recordConn(rc, mode, chacha, false)
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back %d bytes, %v; want %d bytes", len(got), err, len(data))
		}
		if r.rl.in.gen != w.rl.out.gen {
			t.Fatalf("reader at key generation %d, writer at %d", r.rl.in.gen, w.rl.out.gen)
		}
	})
}

// TestRecordHeaderAcrossBufferEnd is a regression test: a record header
// that starts two bytes before the end of the read buffer once made the
// reader spin on zero-length reads.
func TestRecordHeaderAcrossBufferEnd(t *testing.T) {
	first := bytes.Repeat([]byte{'a'}, initialReadBuffer-2-2*recordOverhead-1)
	wire := sealRecords(ModeSealed, false, 0, true, first, []byte("b"), []byte("tail"))
	mc := &memConn{r: bytes.NewReader(wire)}
	c := recordConn(mc, ModeSealed, false, false)
	got, err := io.ReadAll(c)
	if want := string(first) + "btail"; err != nil || string(got) != want {
		t.Fatalf("ReadAll = %d bytes, %v; want %d bytes", len(got), err, len(want))
	}
}
