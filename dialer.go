package hmacauth

import (
	"context"
	"net"

	"github.com/hmacauth/hmacauth/internal/netx"
)

// Dialer dials hmacauth servers. The zero value is not usable: Config is
// required.
type Dialer struct {
	// NetDialer dials the underlying connection; nil means a zero
	// net.Dialer. Its Timeout and Deadline also bound the handshake.
	NetDialer *net.Dialer
	// Config holds the key to prove (Keys[0], or the first key of
	// Config.Keyring) and the handshake settings.
	Config *Config
}

// Dial connects to the address on the named network and runs the
// handshake. See DialContext.
func (d *Dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// DialContext connects to the address on the named network and runs the
// handshake; the returned net.Conn is a *Conn. It returns only once the
// server has proven the key, so no application byte is ever sent to a
// server without it. ctx bounds both the connect and the handshake; the
// handshake is also bounded by Config.HandshakeTimeout.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := d.dial(ctx, network, address)
	if err != nil {
		return nil, err // a nil *Conn must not become a non-nil net.Conn
	}
	return c, nil
}

func (d *Dialer) dial(ctx context.Context, network, address string) (*Conn, error) {
	if _, err := d.Config.check(); err != nil {
		return nil, err
	}
	var c *Conn
	_, err := netx.DialContext(ctx, d.NetDialer, network, address, func(ctx context.Context, raw net.Conn) error {
		c = Client(raw, d.Config)
		return c.HandshakeContext(ctx)
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Dial connects to the address on the named network with a zero
// net.Dialer and runs the handshake with cfg.
func Dial(network, address string, cfg *Config) (*Conn, error) {
	d := Dialer{Config: cfg}
	return d.dial(context.Background(), network, address)
}
