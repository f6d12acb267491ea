// Package grpcauth provides gRPC transport credentials that run an hmacauth
// handshake on every connection, so that a gRPC server serves only clients
// that hold a shared key, and a client talks only to servers that hold it.
//
// Server:
//
//	creds := grpcauth.NewCredentials(&hmacauth.Config{Keys: keys})
//	srv := grpc.NewServer(grpc.Creds(creds))
//	srv.Serve(lis) // a net.Listener, or an *hmacauth.Listener (see ServerHandshake)
//
// Client:
//
//	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
//
// Handlers and interceptors read the client's key ID with KeyIDFromContext.
package grpcauth

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/hmacauth/hmacauth"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// SecurityProtocol is the name of the protocol in ProtocolInfo and the type
// of AuthInfo.
const SecurityProtocol = "hmacauth"

// SecurityVersion is the hmacauth protocol version the credentials speak.
// Info does not report it: gRPC deprecated ProtocolInfo.SecurityVersion.
const SecurityVersion = "1"

// NewCredentials returns transport credentials that authenticate both ends
// of every gRPC connection with cfg: a client proves cfg's first key (or
// its Keyring's), a server accepts any of them.
//
// The SecurityLevel of a connection follows its hmacauth mode (see
// AuthInfo): only ModeSealed is PrivacyAndIntegrity, so per-RPC
// credentials that require transport security (OAuth tokens, JWTs) are
// refused by gRPC on connections in ModeAuth or ModeIntegrity. Set
// cfg.Mode to hmacauth.ModeSealed on both sides to send them.
//
// cfg must not be modified afterwards; to rotate keys, use cfg.Keyring.
// A process that is a gRPC server and also a client of itself gives each
// side credentials with a Config of its own: a Config refuses its own
// connections (see hmacauth.Config).
func NewCredentials(cfg *hmacauth.Config) credentials.TransportCredentials {
	return &transportCreds{cfg: cfg}
}

type transportCreds struct {
	cfg *hmacauth.Config
}

// String describes the credentials by their Config, which shows no secret.
func (c *transportCreds) String() string { return fmt.Sprintf("grpcauth.Credentials{%v}", c.cfg) }

// Format prints String for every verb: fmt prints the Config's keys for a
// verb that does not fit a pointer, such as %s or %q.
func (c *transportCreds) Format(f fmt.State, _ rune) { io.WriteString(f, c.String()) }

// ClientHandshake runs the client side of the handshake on raw. It returns
// once the server has proven the key, or fails when ctx is done (gRPC's
// connect deadline), cfg.HandshakeTimeout passes, or the server does not
// prove the key. authority is not used: the server is identified by the
// key, not by a name.
func (c *transportCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn := hmacauth.Client(raw, c.cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		return nil, nil, err
	}
	return conn, newAuthInfo(conn.ConnectionState()), nil
}

// ServerHandshake runs the server side of the handshake on raw, bounded by
// cfg.HandshakeTimeout and by the deadline gRPC set on raw
// (grpc.ConnectionTimeout). After the handshake, the client's HTTP/2
// preface must arrive within cfg.HandshakeTimeout, which then replaces
// gRPC's deadline (120 s by default), so that a key holder that goes
// silent is dropped as fast as one that does not prove the key; with a
// negative HandshakeTimeout, gRPC's deadline stays in force.
//
// If raw is an *hmacauth.Conn, as when grpc.Server serves an
// *hmacauth.Listener, the preface is bounded by gRPC's deadline alone, and
// its handshake has run already (with the Listener's
// Config, which is then the one that counts, though a connection below
// cfg.Mode, or without forward secrecy when cfg.ForwardSecrecy is set, is
// refused) and is not run again: this
// combines the Listener's caps, per-IP shedding and statistics with the
// key ID in the gRPC context.
func (c *transportCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, accepted := raw.(*hmacauth.Conn)
	if !accepted {
		conn = hmacauth.Server(raw, c.cfg)
	}
	if err := conn.Handshake(); err != nil {
		return nil, nil, err
	}
	if accepted {
		st := conn.ConnectionState()
		if c.cfg != nil && st.Mode < c.cfg.Mode {
			return nil, nil, fmt.Errorf("%w: the Listener's connection from %s runs %v, but these credentials require at least %v; set the Listener's Config.Mode",
				hmacauth.ErrConfig, raw.RemoteAddr(), st.Mode, c.cfg.Mode)
		}
		if c.cfg != nil && c.cfg.ForwardSecrecy && !st.ForwardSecrecy {
			return nil, nil, fmt.Errorf("%w: the Listener's connection from %s runs without forward secrecy, which these credentials require; set the Listener's Config.ForwardSecrecy",
				hmacauth.ErrConfig, raw.RemoteAddr())
		}
		return conn, newAuthInfo(st), nil
	}
	// Bound the HTTP/2 preface that gRPC reads next, on raw, as gRPC does
	// (it clears raw's deadline when the transport is up); through conn,
	// the deadline would also cut the close record of a later Close.
	// Config's rule: zero means the default, a negative value no bound.
	// (grpcauth is a module of its own and uses only the core's public API.)
	// A raw without deadlines has already ignored gRPC's.
	if t := cmp.Or(c.cfg.HandshakeTimeout, hmacauth.DefaultHandshakeTimeout); t > 0 {
		raw.SetDeadline(time.Now().Add(t))
	}
	return conn, newAuthInfo(conn.ConnectionState()), nil
}

// Info returns SecurityProtocol "hmacauth".
func (c *transportCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: SecurityProtocol}
}

// Clone returns credentials that share the Config (and its Keyring, so a
// key rotation reaches every clone).
func (c *transportCreds) Clone() credentials.TransportCredentials {
	return &transportCreds{cfg: c.cfg}
}

// OverrideServerName does nothing: hmacauth identifies the server by its
// key, not by a name.
//
// Deprecated: gRPC no longer calls it; use grpc.WithAuthority.
func (c *transportCreds) OverrideServerName(string) error { return nil }

// AuthInfo is the credentials.AuthInfo of an hmacauth connection, found in
// peer.FromContext(ctx).AuthInfo on the server.
type AuthInfo struct {
	credentials.CommonAuthInfo
	// KeyID is the ID of the key both sides proved.
	KeyID string
	// Mode is the protection of the connection's bytes after the handshake.
	Mode hmacauth.Mode
	// ForwardSecrecy reports whether the session keys came from an
	// ephemeral key exchange.
	ForwardSecrecy bool
}

// AuthType returns "hmacauth".
func (AuthInfo) AuthType() string { return SecurityProtocol }

// ValidateAuthority accepts any :authority override (grpc.CallAuthority):
// the server proved the key, and a name adds nothing to that proof.
func (AuthInfo) ValidateAuthority(string) error { return nil }

// SecurityLevel returns the gRPC security level of a mode: NoSecurity for
// ModeAuth (bytes after the handshake are neither encrypted nor protected
// from tampering), IntegrityOnly for ModeIntegrity, PrivacyAndIntegrity
// for ModeSealed.
func SecurityLevel(m hmacauth.Mode) credentials.SecurityLevel {
	switch m {
	case hmacauth.ModeSealed:
		return credentials.PrivacyAndIntegrity
	case hmacauth.ModeIntegrity:
		return credentials.IntegrityOnly
	}
	return credentials.NoSecurity
}

func newAuthInfo(st hmacauth.ConnectionState) AuthInfo {
	return AuthInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: SecurityLevel(st.Mode)},
		KeyID:          st.KeyID,
		Mode:           st.Mode,
		ForwardSecrecy: st.ForwardSecrecy,
	}
}

// AuthInfoFromContext returns the AuthInfo of the connection an RPC
// arrived on, in a server handler or interceptor.
func AuthInfoFromContext(ctx context.Context) (AuthInfo, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return AuthInfo{}, false
	}
	ai, ok := p.AuthInfo.(AuthInfo)
	return ai, ok
}

// KeyIDFromContext returns the ID of the key the client proved, in a server
// handler or interceptor.
func KeyIDFromContext(ctx context.Context) (string, bool) {
	ai, ok := AuthInfoFromContext(ctx)
	if !ok || ai.KeyID == "" {
		return "", false
	}
	return ai.KeyID, true
}
