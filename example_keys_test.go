package hmacauth_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/hmacauth/hmacauth"
)

// Rotate keys under a running Listener: handshakes that start after Set
// use the new keys; established connections keep theirs.
func ExampleKeyring() {
	oldKey, _ := hmacauth.NewKey("2026-01")
	newKey, _ := hmacauth.NewKey("2026-06")

	serverRing, err := hmacauth.NewKeyring(oldKey)
	if err != nil {
		log.Fatal(err)
	}
	l, err := hmacauth.Listen("tcp", "127.0.0.1:0", &hmacauth.Config{Keyring: serverRing})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()

	// Step 1: servers accept both keys. Step 2: clients prove the new one.
	// Step 3: servers drop the old one.
	serverRing.Set(oldKey, newKey)
	clientRing, _ := hmacauth.NewKeyring(newKey)
	serverRing.Set(newKey)

	c, err := hmacauth.Dial("tcp", l.Addr().String(), &hmacauth.Config{Keyring: clientRing})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println("proved", c.KeyID())
	fmt.Println(serverRing)
	// Output:
	// proved 2026-06
	// hmacauth.Keyring{IDs: ["2026-06"], secrets redacted}
}

// Load keys from a file and keep them in step with it.
func ExampleKeyFileWatcher() {
	dir, _ := os.MkdirTemp("", "keys")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "keys")
	os.WriteFile(path, []byte(strings.Join([]string{
		"# ID     SECRET (base64, 32 random bytes or more)",
		"2026-06  p4lFlM8hFRlDyjK/muak6VbKDgp9SvZqypRVg3FuIJs=",
		"2026-01  KLDrXGkpol3tu3FzH2P9uvFB36ua3O93rBFboWBQjqA   # old, drop soon",
	}, "\n")), 0o600)

	keys, err := hmacauth.LoadKeys(path) // fail at startup on a bad file
	if err != nil {
		log.Fatal(err)
	}
	ring, err := hmacauth.NewKeyring(keys...)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &hmacauth.KeyFileWatcher{
		Path:    path,
		Keyring: ring,
		OnError: func(err error) { slog.Warn("keys not reloaded", "err", err) },
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }() // Run returns ctx.Err() when ctx is done

	// ... use ring in Config.Keyring of listeners and dialers ...
	fmt.Println(ring.IDs())
	cancel()
	<-done
	// Output: [2026-06 2026-01]
}

// Export a Listener's counters, here as Prometheus text.
func ExampleListener_Stats() {
	key, _ := hmacauth.NewKey("example")
	l, err := hmacauth.Listen("tcp", "127.0.0.1:0", &hmacauth.Config{Keys: []hmacauth.Key{key}})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()

	s := l.Stats()
	fmt.Printf("hmacauth_handshakes_total{result=\"ok\"} %d\n", s.Succeeded)
	fmt.Printf("hmacauth_handshakes_total{result=\"auth\"} %d\n", s.FailedAuth)
	fmt.Printf("hmacauth_handshakes_total{result=\"protocol\"} %d\n", s.FailedProtocol)
	fmt.Printf("hmacauth_handshakes_total{result=\"timeout\"} %d\n", s.FailedTimeout)
	fmt.Printf("hmacauth_handshakes_total{result=\"other\"} %d\n", s.FailedOther)
	fmt.Printf("hmacauth_shed_total %d\n", s.Shed)
	fmt.Printf("hmacauth_evicted_total %d\n", s.Evicted)
	fmt.Printf("hmacauth_handshakes_in_flight %d\n", s.InFlight)
	for i, le := range s.Durations.Bounds() {
		fmt.Printf("hmacauth_handshake_seconds_bucket{le=\"%g\"} %d\n", le.Seconds(), s.Durations.Buckets[i])
	}
	fmt.Printf("hmacauth_handshake_seconds_bucket{le=\"+Inf\"} %d\n", s.Durations.Count)
	fmt.Printf("hmacauth_handshake_seconds_sum %g\n", s.Durations.Sum.Seconds())
	fmt.Printf("hmacauth_handshake_seconds_count %d\n", s.Durations.Count)
	// Output:
	// hmacauth_handshakes_total{result="ok"} 0
	// hmacauth_handshakes_total{result="auth"} 0
	// hmacauth_handshakes_total{result="protocol"} 0
	// hmacauth_handshakes_total{result="timeout"} 0
	// hmacauth_handshakes_total{result="other"} 0
	// hmacauth_shed_total 0
	// hmacauth_evicted_total 0
	// hmacauth_handshakes_in_flight 0
	// hmacauth_handshake_seconds_bucket{le="0.00025"} 0
	// hmacauth_handshake_seconds_bucket{le="0.001"} 0
	// hmacauth_handshake_seconds_bucket{le="0.005"} 0
	// hmacauth_handshake_seconds_bucket{le="0.025"} 0
	// hmacauth_handshake_seconds_bucket{le="0.1"} 0
	// hmacauth_handshake_seconds_bucket{le="0.5"} 0
	// hmacauth_handshake_seconds_bucket{le="2.5"} 0
	// hmacauth_handshake_seconds_bucket{le="10"} 0
	// hmacauth_handshake_seconds_bucket{le="+Inf"} 0
	// hmacauth_handshake_seconds_sum 0
	// hmacauth_handshake_seconds_count 0
}
