//go:build testingonly

package main

import (
	"os"
	"time"
)

// testingOnlySetRefresh sets how often STATUS= is refreshed from
// testingOnlyStatusRefreshEnv, built only into the tests' binary (go build
// -tags testingonly).
func (n *notifier) testingOnlySetRefresh() {
	if s := os.Getenv(testingOnlyStatusRefreshEnv); s != "" {
		if d, err := time.ParseDuration(s); err == nil && d > 0 {
			n.refresh = d
		}
	}
}
