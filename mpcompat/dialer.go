package mpcompat

import (
	"context"
	"net"

	"github.com/hmacauth/hmacauth/internal/netx"
)

// Dialer connects to listeners speaking the multiprocessing.connection
// handshake, such as Python's multiprocessing.connection.Listener. The
// zero value is not usable: Config is required.
type Dialer struct {
	// NetDialer dials the underlying connection; nil means a zero
	// net.Dialer. Its Timeout and Deadline also bound the handshake.
	NetDialer *net.Dialer
	// Config holds the authkey and the handshake settings.
	Config *Config
}

// Dial connects to the address on the named network and runs the
// handshake. See DialContext.
func (d *Dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// DialContext connects to the address on the named network and runs the
// client side of the handshake, as Python's multiprocessing.connection.Client
// does. It returns the underlying connection (a *net.TCPConn for TCP) only
// once the listener has proven the authkey, so no application byte is ever
// sent to a listener without it. ctx bounds both the connect and the
// handshake; the handshake is also bounded by Config.HandshakeTimeout.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if err := d.Config.check(); err != nil {
		return nil, err
	}
	return netx.DialContext(ctx, d.NetDialer, network, address, func(ctx context.Context, raw net.Conn) error {
		h := handshake{conn: raw, cfg: d.Config} // checked above
		return h.run(ctx)
	})
}

// Dial connects to the address on the named network and proves authKey
// with the defaults of Config: sha256, no legacy MD5. It can connect to
// Python's multiprocessing.connection.Listener(address, authkey=authKey)
// of Python 3.12 and later; for older Python use a Dialer with
// Config.AllowLegacyMD5.
func Dial(network, address string, authKey []byte) (net.Conn, error) {
	d := Dialer{Config: &Config{AuthKey: authKey}}
	return d.DialContext(context.Background(), network, address)
}
