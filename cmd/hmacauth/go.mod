module github.com/hmacauth/hmacauth/cmd/hmacauth

go 1.26.0

require (
	github.com/coreos/go-systemd/v22 v22.7.0
	github.com/hmacauth/hmacauth v0.0.0-00010101000000-000000000000
	github.com/landlock-lsm/go-landlock v0.11.2
	github.com/pires/go-proxyproto v0.15.0
	github.com/prometheus/client_golang v1.25.0
	github.com/prometheus/client_model v0.6.3
	github.com/prometheus/common v0.72.0
	go.uber.org/goleak v1.3.0
	golang.org/x/net v0.62.0
	golang.org/x/sync v0.25.0
	golang.org/x/sys v0.50.0
)

require (
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	golang.org/x/crypto v0.59.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
	kernel.org/pub/linux/libs/security/libcap/psx v1.2.78 // indirect
)

// In a checkout the command builds against the core beside it, as go.work
// does; a released version names a tagged core version here (see README.md,
// "Versions").
replace github.com/hmacauth/hmacauth => ../..
