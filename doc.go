// Package hmacauth makes a TCP service accept only clients that hold a shared
// secret, proven by a mutual HMAC-SHA256 challenge-response, without
// certificates or TLS.
//
// Wrap any net.Listener with NewListener (or call Listen): Accept then returns
// only connections whose client proved a key, with the handshake done, so
// http.Server, grpc.Server and raw-socket servers become authenticated
// without other changes. Handshakes run concurrently under deadlines and
// caps, so no client can stall the accept loop, and a failed handshake never
// reaches Accept's caller. On the client side, use a Dialer (or Dial) in
// place of a net.Dialer; it returns only after the server has proven the key
// too, so no byte goes to an impostor.
//
// The wire protocol, hmacauth/1, is specified in PROTOCOL.md. In ModeAuth, the
// default, the bytes after the handshake travel unprotected on the raw
// connection: an on-path attacker can read them and inject data after the
// handshake. See Config.Mode for the integrity and encrypted modes.
package hmacauth
