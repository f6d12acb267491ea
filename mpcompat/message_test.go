package mpcompat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"runtime"
	"testing"
)

func TestMessageRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	sizes := []int{0, 1, 255, 256, 16384, 16385, firstChunk - 1, firstChunk, 3*firstChunk + 17}
	for i, n := range sizes {
		if err := WriteMessage(&buf, pattern(n, byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range sizes {
		got, err := ReadMessage(&buf, n)
		if err != nil {
			t.Fatalf("message %d (%d bytes): %v", i, n, err)
		}
		if !bytes.Equal(got, pattern(n, byte(i))) {
			t.Fatalf("message %d (%d bytes) differs after a round trip", i, n)
		}
	}
	if _, err := ReadMessage(&buf, 10); err != io.EOF {
		t.Fatalf("ReadMessage at the end of the stream: %v, want io.EOF", err)
	}
}

func TestMessageWireFormat(t *testing.T) {
	// struct.pack("!i", 3) + b"abc", as Connection.send_bytes writes it.
	var buf bytes.Buffer
	if err := WriteMessage(&buf, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if want := "\x00\x00\x00\x03abc"; buf.String() != want {
		t.Fatalf("WriteMessage wrote %q, want %q", buf.String(), want)
	}
	cases := []struct {
		n    uint64
		want []byte
	}{
		{0, []byte{0, 0, 0, 0}},
		{math.MaxInt32, []byte{0x7f, 0xff, 0xff, 0xff}},
		// struct.pack("!i", -1) + struct.pack("!Q", n) above 0x7fffffff.
		{math.MaxInt32 + 1, []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0}},
		{1 << 40, []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0, 0, 0, 0, 0}},
	}
	for _, c := range cases {
		if got := appendHeader(nil, c.n); !bytes.Equal(got, c.want) {
			t.Errorf("header for %d bytes = % x, want % x", c.n, got, c.want)
		}
	}
}

func header64(n uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{0xff, 0xff, 0xff, 0xff}, n)
}

func TestReadMessage64BitForm(t *testing.T) {
	in := append(header64(5), "hello"...)
	got, err := ReadMessage(bytes.NewReader(in), 5)
	if err != nil || string(got) != "hello" {
		t.Fatalf("ReadMessage(64-bit form) = %q, %v; want hello", got, err)
	}
}

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestReadMessageTooLarge(t *testing.T) {
	cases := []struct {
		name   string
		in     []byte
		max    int
		header int
	}{
		{"32-bit", binary.BigEndian.AppendUint32(nil, 1000), 999, 4},
		{"64-bit", header64(1 << 40), 1 << 30, 12},
		{"64-bit over MaxInt", header64(math.MaxUint64), math.MaxInt, 12},
		{"negative max", binary.BigEndian.AppendUint32(nil, 1), -1, 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The body is never there: a reader that tried to read or
			// allocate it would fail differently.
			r := &countingReader{r: bytes.NewReader(c.in)}
			_, err := ReadMessage(r, c.max)
			if !errors.Is(err, ErrMessageTooLarge) {
				t.Fatalf("err = %v, want ErrMessageTooLarge", err)
			}
			if r.n != c.header {
				t.Fatalf("read %d bytes, want only the %d-byte length", r.n, c.header)
			}
		})
	}
	if got, err := ReadMessage(bytes.NewReader([]byte{0, 0, 0, 0}), -1); err != nil || len(got) != 0 {
		t.Fatalf("an empty message with max -1: %q, %v", got, err)
	}
	if got, err := ReadMessage(bytes.NewReader([]byte{0, 0, 0, 3, 'a', 'b', 'c'}), 3); err != nil || string(got) != "abc" {
		t.Fatalf("a message of exactly max bytes: %q, %v", got, err)
	}
}

func TestReadMessageMalformed(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"negative length", []byte{0xff, 0xff, 0xff, 0xfe}, ErrProtocol},
		{"min int32 length", []byte{0x80, 0, 0, 0}, ErrProtocol},
		{"short length", []byte{0, 0}, io.ErrUnexpectedEOF},
		{"short 64-bit length", []byte{0xff, 0xff, 0xff, 0xff, 0, 0}, io.ErrUnexpectedEOF},
		{"no 64-bit length", []byte{0xff, 0xff, 0xff, 0xff}, io.ErrUnexpectedEOF},
		{"short body", []byte{0, 0, 0, 5, 'a', 'b'}, io.ErrUnexpectedEOF},
		{"no body", []byte{0, 0, 0, 5}, io.ErrUnexpectedEOF},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ReadMessage(bytes.NewReader(c.in), 100)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
}

// TestReadMessageAllocatesAsDataArrives checks that a peer announcing a
// huge message and sending little cannot make ReadMessage allocate it.
func TestReadMessageAllocatesAsDataArrives(t *testing.T) {
	const announced = 1 << 30
	in := append(binary.BigEndian.AppendUint32(nil, announced), pattern(3*firstChunk, 1)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := ReadMessage(bytes.NewReader(in), announced)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 32*firstChunk {
		t.Fatalf("allocated %d bytes for a message cut short after %d bytes", got, 3*firstChunk)
	}
}

// failWriter fails every write.
type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestWriteMessageError(t *testing.T) {
	if err := WriteMessage(failWriter{}, []byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("err = %v, want io.ErrClosedPipe", err)
	}
}
