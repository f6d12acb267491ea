#!/usr/bin/env bash
# The project's test command: formatting, vet, and the race-enabled tests.
set -euo pipefail
cd "$(dirname "$0")"
echo "+ gofmt -l ."
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "gofmt: these files need formatting:"; echo "$unformatted"; exit 1
fi
echo "+ go vet ./..."
go vet ./...
echo "+ go test -race ./..."
go test -race ./...
