//go:build !testingonly

package main

// testingOnlySetRefresh does nothing: the tests' override of the STATUS=
// refresh period is built into their binary only (systemd_testingonly.go,
// -tags testingonly), so that no environment variable changes the daemon.
func (n *notifier) testingOnlySetRefresh() {}
