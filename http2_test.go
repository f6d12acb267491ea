package hmacauth

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
)

// TestHTTPIdentity serves HTTP/1.1 and unencrypted HTTP/2 over a Listener
// and checks that handlers see the client's key ID and that requests reuse
// one authenticated connection.
func TestHTTPIdentity(t *testing.T) {
	for _, tc := range []struct {
		name      string
		protocols func(*http.Protocols)
		wantProto string
	}{
		{"HTTP/1.1", func(p *http.Protocols) { p.SetHTTP1(true) }, "HTTP/1.1"},
		{"h2c", func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) }, "HTTP/2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := testKey("web")
			l, err := Listen("tcp", "127.0.0.1:0", &Config{Keys: []Key{key}})
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					id, ok := KeyIDFromContext(r.Context())
					fmt.Fprintf(w, "%s %v %s", id, ok, r.Proto)
				}),
				ConnContext: ConnContext,
				Protocols:   new(http.Protocols),
			}
			srv.Protocols.SetHTTP1(true)
			srv.Protocols.SetUnencryptedHTTP2(true)
			served := make(chan error, 1)
			go func() { served <- srv.Serve(l) }()
			defer func() {
				srv.Close()
				if err := <-served; !errors.Is(err, http.ErrServerClosed) {
					t.Errorf("Serve: %v", err)
				}
			}()

			d := &Dialer{Config: &Config{Keys: []Key{key}}}
			tr := &http.Transport{DialContext: d.DialContext, Protocols: new(http.Protocols)}
			tc.protocols(tr.Protocols)
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			url := "http://" + l.Addr().String() + "/"
			for i := range 2 {
				resp, err := client.Get(url)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Fatal(err)
				}
				if want := "web true " + tc.wantProto; string(body) != want {
					t.Errorf("request %d: handler saw %q, want %q", i, body, want)
				}
			}
			if s := l.Stats(); s.Succeeded != 1 {
				t.Errorf("%d handshakes for two requests, want 1 (connection reuse)", s.Succeeded)
			}

			// A plain client gets nothing, and Serve keeps serving.
			plain := &http.Transport{Protocols: tr.Protocols}
			defer plain.CloseIdleConnections()
			if resp, err := (&http.Client{Transport: plain}).Get(url); err == nil {
				resp.Body.Close()
				t.Fatalf("plain HTTP client got %s", resp.Status)
			}
			resp, err := client.Get(url)
			if err != nil {
				t.Fatalf("after a plain client: %v", err)
			}
			resp.Body.Close()
		})
	}
}
