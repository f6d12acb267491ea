package mpcompat_test

import (
	"fmt"
	"log"
	"time"

	"github.com/hmacauth/hmacauth/mpcompat"
)

// A Go listener and a Go client; either side could be Python:
//
//	from multiprocessing.connection import Client
//	c = Client(("127.0.0.1", port), authkey=key)
//	c.send_bytes(b"hello")
//	print(c.recv_bytes())
func Example() {
	key := []byte("a long random authkey shared with the Python side")
	l, err := mpcompat.Listen("tcp", "127.0.0.1:0", key)
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()

	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept() // only clients that proved the key
		if err != nil {
			return
		}
		defer c.Close()
		msg, err := mpcompat.ReadMessage(c, 1<<20)
		if err != nil {
			return
		}
		mpcompat.WriteMessage(c, append([]byte("echo: "), msg...))
	}()

	c, err := mpcompat.Dial("tcp", l.Addr().String(), key)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if err := mpcompat.WriteMessage(c, []byte("hello")); err != nil {
		log.Fatal(err)
	}
	reply, err := mpcompat.ReadMessage(c, 1<<20)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(reply))
	<-done
	// Output: echo: hello
}

// Talking to Python 3.11 or older, which knows only HMAC-MD5, must be
// allowed explicitly.
func ExampleDialer() {
	d := mpcompat.Dialer{Config: &mpcompat.Config{
		AuthKey:          []byte("a long random authkey shared with the Python side"),
		AllowLegacyMD5:   true,
		HandshakeTimeout: 2 * time.Second,
	}}
	c, err := d.Dial("tcp", "127.0.0.1:6000") // multiprocessing.connection.Listener(("127.0.0.1", 6000), authkey=...)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	mpcompat.WriteMessage(c, []byte("work item"))
	result, err := mpcompat.ReadMessage(c, 16<<20)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d bytes\n", len(result))
}
