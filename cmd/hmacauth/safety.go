package main

import (
	"fmt"
	"net"
	"strings"
)

// The tunnel's safe defaults, as ghostunnel has them: a server forwards
// authenticated connections in the clear to its target, so a target on
// another host would carry them over the network unprotected; a client
// lends its key to whoever connects to -listen, so a listen address
// reachable from other hosts would let them use it. Both are refused
// unless -unsafe-target or -unsafe-listen says the operator means it.

// onThisHost returns nil if a command-line ADDR is on this host only: a
// Unix socket, or host:port whose host is "localhost" or a loopback IP
// address (127.0.0.0/8, ::1). Any other name is not: it may resolve
// anywhere. An empty or unspecified host (":80", "0.0.0.0:80") is this
// host for a dial (net dials the local system) but every interface for a
// listen.
func onThisHost(addr string, dial bool) error {
	network, address := parseAddr(addr)
	switch network {
	case "unix":
		return nil
	case "systemd":
		// Known when systemd passes it: listenOn checks it then.
		return nil
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("%q is neither host:port nor a Unix socket: %w", addr, err)
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	host, _, _ = strings.Cut(host, "%") // an IPv6 zone
	ip := net.ParseIP(host)
	if ip != nil && ip.IsLoopback() {
		return nil
	}
	if host == "" || ip != nil && ip.IsUnspecified() {
		if dial {
			return nil
		}
		return fmt.Errorf("%q is every interface of this host, not only loopback", addr)
	}
	return fmt.Errorf("%q is not a loopback address (127.0.0.1, ::1, localhost) or a Unix socket", addr)
}

// checkSafe applies the safe defaults to the parsed flags of role r; it
// returns the usage error to print, or "".
func checkSafe(r role, o *tunnelOptions, unsafeTarget, unsafeListen bool) string {
	switch {
	case r == roleServer && !unsafeTarget:
		if err := onThisHost(o.target, true); err != nil {
			return fmt.Sprintf("-target %v: the server forwards authenticated connections unprotected (plain TCP) to its target, "+
				"so it accepts only a target on this host; give -unsafe-target to forward over the network anyway", err)
		}
	case r == roleClient && !unsafeListen:
		if err := onThisHost(o.listen, false); err != nil {
			return fmt.Sprintf("-listen %v: whoever connects to a client tunnel uses its key, "+
				"so it listens only on this host; give -unsafe-listen to accept connections from other hosts anyway", err)
		}
	}
	return ""
}
