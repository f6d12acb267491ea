package main

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// TestTunnelHalfClose checks that an end of stream crosses the tunnel in
// both directions, each while the other direction still carries data.
func TestTunnelHalfClose(t *testing.T) {
	for _, mode := range []string{"auth", "sealed"} {
		t.Run(mode, func(t *testing.T) { testHalfClose(t, []string{"-mode", mode}) })
	}
}

func testHalfClose(t *testing.T, flags []string) {
	t.Run("client first", func(t *testing.T) {
		// The target answers only after it has read to the end of stream.
		target := startTarget(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
			b, err := io.ReadAll(c)
			if err != nil {
				return
			}
			fmt.Fprintf(c, "read %d bytes: %s", len(b), b)
			c.(*net.TCPConn).CloseWrite()
		})
		p := startPair(t, target, flags, flags)
		c := dial(t, p.client.addr)
		io.WriteString(c, "request")
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "read 7 bytes: request" {
			t.Fatalf("after half-closing: got %q, %v; want the target's answer then EOF", got, err)
		}
	})
	t.Run("target first", func(t *testing.T) {
		// The target greets, half-closes, then reads to the end of stream.
		received := make(chan string, 1)
		target := startTarget(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
			io.WriteString(c, "greeting")
			c.(*net.TCPConn).CloseWrite()
			b, _ := io.ReadAll(c)
			received <- string(b)
		})
		p := startPair(t, target, flags, flags)
		c := dial(t, p.client.addr)
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "greeting" {
			t.Fatalf("reading from a target that half-closed: got %q, %v; want the greeting then EOF", got, err)
		}
		io.WriteString(c, "data after the target's end of stream")
		c.(*net.TCPConn).CloseWrite()
		select {
		case r := <-received:
			if r != "data after the target's end of stream" {
				t.Fatalf("target received %q", r)
			}
		case <-time.After(bound):
			t.Fatal("the target never saw the client's end of stream")
		}
	})
}
