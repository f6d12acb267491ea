package grpcauth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hmacauth/hmacauth"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func key(id string) hmacauth.Key {
	return hmacauth.Key{ID: id, Secret: bytes.Repeat([]byte(id+"!"), hmacauth.MinSecretLen)[:hmacauth.MinSecretLen]}
}

// seen records what handlers saw of the caller, through interceptors, which
// run with the handler's context.
type seen struct {
	mu     sync.Mutex
	keyIDs []string
	infos  []credentials.AuthInfo
}

func (s *seen) record(ctx context.Context) {
	id, _ := KeyIDFromContext(ctx)
	var ai credentials.AuthInfo
	if p, ok := peer.FromContext(ctx); ok {
		ai = p.AuthInfo
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keyIDs = append(s.keyIDs, id)
	s.infos = append(s.infos, ai)
}

func (s *seen) get() ([]string, []credentials.AuthInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.keyIDs...), append([]credentials.AuthInfo(nil), s.infos...)
}

// startServer serves the health service on lis with the credentials of
// cfg until the test ends.
func startServer(t *testing.T, lis net.Listener, cfg *hmacauth.Config, opts ...grpc.ServerOption) *seen {
	t.Helper()
	s := new(seen)
	srv := grpc.NewServer(append([]grpc.ServerOption{
		grpc.Creds(NewCredentials(cfg)),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			s.record(ctx)
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			s.record(ss.Context())
			return h(srv, ss)
		}),
	}, opts...)...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		hs.Shutdown()
		srv.Stop()
		<-done
	})
	return s
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

func newClient(t *testing.T, addr string, cfg *hmacauth.Config, opts ...grpc.DialOption) healthpb.HealthClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, append(opts, grpc.WithTransportCredentials(NewCredentials(cfg)))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestUnaryAndStreamingSeeKeyID(t *testing.T) {
	lis := listen(t)
	s := startServer(t, lis, &hmacauth.Config{Keys: []hmacauth.Key{key("old"), key("svc-a")}})
	client := newClient(t, lis.Addr().String(), &hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}})
	ctx := callCtx(t)

	resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("unary call: %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("status = %v", resp.GetStatus())
	}
	sctx, cancel := context.WithCancel(ctx)
	stream, err := client.Watch(sctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("streaming call: %v", err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("stream Recv: %v", err)
	}
	cancel()

	ids, infos := s.get()
	if diff := cmp.Diff([]string{"svc-a", "svc-a"}, ids); diff != "" {
		t.Fatalf("handlers saw key IDs (-want +got):\n%s", diff)
	}
	want := AuthInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity},
		KeyID:          "svc-a",
		Mode:           hmacauth.ModeAuth,
	}
	if diff := cmp.Diff([]credentials.AuthInfo{want, want}, infos); diff != "" {
		t.Errorf("peer AuthInfo mismatch (-want +got):\n%s", diff)
	}
	if at := want.AuthType(); at != "hmacauth" {
		t.Errorf("AuthType() = %q, want hmacauth", at)
	}
}

func TestWrongKeyFailsClearly(t *testing.T) {
	lis := listen(t)
	s := startServer(t, lis, &hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}})
	wrong := key("svc-a")
	wrong.Secret = bytes.Repeat([]byte{0x55}, hmacauth.MinSecretLen)
	client := newClient(t, lis.Addr().String(), &hmacauth.Config{Keys: []hmacauth.Key{wrong}})
	_, err := client.Check(callCtx(t), &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("call with a wrong key: %v, want Unavailable", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "authentication failed") || !strings.Contains(msg, "svc-a") {
		t.Errorf("error %q does not say that the server refused key svc-a", msg)
	}
	if ids, _ := s.get(); len(ids) != 0 {
		t.Errorf("a handler ran for a client with a wrong key: %q", ids)
	}
}

func TestServerWithoutKeyIsDetected(t *testing.T) {
	lis := listen(t)
	other := key("svc-a")
	other.Secret = bytes.Repeat([]byte{0x66}, hmacauth.MinSecretLen)
	startServer(t, lis, &hmacauth.Config{Keys: []hmacauth.Key{other}})
	client := newClient(t, lis.Addr().String(), &hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}})
	_, err := client.Check(callCtx(t), &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("call to a server with another secret: %v, want Unavailable, authentication failed", err)
	}
}

// TestStalledConnDoesNotBlockOthers holds raw connections that never send a
// byte, to a plain listener (grpc.Server handshakes each connection on its
// own goroutine) and to an hmacauth.Listener.
func TestStalledConnDoesNotBlockOthers(t *testing.T) {
	cfg := &hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}}
	hl, err := hmacauth.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	for name, lis := range map[string]net.Listener{"net.Listener": listen(t), "hmacauth.Listener": hl} {
		t.Run(name, func(t *testing.T) {
			s := startServer(t, lis, cfg)
			var stalled []net.Conn
			for range 8 {
				c, err := net.Dial("tcp", lis.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				stalled = append(stalled, c)
			}
			client := newClient(t, lis.Addr().String(), &hmacauth.Config{Keys: cfg.Keys})
			if _, err := client.Check(callCtx(t), &healthpb.HealthCheckRequest{}); err != nil {
				t.Fatalf("call with %d stalled connections: %v", len(stalled), err)
			}
			if ids, _ := s.get(); len(ids) != 1 || ids[0] != "svc-a" {
				t.Errorf("handler saw %q, want [svc-a]", ids)
			}
		})
	}
	if st := hl.Stats(); st.Succeeded != 1 {
		t.Errorf("hmacauth.Listener counted %d successful handshakes, want 1: one client, the stalled connections never finish theirs", st.Succeeded)
	}
}

// tokenCreds are per-RPC credentials that require transport security, as
// OAuth and JWT credentials do.
type tokenCreds struct{}

func (tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer t0ken"}, nil
}
func (tokenCreds) RequireTransportSecurity() bool { return true }

func TestPerRPCCredentialsNeedSealedMode(t *testing.T) {
	for _, mode := range []hmacauth.Mode{hmacauth.ModeAuth, hmacauth.ModeIntegrity, hmacauth.ModeSealed} {
		t.Run(mode.String(), func(t *testing.T) {
			cfg := &hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}, Mode: mode}
			lis := listen(t)
			startServer(t, lis, cfg)
			client := newClient(t, lis.Addr().String(), &hmacauth.Config{Keys: cfg.Keys, Mode: mode})
			_, err := client.Check(callCtx(t), &healthpb.HealthCheckRequest{}, grpc.PerRPCCredentials(tokenCreds{}))
			if mode == hmacauth.ModeSealed {
				if err != nil {
					t.Fatalf("per-RPC credentials on a sealed connection: %v", err)
				}
				return
			}
			if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "insecure connection") {
				t.Fatalf("per-RPC credentials in mode %v: %v, want Unauthenticated (insecure connection)", mode, err)
			}
		})
	}
}

func TestCallAuthorityOverride(t *testing.T) {
	lis := listen(t)
	startServer(t, lis, &hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}})
	client := newClient(t, lis.Addr().String(), &hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}})
	if _, err := client.Check(callCtx(t), &healthpb.HealthCheckRequest{}, grpc.CallAuthority("other.internal:443")); err != nil {
		t.Fatalf("call with an authority override: %v", err)
	}
}

func TestHandshakesHonourContextAndTimeout(t *testing.T) {
	// A peer that never answers.
	lis := listen(t)
	defer lis.Close()
	var held sync.WaitGroup
	conns := make(chan net.Conn, 4)
	held.Add(1)
	go func() {
		defer held.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	defer func() {
		lis.Close()
		held.Wait()
		close(conns)
		for c := range conns {
			c.Close()
		}
	}()
	creds := NewCredentials(&hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}, HandshakeTimeout: -1})

	raw, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := creds.ClientHandshake(ctx, "ignored", raw); !errors.Is(err, hmacauth.ErrHandshakeTimeout) {
		t.Fatalf("ClientHandshake past the ctx deadline: %v, want ErrHandshakeTimeout", err)
	}

	raw2, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw2.Close()
	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, _, err := creds.ClientHandshake(ctx2, "ignored", raw2); !errors.Is(err, context.Canceled) {
		t.Fatalf("ClientHandshake with a cancelled ctx: %v, want context.Canceled", err)
	}

	// The server side: a client that never speaks.
	srvCreds := NewCredentials(&hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}, HandshakeTimeout: 50 * time.Millisecond})
	client, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	serverSide := <-conns
	defer serverSide.Close()
	if _, _, err := srvCreds.ServerHandshake(serverSide); !errors.Is(err, hmacauth.ErrHandshakeTimeout) {
		t.Fatalf("ServerHandshake with a silent client: %v, want ErrHandshakeTimeout", err)
	}
}

func TestCredentialsInfo(t *testing.T) {
	cfg := &hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}}
	c := NewCredentials(cfg)
	info := c.Info()
	if info != (credentials.ProtocolInfo{SecurityProtocol: "hmacauth"}) {
		t.Errorf("Info = %+v", info)
	}
	clone := c.Clone()
	if clone == c || clone.(*transportCreds).cfg != cfg || clone.Info() != info {
		t.Errorf("Clone = %#v, want a new value sharing the Config", clone)
	}
	//lint:ignore SA1019 the interface still requires the method; check that it does nothing
	if err := c.OverrideServerName("x"); err != nil || c.Info() != info {
		t.Errorf("OverrideServerName changed something: %v, %+v", err, c.Info())
	}
	for mode, want := range map[hmacauth.Mode]credentials.SecurityLevel{
		hmacauth.ModeAuth:      credentials.NoSecurity,
		hmacauth.ModeIntegrity: credentials.IntegrityOnly,
		hmacauth.ModeSealed:    credentials.PrivacyAndIntegrity,
	} {
		if got := SecurityLevel(mode); got != want {
			t.Errorf("SecurityLevel(%v) = %v, want %v", mode, got, want)
		}
	}
	if _, ok := KeyIDFromContext(context.Background()); ok {
		t.Error("KeyIDFromContext without a peer reported a key ID")
	}
	var ai credentials.AuthInfo = AuthInfo{}
	if _, ok := ai.(credentials.AuthorityValidator); !ok {
		t.Error("AuthInfo does not implement credentials.AuthorityValidator")
	}
}

// TestSilentAfterHandshakeIsDropped: a client that authenticates and then
// never sends the HTTP/2 preface is closed by the server within
// HandshakeTimeout, long before gRPC's default connection timeout (120 s).
func TestSilentAfterHandshakeIsDropped(t *testing.T) {
	lis := listen(t)
	cfg := &hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}, HandshakeTimeout: 100 * time.Millisecond}
	startServer(t, lis, cfg)
	expectDropped(t, lis.Addr().String(), cfg.Keys)
}

// TestSilentAfterHandshakeUnboundedIsDropped: with no HandshakeTimeout,
// gRPC's own connection timeout still bounds the wait for the preface: the
// handshake must not lift it.
func TestSilentAfterHandshakeUnboundedIsDropped(t *testing.T) {
	lis := listen(t)
	cfg := &hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}, HandshakeTimeout: -1}
	startServer(t, lis, cfg, grpc.ConnectionTimeout(time.Second))
	expectDropped(t, lis.Addr().String(), cfg.Keys)
}

// expectDropped authenticates to the gRPC server at addr, sends nothing,
// and fails the test unless the server closes the connection within 10 s.
func expectDropped(t *testing.T, addr string, keys []hmacauth.Key) {
	t.Helper()
	c, err := hmacauth.Dial("tcp", addr, &hmacauth.Config{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	for {
		_, err := c.Read(buf) // the server's HTTP/2 SETTINGS, then EOF
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("the server kept a silent authenticated connection open")
		}
		break
	}
}

// Credentials that require forward secrecy refuse a connection an
// hmacauth.Listener authenticated without it, rather than serve it.
func TestListenerConnWithoutForwardSecrecyRefused(t *testing.T) {
	hl, err := hmacauth.Listen("tcp", "127.0.0.1:0", &hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}})
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, hl, &hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}, ForwardSecrecy: true})
	client := newClient(t, hl.Addr().String(), &hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err == nil {
		t.Fatal("a connection without forward secrecy was served by credentials that require it")
	}
	if ids, _ := s.get(); len(ids) != 0 {
		t.Errorf("handler saw %q, want no call", ids)
	}
	// With forward secrecy asked for by the client, the same Listener serves.
	hl2, err := hmacauth.Listen("tcp", "127.0.0.1:0", &hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}})
	if err != nil {
		t.Fatal(err)
	}
	s2 := startServer(t, hl2, &hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}, ForwardSecrecy: true})
	client2 := newClient(t, hl2.Addr().String(), &hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}, ForwardSecrecy: true})
	if _, err := client2.Check(callCtx(t), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("a connection with forward secrecy was refused: %v", err)
	}
	if ids, _ := s2.get(); len(ids) != 1 {
		t.Errorf("handler saw %q, want one call", ids)
	}
}

// Credentials that require a mode refuse a connection an hmacauth.Listener
// authenticated at a weaker one, rather than serve it below their mode.
func TestListenerConnBelowCredentialsModeRefused(t *testing.T) {
	hl, err := hmacauth.Listen("tcp", "127.0.0.1:0", &hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}})
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, hl, &hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}, Mode: hmacauth.ModeSealed})
	client := newClient(t, hl.Addr().String(), &hmacauth.Config{Keys: []hmacauth.Key{key("svc-a")}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err == nil {
		t.Fatal("a ModeAuth connection was served by ModeSealed credentials")
	}
	if ids, _ := s.get(); len(ids) != 0 {
		t.Errorf("handler saw %q, want no call", ids)
	}
}

// TestCredentialsNeverShowSecret prints the credentials with every fmt
// verb and with slog: none shows a secret of the Config.
func TestCredentialsNeverShowSecret(t *testing.T) {
	k := key("visible-id")
	creds := NewCredentials(&hmacauth.Config{Keys: []hmacauth.Key{k}})
	var out bytes.Buffer
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%o"} {
		fmt.Fprintf(&out, verb+"\n", creds)
		fmt.Fprintf(&out, verb+"\n", []any{creds})
	}
	slog.New(slog.NewTextHandler(&out, nil)).Info("creds", "creds", creds)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("creds", "creds", creds)
	for _, enc := range []string{string(k.Secret), fmt.Sprint(k.Secret), fmt.Sprintf("%x", k.Secret), fmt.Sprintf("%o", k.Secret)} {
		if strings.Contains(out.String(), enc) {
			t.Fatalf("the credentials print the secret (as %q):\n%s", enc, out.String())
		}
	}
}
