package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"
)

const (
	// targetCheckTTL is how long a check of the target serves /_status
	// probes, so that probes cannot hammer the target.
	targetCheckTTL = time.Second
	// targetCheckTimeout bounds one check (and -connect-timeout too).
	targetCheckTimeout = 2 * time.Second
	// statusMaxConns bounds the status server's connections.
	statusMaxConns = 16
)

// statusServer serves -status: GET /_status (the tunnel's health, JSON,
// 200 or 503) and GET /metrics (Prometheus).
type statusServer struct {
	t   *tunnel
	ln  net.Listener
	srv *http.Server

	// checkMu serialises the checks of the target: concurrent probes wait
	// for one dial rather than each make one.
	checkMu   sync.Mutex
	checkedAt time.Time
	targetErr error
}

// statusReport is the JSON body of /_status.
type statusReport struct {
	OK bool `json:"ok"`
	// Status is "ok", "target unreachable" or "stopping".
	Status string `json:"status"`
	Role   string `json:"role"`
	Listen string `json:"listen"`
	Target string `json:"target"`
	// TargetOK says whether the target accepted a TCP connection at
	// TargetChecked; TargetError is the dial's error otherwise.
	TargetOK      bool         `json:"target_ok"`
	TargetError   string       `json:"target_error,omitempty"`
	TargetChecked time.Time    `json:"target_checked"`
	KeyIDs        []string     `json:"key_ids"`
	LastReload    reloadReport `json:"last_reload"`
	Live          int64        `json:"live"`
	Version       string       `json:"version"`
}

// reloadReport is the last load of the key file.
type reloadReport struct {
	Time time.Time `json:"time"`
	// Source is "start", "sighup" or "watch".
	Source string `json:"source"`
	OK     bool   `json:"ok"`
	Error  string `json:"error,omitempty"`
}

// newStatusServer listens on addr; serve starts serving.
func newStatusServer(t *tunnel, addr string) (*statusServer, error) {
	ln, err := t.listenOn("-status", addr)
	if err != nil {
		return nil, fmt.Errorf("-status: %w", err)
	}
	// A few probers and scrapers at once; more wait in the backlog, so that
	// the status port cannot take the file descriptors the tunnel needs.
	s := &statusServer{t: t, ln: netutil.LimitListener(ln, statusMaxConns)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_status", s.serveStatus)
	mux.Handle("GET /metrics", promhttp.HandlerFor(t.metrics.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(t.log.Handler(), slog.LevelError), Timeout: 10 * time.Second, MaxRequestsInFlight: 4}))
	if t.opts.statusPprof {
		// Index also serves the named profiles: /debug/pprof/heap and so on.
		// A profile or trace of ?seconds=N extends its own write deadline
		// past the server's WriteTimeout by N. No pprof.Cmdline: the
		// command line may hold the -connect-proxy password, and the
		// status port shows no secret (Index answers 404 for it).
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		MaxHeaderBytes:    16 << 10,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(t.log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// serve serves until close.
func (s *statusServer) serve() {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.t.log.Error("status server failed", "err", err.Error())
	}
}

// close stops the server; requests in progress end.
func (s *statusServer) close() { s.srv.Close() }

// checkTarget returns the error of a TCP dial of the target, at most
// targetCheckTTL old, and when that dial was made.
func (s *statusServer) checkTarget() (time.Time, error) {
	s.checkMu.Lock()
	defer s.checkMu.Unlock()
	if time.Since(s.checkedAt) < targetCheckTTL {
		return s.checkedAt, s.targetErr
	}
	d := s.t.dialer
	d.Timeout = min(d.Timeout, targetCheckTimeout)
	// Not the prober's context: a prober that hangs up must not void the
	// cache, or probers would set the rate of dials to the target.
	c, err := s.t.dialTarget(s.t.ctx, &d)
	if err == nil {
		if tc, ok := c.(*net.TCPConn); ok && s.t.role == roleClient {
			// A client's target is the hmacauth server, which would take a
			// connection closed before its ClientHello for a refusal of the
			// protocol. One reset before any byte it never sees: its kernel
			// drops it before it is accepted (TCP_DEFER_ACCEPT, Linux);
			// elsewhere it counts under "other", not "protocol".
			tc.SetLinger(0)
		}
		if v := s.t.opts.proxyProtocol; v != 0 && s.t.role == roleServer {
			// A target that reads a PROXY header (nginx proxy_protocol)
			// would log a connection without one as an error: the check
			// says it is a health check, LOCAL (v2) or UNKNOWN (v1).
			if b, err := (&proxyproto.Header{Version: v, Command: proxyproto.LOCAL}).Format(); err == nil {
				c.SetWriteDeadline(time.Now().Add(d.Timeout))
				c.Write(b)
			}
		}
		c.Close()
	}
	s.checkedAt, s.targetErr = time.Now(), err
	return s.checkedAt, err
}

func (s *statusServer) serveStatus(w http.ResponseWriter, r *http.Request) {
	t := s.t
	checked, err := s.checkTarget()
	rep := statusReport{
		OK:            true,
		Status:        "ok",
		Role:          string(t.role),
		Listen:        t.ln.Addr().String(),
		Target:        t.opts.target,
		TargetOK:      err == nil,
		TargetChecked: checked.UTC(),
		KeyIDs:        t.config.Keyring.IDs(),
		LastReload:    t.keys.last(),
		Live:          t.live(),
		Version:       versionString(),
	}
	if err != nil {
		rep.OK, rep.Status, rep.TargetError = false, "target unreachable", err.Error()
	}
	select {
	case <-t.stopping:
		rep.OK, rep.Status = false, "stopping"
	default:
	}
	code := http.StatusOK
	if !rep.OK {
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(rep)
}

// keyReloads keeps the last load of the key file, for /_status, and
// counts reloads, for /metrics.
type keyReloads struct {
	m *metrics

	mu  sync.Mutex
	rep reloadReport
}

// loaded records a load of the key file from source; a reload (any
// source but "start") is counted.
func (k *keyReloads) loaded(source string, err error) {
	rep := reloadReport{Time: time.Now().UTC(), Source: source, OK: err == nil}
	if err != nil {
		rep.Error = err.Error()
	}
	k.mu.Lock()
	k.rep = rep
	k.mu.Unlock()
	if source == "start" {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	k.m.reloads.WithLabelValues(result).Inc()
}

func (k *keyReloads) last() reloadReport {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.rep
}
