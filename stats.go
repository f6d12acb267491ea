package hmacauth

import (
	"errors"
	"sync/atomic"
	"time"
)

// DurationBuckets is the number of buckets of a DurationHistogram.
const DurationBuckets = 8

// durationBounds returns the upper bounds of the histogram buckets: a
// loopback handshake takes about 100 µs, a cross-region one tens of
// milliseconds, and DefaultHandshakeTimeout is 5 s.
func durationBounds() [DurationBuckets]time.Duration {
	return [DurationBuckets]time.Duration{
		250 * time.Microsecond,
		time.Millisecond,
		5 * time.Millisecond,
		25 * time.Millisecond,
		100 * time.Millisecond,
		500 * time.Millisecond,
		2500 * time.Millisecond,
		10 * time.Second,
	}
}

// DurationHistogram counts handshake durations in fixed buckets, in the
// form of a Prometheus histogram.
type DurationHistogram struct {
	// Count is the number of handshakes measured: every successful one,
	// so it equals ListenerStats.Succeeded.
	Count uint64
	// Sum is their total duration.
	Sum time.Duration
	// Buckets[i] is the number of handshakes that took at most
	// Bounds()[i]; the counts are cumulative, so Buckets[i] includes
	// Buckets[i-1], and Count is the bucket for +Inf.
	Buckets [DurationBuckets]uint64
}

// Bounds returns the upper bounds of the buckets: 250 µs, 1 ms, 5 ms,
// 25 ms, 100 ms, 500 ms, 2.5 s and 10 s.
func (DurationHistogram) Bounds() [DurationBuckets]time.Duration { return durationBounds() }

// ListenerStats are a Listener's counters, for a metrics system to read.
// Counts are totals since the Listener started; InFlight and Queued are
// current values. Each field is read atomically, but not all of them at
// the same instant.
type ListenerStats struct {
	// Succeeded counts handshakes that authenticated the client.
	Succeeded uint64
	// FailedAuth counts clients that did not prove a key (ErrAuthFailed).
	FailedAuth uint64
	// FailedProtocol counts clients that do not speak hmacauth/1 or sent
	// a malformed message (ErrProtocol).
	FailedProtocol uint64
	// FailedTimeout counts handshakes that timed out (ErrHandshakeTimeout).
	FailedTimeout uint64
	// FailedOther counts other failures: network errors, and handshakes
	// aborted by Close.
	FailedOther uint64
	// Shed counts connections closed unread because their remote IP (for
	// IPv6, its /64) was at Config.MaxHandshakesPerIP (ErrShed).
	Shed uint64
	// Evicted counts handshakes closed to make room for a new connection
	// when all Config.MaxHandshakes slots were taken (ErrShed): each the
	// one that had made the least progress for the longest.
	Evicted uint64
	// InFlight is the number of handshakes running now. A handshake's
	// outcome is counted before it stops counting here, so a reader who
	// sees InFlight fall to zero sees every outcome counted.
	InFlight int64
	// Queued is the number of authenticated connections waiting for Accept.
	Queued int64
	// AcceptRetries counts temporary errors of the inner listener (such as
	// EMFILE) that were retried after a backoff.
	AcceptRetries uint64
	// Durations measures the handshakes that succeeded.
	Durations DurationHistogram
}

// Failed returns the number of failed handshakes, for every reason;
// connections shed and handshakes evicted are counted apart (Shed,
// Evicted).
func (s ListenerStats) Failed() uint64 {
	return s.FailedAuth + s.FailedProtocol + s.FailedTimeout + s.FailedOther
}

// handshakeCounters are the counters a Listener keeps itself; the accept
// engine keeps the rest.
type handshakeCounters struct {
	succeeded, auth, protocol, timeout, other atomic.Uint64
	sumNanos                                  atomic.Uint64
	// buckets[i] counts the handshakes in bucket i alone (above bound
	// i-1), so that recording one costs one atomic add; fill makes them
	// cumulative. Slower than the last bound counts only in succeeded.
	buckets [DurationBuckets]atomic.Uint64
}

// record counts one finished server handshake.
func (ctr *handshakeCounters) record(d time.Duration, err error) {
	switch {
	case errors.Is(err, ErrShed):
		// Evicted: the engine counts it (ListenerStats.Evicted).
	case err == nil:
		ctr.succeeded.Add(1)
		ctr.sumNanos.Add(uint64(max(d, 0)))
		for i, b := range durationBounds() {
			if d <= b {
				ctr.buckets[i].Add(1)
				break
			}
		}
	case errors.Is(err, ErrAuthFailed):
		ctr.auth.Add(1)
	case errors.Is(err, ErrProtocol):
		ctr.protocol.Add(1)
	case errors.Is(err, ErrHandshakeTimeout):
		ctr.timeout.Add(1)
	default:
		ctr.other.Add(1)
	}
}

// fill reads the counters in the reverse of the order record adds to
// them, so that a snapshot taken while handshakes finish never counts more
// in a bucket than in Durations.Count (which a Prometheus histogram's
// buckets must not exceed).
func (ctr *handshakeCounters) fill(s *ListenerStats) {
	var below uint64
	for i := range ctr.buckets {
		below += ctr.buckets[i].Load()
		s.Durations.Buckets[i] = below
	}
	s.Durations.Sum = time.Duration(ctr.sumNanos.Load())
	s.Succeeded = ctr.succeeded.Load()
	s.Durations.Count = s.Succeeded
	s.FailedAuth = ctr.auth.Load()
	s.FailedProtocol = ctr.protocol.Load()
	s.FailedTimeout = ctr.timeout.Load()
	s.FailedOther = ctr.other.Load()
}
