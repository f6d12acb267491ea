package main

import (
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/hmacauth/hmacauth"
)

// TestSocketIOMirrorsCore checks that socketIO is the core's
// internal/netx.SocketIO, whose tests cover its behaviour, with only its
// names changed and a sentence on where it comes from: the command, a
// module of its own, cannot import it.
func TestSocketIOMirrorsCore(t *testing.T) {
	const origin = "// itself otherwise. It is the core's internal/netx.SocketIO, which an\n" +
		"// *hmacauth.Conn uses for its own socket, copied because the command is a\n" +
		"// module of its own (TestSocketIOMirrorsCore keeps the two the same).\n"
	rename := strings.NewReplacer("package netx", "package main", "SocketIO", "socketIO")
	for _, name := range []string{"socketio_direct.go", "socketio_other.go"} {
		core, err := os.ReadFile("../../internal/netx/" + name)
		if errors.Is(err, fs.ErrNotExist) {
			t.Skip("the core's source is not beside the command (a module download): nothing to compare")
		}
		if err != nil {
			t.Fatal(err)
		}
		mine, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		want := rename.Replace(string(core))
		if name == "socketio_direct.go" {
			want = strings.Replace(want, "// itself otherwise.\n", origin, 1)
		}
		if got := string(mine); got != want {
			w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
			for i := 0; i < len(w) || i < len(g); i++ {
				if i >= len(w) || i >= len(g) || w[i] != g[i] {
					t.Errorf("%s differs from the core's internal/netx/%[1]s (names aside) at line %d:\ncore:    %q\ncommand: %q",
						name, i+1, line(w, i), line(g, i))
					break
				}
			}
		}
	}
}

func line(lines []string, i int) string {
	if i < len(lines) {
		return lines[i]
	}
	return "(end of file)"
}

// TestSocketIOEnds checks which ends copyStream calls directly: a plain
// TCP connection; not a proxiedConn, which hands out bytes it read
// already, nor an *hmacauth.Conn, which makes its own calls.
func TestSocketIOEnds(t *testing.T) {
	near, _ := tcpPair(t)
	for _, tc := range []struct {
		name   string
		c      net.Conn
		direct bool
	}{
		{"*net.TCPConn", near, directCalls},
		{"*proxiedConn", &proxiedConn{TCPConn: near, early: []byte("x")}, false},
		{"*hmacauth.Conn", hmacauth.Client(near, &hmacauth.Config{Keys: []hmacauth.Key{newKey(t, "k")}}), false},
	} {
		// Anything but the connection itself makes the calls directly.
		if direct := socketIO(tc.c) != io.ReadWriter(tc.c); direct != tc.direct {
			t.Errorf("socketIO(%s) makes system calls directly: %v; want %v", tc.name, direct, tc.direct)
		}
	}
}
