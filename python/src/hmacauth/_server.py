"""Listener: a server socket whose accept() returns only authenticated
connections, with the Go Listener's guarantees in threads; and a socketserver
mix-in for http.server, xmlrpc.server and similar servers."""

from __future__ import annotations

import collections
import errno
import functools
import ipaddress
import logging
import socket
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

from . import _progress
from ._context import Context
from ._errors import HmacAuthError
from ._handshake import _live
from ._socket import HmacAuthSocket, _addr

__all__ = ["Listener", "create_server", "HandshakeEvent", "ConnectionShed", "HmacAuthMixIn"]


_TRANSIENT_ACCEPT_ERRORS = frozenset(
    getattr(errno, name) for name in ("ECONNABORTED", "EMFILE", "ENFILE", "ENOBUFS", "ENOMEM", "EPROTO") if hasattr(errno, name)
)


class ConnectionShed(HmacAuthError):
    """Reported to Context.on_handshake (never raised by accept) for a
    connection a server closed unread because its remote IP (or IPv6 /64)
    already had max_handshakes_per_ip handshakes in flight, and for a
    handshake it evicted under load, when all max_handshakes slots were
    taken (see Listener). The message says which (Go: ErrShed)."""

    sentinel = "hmacauth: connection shed"


class HandshakeEvent:
    """One connection a Listener handled: remote_addr, the key_id the client
    named (only a claim when error is set), duration in seconds, and error
    (None when the client was authenticated)."""

    __slots__ = ("remote_addr", "key_id", "duration", "error")

    def __init__(self, remote_addr: Any, key_id: str, duration: float, error: Optional[BaseException]) -> None:
        self.remote_addr = remote_addr
        self.key_id = key_id
        self.duration = duration
        self.error = error

    def __repr__(self) -> str:
        return "HandshakeEvent(remote_addr=%r, key_id=%r, duration=%.3f, error=%r)" % (
            self.remote_addr,
            self.key_id,
            self.duration,
            self.error,
        )


def _report(ctx: Context, ev: HandshakeEvent) -> None:
    if ctx.on_handshake is not None:
        try:
            ctx.on_handshake(ev)
        except Exception:  # noqa: BLE001 - a callback's bug must not stop the server
            logging.getLogger("hmacauth").exception("on_handshake raised")
    if ctx.logger is not None:
        if ev.error is not None:
            ctx.logger.info("hmacauth: refused connection from %s (key ID %r): %s", ev.remote_addr, ev.key_id, ev.error)
        else:
            ctx.logger.debug("hmacauth: accepted %s with key ID %r in %.3fs", ev.remote_addr, ev.key_id, ev.duration)


def _run_handshake(ctx: Context, sock: socket.socket, addr: Any) -> Tuple[Optional[HmacAuthSocket], HandshakeEvent]:
    """Runs one server handshake: the connection (None if refused; the
    refused socket is closed without a reset) and the event to report."""
    start = time.monotonic()
    conn = HmacAuthSocket(sock, ctx, server_side=True)
    try:
        conn.do_handshake()
    except (OSError, ValueError) as e:
        return None, HandshakeEvent(addr, getattr(conn, "_claimed_key_id", ""), time.monotonic() - start, e)
    return conn, HandshakeEvent(addr, conn.key_id or "", time.monotonic() - start, None)


def server_handshake(ctx: Context, sock: socket.socket, addr: Any) -> Optional[HmacAuthSocket]:
    """Runs one server handshake, reports it, and returns the connection or
    None (the refused socket is closed without a reset)."""
    conn, ev = _run_handshake(ctx, sock, addr)
    _report(ctx, ev)
    return conn


def _ip_key(addr: Any) -> str:
    """The bucket of a remote address for the per-IP cap, as the Go
    package's: the IPv4 address (also when written IPv4-mapped in IPv6), or
    the /64 of an IPv6 address with its zone, since one IPv6 host is
    commonly given a whole /64; "" (not capped) for an address without an
    IP."""
    if not isinstance(addr, tuple) or not addr or not isinstance(addr[0], str):
        return ""
    host, _, zone = addr[0].partition("%")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return addr[0]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        net = ipaddress.IPv6Network((int(ip) >> 64 << 64, 64))
        return str(net) + ("%" + zone if zone else "")
    return str(ip)


def _shed_per_ip(addr: Any, cap: int) -> "ConnectionShed":
    return ConnectionShed(
        "client %s: its IP (for IPv6, its /64) already has %d handshakes in flight (max_handshakes_per_ip)"
        % (_addr(addr), cap))


def _server_closed() -> ConnectionAbortedError:
    return ConnectionAbortedError("hmacauth: the server was closed during the handshake")


def _evicted(addr: Any, duration: float, slots: int) -> "ConnectionShed":
    return ConnectionShed(
        "client %s evicted under load after %.0fms: all %d handshake slots were taken when a new connection arrived, "
        "and its handshake had made the least progress for the longest; if honest clients are evicted, raise "
        "max_handshakes" % (_addr(addr), duration * 1000, slots))


# The most steps _Slots tells apart (a server handshake of hmacauth/1 takes
# one: its ClientHello passes the checks); past it handshakes rank as equals.
_MAX_STEPS = 3

# How long a handshake must have gone without a step before it may be
# evicted, as the Go Listener's evictGrace: a key holder's first step is a
# read of bytes already there or a round trip away, but under a flood its
# thread can wait tens of milliseconds for a CPU; the grace also bounds
# evictions to max_handshakes per grace.
_EVICT_GRACE = 0.05


class _Pending:
    """A handshake in flight, in a _Slots' pending lists until it ends or
    is evicted. evict ends it by closing its connection."""

    __slots__ = ("evict", "ip", "steps", "since", "listed", "tracked", "evicted", "failed")

    def __init__(self, evict: Callable[[], None], ip: str) -> None:
        self.evict = evict
        self.ip = ip
        self.steps = 0
        self.since = 0.0  # of the last step, or of the start
        self.listed = False
        self.tracked = False  # track has run (or need not any more)
        self.evicted = False
        # The handshake failed on its own, not evicted or closed first: it
        # keeps its own reason even if evicted while draining its refused
        # client, as in Go.
        self.failed = False


class _Slots:
    """The handshake slots of a server and the Go Listener's rule for them
    (internal/acceptor), shared by the threaded Listener and the asyncio
    server: at most max_handshakes slots taken (by handshakes and, for the
    Listener, connections waiting for room in the accept queue), at most
    max_handshakes_per_ip handshakes per IP bucket (for IPv6, per /64), and,
    when every slot is taken, which handshake a new connection evicts: the
    one with the fewest steps (see _progress), and among those the one
    whose last step (or start) is the oldest, once that is at least the
    grace ago. A handshake counts as pending only once it runs (track: in
    the Listener when its thread starts, in the asyncio server once the
    event loop has had a turn to read its client): a handshake with steps
    is not evicted while one has yet to run, which may be a stalled one. Not locked: the Listener calls it under its lock, the
    asyncio server on its event loop."""

    def __init__(self, ctx: Context) -> None:
        self.max_total = ctx.max_handshakes
        self.max_per_ip = ctx.max_handshakes_per_ip
        self.used = 0
        self.per_ip: Dict[str, int] = {}
        self.unstarted = 0  # handshakes launched that have not run yet (see launch)
        # By steps taken; each in the order of the last step (dicts keep
        # insertion order): the first has waited the longest.
        self._pending: List[Dict[_Pending, None]] = [{} for _ in range(_MAX_STEPS + 1)]

    def take(self) -> bool:
        """Takes a free slot, if there is one."""
        if self.used >= self.max_total:
            return False
        self.used += 1
        return True

    def give(self) -> None:
        self.used -= 1

    def admit(self, ip: str) -> bool:
        """Counts a handshake against ip's cap, or reports that it is over."""
        if not ip or self.max_per_ip <= 0:
            return True
        if self.per_ip.get(ip, 0) >= self.max_per_ip:
            return False
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        return True

    def release(self, ip: str) -> None:
        if not ip or self.max_per_ip <= 0:
            return
        n = self.per_ip.get(ip, 1) - 1
        if n > 0:
            self.per_ip[ip] = n
        else:
            self.per_ip.pop(ip, None)

    def launch(self, p: _Pending) -> None:
        """Counts a handshake that is to run: until track (or finish), it
        holds back the eviction of handshakes with steps."""
        self.unstarted += 1

    def track(self, p: _Pending, now: float) -> None:
        """Adds a launched handshake that runs from now on to the pending
        lists, unless it ended first."""
        if p.tracked:
            return
        self.unstarted -= 1
        p.since = now
        p.listed = p.tracked = True
        self._pending[0][p] = None

    def progress(self, p: _Pending, now: float) -> None:
        if not p.listed:
            return  # evicted, or ended
        del self._pending[p.steps][p]
        p.steps = min(p.steps + 1, _MAX_STEPS)
        p.since = now
        self._pending[p.steps][p] = None

    def victim(self, now: float, take: bool) -> Tuple[Optional[_Pending], float]:
        """The handshake that has made the least progress for the longest,
        or None and how long until it may be evicted (0: none may be, before
        a handshake starts or ends). With take it leaves the lists, marked
        evicted."""
        for i, ls in enumerate(self._pending):
            if i > 0 and self.unstarted > 0:
                return None, 0.0
            if not ls:
                continue
            p = next(iter(ls))
            wait = p.since + _EVICT_GRACE - now
            if wait > 0:
                return None, wait
            if take:
                del ls[p]
                p.listed = False
                p.evicted = True
            return p, 0.0
        return None, 0.0

    def finish(self, p: _Pending) -> bool:
        """Takes a launched handshake that ended (or never ran) out of the
        count and the lists; True if it was evicted first (then its outcome
        is the eviction)."""
        if not p.tracked:
            self.unstarted -= 1
            p.tracked = True  # a track still to come does nothing
        if p.listed:
            del self._pending[p.steps][p]
            p.listed = False
        return p.evicted


def _shutdown(raw: socket.socket) -> None:
    try:
        # Wakes the handshake's thread blocked in recv (close alone does
        # not); that thread closes the socket.
        raw.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


# How many reports of the accept thread (sheds) may wait for an
# on_handshake or logger slower than they come before the accept thread
# waits for it, as the Go Listener's.
_SHED_REPORTS = 256


class Listener:
    """Accepts on a listening socket and runs each handshake in a thread of
    its own, bounded by the context's handshake timeout, with the Go
    Listener's guarantees. accept() returns only authenticated connections.

    Caps (from the Context): max_handshakes slots, taken by handshakes in
    flight and by authenticated connections that wait for room in the
    accept queue; max_handshakes_per_ip handshakes in flight from one IP,
    for IPv6 per /64 (more are closed at once and reported as
    ConnectionShed); accept_queue connections waiting for accept, which,
    as in Go, hold no slot. When every slot is taken by a handshake and a
    connection arrives, the Listener evicts the handshake that has made the
    least progress for the longest (a client whose ClientHello passed the
    checks ranks above one that has not), once it has waited 50 ms for its
    next step: its connection is closed and it is reported as
    ConnectionShed (one that had failed already, draining its refused
    client, keeps its own reason). A key holder takes its step at once and
    ends a round trip later, so silent clients do not lock it out; a burst
    of more than max_handshakes honest clients can evict some of them.
    When every slot is a handshake within those 50 ms or an authenticated
    connection waiting for room in a full accept queue, the Listener stops
    accepting until one frees.

    Sheds, and connections the Listener could not serve (a thread that did
    not start), are reported off the accept thread, by a reporter thread
    of their own; handshakes by their own thread, once their per-IP slot
    is free. close() returns once every one of those threads has ended.
    """

    def __init__(self, sock: socket.socket, context: Context) -> None:
        self._sock = sock
        self.context = context
        self._slots = _Slots(context)
        self._cond = threading.Condition()
        self._ready: Deque[Tuple[HmacAuthSocket, Any]] = collections.deque()
        self._inflight: Set[socket.socket] = set()  # the connections of the handshakes in flight, closed by close()
        self._handshakes: Set[threading.Thread] = set()  # their threads, which close() waits for
        # The accept thread's reports, for the reporter thread, under a lock
        # of their own: handshakes do not wake that thread.
        self._events: Deque[HandshakeEvent] = collections.deque()
        self._events_cond = threading.Condition()
        self._room_waiting = False  # the accept thread waits for a slot or a victim
        self._closed = False
        self._err: Optional[BaseException] = None
        self._reporter = threading.Thread(target=self._report_loop, name="hmacauth-listener-reports", daemon=True)
        self._reporter.start()
        self._thread = threading.Thread(target=self._loop, name="hmacauth-listener", daemon=True)
        try:
            self._thread.start()
        except BaseException:
            self.close()
            raise

    def _loop(self) -> None:
        try:
            self._accept_loop()
        except BaseException as e:  # noqa: B902 - accept() raises it from now on
            err = OSError(errno.EIO, "hmacauth: the Listener's accept thread failed (%s: %s); accept raises this from "
                          "now on: close the Listener and make a new one" % (type(e).__name__, e))
            err.__cause__ = e
            with self._cond:
                if not self._closed and self._err is None:
                    self._err = err
                self._cond.notify_all()

    def _accept_loop(self) -> None:
        while True:
            # With every slot taken, accept anyway once a handshake may be
            # evicted for the new connection; until then wait.
            with self._cond:
                slot = self._room(False)
            if slot is None:
                return
            try:
                raw, addr = self._sock.accept()
            except OSError as e:
                if slot:
                    self._give()
                if not self._closed and e.errno in _TRANSIENT_ACCEPT_ERRORS:
                    # Out of descriptors or memory, or a client gone before
                    # accept: back off briefly, as Go's http.Server does.
                    time.sleep(0.01)
                    continue
                with self._cond:
                    if not self._closed:
                        self._err = e
                    self._cond.notify_all()
                return
            if not self._serve(raw, addr, slot):
                return

    def _room(self, evict: bool) -> Optional[bool]:
        """Under the lock: waits until a slot is free, and takes it (True),
        or until a handshake may be evicted (False); with evict, evicts
        that one and waits for its slot (True). None once closed."""
        slots = self._slots
        while not self._closed:
            if slots.take():
                return True
            v, wait = slots.victim(time.monotonic(), evict)
            self._room_waiting = True
            try:
                if v is not None:
                    if not evict:
                        return False
                    # Its thread ends at once and frees its slot; waiting for
                    # it keeps the threads and connections within the cap.
                    v.evict()
                    while not self._closed and not slots.take():
                        self._cond.wait()
                    return None if self._closed else True
                self._cond.wait(wait if wait > 0 else None)
            finally:
                self._room_waiting = False
        return None

    def _serve(self, raw: socket.socket, addr: Any, slot: bool) -> bool:
        """Sheds an accepted connection or starts its handshake's thread;
        False once the Listener is closed. Whatever fails here fails this
        connection only: it is closed, what it held freed, and reported."""
        ip = ""
        admitted = launched = False
        try:
            ip = _ip_key(addr)
            with self._cond:
                if not self._closed:
                    admitted = self._slots.admit(ip)
                    if not admitted and slot:
                        slot = False
                        self._slots.give()
                        self._cond.notify_all()
            if self._closed:
                raise _Closed()
            if not admitted:
                raw.close()
                self._post(HandshakeEvent(addr, "", 0.0, _shed_per_ip(addr, self._slots.max_per_ip)))
                return True
            if not slot:
                with self._cond:
                    slot = self._room(True) is True
                if not slot:
                    raise _Closed()
            # Evicted, its connection is shut down, which ends its thread
            # at once.
            p = _Pending(functools.partial(_shutdown, raw), ip)
            t = threading.Thread(target=self._handshake, args=(raw, addr, p), name="hmacauth-listener-handshake",
                                 daemon=True)
            with self._cond:
                if self._closed:
                    raise _Closed()  # close() waits only for the threads launched before
                self._inflight.add(raw)
                self._slots.launch(p)
                self._handshakes.add(t)
                launched = True
            t.start()
            return True
        except Exception as e:  # noqa: BLE001 - this connection fails, the Listener goes on
            with self._cond:
                if launched:
                    self._inflight.discard(raw)
                    self._slots.finish(p)
                    self._handshakes.discard(t)
                if admitted:
                    self._slots.release(ip)
                if slot:
                    self._slots.give()
                self._cond.notify_all()
            raw.close()
            if isinstance(e, _Closed):
                return False
            err = ConnectionAbortedError(
                "hmacauth: the Listener could not serve the connection from %s (%s: %s) and closed it unread; it "
                "goes on accepting: check the process's limits (threads, memory)" % (_addr(addr), type(e).__name__, e))
            err.__cause__ = e
            self._post(HandshakeEvent(addr, "", 0.0, err))
            return True

    def _handshake(self, raw: socket.socket, addr: Any, p: _Pending) -> None:
        try:
            self._run(raw, addr, p)
        finally:
            # close() returns once every handshake thread has ended.
            with self._cond:
                self._handshakes.discard(threading.current_thread())
                self._cond.notify_all()

    def _run(self, raw: socket.socket, addr: Any, p: _Pending) -> None:
        ctx = self.context
        with self._cond:
            self._slots.track(p, time.monotonic())
            if self._room_waiting:
                self._cond.notify_all()  # it may be the victim
        conn: Optional[HmacAuthSocket] = None
        start = time.monotonic()
        token = _progress._hook.set((functools.partial(self._progress, p), functools.partial(self._failed, p)))
        try:
            try:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            conn, ev = _run_handshake(ctx, raw, addr)
        except Exception as e:  # noqa: BLE001 - a bug here must not leak the slot
            raw.close()
            ev = HandshakeEvent(addr, "", time.monotonic() - start, e)
        finally:
            _progress._hook.reset(token)
        # Reported once its per-IP slot (and, refused, its slot) is free, so
        # that whoever hears of it may at once connect again.
        with self._cond:
            evicted = self._slots.finish(p)
            closed = self._closed
            self._inflight.discard(raw)
            self._slots.release(p.ip)
            if conn is None or evicted:
                self._slots.give()
                if self._room_waiting:
                    self._cond.notify_all()
        if evicted and not p.failed:
            # Its connection was closed for a new one: that is its outcome
            # (with what the handshake saw as the cause), even if it had
            # just succeeded.
            if conn is not None:
                conn.close()
                conn = None
            err: BaseException = _evicted(addr, ev.duration, self._slots.max_total)
            err.__cause__ = ev.error
            ev.error = err
        elif closed and ev.error is not None and not p.failed:
            # It failed because close() shut its connection down, not for
            # what its client did.
            err = _server_closed()
            err.__cause__ = ev.error
            ev.error = err
        _report(ctx, ev)
        if conn is None:
            return
        # Queued, it frees its slot, as in Go: accept_queue bounds the
        # connections waiting for accept, and a handshake that finds the
        # queue full holds its slot until there is room, so that the
        # accept thread waits then.
        queued = False
        with self._cond:
            while len(self._ready) >= ctx.accept_queue and not self._closed:
                self._cond.wait()
            if not self._closed:
                self._ready.append((conn, addr))
                queued = True
            self._slots.give()
            self._cond.notify_all()
        if not queued:
            conn.close()  # the Listener closed meanwhile

    def _progress(self, p: _Pending) -> None:
        with self._cond:
            self._slots.progress(p, time.monotonic())

    def _failed(self, p: _Pending) -> None:
        with self._cond:
            # Once evicted or closed, it fails because of that.
            if not p.evicted and not self._closed:
                p.failed = True

    def _give(self) -> None:
        with self._cond:
            self._slots.give()
            if self._room_waiting:
                self._cond.notify_all()

    def _post(self, ev: HandshakeEvent) -> None:
        """Hands a report of the accept thread to the reporter thread."""
        with self._events_cond:
            while len(self._events) >= _SHED_REPORTS and not self._closed:
                self._events_cond.wait()
            if not self._closed:
                self._events.append(ev)
                self._events_cond.notify_all()

    def _report_loop(self) -> None:
        while True:
            with self._events_cond:
                while not self._events and not self._closed:
                    self._events_cond.wait()
                if not self._events:
                    return
                ev = self._events.popleft()
                self._events_cond.notify_all()
            _report(self.context, ev)

    def accept(self, timeout: Optional[float] = None) -> Tuple[HmacAuthSocket, Any]:
        """Returns the next authenticated connection and its address. Raises
        socket.timeout after timeout seconds, OSError once closed or once
        the accept thread failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._ready:
                if self._closed or self._err is not None:
                    raise OSError(9, "hmacauth: accept on a closed Listener") if self._err is None else self._err
                if deadline is None:
                    self._cond.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise socket.timeout("hmacauth: no authenticated connection within %ss" % timeout)
                    self._cond.wait(left)
            conn, addr = self._ready.popleft()
            self._cond.notify_all()  # a handshake may wait for room in the queue
        return conn, addr

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    @property
    def address(self) -> Tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def close(self) -> None:
        """Stops accepting, closes the listening socket, the connections
        that wait for accept and those of the handshakes in flight (which
        then fail at once, each reported as ConnectionAbortedError), and
        returns once every thread of the Listener has ended, as the Go
        Listener's Close: no on_handshake call comes after it. That
        includes on_handshake calls in progress, which close() waits for
        without a bound, as Go does: a callback must not wait for the
        thread that closes the Listener (it may call close() itself).
        Where closing a socket does not wake a blocked accept (Linux's
        shutdown does), close() waits at most 5 s for the accept thread,
        which, once closed, starts no handshake and reports nothing."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            ready = list(self._ready)
            self._ready.clear()
            inflight = list(self._inflight)
            self._cond.notify_all()
        with self._events_cond:
            self._events_cond.notify_all()
        for raw in inflight:
            _shutdown(raw)  # ends its handshake at once, or the drain of its refusal
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept on Linux
        except OSError:
            pass
        self._sock.close()
        for conn, _ in ready:
            conn.close()
        me = threading.current_thread()
        if self._thread is not me and self._thread.ident is not None:
            # Where closing does not wake a blocked accept (Linux's
            # shutdown does), the thread ends at its next connection; it
            # launches no handshake once closed.
            self._thread.join(5.0)
        if self._reporter is not me:
            self._reporter.join()
        with self._cond:
            while self._handshakes - {me}:
                self._cond.wait()

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> "Listener":
        return self

    def __next__(self) -> Tuple[HmacAuthSocket, Any]:
        try:
            return self.accept()
        except OSError:
            if self._closed:
                raise StopIteration from None
            raise


class _Closed(Exception):
    """The Listener closed while the accept thread served a connection."""


def create_server(
    address: Tuple[str, int],
    context: Context,
    *,
    family: int = socket.AF_INET,
    backlog: Optional[int] = None,
    reuse_port: bool = False,
) -> Listener:
    """Listens on address (as socket.create_server) and returns a Listener."""
    sock = socket.create_server(address, family=family, backlog=backlog, reuse_port=reuse_port)
    return Listener(sock, context)


class HmacAuthMixIn:
    """A socketserver mix-in: put it first in the bases of a TCPServer
    class (with ThreadingMixIn, so that handshakes run in the request
    threads) and set ``hmacauth_context``; every request handler then gets
    an authenticated HmacAuthSocket as self.request. Refused clients never
    reach the handler. For example::

        class Server(hmacauth.HmacAuthMixIn, socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
        srv = Server(("127.0.0.1", 8080), http.server.SimpleHTTPRequestHandler)
        srv.hmacauth_context = hmacauth.Context(hmacauth.load_keys("keys"))
    """

    hmacauth_context: Context

    def finish_request(self, request: socket.socket, client_address: Any) -> None:
        conn = server_handshake(self.hmacauth_context, request, client_address)
        if conn is None:
            return
        with _wrapped.lock:
            _wrapped.conns[id(request)] = conn
        self.RequestHandlerClass(conn, client_address, self)  # type: ignore[attr-defined]

    def shutdown_request(self, request: socket.socket) -> None:
        with _wrapped.lock:
            conn = _wrapped.conns.pop(id(request), None)
        if conn is None:
            super().shutdown_request(request)  # type: ignore[misc]
            return
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        conn.close()


class _Wrapped:
    """The HmacAuthMixIn's connections, by id of the request socket they
    wrap. Registered for the fork hook of _handshake: a thread of the
    parent (a threading server beside a forking one) may have held the lock
    at the fork, so the child's request handlers get a fresh one rather
    than wait for ever."""

    def __init__(self) -> None:
        self.conns: Dict[int, HmacAuthSocket] = {}
        self.lock = threading.Lock()
        _live.add(self)

    def _after_fork(self) -> None:
        self.lock = threading.Lock()


_wrapped = _Wrapped()
