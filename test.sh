#!/usr/bin/env bash
# The project's one test command: format check, vet (also for the other
# operating systems the library and command build on), staticcheck and
# race-enabled tests over the three modules (the core, grpcauth and the
# command, cmd/hmacauth, through go.work: the core's ./... does not reach
# into a nested module, so each is listed), then the tests that move data
# without the race detector, and the Python package's tests. It fetches
# what it needs through the Go module proxy.
set -euo pipefail
cd "$(dirname "$0")"

# staticcheck, pinned; `go run pkg@version` fetches and checks it against
# the Go checksum database, and caches the build.
staticcheck=honnef.co/go/tools/cmd/staticcheck@v0.8.2

modules="./... ./grpcauth/... ./cmd/hmacauth/..."

run() {
	echo "+ $*"
	"$@"
}

echo "+ gofmt -l ."
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "gofmt: these files need formatting (run gofmt -w):" >&2
	echo "$unformatted" >&2
	exit 1
fi

run go vet $modules
# The command's tests build it with -tags testingonly (a sandbox probe that
# production binaries lack): check those files too.
run go vet -tags testingonly ./cmd/hmacauth/...
for goos in windows darwin freebsd; do
	run env GOOS=$goos go vet $modules
done
run go run $staticcheck $modules
run go run $staticcheck -tags testingonly ./cmd/hmacauth/...
run go test -race $modules
# Outside the race detector, TCP and Unix sockets' reads and writes are
# system calls made directly (internal/netx.SocketIO), a path the race
# build leaves out: the core's tests that move data, and all of grpcauth's
# and the command's (whose children are then built without -race too), run
# again without it.
run go test -run '^(TestConnConformance|TestHalfClose|TestEarlyBytes|TestBulkRightAfterDial|TestBothSidesSpeakFirst|TestCopyDelegates|TestDeadlinesAfterHandshake|TestHTTP.*|TestRawEchoServer|TestModeNegotiation|TestChaCha20Negotiated|TestLargeTransfer|TestReadFrom.*|TestKeyUpdate.*|TestCleanCloseIsEOF|TestWrite.*|TestRead.*|TestClose.*|TestUselessRecordFlood|TestResetCountsAsClose|TestRecord.*|TestMITM.*|TestSealedHidesPlaintext|TestSocketIO.*)$' . ./internal/netx
run go test ./grpcauth/... ./cmd/hmacauth/...

# The Python package in python/: pytest in a throwaway virtual environment
# (nothing downloaded), and the same tests with unittest on every other
# Python 3.9+ found; see python/run-tests.sh. Its interop with this package
# runs above, in go test (python_interop_test.go).
run python/run-tests.sh
