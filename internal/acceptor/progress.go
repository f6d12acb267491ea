package acceptor

import (
	"context"
	"net"
	"time"
)

// maxSteps is the most steps Progress tells apart; handshakes past it
// rank as equals, by the time of their last step.
const maxSteps = 3

// evictGrace is how long a handshake must have gone without a step
// before it may be evicted. A key holder's first step is a read of bytes
// already there (TCP_DEFER_ACCEPT) or a round trip away, but under a flood
// its goroutine can wait tens of milliseconds for a CPU (26 ms seen on a
// loaded 2-CPU machine); with no grace, a flood evicted faster than that
// and took key holders before they ran. The grace also bounds evictions to
// MaxInFlight per grace, so a connection queued in the kernel behind n
// attacking ones waits about n/MaxInFlight graces (BENCHMARKS.md).
// The grace, and the rule that a handshake whose goroutine has not run is
// never evicted, guard against scheduling delays that no test produces
// reliably: BenchmarkDialUnderSlotAttack shows them (dials fail without
// them), the unit tests do not.
const evictGrace = 50 * time.Millisecond

// pendingKey is the context key under which a handshake's ctx carries its
// *pending.
type pendingKey struct{}

// pending is a handshake in flight, in one of the Listener's pending lists
// until it ends or is evicted.
type pending struct {
	l          *Listener
	raw        net.Conn
	steps      int          // steps reported by Progress, at most maxSteps
	since      time.Time    // of the last step, or of the start
	list       *pendingList // the list it is in; nil once out
	evicted    bool
	prev, next *pending
}

// pendingList is a doubly linked list of pending handshakes with the same
// number of steps, in the order of their last step (or of their start,
// for none): the head has waited the longest.
type pendingList struct{ head, tail *pending }

func (ls *pendingList) push(p *pending) {
	p.list, p.prev, p.next = ls, ls.tail, nil
	if ls.tail != nil {
		ls.tail.next = p
	} else {
		ls.head = p
	}
	ls.tail = p
}

func (ls *pendingList) remove(p *pending) {
	if p.prev != nil {
		p.prev.next = p.next
	} else {
		ls.head = p.next
	}
	if p.next != nil {
		p.next.prev = p.prev
	} else {
		ls.tail = p.prev
	}
	p.list, p.prev, p.next = nil, nil, nil
}

// Progress records that the handshake running under ctx has taken a step:
// a whole message from the peer passed its check, something a client
// that does not hold the key cannot do (it can at most replay a recorded
// message, which takes one step and then stalls). The Listener evicts, for
// a new connection when every slot is taken, the handshake with the fewest
// steps, and among those the one whose last step (or start) is the
// oldest: the one that has made the least progress for the longest. A
// handshake becomes evictable only once its goroutine has started (see
// track). A client that holds the key takes its step in its first read
// and finishes a round trip later, so it is not evicted while a handshake
// with fewer steps is pending. Progress does nothing for a ctx that is not
// a Listener's handshake's.
func Progress(ctx context.Context) {
	p, _ := ctx.Value(pendingKey{}).(*pending)
	if p == nil {
		return
	}
	l := p.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.list == nil {
		return // evicted
	}
	p.list.remove(p)
	p.since = time.Now()
	p.steps = min(p.steps+1, maxSteps)
	l.pending[p.steps].push(p)
}

// track adds a handshake whose goroutine starts now to the pending lists.
// Until then it is not evictable: a handshake that has not run yet has had
// no chance to progress, and under load the goroutine of a key holder may
// wait for a CPU while many connections arrive behind it.
func (l *Listener) track(p *pending) {
	l.mu.Lock()
	l.unstarted--
	p.since = time.Now()
	l.pending[0].push(p)
	l.mu.Unlock()
	select {
	case l.started <- struct{}{}:
	default:
	}
}

// victim returns the handshake that has made the least progress for the
// longest, or nil and how long until it may be evicted (0 if there is
// none). A handshake with steps is not evicted while one has yet to start,
// which may be a stalled one that ranks below it once it starts. With
// take, the victim is taken out of the lists and marked evicted.
func (l *Listener) victim(now time.Time, take bool) (*pending, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.pending {
		if i > 0 && l.unstarted > 0 {
			return nil, 0
		}
		p := l.pending[i].head
		if p == nil {
			continue
		}
		if wait := p.since.Add(evictGrace).Sub(now); wait > 0 {
			return nil, wait
		}
		if take {
			p.list.remove(p)
			p.evicted = true
		}
		return p, 0
	}
	return nil, 0
}

// launch counts a handshake whose goroutine is about to start.
func (l *Listener) launch() {
	l.inFlight.Add(1)
	l.mu.Lock()
	l.unstarted++
	l.mu.Unlock()
}

// finish takes a handshake that returned out of the pending lists, and
// reports whether it was evicted first: then its outcome is the eviction.
func (l *Listener) finish(p *pending) (evicted bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.list != nil {
		p.list.remove(p)
	}
	return p.evicted
}
