package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// TestPipeSplicesOnlyBulk checks that pipe forwards request/response
// traffic with reads and writes, without the pipe that splicing holds for
// each direction, and still splices a bulk transfer: on Linux, io.Copy
// between two TCP connections splices through a pipe, held for as long as
// the copy runs, which costs more per small message than a read and a
// write.
func TestPipeSplicesOnlyBulk(t *testing.T) {
	target := startTarget(t, "tcp", "127.0.0.1:0", echoSmall)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pipes0 := countPipes(t)
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.SetDeadline(time.Now().Add(bound))
	front, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.Dial("tcp", target)
	if err != nil {
		front.Close()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := pipe(context.Background(), front, back)
		done <- err
	}()

	buf := make([]byte, 64)
	for i := range 20 {
		msg := []byte(strings.Repeat("q", i+1))
		if _, err := client.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(client, buf[:len(msg)]); err != nil || !bytes.Equal(buf[:len(msg)], msg) {
			t.Fatalf("round trip %d: got %q, %v; want %q", i, buf[:len(msg)], err, msg)
		}
	}
	if n := countPipes(t) - pipes0; n != 0 {
		t.Errorf("after 20 small round trips the forwarding holds %d pipe ends; want none (no splicing for small messages)", n)
	}

	// A megabyte at once: reads fill the buffer, and the copy splices.
	bulk := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	echoed := make(chan []byte, 1)
	go func() {
		b := make([]byte, len(bulk))
		io.ReadFull(client, b)
		echoed <- b
	}()
	if _, err := client.Write(bulk); err != nil {
		t.Fatal(err)
	}
	if b := <-echoed; !bytes.Equal(b, bulk) {
		t.Fatal("the bulk transfer came back altered or cut")
	}
	if n := countPipes(t) - pipes0; n < 2 {
		t.Errorf("after a 1 MiB transfer the forwarding holds %d pipe ends; want a splice pipe's two (bulk transfers splice)", n)
	}

	client.(*net.TCPConn).CloseWrite()
	if _, err := client.Read(buf); err != io.EOF {
		t.Fatalf("after the client's end of stream: %v, want EOF passed back from the target", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("pipe: %v", err)
	}
}

// echoSmall echoes through a small buffer: io.Copy would splice, in this
// process, through pipes of its own.
func echoSmall(c net.Conn) {
	buf := make([]byte, 4<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// countPipes returns how many pipe ends this process has open.
func countPipes(t *testing.T) int {
	t.Helper()
	dir := "/proc/self/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Skipf("cannot list open files: %v", err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && strings.HasPrefix(l, "pipe:") {
			n++
		}
	}
	return n
}
