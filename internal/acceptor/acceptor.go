// Package acceptor runs connection handshakes off the accept loop.
//
// A Listener accepts from an inner net.Listener on its own goroutine, runs
// each handshake on a goroutine of its own under caps (in flight, per remote
// IP), and hands finished connections to Accept through a bounded queue. A
// failed handshake never reaches Accept. It is shared by package hmacauth
// and package mpcompat.
package acceptor

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hmacauth/hmacauth/internal/netx"
)

// Handshake upgrades a freshly accepted connection. ctx is cancelled when
// the Listener closes. It returns the connection to hand to Accept, or an
// error; the raw connection is closed by the Listener on error. report is
// called, always, once the handshake's slot for its remote IP is free (and,
// on error, the raw connection closed), so that whoever hears of the result
// may at once connect again from the same IP.
type Handshake func(ctx context.Context, raw net.Conn) (c net.Conn, report func(), err error)

// Config configures a Listener. All fields are required except OnShed.
type Config struct {
	Handshake   Handshake
	MaxInFlight int // handshakes running or waiting for Accept
	MaxPerIP    int // handshakes in flight per remote IP; <= 0 means no cap
	QueueLen    int // finished connections waiting for Accept
	// OnShed is called, on the accept loop, for a connection closed unread
	// because its remote IP is over MaxPerIP.
	OnShed func(remote net.Addr)
}

// Stats are counters of a Listener since it started.
type Stats struct {
	InFlight int64 // handshakes running now
	Queued   int64 // finished connections waiting for Accept now
	Shed     int64 // connections closed for the per-IP cap
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
	wg     sync.WaitGroup

	mu     sync.Mutex
	perIP  map[string]int
	errMu  sync.Mutex
	err    error // why Accept fails; set once
	closed sync.Once

	// Shutdown: draining is set once the inner listener is closed for a
	// graceful stop; queue is closed (and queueShut set) once no handshake
	// is left, and drained closed once the queue is empty too.
	draining     atomic.Bool
	queueShut    atomic.Bool
	shutdownOnce sync.Once
	queueClosed  chan struct{}
	drained      chan struct{}
	drainedOnce  sync.Once

	inFlight, queued, shed, retries atomic.Int64
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
		perIP:  make(map[string]int),

		queueClosed: make(chan struct{}),
		drained:     make(chan struct{}),
	}
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
		err = l.inner.Close()
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
	l.shutdownOnce.Do(func() {
		l.draining.Store(true)
		l.inner.Close()
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
		Retries:  l.retries.Load(),
	}
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		select {
		case l.slots <- struct{}{}:
		case <-l.ctx.Done():
			return
		}
		raw, err := l.inner.Accept()
		if err != nil {
			<-l.slots
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
		ip := remoteIP(raw.RemoteAddr())
		if !l.admit(ip) {
			<-l.slots
			l.shed.Add(1)
			raw.Close()
			if l.cfg.OnShed != nil {
				l.cfg.OnShed(raw.RemoteAddr())
			}
			continue
		}
		l.wg.Add(1)
		go l.serve(raw, ip)
	}
}

// admit counts a handshake against ip's cap, or reports that it is over.
func (l *Listener) admit(ip string) bool {
	if ip == "" || l.cfg.MaxPerIP <= 0 {
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

func (l *Listener) release(ip string) {
	if ip == "" || l.cfg.MaxPerIP <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.perIP[ip]--; l.perIP[ip] <= 0 {
		delete(l.perIP, ip)
	}
}

func (l *Listener) serve(raw net.Conn, ip string) {
	defer l.wg.Done()
	defer func() { <-l.slots }()
	l.inFlight.Add(1)
	c, report, err := l.cfg.Handshake(l.ctx, raw)
	l.inFlight.Add(-1)
	l.release(ip)
	if err != nil {
		raw.Close()
		report()
		return
	}
	report()
	l.queued.Add(1)
	select {
	case l.queue <- c:
	case <-l.ctx.Done():
		l.queued.Add(-1)
		c.Close()
	}
}

// remoteIP returns the IP of a TCP or UDP address as a map key, or "".
func remoteIP(a net.Addr) string {
	switch a := a.(type) {
	case *net.TCPAddr:
		return string(a.IP.To16())
	case *net.UDPAddr:
		return string(a.IP.To16())
	}
	return ""
}
