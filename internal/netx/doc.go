// Package netx holds the plumbing that package hmacauth and package
// mpcompat share: dialing under a net.Dialer's bounds (dial.go), handshake
// bounds by a context that interrupts their I/O (context.go), handshake
// errors and their messages (errors.go), the accept loop's retry rules
// (accept.go), and how a Config's zero values resolve (config.go).
package netx
