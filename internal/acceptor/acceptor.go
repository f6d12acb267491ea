// Package acceptor runs connection handshakes off the accept loop.
//
// A Listener accepts from an inner net.Listener on its own goroutine, runs
// each handshake on a goroutine of its own under caps (in flight, per remote
// IP), and hands finished connections to Accept through a bounded queue. A
// failed handshake never reaches Accept. It is shared by package hmacauth
// and package mpcompat.
//
// When every slot is taken by a handshake and a new connection arrives,
// the Listener evicts the pending handshake that has made the least
// progress for the longest, so that connections that stall cannot lock
// out clients that finish. Progress is what the Handshake reports through
// Progress, never the Listener's reading of the connection: the Listener
// does not wrap the raw connection (the upgraded connection keeps it) and
// knows nothing of the protocol.
package acceptor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hmacauth/hmacauth/internal/netx"
)

// Handshake upgrades a freshly accepted connection. ctx is cancelled when
// the Listener closes; the handshake passes it to Progress at each step.
// It returns the connection to hand to Accept, or an error (the Listener
// then closes the raw connection), and, either way, what the client
// claimed to be, for the report: a key ID, a digest, or "".
type Handshake func(ctx context.Context, raw net.Conn) (c net.Conn, claim string, err error)

// Config configures a Listener. Handshake, MaxInFlight, QueueLen and
// ErrShed are required.
type Config struct {
	Handshake   Handshake
	MaxInFlight int // handshakes running or waiting for Accept
	MaxPerIP    int // handshakes in flight per IP bucket (see ipKey); <= 0 means no cap
	QueueLen    int // finished connections waiting for Accept

	// Refuse, if not nil, closes the raw connection of a failed handshake
	// in place of Close. It runs on the handshake's goroutine, before the
	// handshake leaves the pending lists, with the handshake's ctx.
	Refuse func(ctx context.Context, raw net.Conn)

	// Reporting. Every connection the Listener handles, a handshake or a
	// connection shed for the per-IP cap, is logged to Logger (if not nil)
	// and then passed to Report (if not nil). Name prefixes the log
	// messages ("hmacauth: refused connection"), ClaimAttr names
	// Event.Claim in them ("key_id"), and ErrShed is the sentinel that
	// the errors of sheds and evictions wrap.
	Name      string
	ClaimAttr string
	ErrShed   error
	Logger    *slog.Logger
	Report    func(Event)
}

// Event is the report of one connection a Listener handled.
type Event struct {
	RemoteAddr net.Addr
	Claim      string        // as the Handshake returned it; "" for a shed connection
	Duration   time.Duration // of the handshake; 0 for a shed connection
	Err        error         // nil if the handshake succeeded
}

// shedReports is how many reports of sheds may wait for a Report that is
// slower than the rate of sheds before the accept loop waits for it.
const shedReports = 256

// Stats are counters of a Listener since it started.
type Stats struct {
	InFlight int64 // handshakes running now
	Queued   int64 // finished connections waiting for Accept now
	Shed     int64 // connections closed for the per-IP cap
	Evicted  int64 // handshakes evicted for a new connection, every slot taken
	Retries  int64 // temporary errors of the inner listener
}

// Listener is a net.Listener whose Accept returns upgraded connections.
type Listener struct {
	inner net.Listener
	cfg   Config

	ctx    context.Context // cancelled by Close
	cancel context.CancelCauseFunc
	slots  chan struct{} // one per handshake in flight or waiting
	queue  chan net.Conn
	sheds  chan net.Addr // reported off the accept loop; closed by it
	// The log messages: Config.Name and what happened.
	msgRefused, msgAccepted string
	// started is signalled when a handshake becomes evictable, for an
	// accept loop that waits for one.
	started chan struct{}
	timer   *time.Timer // the accept loop's, for a victim's grace to end
	wg      sync.WaitGroup

	mu        sync.Mutex
	perIP     map[netip.Addr]int
	pending   [maxSteps + 1]pendingList // handshakes in flight, by steps taken
	unstarted int                       // handshakes whose goroutine has not started

	errMu  sync.Mutex
	err    error // why Accept fails; set once
	closed sync.Once

	// The inner listener is closed once, by Shutdown or Close, whichever
	// comes first: a listener given to New need not take a second Close.
	innerOnce sync.Once
	innerErr  error

	// Shutdown: draining is set once the inner listener is closed for a
	// graceful stop; queue is closed (and queueShut set) once no handshake
	// is left, and drained closed once the queue is empty too.
	draining     atomic.Bool
	queueShut    atomic.Bool
	shutdownOnce sync.Once
	queueClosed  chan struct{}
	drained      chan struct{}
	drainedOnce  sync.Once

	inFlight, queued, shed, evicted, retries atomic.Int64
}

// New starts accepting from inner.
func New(inner net.Listener, cfg Config) *Listener {
	ctx, cancel := context.WithCancelCause(context.Background())
	l := &Listener{
		inner:  inner,
		cfg:    cfg,
		ctx:    ctx,
		cancel: cancel,
		slots:  make(chan struct{}, cfg.MaxInFlight),
		queue:  make(chan net.Conn, cfg.QueueLen),
		perIP:  make(map[netip.Addr]int),

		started: make(chan struct{}, 1),
		timer:   time.NewTimer(time.Hour),

		queueClosed: make(chan struct{}),
		drained:     make(chan struct{}),

		msgRefused:  cfg.Name + ": refused connection",
		msgAccepted: cfg.Name + ": accepted connection",
	}
	if cfg.Logger != nil || cfg.Report != nil {
		// Sheds are reported, one at a time and in order, on a goroutine
		// of their own, so that a slow Report does not stall accepting.
		l.sheds = make(chan net.Addr, shedReports)
		l.wg.Go(func() {
			for a := range l.sheds {
				l.report(Event{RemoteAddr: a, Err: netx.Errorf(cfg.ErrShed,
					"client %s: its IP (for IPv6, its /64) already has %d handshakes in flight (Config.MaxHandshakesPerIP)", a, cfg.MaxPerIP)})
			}
		})
	}
	l.timer.Stop()
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// Accept waits for and returns the next upgraded connection. After Close,
// or when the inner listener fails for good, it returns an error; for
// Close the error wraps net.ErrClosed.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case <-l.ctx.Done():
		return nil, l.acceptErr()
	default:
	}
	select {
	case c, ok := <-l.queue:
		if !ok { // Shutdown: every connection has been taken
			return nil, l.acceptErr()
		}
		l.queued.Add(-1)
		l.checkDrained()
		return c, nil
	case <-l.ctx.Done():
		return nil, l.acceptErr()
	}
}

func (l *Listener) acceptErr() error {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	return l.err
}

// Close stops accepting, aborts handshakes in flight, closes connections
// waiting for Accept, and returns once every goroutine of the Listener has
// ended. It returns the inner listener's Close error.
func (l *Listener) Close() error {
	err := net.ErrClosed
	l.closed.Do(func() {
		l.fail(fmt.Errorf("accept on %s: %w", l.inner.Addr(), net.ErrClosed))
		err = l.closeInner()
		l.wg.Wait()
		for {
			select {
			case c, ok := <-l.queue:
				if !ok {
					return
				}
				l.queued.Add(-1)
				c.Close()
			default:
				return
			}
		}
	})
	return err
}

// Shutdown stops gracefully: it closes the inner listener at once, lets
// the handshakes in flight finish, and leaves Accept returning the
// connections that succeed or are waiting. Once Accept has returned the
// last one, Accept returns an error wrapping net.ErrClosed and Shutdown
// returns nil. If ctx ends first, Shutdown closes as Close does (aborting
// the handshakes left, closing the connections not taken) and returns
// ctx's error; if the Listener is closed meanwhile, it returns the error
// Accept returns. Either way every goroutine of the Listener has ended
// when it returns.
func (l *Listener) Shutdown(ctx context.Context) error {
	if l.ctx.Err() != nil { // closed already: nothing to drain
		select {
		case <-l.drained: // by an earlier Shutdown, which succeeded
			return nil
		default:
			l.Close() // waits for the goroutines, had the inner listener failed
			return l.acceptErr()
		}
	}
	l.shutdownOnce.Do(func() {
		l.draining.Store(true)
		l.closeInner()
		// Shutdown waits for this goroutine before it returns.
		go func() {
			defer close(l.queueClosed)
			l.wg.Wait()
			// Nothing sends on the queue any more: closing it lets
			// Accept take what is left, then fail.
			l.errMu.Lock()
			if l.err == nil {
				l.err = fmt.Errorf("accept on %s: %w", l.inner.Addr(), net.ErrClosed)
			}
			l.errMu.Unlock()
			close(l.queue)
			l.queueShut.Store(true)
			l.checkDrained()
		}()
	})
	var err error
	select {
	case <-l.drained:
	case <-ctx.Done():
		select {
		case <-l.drained: // both: the drain won
		default:
			err = ctx.Err()
		}
	case <-l.ctx.Done(): // closed meanwhile, unless the drain won
		select {
		case <-l.drained:
		default:
			err = l.acceptErr()
		}
	}
	l.Close()
	<-l.queueClosed
	return err
}

func (l *Listener) closeInner() error {
	l.innerOnce.Do(func() { l.innerErr = l.inner.Close() })
	return l.innerErr
}

// checkDrained closes drained once Shutdown has closed the queue and
// Accept has taken every connection in it. Both the closer and Accept call
// it, after their change, so whichever comes second sees the queue empty.
func (l *Listener) checkDrained() {
	if l.queueShut.Load() && len(l.queue) == 0 {
		l.drainedOnce.Do(func() { close(l.drained) })
	}
}

// fail records why Accept fails from now on and cancels every handshake.
func (l *Listener) fail(err error) {
	l.errMu.Lock()
	if l.err == nil {
		l.err = err
	}
	l.errMu.Unlock()
	l.cancel(err)
}

// Addr returns the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Stats returns the Listener's counters.
func (l *Listener) Stats() Stats {
	return Stats{
		InFlight: l.inFlight.Load(),
		Queued:   l.queued.Load(),
		Shed:     l.shed.Load(),
		Evicted:  l.evicted.Load(),
		Retries:  l.retries.Load(),
	}
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	if l.sheds != nil {
		defer close(l.sheds)
	}
	var backoff time.Duration
	for {
		// With every slot taken, accept anyway once a handshake may be
		// evicted for the new connection; until then wait (backpressure:
		// the Listener holds at most MaxInFlight connections besides the
		// queue, and one more only while it evicts).
		slot, ok := l.room(false)
		if !ok {
			return
		}
		raw, err := l.inner.Accept()
		if err != nil {
			if slot {
				<-l.slots
			}
			if l.ctx.Err() != nil || l.draining.Load() {
				return
			}
			if netx.IsTemporary(err) {
				l.retries.Add(1)
				backoff = netx.AcceptBackoff(backoff)
				if !netx.Sleep(backoff, l.ctx.Done()) {
					return
				}
				continue
			}
			l.fail(fmt.Errorf("accept on %s: %w", l.inner.Addr(), err))
			return
		}
		backoff = 0
		ip := ipKey(raw.RemoteAddr())
		if !l.admit(ip) {
			if slot {
				<-l.slots
			}
			l.shed.Add(1)
			raw.Close()
			if l.sheds != nil {
				select {
				case l.sheds <- raw.RemoteAddr():
				case <-l.ctx.Done():
					return
				}
			}
			continue
		}
		if !slot {
			if _, ok := l.room(true); !ok {
				l.release(ip)
				raw.Close()
				return
			}
		}
		l.launch()
		l.wg.Add(1)
		go l.serve(&pending{l: l, raw: raw}, ip)
	}
}

// trySlot takes a free slot, if there is one.
func (l *Listener) trySlot() bool {
	select {
	case l.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// waitSlot waits for a free slot and takes it; false if the Listener closed.
func (l *Listener) waitSlot() bool {
	select {
	case l.slots <- struct{}{}:
		return true
	case <-l.ctx.Done():
		return false
	}
}

// room waits until a slot is free, and takes it, or until a handshake may
// be evicted; with evict, it evicts that one and waits for its slot. It
// reports whether it took a slot, and false for ok if the Listener closed.
// The evicted handshake's goroutine ends at once (its connection is
// closed); waiting for its slot keeps the Listener's goroutines and
// connections within MaxInFlight.
func (l *Listener) room(evict bool) (slot, ok bool) {
	for {
		if l.trySlot() {
			return true, true
		}
		v, wait := l.victim(time.Now(), evict)
		if v != nil && !evict {
			return false, true
		}
		if v != nil {
			v.raw.Close() // ends its handshake; serve reports it as evicted
			ok := l.waitSlot()
			return ok, ok
		}
		if wait > 0 {
			l.timer.Reset(wait)
		}
		select {
		case l.slots <- struct{}{}:
			l.timer.Stop()
			return true, true
		case <-l.started:
		case <-l.timer.C:
		case <-l.ctx.Done():
			l.timer.Stop()
			return false, false
		}
		l.timer.Stop()
	}
}

// admit counts a handshake against ip's cap, or reports that it is over.
func (l *Listener) admit(ip netip.Addr) bool {
	if !ip.IsValid() || l.cfg.MaxPerIP <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.perIP[ip] >= l.cfg.MaxPerIP {
		return false
	}
	l.perIP[ip]++
	return true
}

func (l *Listener) release(ip netip.Addr) {
	if !ip.IsValid() || l.cfg.MaxPerIP <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.perIP[ip]--; l.perIP[ip] <= 0 {
		delete(l.perIP, ip)
	}
}

// serve runs one handshake and reports its outcome once the handshake's
// slot for its remote IP is free (and, on error, the raw connection
// closed), so that whoever hears of the result may at once connect again
// from the same IP, and before the handshake stops counting in
// Stats.InFlight, so that a reader of the caller's counters who sees
// InFlight fall sees the outcome counted.
func (l *Listener) serve(p *pending, ip netip.Addr) {
	defer l.wg.Done()
	defer func() { <-l.slots }()
	raw := p.raw
	l.track(p)
	ctx := context.WithValue(l.ctx, pendingKey{}, p)
	start := time.Now()
	c, claim, err := l.cfg.Handshake(ctx, raw)
	d := time.Since(start)
	if err != nil && l.cfg.Refuse != nil {
		l.cfg.Refuse(ctx, raw)
	}
	// An evicted handshake fails on its closed connection, or may have
	// succeeded just before; one that had failed already (and was draining
	// its refused client) keeps its own reason.
	if l.finish(p) && (err == nil || errors.Is(err, net.ErrClosed)) {
		if err == nil {
			c.Close()
		}
		l.evicted.Add(1)
		err = netx.Errorf(l.cfg.ErrShed, "client %s evicted under load after %v: all %d handshake slots were taken when a new connection arrived, and its handshake had made the least progress for the longest; if honest clients are evicted, raise Config.MaxHandshakes",
			raw.RemoteAddr(), d.Round(time.Millisecond), l.cfg.MaxInFlight)
	}
	if err != nil {
		raw.Close()
	}
	l.release(ip)
	l.report(Event{RemoteAddr: raw.RemoteAddr(), Claim: claim, Duration: d, Err: err})
	if err != nil {
		l.inFlight.Add(-1)
		return
	}
	l.queued.Add(1)
	l.inFlight.Add(-1)
	select {
	case l.queue <- c:
	case <-l.ctx.Done():
		l.queued.Add(-1)
		c.Close()
	}
}

// report logs ev and passes it to Config.Report.
func (l *Listener) report(ev Event) {
	if lg := l.cfg.Logger; lg != nil {
		attrs := []slog.Attr{
			slog.String("remote", ev.RemoteAddr.String()),
			slog.String(l.cfg.ClaimAttr, ev.Claim),
			slog.Duration("duration", ev.Duration),
		}
		if ev.Err != nil {
			lg.LogAttrs(context.Background(), slog.LevelInfo, l.msgRefused, append(attrs, slog.String("reason", ev.Err.Error()))...)
		} else {
			lg.LogAttrs(context.Background(), slog.LevelDebug, l.msgAccepted, attrs...)
		}
	}
	if l.cfg.Report != nil {
		l.cfg.Report(ev)
	}
}

// ipKey returns the bucket of a remote address for the per-IP cap: the
// IPv4 address (also when written IPv4-mapped in IPv6), or the /64 of an
// IPv6 address with its zone, since one IPv6 host is commonly given a
// whole /64 and can send from any address in it; the zero Addr for an
// address without an IP (a Unix socket), which is not capped.
func ipKey(a net.Addr) netip.Addr {
	var ip net.IP
	var zone string
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, zone = a.IP, a.Zone
	case *net.UDPAddr:
		ip, zone = a.IP, a.Zone
	default:
		return netip.Addr{}
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	if addr = addr.Unmap(); addr.Is4() {
		return addr
	}
	p, err := addr.Prefix(64)
	if err != nil {
		return netip.Addr{}
	}
	return p.Addr().WithZone(zone)
}
