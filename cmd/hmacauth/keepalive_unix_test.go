//go:build unix

package main

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// TestKeepAliveFlag checks SO_KEEPALIVE on both ends of a connection made
// with the tunnel's dialer to its listener: on with -keepalive 15s, off
// with -keepalive 0 (net leaves Go's default on unless told twice).
func TestKeepAliveFlag(t *testing.T) {
	for _, period := range []time.Duration{15 * time.Second, 0} {
		o := &tunnelOptions{keepAlive: net.KeepAliveConfig{Enable: period > 0, Idle: period, Interval: period, Count: -1}}
		ln, err := listen(t.Context(), "127.0.0.1:0", o.keepAlive)
		if err != nil {
			t.Fatal(err)
		}
		d := o.dialer()
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			ln.Close()
			t.Fatal(err)
		}
		s, err := ln.Accept()
		ln.Close()
		if err != nil {
			c.Close()
			t.Fatal(err)
		}
		for _, end := range []net.Conn{c, s} {
			raw, err := end.(*net.TCPConn).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var on int
			var serr error
			raw.Control(func(fd uintptr) { on, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) })
			if serr != nil {
				t.Fatal(serr)
			}
			if want := period > 0; (on != 0) != want {
				t.Errorf("-keepalive %v: SO_KEEPALIVE is %d on the %v end, want on=%v", period, on, end.LocalAddr(), want)
			}
			end.Close()
		}
	}
}
