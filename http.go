package hmacauth

import (
	"context"
	"net"
)

type keyIDContextKey struct{}

// ConnContext records the key ID of an authenticated connection in ctx. Set
// it as http.Server.ConnContext (it is cheap: it runs on the accept loop),
// then read the ID in handlers with KeyIDFromContext. Connections that are
// not a *Conn leave ctx unchanged.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if hc, ok := c.(*Conn); ok {
		if id := hc.KeyID(); id != "" {
			return context.WithValue(ctx, keyIDContextKey{}, id)
		}
	}
	return ctx
}

// KeyIDFromContext returns the key ID that ConnContext recorded in ctx.
func KeyIDFromContext(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(keyIDContextKey{}).(string)
	return id, ok
}
