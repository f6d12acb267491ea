//go:build linux && !testingonly

package main

// testingOnlySandboxProbe does nothing: the probe of the sandbox is built
// into the tests' binary only (sandbox_probe_linux.go, -tags testingonly),
// so that no environment variable makes the daemon create a file or dial.
func (t *tunnel) testingOnlySandboxProbe() {}
