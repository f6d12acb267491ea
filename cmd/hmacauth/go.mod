module github.com/hmacauth/hmacauth/cmd/hmacauth

go 1.26.0

require (
	github.com/hmacauth/hmacauth v0.0.0-00010101000000-000000000000
	go.uber.org/goleak v1.3.0
)

require (
	golang.org/x/crypto v0.59.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)

// In a checkout the command builds against the core beside it, as go.work
// does; a released version names a tagged core version here (see README.md,
// "Versions").
replace github.com/hmacauth/hmacauth => ../..
