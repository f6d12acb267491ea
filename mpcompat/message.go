package mpcompat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
)

// A message is framed as Python's Connection.send_bytes frames it: a
// signed 32-bit big-endian length, then the bytes. A message longer than
// math.MaxInt32 bytes gets the length -1 followed by an unsigned 64-bit
// big-endian length (Python 3.8 and later read this form; older versions
// cannot send or receive such messages).
const (
	headerLen   = 4
	header64Len = 8
	// firstChunk is how much ReadMessage allocates up front; a longer
	// message grows its buffer as its bytes arrive, so that a peer must
	// send the bytes it announces before memory is spent on them.
	firstChunk = 1 << 20
)

// appendHeader appends the length field for an n-byte message.
func appendHeader(b []byte, n uint64) []byte {
	if n > math.MaxInt32 {
		b = binary.BigEndian.AppendUint32(b, math.MaxUint32) // int32(-1)
		return binary.BigEndian.AppendUint64(b, n)
	}
	return binary.BigEndian.AppendUint32(b, uint32(n))
}

// WriteMessage writes p as one message, framed as Python's
// Connection.send_bytes does, so that recv_bytes on the other side returns
// exactly p. The length and the bytes go out in one write where w allows
// (a *net.TCPConn writes both with one writev). It is not safe to call
// concurrently with other writes to w.
func WriteMessage(w io.Writer, p []byte) error {
	var hdr [headerLen + header64Len]byte
	bufs := net.Buffers{appendHeader(hdr[:0], uint64(len(p))), p}
	if _, err := bufs.WriteTo(w); err != nil {
		return fmt.Errorf("mpcompat: writing a %d-byte message: %w", len(p), err)
	}
	return nil
}

// ReadMessage reads one message framed as Python's Connection.send_bytes
// frames it, and returns its bytes. It reads exactly the message from r,
// never beyond it, so r needs no buffering and may be used for other
// reads afterwards.
//
// A length over max is refused with an error wrapping ErrMessageTooLarge
// before anything is allocated for the message (max < 0 counts as 0). A
// long message is allocated as its bytes arrive rather than up front. A
// negative length other than the -1 of the 64-bit form is refused with
// ErrProtocol (Python reads it as an empty message). ReadMessage returns
// io.EOF only if r ends before the first byte of a message; a message cut
// short returns an error wrapping io.ErrUnexpectedEOF.
func ReadMessage(r io.Reader, max int) ([]byte, error) {
	n, err := readLength(r)
	if err != nil {
		return nil, err
	}
	limit := uint64(0)
	if max > 0 {
		limit = uint64(max)
	}
	if n > limit {
		return nil, errorf(ErrMessageTooLarge, "the peer announced a %d-byte message; the limit is %d bytes", n, limit)
	}
	return readBody(r, int(n))
}

// readLength reads a message's length field, in either form.
func readLength(r io.Reader) (uint64, error) {
	var hdr [header64Len]byte
	if _, err := io.ReadFull(r, hdr[:headerLen]); err != nil {
		if err == io.EOF {
			return 0, io.EOF
		}
		return 0, fmt.Errorf("mpcompat: reading a message length: %w", err)
	}
	switch n := int32(binary.BigEndian.Uint32(hdr[:headerLen])); {
	case n >= 0:
		return uint64(n), nil
	case n != -1:
		return 0, errorf(ErrProtocol, "negative message length %d; the peer does not speak multiprocessing.connection framing", n)
	}
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, fmt.Errorf("mpcompat: reading a 64-bit message length: %w", noEOF(err))
	}
	return binary.BigEndian.Uint64(hdr[:]), nil
}

// readBody reads an n-byte message body.
func readBody(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, 0, min(n, firstChunk))
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(n-len(buf), cap(buf)))
		}
		m, err := io.ReadFull(r, buf[len(buf):min(n, cap(buf))])
		buf = buf[:len(buf)+m]
		if err != nil {
			return nil, fmt.Errorf("mpcompat: a %d-byte message ended after %d bytes: %w", n, len(buf), noEOF(err))
		}
	}
	return buf, nil
}

// noEOF turns the io.EOF of a stream that ends inside a message into
// io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
