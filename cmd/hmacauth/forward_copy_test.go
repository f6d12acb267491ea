package main

import (
	"bytes"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
)

// TestCopyStreamSplicesOnlyBulk checks that copyStream forwards
// request/response traffic with reads and writes and hands a bulk transfer
// to the destination's ReadFrom, which between two TCP connections
// splices: io.Copy holds a pipe per direction and takes three splice calls
// per message, which costs more per small message than a read and a write.
// The destination records whether its ReadFrom ran, so the test reads no
// process-wide state (open pipes come and go with Go's splice pipe pool).
func TestCopyStreamSplicesOnlyBulk(t *testing.T) {
	client, src := tcpPair(t)
	dst, reader := tcpPair(t)
	rec := &readFromRecorder{TCPConn: dst}
	done := make(chan error, 1)
	go func() {
		_, err := copyStream(rec, socketIO(rec), src, socketIO(src))
		done <- err
	}()

	buf := make([]byte, 64)
	for i := range 20 {
		msg := []byte(strings.Repeat("q", i+1))
		if _, err := client.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(reader, buf[:len(msg)]); err != nil || !bytes.Equal(buf[:len(msg)], msg) {
			t.Fatalf("round trip %d: got %q, %v; want %q", i, buf[:len(msg)], err, msg)
		}
	}
	if rec.used.Load() {
		t.Error("20 small messages went through ReadFrom (a splice); want a read and a write each")
	}

	// A megabyte at once: a read fills the buffer, and the rest splices.
	bulk := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, len(bulk))
		io.ReadFull(reader, b)
		got <- b
	}()
	if _, err := client.Write(bulk); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, bulk) {
		t.Fatal("the bulk transfer came through altered or cut")
	}
	if !rec.used.Load() {
		t.Error("a 1 MiB transfer did not go through ReadFrom; want it spliced")
	}
	client.CloseWrite()
	if err := <-done; err != nil {
		t.Fatalf("copyStream: %v", err)
	}
}

// readFromRecorder is a TCP connection that records whether its ReadFrom,
// the splicing path, ran.
type readFromRecorder struct {
	*net.TCPConn
	used atomic.Bool
}

func (r *readFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	r.used.Store(true)
	return r.TCPConn.ReadFrom(src)
}
