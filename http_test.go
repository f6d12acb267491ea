package hmacauth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// startHTTP serves handler through a Listener with cfg and returns its
// address. The server is shut down, and Serve's result checked, when the
// test ends.
func startHTTP(t *testing.T, cfg *Config, handler http.Handler) *Listener {
	t.Helper()
	l, err := Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	serveHTTP(t, l, handler)
	return l
}

// serveHTTP serves handler on l until the test ends.
func serveHTTP(t *testing.T, l *Listener, handler http.Handler) {
	srv := &http.Server{Handler: handler, ConnContext: ConnContext, ReadHeaderTimeout: waitLimit}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
	})
}

// httpClient returns an http.Client that dials through a Dialer with cfg.
func httpClient(t *testing.T, cfg *Config) *http.Client {
	tr := &http.Transport{DialContext: (&Dialer{Config: cfg}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// whoAmI answers with the key ID the handler sees.
var whoAmI = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	id, ok := KeyIDFromContext(r.Context())
	fmt.Fprintf(w, "key %q %v", id, ok)
})

func TestHTTPServer(t *testing.T) {
	t.Parallel()
	good := testKey("web-client")
	cfg, ev := newTestConfig(good, testKey("other"))
	cfg.HandshakeTimeout = time.Second
	l := startHTTP(t, cfg, whoAmI)
	url := "http://" + l.Addr().String() + "/"

	client := httpClient(t, configWith(good))
	body, err := get(client, url)
	if err != nil || body != `key "web-client" true` {
		t.Fatalf("GET = %q, %v", body, err)
	}

	// Hostile clients: none may stop Serve.
	hostile := [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		tlsClientHello(t),
		[]byte("\x16\x03\x01garbage garbage garbage"),
		validClientHello(testKey("web-client"), "http")[:70],
		nil, // silent: times out
	}
	for _, b := range hostile {
		c := rawDial(t, l.Addr(), "")
		c.Write(b)
		if b != nil {
			c.CloseWrite()
		}
		if e := ev.waitFrom(t, c.LocalAddr()); e.Err == nil {
			t.Errorf("hostile client %q was authenticated", b)
		}
		waitClosed(t, c)
	}
	// A plain HTTP client gets no response at all.
	plain := &http.Client{Transport: &http.Transport{}}
	if _, err := get(plain, url); err == nil {
		t.Error("a plain HTTP client got a response")
	}
	plain.CloseIdleConnections()
	// A client with an unknown key cannot connect.
	if _, err := get(httpClient(t, configWith(testKey("intruder"))), url); !errors.Is(err, ErrAuthFailed) {
		t.Errorf("GET with an unknown key = %v, want ErrAuthFailed", err)
	}

	// Serve is still running; the second key works too.
	for _, k := range []Key{good, cfg.Keys[1]} {
		body, err := get(httpClient(t, configWith(k)), url)
		if want := fmt.Sprintf("key %q true", k.ID); err != nil || body != want {
			t.Errorf("GET after hostile clients = %q, %v; want %q", body, err, want)
		}
	}
}

func TestConnContextOnPlainConn(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ctx := ConnContext(context.Background(), a)
	if id, ok := KeyIDFromContext(ctx); ok || id != "" {
		t.Errorf("KeyIDFromContext for a plain conn = %q, %v", id, ok)
	}
	if id, ok := KeyIDFromContext(context.Background()); ok || id != "" {
		t.Errorf("KeyIDFromContext(Background) = %q, %v", id, ok)
	}
}

// TestHTTPServeContent downloads a file served with http.ServeContent,
// which copies through the Conn's ReadFrom (sendfile).
func TestHTTPServeContent(t *testing.T) {
	t.Parallel()
	data := seededBytes("served file", 3<<20)
	path := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _ := newTestConfig()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingListener{Listener: inner}
	l, err := NewListener(rec, cfg)
	if err != nil {
		t.Fatal(err)
	}
	serveHTTP(t, l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer f.Close()
		http.ServeContent(w, r, "blob", time.Time{}, f)
	}))
	body, err := get(httpClient(t, configWith(cfg.Keys[0])), "http://"+l.Addr().String()+"/blob")
	if err != nil || !bytes.Equal([]byte(body), data) {
		t.Errorf("downloaded %d bytes (%v), want %d intact", len(body), err, len(data))
	}
	if n := rec.readFroms(); n == 0 {
		t.Error("http.Server did not reach the TCP connection's ReadFrom (sendfile) through the Conn")
	}
}

// recordingListener wraps each accepted connection in a recordingConn.
type recordingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*recordingConn
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := &recordingConn{TCPConn: c.(*net.TCPConn)}
	l.mu.Lock()
	l.conns = append(l.conns, rc)
	l.mu.Unlock()
	return rc, nil
}

func (l *recordingListener) readFroms() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.conns {
		n += int(c.readFrom.Load())
	}
	return n
}

// TestHTTPUpload sends a large request body through the Dialer.
func TestHTTPUpload(t *testing.T) {
	t.Parallel()
	cfg, _ := newTestConfig()
	l := startHTTP(t, cfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d %v", n, err)
	}))
	data := seededBytes("upload", 2<<20)
	resp, err := httpClient(t, configWith(cfg.Keys[0])).Post("http://"+l.Addr().String()+"/", "application/octet-stream", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if want := fmt.Sprintf("%d <nil>", len(data)); string(b) != want {
		t.Errorf("server read %q, want %q", b, want)
	}
}

// TestRawEchoServer runs several clients at once against an echo server
// built on Accept.
func TestRawEchoServer(t *testing.T) {
	t.Parallel()
	cfg, ev := newTestConfig()
	s := startEcho(t, cfg)
	const clients = 16
	errs := make(chan error, clients)
	for i := range clients {
		go func() {
			c, err := Dial("tcp", s.Addr().String(), configWith(cfg.Keys[0]))
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			msg := strings.Repeat(fmt.Sprint(i), 1000+i)
			io.WriteString(c, msg)
			c.CloseWrite()
			b, err := io.ReadAll(c)
			if err == nil && string(b) != msg {
				err = fmt.Errorf("client %d: echo of %d bytes differs", i, len(b))
			}
			errs <- err
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := ev.count(func(e HandshakeEvent) bool { return e.Err == nil }); n != clients {
		t.Errorf("%d authenticated handshakes, want %d", n, clients)
	}
}

// TestHTTPIdentity serves HTTP/1.1 and unencrypted HTTP/2 over a Listener
// and checks that handlers see the client's key ID and that requests reuse
// one authenticated connection.
func TestHTTPIdentity(t *testing.T) {
	t.Parallel()
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
