"""Listener: a server socket whose accept() returns only authenticated
connections, with the Go Listener's guarantees in threads; and a socketserver
mix-in for http.server, xmlrpc.server and similar servers."""

from __future__ import annotations

import collections
import errno
import ipaddress
import logging
import os
import socket
import threading
import time
from typing import Any, Deque, Dict, Optional, Set, Tuple

from ._context import Context
from ._errors import HmacAuthError
from ._socket import HmacAuthSocket

__all__ = ["Listener", "create_server", "HandshakeEvent", "ConnectionShed", "HmacAuthMixIn"]


_TRANSIENT_ACCEPT_ERRORS = frozenset(
    getattr(errno, name) for name in ("ECONNABORTED", "EMFILE", "ENFILE", "ENOBUFS", "ENOMEM", "EPROTO") if hasattr(errno, name)
)


class ConnectionShed(HmacAuthError):
    """Reported to Context.on_handshake (never raised by accept) for a
    connection a Listener closed unread because its remote IP already had
    max_handshakes_per_ip handshakes in flight (Go: ErrShed)."""

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


def server_handshake(ctx: Context, sock: socket.socket, addr: Any) -> Optional[HmacAuthSocket]:
    """Runs one server handshake, reports it, and returns the connection or
    None (the refused socket is closed without a reset)."""
    start = time.monotonic()
    conn = HmacAuthSocket(sock, ctx, server_side=True)
    try:
        conn.do_handshake()
    except (OSError, ValueError) as e:
        _report(ctx, HandshakeEvent(addr, getattr(conn, "_claimed_key_id", ""), time.monotonic() - start, e))
        return None
    _report(ctx, HandshakeEvent(addr, conn.key_id or "", time.monotonic() - start, None))
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
        % (addr[0] if isinstance(addr, tuple) and addr else addr, cap))


class Listener:
    """Accepts on a listening socket and runs each handshake in a thread of
    its own, bounded by the context's handshake timeout, so a silent client
    does not stall another while slots are free (unlike the Go Listener, it
    evicts none when all are taken: silent clients can hold every slot
    until their timeout). accept() returns only authenticated connections.

    Caps (from the Context): max_handshakes at once, counting authenticated
    connections that wait for accept (at the cap the Listener stops
    accepting until a slot frees); max_handshakes_per_ip in flight from one
    IP, for IPv6 per /64 (more are closed at once); accept_queue
    connections waiting for accept.
    """

    def __init__(self, sock: socket.socket, context: Context) -> None:
        self._sock = sock
        self.context = context
        self._used = 0  # handshake slots taken, by handshakes and connections waiting for accept
        self._cond = threading.Condition()
        self._ready: Deque[Tuple[HmacAuthSocket, Any]] = collections.deque()
        self._per_ip: Dict[str, int] = {}
        self._inflight: Set[socket.socket] = set()  # the connections of the handshakes in flight, closed by close()
        self._closed = False
        self._err: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._loop, name="hmacauth-listener", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        ctx = self.context
        per_ip_cap = ctx.max_handshakes_per_ip
        while True:
            with self._cond:
                while self._used >= self.context.max_handshakes and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                self._used += 1
            try:
                raw, addr = self._sock.accept()
            except OSError as e:
                self._release_slot()
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
            ip = _ip_key(addr)
            with self._cond:
                if self._closed:
                    raw.close()
                    self._release_slot()
                    return
                if ip and per_ip_cap > 0 and self._per_ip.get(ip, 0) >= per_ip_cap:
                    shed = True
                else:
                    shed = False
                    if ip:
                        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
                    self._inflight.add(raw)
            if shed:
                raw.close()
                self._release_slot()
                _report(ctx, HandshakeEvent(addr, "", 0.0, _shed_per_ip(addr, per_ip_cap)))
                continue
            threading.Thread(target=self._handshake, args=(raw, addr, ip), daemon=True).start()

    def _handshake(self, raw: socket.socket, addr: Any, ip: str) -> None:
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        conn = None
        queued = False
        try:
            conn = server_handshake(self.context, raw, addr)
        finally:
            with self._cond:
                self._inflight.discard(raw)
                if ip:
                    n = self._per_ip.get(ip, 1) - 1
                    if n:
                        self._per_ip[ip] = n
                    else:
                        self._per_ip.pop(ip, None)
                if conn is not None:
                    while len(self._ready) >= self.context.accept_queue and not self._closed:
                        self._cond.wait()
                    if not self._closed:
                        self._ready.append((conn, addr))
                        self._cond.notify_all()
                        queued = True
            if not queued:
                # A refused handshake frees its slot here, an accepted one in accept().
                self._release_slot()
                if conn is not None:
                    conn.close()  # the Listener closed meanwhile

    def _release_slot(self) -> None:
        with self._cond:
            self._used -= 1
            self._cond.notify_all()

    def accept(self, timeout: Optional[float] = None) -> Tuple[HmacAuthSocket, Any]:
        """Returns the next authenticated connection and its address. Raises
        socket.timeout after timeout seconds, OSError once closed."""
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
            self._cond.notify_all()
        self._release_slot()
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
        then fail at once, as a handshake with a closed connection)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            ready = list(self._ready)
            self._ready.clear()
            inflight = list(self._inflight)
            self._cond.notify_all()
        for raw in inflight:
            try:
                # Wakes the handshake's thread blocked in recv (close alone
                # does not); that thread closes the socket.
                raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept on Linux
        except OSError:
            pass
        self._sock.close()
        for conn, _ in ready:
            conn.close()
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)

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
        with _wrapped_lock:
            _wrapped[id(request)] = conn
        self.RequestHandlerClass(conn, client_address, self)  # type: ignore[attr-defined]

    def shutdown_request(self, request: socket.socket) -> None:
        with _wrapped_lock:
            conn = _wrapped.pop(id(request), None)
        if conn is None:
            super().shutdown_request(request)  # type: ignore[misc]
            return
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        conn.close()


_wrapped: Dict[int, HmacAuthSocket] = {}
_wrapped_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # A thread of the parent (a threading server beside a forking one) may
    # have held the lock at the fork: the child's request handlers get a
    # fresh one rather than wait for ever.
    global _wrapped_lock
    _wrapped_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
