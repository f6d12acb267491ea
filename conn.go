package hmacauth

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hmacauth/hmacauth/internal/acceptor"
	"github.com/hmacauth/hmacauth/internal/netx"
)

// Conn is a connection secured by an hmacauth handshake. It implements
// net.Conn. The first Read, Write, ReadFrom or WriteTo runs the handshake
// if Handshake has not been called; a handshake error is returned again by
// every later call.
//
// In ModeAuth, bytes flow on the underlying connection untouched after the
// handshake: Read and Write go straight to it, and ReadFrom and WriteTo keep
// the kernel's splice and sendfile paths of a *net.TCPConn. In ModeIntegrity
// and ModeSealed they travel in authenticated records (see
// PROTOCOL.md section 9); Read and Write may then run concurrently, a
// deadline that interrupts either leaves the connection usable, and a
// record that fails its check makes Read return an error wrapping
// ErrIntegrity, then and ever after.
type Conn struct {
	conn     net.Conn
	config   *Config
	isClient bool

	hsMu   sync.Mutex
	hsDone atomic.Bool
	hsErr  error
	res    hsResult
	// secretMu guards res.secret after the handshake: Close clears it
	// while ConnectionState may be copying it.
	secretMu sync.Mutex

	// rl is the record layer of ModeIntegrity and ModeSealed, installed
	// by a successful handshake; nil in ModeAuth, where Read and Write go
	// to plain: conn, with its system calls made directly where it is a
	// socket (netx.SocketIO).
	rl    *recordLayer
	plain io.ReadWriter

	// Close and CloseRead during a handshake find no record layer yet:
	// the handshake passes them on when it ends.
	closed     atomic.Bool
	readClosed atomic.Bool
	// writeDeadline is the write deadline set through the Conn, which
	// also bounds Close's close record.
	wdMu          sync.Mutex
	writeDeadline time.Time

	// Test hooks, set before the handshake; zero in production.
	testingOnlyNoAES          bool   // ask for ChaCha20-Poly1305, as a CPU without AES hardware does
	testingOnlyRecordSize     int    // instead of defaultRecordSize
	testingOnlyKeyUpdateBytes uint64 // instead of keyUpdateBytes
}

// Client returns a Conn for the client side of conn, which will prove
// cfg.Keys[0]. The handshake runs on first use or on Handshake.
func Client(conn net.Conn, cfg *Config) *Conn {
	return &Conn{conn: conn, config: cfg, isClient: true}
}

// Server returns a Conn for the server side of conn, which will accept any
// key in cfg.Keys. The handshake runs on first use or on Handshake.
func Server(conn net.Conn, cfg *Config) *Conn {
	return &Conn{conn: conn, config: cfg}
}

// Handshake runs the handshake if it has not run yet, bounded by
// Config.HandshakeTimeout. See HandshakeContext.
func (c *Conn) Handshake() error {
	return c.HandshakeContext(context.Background())
}

// HandshakeContext runs the handshake if it has not run yet. It returns
// when the peer has proven the key and this side has sent its own proof, or
// when ctx is done, the handshake times out, or the peer fails. Deadlines
// set on the Conn also bound the handshake, which leaves them in force; if
// ctx or Config.HandshakeTimeout ends it, the underlying connection's
// deadline is left in the past. The connection is not closed on failure,
// except one that refuses deadlines (its SetDeadline fails, as on
// x/crypto/ssh channels): ctx or the timeout ending the handshake closes
// it, the only way to end its pending I/O, as crypto/tls does.
func (c *Conn) HandshakeContext(ctx context.Context) error {
	if c.hsDone.Load() {
		return c.hsErr
	}
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	if c.hsDone.Load() {
		return c.hsErr
	}
	c.hsErr = c.handshake(ctx)
	if c.hsErr != nil {
		clear(c.res.secret)
		c.res = hsResult{}
	} else if c.res.mode == ModeAuth {
		c.plain = netx.SocketIO(c.conn)
	} else {
		c.rl = newRecordLayer(c.conn, c.res.secret, recordParams{
			client:                    c.isClient,
			sealed:                    c.res.mode == ModeSealed,
			chacha:                    c.res.flags&flagChaCha20 != 0,
			testingOnlyRecordSize:     c.testingOnlyRecordSize,
			testingOnlyKeyUpdateBytes: c.testingOnlyKeyUpdateBytes,
		})
	}
	c.hsDone.Store(true)
	// Close and CloseRead may have run during the handshake, before there
	// was a record layer to tell, and left the secrets alone.
	if c.rl != nil && c.readClosed.Load() {
		c.rl.setReadClosed()
	}
	if c.closed.Load() {
		c.clearSecrets()
	}
	return c.hsErr
}

func (c *Conn) handshake(ctx context.Context) (err error) {
	start := time.Now()
	keys, err := c.config.check()
	if err != nil {
		return err
	}
	var claimed string // the key ID a client named, for a Listener's report
	defer func() {
		if err != nil {
			err = handshakeError(c.isClient, c.conn.RemoteAddr(), claimed, err)
		}
	}()
	if ctx.Err() != nil {
		return contextError(ctx)
	}

	// The timeout and ctx interrupt the handshake's I/O: it sets no
	// deadline of its own and those the user set stay untouched.
	bounded, finish := netx.Bound(ctx, c.conn, start, c.config.handshakeTimeout(), ErrHandshakeTimeout)
	defer func() { err = finish(err) }()

	h := &handshake{owner: c.config}
	// A server holds its key share from the ServerHello until the
	// ClientFinished arrives (a client takes its own when it has the
	// ServerHello and uses it at once). A handshake with no deadline could
	// hold a shared key share, and with it the sessions of its lifetime,
	// without bound (a replayed ClientHello, then silence): it makes a key
	// share of its own, which serves no other session (PROTOCOL.md 7.3).
	// Only the timeout and ctx's deadline count: the handshake does not see
	// the connection's.
	if c.isClient || bounded {
		h.shares, h.shareLifetime = c.config.keyShares()
	}
	p := hsParams{
		mode:   c.config.Mode,
		fs:     c.config.ForwardSecrecy,
		chacha: c.testingOnlyNoAES || !hasAESGCMHardware,
	}
	if c.isClient {
		c.res, err = h.runClient(c.conn, keys.first, p)
	} else {
		p.progress = func() { acceptor.Progress(ctx) }
		c.res, err = h.runServer(c.conn, keys, p)
		claimed = c.res.keyID
	}
	return err
}

// KeyID returns the ID of the key the peer proved, or "" before a
// successful handshake.
func (c *Conn) KeyID() string {
	if !c.hsDone.Load() {
		return ""
	}
	return c.res.keyID
}

// ConnectionState describes an established connection.
type ConnectionState struct {
	// HandshakeComplete is true once the handshake succeeded; the other
	// fields are zero until then.
	HandshakeComplete bool
	// KeyID is the ID of the key both sides proved.
	KeyID string
	// Mode is the mode the connection runs at: the stronger of the two
	// sides' Config.Mode. Both sides report the same.
	Mode Mode
	// ForwardSecrecy is true when an ephemeral X25519 exchange was mixed
	// into the session keys.
	ForwardSecrecy bool

	secret []byte
}

// String describes the state without the session secret, so that printing
// a ConnectionState (fmt's %v prints unexported fields) does not leak it.
func (cs ConnectionState) String() string {
	return fmt.Sprintf("hmacauth.ConnectionState{HandshakeComplete: %v, KeyID: %q, Mode: %v, ForwardSecrecy: %v}",
		cs.HandshakeComplete, cs.KeyID, cs.Mode, cs.ForwardSecrecy)
}

// GoString is like String, so that %#v does not print the secret either.
func (cs ConnectionState) GoString() string { return cs.String() }

// Format prints String for every verb, so that none shows the secret.
func (cs ConnectionState) Format(f fmt.State, _ rune) { io.WriteString(f, cs.String()) }

// ConnectionState returns the state of the connection. It holds its own
// copy of the session secret, so its exporter keeps working after Close;
// a ConnectionState taken after Close has none, and its exporter fails.
func (c *Conn) ConnectionState() ConnectionState { return c.connectionState(true) }

// connectionState is ConnectionState, with a copy of the session secret
// only if withSecret: a copy is never cleared, so what only prints the
// state (String, LogValue) takes none.
func (c *Conn) connectionState(withSecret bool) ConnectionState {
	if !c.hsDone.Load() || c.hsErr != nil {
		return ConnectionState{}
	}
	cs := ConnectionState{
		HandshakeComplete: true,
		KeyID:             c.res.keyID,
		Mode:              c.res.mode,
		ForwardSecrecy:    c.res.flags&flagForwardSecrecy != 0,
	}
	if withSecret {
		c.secretMu.Lock()
		cs.secret = bytes.Clone(c.res.secret) // nil after Close
		c.secretMu.Unlock()
	}
	return cs
}

// clearSessionSecret overwrites the session secret with zeros at Close.
// The handshake is done: nothing else writes c.res.
func (c *Conn) clearSessionSecret() {
	c.secretMu.Lock()
	clear(c.res.secret)
	c.res.secret = nil
	c.secretMu.Unlock()
}

// ExportKeyingMaterial returns length bytes derived from the session
// secret, the label and the context, in the manner of RFC 5705: both sides
// of a connection get the same bytes, no other connection does, and they
// reveal nothing about the keys. A nil and an empty context are the same,
// as in TLS 1.3 (RFC 8446, section 7.5) and unlike RFC 5705: do not use a
// label both with and without a context. The exporter is defined in
// PROTOCOL.md section 8. Errors wrap ErrExport.
func (cs ConnectionState) ExportKeyingMaterial(label string, context []byte, length int) ([]byte, error) {
	if !cs.HandshakeComplete {
		return nil, errorf(ErrExport, "ExportKeyingMaterial before a successful handshake")
	}
	if cs.secret == nil {
		return nil, fmt.Errorf("%w: the connection was closed before ConnectionState was called, and Close cleared the session secret; call ConnectionState before Close: %w", ErrExport, net.ErrClosed)
	}
	if len(label) > 0xffff || len(context) > 0xffff || length < 0 || length > 255*sha256.Size {
		return nil, errorf(ErrExport, "label of %d bytes, context of %d bytes, length %d: label and context must be under 64 KiB and length 0 to %d",
			len(label), len(context), length, 255*sha256.Size)
	}
	exp := expandLabel(cs.secret, "exporter", sha256.Size)
	info := make([]byte, 0, 4+len(label)+len(context))
	info = binary.BigEndian.AppendUint16(info, uint16(len(label)))
	info = append(info, label...)
	info = binary.BigEndian.AppendUint16(info, uint16(len(context)))
	info = append(info, context...)
	return hkdf.Expand(sha256.New, exp, string(info), length)
}

// NetConn returns the underlying connection. Writing to it or reading from
// it directly bypasses the handshake.
func (c *Conn) NetConn() net.Conn { return c.conn }

// Read reads application data, running the handshake first if needed.
func (c *Conn) Read(b []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	if c.rl != nil {
		return c.rl.Read(b)
	}
	return c.plain.Read(b)
}

// Write writes application data, running the handshake first if needed.
func (c *Conn) Write(b []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	if c.rl != nil {
		return c.rl.Write(b)
	}
	return c.plain.Write(b)
}

// ReadFrom implements io.ReaderFrom, so that io.Copy to a Conn keeps the
// underlying connection's sendfile and splice paths.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	if c.rl != nil {
		return c.rl.ReadFrom(r)
	}
	if src, ok := r.(*Conn); ok {
		if err := src.Handshake(); err != nil {
			return 0, err
		}
		if src.rl == nil {
			r = src.conn
		}
	}
	if rf, ok := c.conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.conn}, r)
}

// WriteTo implements io.WriterTo, so that io.Copy from a Conn keeps the
// underlying connection's splice path.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	if c.rl != nil {
		return c.rl.WriteTo(w)
	}
	if rf, ok := w.(io.ReaderFrom); ok {
		return rf.ReadFrom(c.conn)
	}
	if wt, ok := c.conn.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.Copy(w, struct{ io.Reader }{c.conn})
}

// Close closes the connection. It does not wait for a handshake running on
// another goroutine, which fails. In a record mode it first sends the close
// record, so the peer reads io.EOF rather than a cut stream, unless a Write
// is in progress (then Close breaks it) or the peer has not read for
// 5 seconds, or sooner when a write deadline set through the Conn
// (SetDeadline, SetWriteDeadline) passes first. It overwrites the session secret and the traffic secrets with
// zeros, at once or, where a Read or Write is in progress, when that
// returns; ConnectionState's exporter fails from then on.
func (c *Conn) Close() error {
	c.closed.Store(true)
	var recErr error
	if c.hsDone.Load() {
		if c.rl != nil {
			recErr = c.rl.shutdown(c.loadWriteDeadline())
		}
		c.clearSessionSecret()
	}
	if err := c.conn.Close(); err != nil {
		return err
	}
	return recErr
}

// CloseWrite shuts down the writing side: the peer reads io.EOF, and can
// still write, and this side read. In a record mode it sends the close
// record and then half-closes the underlying connection if that supports
// it (as *net.TCPConn and *net.UnixConn do); the close record alone is
// enough, as TLS's close_notify is. In ModeAuth it needs the underlying
// connection's half-close, and reports errors.ErrUnsupported without it.
func (c *Conn) CloseWrite() error {
	if err := c.Handshake(); err != nil {
		return err
	}
	if c.rl != nil {
		if err := c.rl.closeWrite(); err != nil {
			return err
		}
	}
	if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	if c.rl != nil {
		return nil
	}
	return fmt.Errorf("hmacauth: CloseWrite: %T does not support half-close: %w", c.conn, errors.ErrUnsupported)
}

// CloseRead shuts down the reading side, if the underlying connection
// supports it.
func (c *Conn) CloseRead() error {
	if cr, ok := c.conn.(interface{ CloseRead() error }); ok {
		// In a record mode, the end of stream that follows is this side's
		// doing, not a cut by an attacker.
		c.readClosed.Store(true)
		if c.hsDone.Load() && c.rl != nil {
			c.rl.setReadClosed()
		}
		return cr.CloseRead()
	}
	return fmt.Errorf("hmacauth: CloseRead: %T does not support half-close: %w", c.conn, errors.ErrUnsupported)
}

// LocalAddr returns the local network address.
func (c *Conn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr returns the remote network address.
func (c *Conn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// SetDeadline sets the read and write deadlines. A zero value means none.
func (c *Conn) SetDeadline(t time.Time) error {
	c.storeWriteDeadline(t)
	return c.conn.SetDeadline(t)
}

// SetReadDeadline sets the read deadline. A zero value means none.
func (c *Conn) SetReadDeadline(t time.Time) error {
	return c.conn.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline. A zero value means none.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.storeWriteDeadline(t)
	return c.conn.SetWriteDeadline(t)
}

func (c *Conn) storeWriteDeadline(t time.Time) {
	c.wdMu.Lock()
	c.writeDeadline = t
	c.wdMu.Unlock()
}

func (c *Conn) loadWriteDeadline() time.Time {
	c.wdMu.Lock()
	defer c.wdMu.Unlock()
	return c.writeDeadline
}

// String describes the connection: its side, addresses, and the key ID and
// mode once the handshake has succeeded. It never shows a secret or a
// buffered byte, so that printing a Conn (fmt's %v prints unexported
// fields) does not leak the session and traffic secrets or plaintext.
func (c *Conn) String() string {
	if c == nil {
		return "hmacauth.Conn(nil)"
	}
	side, local, remote := c.ends()
	state, cs := c.handshakeState()
	if !cs.HandshakeComplete {
		return fmt.Sprintf("hmacauth.Conn{%s %s -> %s, handshake %s}", side, local, remote, state)
	}
	return fmt.Sprintf("hmacauth.Conn{%s %s -> %s, KeyID: %q, Mode: %v, ForwardSecrecy: %v}",
		side, local, remote, cs.KeyID, cs.Mode, cs.ForwardSecrecy)
}

// GoString is like String, so that %#v does not print a secret either.
func (c *Conn) GoString() string { return c.String() }

// Format prints String for every verb, so that none shows a secret.
func (c *Conn) Format(f fmt.State, _ rune) { io.WriteString(f, c.String()) }

// LogValue implements slog.LogValuer: what String shows, as attributes.
func (c *Conn) LogValue() slog.Value {
	if c == nil {
		return slog.StringValue("<nil>")
	}
	side, local, remote := c.ends()
	state, cs := c.handshakeState()
	attrs := []slog.Attr{slog.String("side", side), slog.String("local", local),
		slog.String("remote", remote), slog.String("handshake", state)}
	if cs.HandshakeComplete {
		attrs = append(attrs, slog.String("key_id", cs.KeyID), slog.String("mode", cs.Mode.String()),
			slog.Bool("forward_secrecy", cs.ForwardSecrecy))
	}
	return slog.GroupValue(attrs...)
}

// ends returns the side and addresses of c, for String and LogValue.
func (c *Conn) ends() (side, local, remote string) {
	side = "server"
	if c.isClient {
		side = "client"
	}
	if c.conn == nil {
		return side, "<nil>", "<nil>"
	}
	return side, fmt.Sprint(c.conn.LocalAddr()), fmt.Sprint(c.conn.RemoteAddr())
}

// handshakeState returns "not done", "failed" or "complete", with the
// ConnectionState once complete. It reads the handshake's result only once
// the handshake is over, so String is safe during a handshake.
func (c *Conn) handshakeState() (string, ConnectionState) {
	switch {
	case !c.hsDone.Load():
		return "not done", ConnectionState{}
	case c.hsErr != nil:
		return "failed", ConnectionState{}
	}
	return "complete", c.connectionState(false)
}

// clearSecrets clears every secret of a connection that Close closed while
// its handshake ran: the handshake has just finished, and Close did not
// find the secrets yet.
func (c *Conn) clearSecrets() {
	if c.rl != nil {
		c.rl.wipe()
	}
	c.clearSessionSecret()
}
