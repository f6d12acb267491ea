#!/usr/bin/env bash
# The project's one test command: format check, vet and race-enabled tests
# over both modules (the core and grpcauth), through go.work.
set -euo pipefail
cd "$(dirname "$0")"

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

run go vet ./... ./grpcauth/...
run go test -race ./... ./grpcauth/...
