package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestCapWaitsRateLimited checks that every wait for a -max-conns slot is
// counted, and logged at most once per capLogEvery with the waits since
// the last record.
func TestCapWaitsRateLimited(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	clock := time.Unix(1_000_000, 0)
	w := &capWaits{now: func() time.Time { return clock }}
	records := func() []string {
		return strings.Split(strings.TrimSpace(buf.String()), "\n")
	}

	w.reached(log, 3, 3)
	if got := records(); len(got) != 1 || !strings.Contains(got[0], "level=INFO") || !strings.Contains(got[0], "max_conns=3") || !strings.Contains(got[0], " waits=1 ") {
		t.Fatalf("first wait: records %q, want one Info record with max_conns=3 waits=1", got)
	}
	for range 4 {
		clock = clock.Add(capLogEvery / 5)
		w.reached(log, 3, 3)
	}
	if got := records(); len(got) != 1 {
		t.Fatalf("waits within %v of the record were logged: %q", capLogEvery, got)
	}
	clock = clock.Add(capLogEvery / 5) // capLogEvery after the first record
	w.reached(log, 3, 2)
	got := records()
	if len(got) != 2 || !strings.Contains(got[1], " waits=5 ") || !strings.Contains(got[1], "total_waits=6") || !strings.Contains(got[1], "live=2") {
		t.Fatalf("after %v: records %q, want a second one with waits=5 total_waits=6 live=2", capLogEvery, got)
	}
	if n := w.total.Load(); n != 6 {
		t.Errorf("total waits %d, want 6", n)
	}
}
