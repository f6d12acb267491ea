package netx

import (
	"context"
	"net"
	"time"
)

// DialContext dials with nd (nil means a zero net.Dialer) and runs
// handshake on the new connection. nd's Timeout and Deadline bound the
// connect and the handshake together, as does ctx. On a handshake error the
// connection is closed.
func DialContext(ctx context.Context, nd *net.Dialer, network, address string, handshake func(context.Context, net.Conn) error) (net.Conn, error) {
	if nd == nil {
		nd = new(net.Dialer)
	}
	if nd.Timeout != 0 || !nd.Deadline.IsZero() {
		dl := nd.Deadline
		if nd.Timeout != 0 {
			dl = Earliest(dl, time.Now().Add(nd.Timeout))
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl)
		defer cancel()
	}
	raw, err := nd.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	if err := handshake(ctx, raw); err != nil {
		raw.Close()
		return nil, err
	}
	return raw, nil
}
