// Package mpcompat lets Go programs serve and call Python programs that use
// multiprocessing.connection (Listener, Client, Connection.send_bytes and
// recv_bytes) over TCP or Unix sockets.
//
// Listen and Dial run the authentication handshake of
// multiprocessing.connection with a shared authkey, in the order Python
// uses (a listener challenges first, then answers the client's challenge),
// so both sides prove the key. WriteMessage and ReadMessage then exchange
// byte messages framed as send_bytes and recv_bytes frame them. Messages
// sent with Connection.send and recv are pickles, which this package does
// not decode: use send_bytes and recv_bytes on the Python side.
//
// # Digests and Python versions
//
// Python 3.12 and later challenge with "{sha256}" and 40 random bytes and
// answer with "{sha256}" and an HMAC-SHA256; this is what the package
// speaks by default. Python 3.11 and older know only HMAC-MD5 (a bare
// 20-byte challenge, a raw 16-byte answer); Config.AllowLegacyMD5 enables
// it, and without it such peers are refused with ErrWeakDigest. Python's
// own listener (3.12, 3.13) accepts an MD5 answer to its sha256 challenge,
// which lets a peer downgrade the digest; this package never accepts a digest
// weaker than Config.Digest unless AllowLegacyMD5 is set. MACs are compared
// in constant time.
//
// # What the handshake does not do
//
// Like Python's, the handshake authenticates the two ends once: the
// messages after it travel in the clear and are not protected against
// tampering, and nothing binds them to the handshake, so an attacker on
// the path can take over an authenticated connection, or relay a real
// listener's challenge to a client (which answers before the listener
// proves anything) and the answer back.
//
// A client answers before the server proves anything, and its own
// challenge has the same form as a server's, so a server without the
// authkey that gets two dials at once could reflect one dial's challenge
// into the other and hand the answer back. To stop this, the dialers of a
// process keep a process-wide set of the challenges they await answers
// to, and a dialer refuses with ErrReflection to answer one of them; this
// asks nothing of the peer and stays compatible with Python. The set does
// not reach across processes: a server that gets dials from two processes
// holding the authkey (Go or Python, whose Client has no such check) can
// still reflect the challenge of one into the other. Nor does it cover a
// process that also runs a Listener with the same authkey where the
// attacker can reach it: the attacker relays that Listener's challenge to
// the dialer, and the dialer's challenge to the Listener, which answers it
// as a server must. A listener cannot tell this from a genuine dial, so
// give a process that both listens and dials an authkey per direction, or
// keep its Listener out of the attacker's reach.
//
// Use the handshake on trusted networks or inside a protected tunnel
// (such as TLS, or an hmacauth tunnel in sealed mode), and use a long
// random authkey: an eavesdropper can test guesses of a short one against
// a recorded handshake.
package mpcompat
