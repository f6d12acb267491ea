//go:build linux && testingonly

package main

import (
	"net"
	"os"
)

// testingOnlySandboxProbe is the tests' way to see from inside the
// process what the sandbox allows, built only into the tests' binary (go
// build -tags testingonly): once the sandbox is in place (or not), the
// process tries to create, read and connect to what the
// testingOnlySandboxProbe*Env variables name, and logs the outcomes.
func (t *tunnel) testingOnlySandboxProbe() {
	if path := os.Getenv(testingOnlySandboxProbeFileEnv); path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			f.Close()
		}
		t.log.Info("testing only: sandbox probe", "create", path, "err", errString(err))
	}
	if path := os.Getenv(testingOnlySandboxProbeReadEnv); path != "" {
		_, err := os.ReadFile(path)
		t.log.Info("testing only: sandbox probe", "read", path, "err", errString(err))
	}
	if addr := os.Getenv(testingOnlySandboxProbeDialEnv); addr != "" {
		c, err := net.DialTimeout("tcp", addr, t.opts.connectTimeout)
		if err == nil {
			c.Close()
		}
		t.log.Info("testing only: sandbox probe", "dial", addr, "err", errString(err))
	}
}
