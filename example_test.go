package hmacauth_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"

	"github.com/hmacauth/hmacauth"
)

// Both sides of a connection hold the same Key. Real programs load the
// secret from a file or a secret store; NewKey makes a fresh one.
func ExampleNewKey() {
	key, err := hmacauth.NewKey("billing-2026")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(key.ID, len(key.Secret), key.Validate())
	fmt.Println(key) // never shows the secret
	// Output:
	// billing-2026 32 <nil>
	// hmacauth.Key{ID: "billing-2026", Secret: [32 bytes redacted]}
}

// Serve HTTP only to clients that hold a key, and tell handlers which key
// a request came with.
func ExampleListen() {
	key, _ := hmacauth.NewKey("web-client")
	cfg := &hmacauth.Config{Keys: []hmacauth.Key{key}}

	l, err := hmacauth.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{
		ConnContext: hmacauth.ConnContext,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, _ := hmacauth.KeyIDFromContext(r.Context())
			fmt.Fprintf(w, "hello, %s", id)
		}),
	}
	go srv.Serve(l)
	defer srv.Close()

	// A client dials through a Dialer with the same key (see ExampleDialer),
	// in a Config of its own: a Config refuses its own dials.
	clientCfg := &hmacauth.Config{Keys: []hmacauth.Key{key}}
	tr := &http.Transport{DialContext: (&hmacauth.Dialer{Config: clientCfg}).DialContext}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://" + l.Addr().String() + "/")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output: hello, web-client
}

// An http.Client that proves a key on every connection it makes. A server
// without the key is refused inside Dial, before the request is sent.
func ExampleDialer() {
	key, _ := hmacauth.NewKey("web-client")
	impostorKey := hmacauth.Key{ID: key.ID, Secret: make([]byte, 32)}

	// A server with a different secret for the same key ID.
	l, err := hmacauth.Listen("tcp", "127.0.0.1:0", &hmacauth.Config{Keys: []hmacauth.Key{impostorKey}})
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	go srv.Serve(l)
	defer srv.Close()

	d := &hmacauth.Dialer{
		NetDialer: &net.Dialer{},
		Config:    &hmacauth.Config{Keys: []hmacauth.Key{key}},
	}
	tr := &http.Transport{DialContext: d.DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	_, err = client.Get("http://" + l.Addr().String() + "/")
	fmt.Println(errors.Is(err, hmacauth.ErrAuthFailed))
	// Output: true
}

// A raw TCP server: Accept returns only authenticated connections, as
// *hmacauth.Conn, and never a failed handshake.
func ExampleListener() {
	key, _ := hmacauth.NewKey("sensor-7")
	cfg := &hmacauth.Config{Keys: []hmacauth.Key{key}}
	l, err := hmacauth.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Fprintf(c, "%s said %s", c.(*hmacauth.Conn).KeyID(), line)
	}()

	// The client, in a Config of its own: a Config refuses its own dials.
	c, err := hmacauth.Dial("tcp", l.Addr().String(), &hmacauth.Config{Keys: []hmacauth.Key{key}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintln(c, "21.5 C")
	reply, _ := io.ReadAll(c)
	fmt.Print(string(reply))
	<-done
	// Output: sensor-7 said 21.5 C
}

// Upgrade connections you already have, as with crypto/tls: Server on the
// accepting side, Client on the dialing side. Handshake is optional; the
// first Read or Write runs it.
func ExampleClient() {
	key, _ := hmacauth.NewKey("peer")
	cfg := &hmacauth.Config{Keys: []hmacauth.Key{key}}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		c := hmacauth.Server(raw, cfg)
		defer c.Close()
		if err := c.Handshake(); err != nil {
			return // the client did not prove the key
		}
		io.WriteString(c, "welcome, "+c.KeyID())
	}()

	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	// The client, in a Config of its own: a Config refuses its own dials.
	c := hmacauth.Client(raw, &hmacauth.Config{Keys: []hmacauth.Key{key}})
	defer c.Close()
	if err := c.Handshake(); err != nil {
		log.Fatal(err)
	}
	msg, _ := io.ReadAll(c)
	fmt.Println(string(msg))
	<-done
	// Output: welcome, peer
}
