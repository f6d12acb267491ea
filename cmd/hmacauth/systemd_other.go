//go:build !linux

package main

// monotonicUsec reports false: systemd, which reads MONOTONIC_USEC, runs
// on Linux only.
func monotonicUsec() (uint64, bool) { return 0, false }
