package hmacauth

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestListenerStats(t *testing.T) {
	a := testKey("stats")
	var logs syncBuffer
	cfg := &Config{
		Keys:               []Key{a},
		MaxHandshakesPerIP: 1,
		HandshakeTimeout:   time.Second, // long enough for the shed client to arrive first
		Logger:             slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	l := listenEngine(t, cfg) // the silent client below must reach the engine
	addr := l.Addr().String()
	stats := l.Stats

	// Two good clients, not yet accepted: they wait in the queue. (One
	// after the other: 127.0.0.1 may have one handshake in flight.)
	for i := range uint64(2) {
		c, err := Dial("tcp", addr, configWith(cfg.Keys[0]))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		waitFor(t, "a success", func() bool { return stats().Succeeded == i+1 })
	}
	waitFor(t, "2 queued connections", func() bool { return stats().Queued == 2 })
	for range 2 {
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}

	// A wrong secret, and an HTTP request.
	if c, err := Dial("tcp", addr, &Config{Keys: []Key{{ID: "stats", Secret: bytes.Repeat([]byte{7}, 32)}}}); !errors.Is(err, ErrAuthFailed) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("wrong secret: err = %v", err)
	}
	waitFor(t, "an auth failure", func() bool { return stats().FailedAuth == 1 })
	h := rawDial(t, l.Addr(), "127.0.0.1")
	h.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + strings.Repeat("x", 200)))
	waitFor(t, "one auth and one protocol failure", func() bool { return stats().FailedAuth == 1 && stats().FailedProtocol == 1 })

	// A silent client from 127.0.0.2 holds that IP's one slot; the next
	// one from there is shed; the silent one times out.
	rawDial(t, l.Addr(), "127.0.0.2") // silent
	waitFor(t, "a handshake in flight", func() bool { return stats().InFlight == 1 })
	rawDial(t, l.Addr(), "127.0.0.2") // shed
	waitFor(t, "one shed and one timeout", func() bool { return stats().Shed == 1 && stats().FailedTimeout == 1 })

	// A handshake aborted by Close counts as other.
	l2, err := Listen("tcp", "127.0.0.1:0", &Config{Keys: []Key{a}, HandshakeTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	rawDial(t, l2.Addr(), "127.0.0.1") // stalled
	waitFor(t, "a handshake in flight on the second listener", func() bool { return l2.Stats().InFlight == 1 })
	l2.Close()
	// Durations are checked below.
	ignoreDurations := cmpopts.IgnoreFields(ListenerStats{}, "Durations")
	s := l2.Stats()
	if diff := cmp.Diff(ListenerStats{FailedOther: 1}, s, ignoreDurations); diff != "" || s.Failed() != 1 {
		t.Errorf("after Close with a handshake in flight: Failed() = %d, want 1; stats (-want +got):\n%s", s.Failed(), diff)
	}

	s = stats()
	want := ListenerStats{Succeeded: 2, FailedAuth: 1, FailedProtocol: 1, FailedTimeout: 1, Shed: 1}
	if diff := cmp.Diff(want, s, ignoreDurations); diff != "" {
		t.Errorf("stats mismatch (-want +got):\n%s", diff)
	}
	if s.Failed() != 3 {
		t.Errorf("Failed() = %d, want 3", s.Failed())
	}
	d := s.Durations
	if d.Count != 2 || d.Sum <= 0 || d.Buckets[DurationBuckets-1] != 2 {
		t.Errorf("durations = %+v, want 2 successes in the last cumulative bucket", d)
	}
	bounds := d.Bounds()
	for i := 1; i < DurationBuckets; i++ {
		if d.Buckets[i] < d.Buckets[i-1] || bounds[i] <= bounds[i-1] {
			t.Errorf("bucket %d: count %d < %d or bound %v <= %v: not cumulative/increasing", i, d.Buckets[i], d.Buckets[i-1], bounds[i], bounds[i-1])
		}
	}

	// One log record per event: successes at Debug, refusals at Info.
	levels := map[string]int{}
	for line := range strings.Lines(logs.String()) {
		var rec struct {
			Level, Msg, Key_ID, Remote string
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("bad log line %q: %v", line, err)
		}
		levels[rec.Level+" "+rec.Msg]++
		if rec.Remote == "" {
			t.Errorf("log record without the remote address: %s", line)
		}
		if rec.Level == "DEBUG" && rec.Key_ID != "stats" {
			t.Errorf("success record without the key ID: %s", line)
		}
	}
	if levels["DEBUG hmacauth: accepted connection"] != 2 || levels["INFO hmacauth: refused connection"] != 4 {
		t.Errorf("log records = %v, want 2 accepted at DEBUG and 4 refused at INFO", levels)
	}
	checkNoSecret(t, logs.String(), a.Secret)
}

// TestStatsSnapshotConsistent takes snapshots while handshakes are
// recorded: no bucket may ever count more than Durations.Count.
func TestStatsSnapshotConsistent(t *testing.T) {
	var hc handshakeCounters
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					hc.record(time.Millisecond, nil)
				}
			}
		})
	}
	defer wg.Wait()
	defer close(stop)
	for i := range 20000 {
		var s ListenerStats
		hc.fill(&s)
		if last := s.Durations.Buckets[DurationBuckets-1]; last > s.Durations.Count {
			t.Fatalf("snapshot %d: the last bucket counts %d handshakes, more than Durations.Count (%d)", i, last, s.Durations.Count)
		}
	}
}

// TestOutcomeCountedBeforeInFlightFalls: a reader who waits, after a
// handshake has ended, for InFlight to fall to zero finds its outcome
// counted: the engine counts it before it lowers InFlight.
func TestOutcomeCountedBeforeInFlightFalls(t *testing.T) {
	t.Parallel()
	cfg, _ := newTestConfig()
	reported, hold := make(chan struct{}), make(chan struct{})
	cfg.OnHandshake = func(HandshakeEvent) { // after the outcome is counted
		reported <- struct{}{}
		<-hold
	}
	l := listenEngine(t, cfg)
	defer close(hold) // before the Listener closes
	c := rawDial(t, l.Addr(), "")
	c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	select {
	case <-reported:
	case <-time.After(waitLimit):
		t.Fatal("the refusal was never reported")
	}
	if st := l.Stats(); st.InFlight != 1 || st.FailedProtocol != 1 {
		t.Fatalf("while the outcome is being reported: InFlight = %d, FailedProtocol = %d; want 1 and 1 (counted before InFlight falls)", st.InFlight, st.FailedProtocol)
	}
}
