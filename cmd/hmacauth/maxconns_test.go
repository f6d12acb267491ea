package main

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"syscall"
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

func TestTunnelMaxConns(t *testing.T) {
	p := startPair(t, startEcho(t), nil, []string{"-max-conns", "1"})
	first := dial(t, p.client.addr)
	checkEcho(t, first, "first")
	second := dial(t, p.client.addr) // waits in the listen backlog
	io.WriteString(second, "second")
	second.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := second.Read(make([]byte, 1)); !errors.Is(err, syscall.ETIMEDOUT) && !isTimeout(err) {
		t.Fatalf("a connection over -max-conns was served while the first is open: read %d, %v", n, err)
	}
	first.Close()
	second.SetReadDeadline(time.Now().Add(bound))
	b := make([]byte, len("second"))
	if _, err := io.ReadFull(second, b); err != nil || string(b) != "second" {
		t.Fatalf("after the first connection closed: got %q, %v", b, err)
	}
	// The client said it waited, once: the second wait came less than
	// capLogEvery after the first.
	if rs := p.client.find(capReachedMsg, nil); len(rs) != 1 || rs[0]["level"] != "INFO" || rs[0]["max_conns"] != 1.0 {
		t.Errorf("records %q: %v, want one at INFO with max_conns 1", capReachedMsg, rs)
	}
}

// capReachedMsg is the message of capWaits' record.
const capReachedMsg = "-max-conns reached: new connections wait in the listen backlog until one ends; raise -max-conns if this is not expected"
