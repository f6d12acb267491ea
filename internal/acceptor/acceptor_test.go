package acceptor

import (
	"net"
	"net/netip"
	"testing"
)

// TestIPKey checks the buckets of MaxPerIP: one per IPv4 address, one per
// IPv6 /64 and zone, IPv4-mapped IPv6 counted as IPv4, none without an IP.
func TestIPKey(t *testing.T) {
	tcp := func(s string) net.Addr {
		ap := netip.MustParseAddrPort(s)
		return &net.TCPAddr{IP: ap.Addr().AsSlice(), Port: int(ap.Port()), Zone: ap.Addr().Zone()}
	}
	for _, tc := range []struct {
		name string
		a, b net.Addr
		same bool
	}{
		{"IPv4, two ports", tcp("192.0.2.1:1000"), tcp("192.0.2.1:2000"), true},
		{"IPv4, neighbours", tcp("192.0.2.1:1000"), tcp("192.0.2.2:1000"), false},
		{"IPv6, one /64", tcp("[2001:db8:1:2::1]:1000"), tcp("[2001:db8:1:2:ffff:ffff:ffff:ffff]:2000"), true},
		{"IPv6, next /64", tcp("[2001:db8:1:2::1]:1000"), tcp("[2001:db8:1:3::1]:1000"), false},
		{"IPv6, same /48 other /64", tcp("[2001:db8:1:2::1]:1000"), tcp("[2001:db8:1:8000::1]:1000"), false},
		{"IPv4-mapped is IPv4", tcp("[::ffff:192.0.2.1]:1000"), tcp("192.0.2.1:2000"), true},
		{"IPv4-mapped neighbours", tcp("[::ffff:192.0.2.1]:1000"), tcp("[::ffff:192.0.2.2]:1000"), false},
		{"IPv4 is not its /64 in IPv6", tcp("192.0.2.1:1000"), tcp("[::c000:201]:1000"), false},
		{"link-local, one zone", tcp("[fe80::1%eth0]:1000"), tcp("[fe80::2%eth0]:1000"), true},
		{"link-local, two zones", tcp("[fe80::1%eth0]:1000"), tcp("[fe80::1%eth1]:1000"), false},
		{"UDP and TCP alike", &net.UDPAddr{IP: net.ParseIP("2001:db8::1")}, tcp("[2001:db8::2]:1"), true},
	} {
		ka, kb := ipKey(tc.a), ipKey(tc.b)
		if !ka.IsValid() || !kb.IsValid() {
			t.Errorf("%s: ipKey(%v) = %v, ipKey(%v) = %v: want valid keys", tc.name, tc.a, ka, tc.b, kb)
		}
		if (ka == kb) != tc.same {
			t.Errorf("%s: ipKey(%v) = %v, ipKey(%v) = %v; same bucket = %v, want %v", tc.name, tc.a, ka, tc.b, kb, ka == kb, tc.same)
		}
	}
	if k := ipKey(tcp("[2001:db8:1:2:3:4:5:6]:1")); k != netip.MustParseAddr("2001:db8:1:2::") {
		t.Errorf("IPv6 key = %v, want its /64, 2001:db8:1:2::", k)
	}
	for _, a := range []net.Addr{
		&net.UnixAddr{Name: "/tmp/s", Net: "unix"},
		&net.TCPAddr{},                    // no IP
		&net.TCPAddr{IP: net.IP{1, 2, 3}}, // malformed
		nil,
	} {
		if k := ipKey(a); k.IsValid() {
			t.Errorf("ipKey(%#v) = %v, want no bucket (not capped)", a, k)
		}
	}
}
