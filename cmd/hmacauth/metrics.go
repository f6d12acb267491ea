package main

import (
	"errors"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/hmacauth/hmacauth"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metricsNS prefixes the tunnel's metric names.
const metricsNS = "hmacauth_tunnel"

// Refusal reasons, the "reason" label of connections_refused_total.
const (
	reasonAuth     = "auth"     // the peer did not prove a key (ErrAuthFailed)
	reasonProtocol = "protocol" // the peer does not speak hmacauth/1 (ErrProtocol)
	reasonTimeout  = "timeout"  // the handshake timed out (ErrHandshakeTimeout)
	reasonOther    = "other"    // network errors, handshakes aborted by a stop
	reasonShed     = "shed"     // server: over -max-handshakes-per-ip
	reasonEvicted  = "evicted"  // server: evicted with every handshake slot taken
)

// metrics are the tunnel's Prometheus metrics, in a registry of their own
// (nothing global), served by the status server. A server's handshake
// metrics are its Listener's Stats, read at each scrape; a client, whose
// handshakes are its own, counts them here. Nothing is counted in two
// places.
type metrics struct {
	reg *prometheus.Registry

	// The client role's handshakes, as a server's Listener counts them.
	accepted  prometheus.Counter
	refused   *prometheus.CounterVec
	inFlight  prometheus.Gauge
	handshake prometheus.Histogram

	bytes        *prometheus.CounterVec // "up": accepted side to target; "down": back
	up, down     prometheus.Counter     // its two series
	dialFailures prometheus.Counter
	dialDuration prometheus.Histogram
	reloads      *prometheus.CounterVec // "result": ok or error
}

// handshakeBuckets are the bounds, in seconds, of the handshake duration
// histogram: those of hmacauth.DurationHistogram, so that both roles
// export the same buckets.
func handshakeBuckets() []float64 {
	var b []float64
	for _, d := range (hmacauth.DurationHistogram{}).Bounds() {
		b = append(b, d.Seconds())
	}
	return b
}

func newMetrics(t *tunnel) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNS, Name: "bytes_total",
			Help: "Bytes forwarded, added as each connection ends; direction up is from the accepted side to the target, down the other way."}, []string{"direction"}),
		dialFailures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: metricsNS, Name: "target_dial_failures_total",
			Help: "Connections to -target that failed (for a client, the target is the hmacauth server)."}),
		dialDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: metricsNS, Name: "target_dial_duration_seconds",
			Help: "Time to connect to -target, successful or not.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9)}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNS, Name: "key_reloads_total",
			Help: "Reloads of the key file (SIGHUP, -watch-keys) by result; a failed one keeps the current keys."}, []string{"result"}),
	}
	// Every label value is there from the start, so that a rate over it
	// has a first sample.
	m.up, m.down = m.bytes.WithLabelValues("up"), m.bytes.WithLabelValues("down")
	for _, r := range []string{"ok", "error"} {
		m.reloads.WithLabelValues(r)
	}
	m.reg.MustRegister(m.bytes, m.dialFailures, m.dialDuration, m.reloads,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(t.role),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metricsNS, Name: "connections_live",
			Help: "Connections being forwarded or set up (dial, client handshake)."}, func() float64 { return float64(t.live()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metricsNS, Name: "max_conns",
			Help: "The -max-conns cap."}, func() float64 { return float64(t.opts.maxConns) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: metricsNS, Name: "max_conns_waits_total",
			Help: "Times the accept loop found every -max-conns slot taken and waited (new connections wait in the listen backlog)."},
			func() float64 { return float64(t.waits.total.Load()) }),
	)
	if hl, ok := t.ln.(*hmacauth.Listener); ok {
		m.reg.MustRegister(listenerCollector{hl})
		return m
	}
	m.accepted = prometheus.NewCounter(prometheus.CounterOpts{Namespace: metricsNS, Name: "connections_accepted_total",
		Help: acceptedHelp})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNS, Name: "connections_refused_total",
		Help: refusedHelp}, []string{"reason"})
	for _, r := range []string{reasonAuth, reasonProtocol, reasonTimeout, reasonOther} {
		m.refused.WithLabelValues(r)
	}
	m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: metricsNS, Name: "handshakes_in_flight", Help: inFlightHelp})
	m.handshake = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: metricsNS, Name: "handshake_duration_seconds",
		Help: handshakeHelp, Buckets: handshakeBuckets()})
	m.reg.MustRegister(m.accepted, m.refused, m.inFlight, m.handshake)
	return m
}

const (
	acceptedHelp  = "Connections accepted: for a server, clients that proved a key; for a client, local connections."
	refusedHelp   = "Handshakes that failed, by reason: for a server, its clients'; for a client, its own with the server."
	inFlightHelp  = "Handshakes running now."
	handshakeHelp = "Duration of the handshakes that succeeded."
)

// buildInfo is a constant 1 labelled with the build's version.
func buildInfo(r role) prometheus.Collector {
	v, rev := version, ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				rev = s.Value
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: metricsNS, Name: "build_info",
		Help:        "A constant 1, labelled with the version, VCS revision and Go version of the build, and the role.",
		ConstLabels: prometheus.Labels{"version": v, "revision": rev, "goversion": runtime.Version(), "role": string(r)}})
	g.Set(1)
	return g
}

// handshakeStarted counts a client handshake; the returned func records
// its outcome.
func (m *metrics) handshakeStarted() func(error) {
	m.inFlight.Inc()
	start := time.Now()
	return func(err error) {
		if err == nil {
			m.handshake.Observe(time.Since(start).Seconds())
		} else {
			m.refused.WithLabelValues(refusalReason(err)).Inc()
		}
		m.inFlight.Dec()
	}
}

// refusalReason is the reason label of a failed handshake.
func refusalReason(err error) string {
	switch {
	case errors.Is(err, hmacauth.ErrAuthFailed):
		return reasonAuth
	case errors.Is(err, hmacauth.ErrProtocol):
		return reasonProtocol
	case errors.Is(err, hmacauth.ErrHandshakeTimeout):
		return reasonTimeout
	}
	return reasonOther
}

// dialed records one dial of the target.
func (m *metrics) dialed(d time.Duration, err error) {
	m.dialDuration.Observe(d.Seconds())
	if err != nil {
		m.dialFailures.Inc()
	}
}

// listenerCollector exports a server's Listener's Stats at each scrape.
type listenerCollector struct{ ln *hmacauth.Listener }

var (
	descAccepted  = prometheus.NewDesc(metricsNS+"_connections_accepted_total", acceptedHelp, nil, nil)
	descRefused   = prometheus.NewDesc(metricsNS+"_connections_refused_total", refusedHelp, []string{"reason"}, nil)
	descInFlight  = prometheus.NewDesc(metricsNS+"_handshakes_in_flight", inFlightHelp, nil, nil)
	descQueued    = prometheus.NewDesc(metricsNS+"_handshakes_queued", "Authenticated connections waiting for a -max-conns slot.", nil, nil)
	descRetries   = prometheus.NewDesc(metricsNS+"_accept_retries_total", "Temporary accept errors (such as EMFILE) retried after a backoff.", nil, nil)
	descHandshake = prometheus.NewDesc(metricsNS+"_handshake_duration_seconds", handshakeHelp, nil, nil)
)

func (c listenerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAccepted, descRefused, descInFlight, descQueued, descRetries, descHandshake} {
		ch <- d
	}
}

func (c listenerCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.ln.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(descAccepted, s.Succeeded)
	counter(descRefused, s.FailedAuth, reasonAuth)
	counter(descRefused, s.FailedProtocol, reasonProtocol)
	counter(descRefused, s.FailedTimeout, reasonTimeout)
	counter(descRefused, s.FailedOther, reasonOther)
	counter(descRefused, s.Shed, reasonShed)
	counter(descRefused, s.Evicted, reasonEvicted)
	counter(descRetries, s.AcceptRetries)
	ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(s.InFlight))
	ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(s.Queued))
	buckets := make(map[float64]uint64, len(s.Durations.Buckets))
	for i, b := range s.Durations.Bounds() {
		buckets[b.Seconds()] = s.Durations.Buckets[i]
	}
	ch <- prometheus.MustNewConstHistogram(descHandshake, s.Durations.Count, s.Durations.Sum.Seconds(), buckets)
}
