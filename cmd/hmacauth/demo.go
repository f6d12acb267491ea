package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/hmacauth/hmacauth"
)

const demoUsage = `Usage: hmacauth demo

Starts an HTTP server on loopback that accepts only hmacauth clients, then
makes three requests and prints what each got: one through an hmacauth
Dialer with the right key, one with a wrong key, one with plain HTTP.
`

func runDemo(args []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("demo", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() { fmt.Fprint(fset.Output(), demoUsage) }
	if code := parseFlags(fset, args); code >= 0 {
		return code
	}
	if err := demo(stdout); err != nil {
		fmt.Fprintf(stderr, "hmacauth demo: %v\n", err)
		return exitFail
	}
	return exitOK
}

func demo(out io.Writer) error {
	key, err := hmacauth.NewKey("demo")
	if err != nil {
		return err
	}
	// The same key ID with another secret: what an impostor holds.
	wrongKey, err := hmacauth.NewKey("demo")
	if err != nil {
		return err
	}

	// The server side reports what it refused, in the order it happens.
	var mu sync.Mutex
	printf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format, args...)
	}
	serverCfg := &hmacauth.Config{
		Keys: []hmacauth.Key{key},
		OnHandshake: func(ev hmacauth.HandshakeEvent) {
			if ev.Err != nil {
				printf("  server: refused %s: %v\n", ev.RemoteAddr, ev.Err)
			}
		},
	}
	ln, err := hmacauth.Listen("tcp", "127.0.0.1:0", serverCfg)
	if err != nil {
		return err
	}
	srv := &http.Server{
		ConnContext:       hmacauth.ConnContext,
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, _ := hmacauth.KeyIDFromContext(r.Context())
			fmt.Fprint(w, id)
		}),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		srv.Close() // closes ln too
		<-served
	}()
	url := "http://" + ln.Addr().String() + "/"
	printf("server: HTTP on %s, accepting only key ID %q\n", ln.Addr(), key.ID)

	get := func(client *http.Client) (string, error) {
		defer client.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return "", err
		}
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s, handler saw key ID %q", resp.Status, body), nil
	}
	hmacClient := func(k hmacauth.Key) *http.Client {
		d := &hmacauth.Dialer{Config: &hmacauth.Config{Keys: []hmacauth.Key{k}}}
		return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	}
	for _, c := range []struct {
		name   string
		client *http.Client
	}{
		{"good key", hmacClient(key)},
		{"wrong key", hmacClient(wrongKey)},
		{"plain HTTP", &http.Client{Transport: &http.Transport{}}},
	} {
		got, err := get(c.client)
		if err != nil {
			printf("%s: refused: %v\n", c.name, unwrapURLError(err))
			continue
		}
		printf("%s: %s\n", c.name, got)
	}
	return nil
}

// unwrapURLError drops the "Get URL:" prefix net/http adds; the URL is
// printed once above.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("the server closed the connection without a response (%w)", err)
	}
	return err
}
