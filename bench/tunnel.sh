#!/bin/sh
# Benchmarks the hmacauth tunnel (client -> server) against a spiped -e ->
# spiped -d pair and a pair of plain TCP forwarders, on loopback, with the
# same target and load: connections per second (1-byte echo, 8 clients at
# a time) and MB/s (one connection to a discarding target), plus the CPU
# time the two tunnel processes spend per connection or per MiB.
#
# Usage: bench/tunnel.sh [go test flags, e.g. -benchtime 3s -count 3]
#
# Installs Debian's spiped package when spiped is missing (needs root and
# apt-get); without it, the spiped rows are skipped.
set -eu
cd "$(dirname "$0")/.."

if ! command -v spiped >/dev/null 2>&1; then
	if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
		echo "installing spiped (Debian package)..." >&2
		apt-get update >/dev/null && apt-get install -y spiped >/dev/null
	else
		echo "spiped is missing and cannot be installed here (need root and apt-get); its rows will be skipped" >&2
	fi
fi
command -v spiped >/dev/null 2>&1 && spiped -v >&2

set -x
exec go test -run '^$' -bench 'BenchmarkTunnel' -benchtime 2s "$@" ./cmd/hmacauth
