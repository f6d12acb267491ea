"""asyncio support: open_connection and start_server, giving StreamReader
and StreamWriter over the handshake and the record layer, as asyncio's own
functions of those names do over TCP (and TLS)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, Tuple, Union, cast

from ._context import Context, Mode
from ._errors import AuthFailed, ConfigError, HandshakeTimeout, HmacAuthError, ProtocolError, quote
from ._handshake import (
    CLIENT_FINISHED_LEN,
    CLIENT_HELLO_LEN,
    HEADER_LEN,
    MSG_CLIENT_HELLO,
    MSG_SERVER_HELLO,
    SERVER_HELLO_LEN,
    ClientHandshake,
    Result,
    ServerHandshake,
    check_header,
    wipe,
)
from ._record import (  # constants and classes only: 'cryptography' is imported on first use
    HEADER,
    MAX_PAYLOAD,
    REC_CLOSE,
    REC_DATA,
    TAG,
    record_layer,
)

__all__ = ["open_connection", "start_server"]

_LIMIT = 2**16


class _AppTransport(asyncio.Transport):
    """The transport the application's protocol sees: plaintext in and out."""

    def __init__(self, proto: "_HmacAuthProtocol") -> None:
        super().__init__()
        self._p = proto

    def write(self, data: Any) -> None:
        self._p._app_write(data)

    def writelines(self, list_of_data: Any) -> None:
        for d in list_of_data:
            self._p._app_write(d)

    def write_eof(self) -> None:
        self._p._app_write_eof()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self._p._app_close()

    def abort(self) -> None:
        self._p._abort()

    def is_closing(self) -> bool:
        # Also once the connection is gone (the peer closed or reset it).
        return self._p._closing

    def pause_reading(self) -> None:
        # The TCP transport is paused too: else it keeps reading and the
        # buffer grows without bound while the application does not read.
        if not self._p._paused:
            self._p._paused = True
            if not self._p._tcp_eof:  # after EOF there is nothing to pause (and resuming would read the EOF again)
                self._p._tcp_paused = True
                self._p._tcp.pause_reading()

    def resume_reading(self) -> None:
        if self._p._paused:
            self._p._paused = False
            if self._p._tcp_paused:
                self._p._tcp_paused = False
                self._p._tcp.resume_reading()
            self._p._resumed()

    def is_reading(self) -> bool:
        return not self._p._paused

    def set_write_buffer_limits(self, high: Optional[int] = None, low: Optional[int] = None) -> None:
        self._p._tcp.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return int(self._p._tcp.get_write_buffer_size())

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "hmacauth":
            return self._p
        if name == "connection_state":
            return self._p.connection_state()
        return self._p._tcp.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._p._app = cast(asyncio.Protocol, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._p._app


class _HmacAuthProtocol(asyncio.Protocol):
    """Runs the handshake on a TCP transport, then the record layer (or, in
    ModeAuth, the raw bytes) between it and the application's protocol."""

    def __init__(
        self,
        ctx: Context,
        server_side: bool,
        app: asyncio.Protocol,
        waiter: Optional["asyncio.Future[_AppTransport]"] = None,
        on_done: Optional[Callable[[Any, str, float, Optional[BaseException]], None]] = None,
        caps: Optional["_Caps"] = None,
    ) -> None:
        self._ctx = ctx
        self._server = server_side
        self._app = app
        self._waiter = waiter
        self._on_done = on_done
        self._tcp: Any = None
        self._buf = bytearray()
        self._state = "new"
        self._hs: Any = None
        self._res: Optional[Result] = None
        self._mode = Mode.AUTH
        self._sealer: Any = None
        self._opener: Any = None
        self._app_transport: Optional[_AppTransport] = None
        self._timer: Optional[asyncio.TimerHandle] = None
        self._paused = False
        self._tcp_paused = False
        self._cleared = False
        self._closing = False
        self._write_closed = False
        self._eof = False
        self._tcp_eof = False
        self._discarded = 0
        self._started = 0.0
        self._peer: Any = None
        self._claimed = ""
        self._caps = caps
        self._drain_timer: Optional[asyncio.TimerHandle] = None
        self._slot: Any = None  # the _server._Pending of the handshake slot this holds

    # -- the handshake ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tcp = cast(asyncio.Transport, transport)
        self._peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self._started = time.monotonic()
        if self._caps is not None:
            from ._server import _ip_key, _server_closed

            self._caps.handshaking.add(self)
            if self._caps.closed:
                # Accepted just before the server closed.
                self._state = "failed"
                transport.close()
                self._report(_server_closed())
                return
            slot = self._caps.take(self, _ip_key(self._peer), self._peer)
            if isinstance(slot, BaseException):
                self._state = "failed"
                transport.close()
                self._report(slot)
                return
            self._slot = slot
        loop = asyncio.get_running_loop() if hasattr(asyncio, "get_running_loop") else asyncio.get_event_loop()
        if self._ctx.handshake_timeout is not None:
            self._timer = loop.call_later(self._ctx.handshake_timeout, self._timed_out)
        ctx = self._ctx
        lifetime = ctx.key_share_lifetime
        rand = ctx._testing_only_rand
        try:
            keyset = ctx._keyset
        except ConfigError as e:  # an empty Keyring
            self._fail(e)
            return
        if self._server:
            kw: Dict[str, Any] = {"rand": rand} if rand else {}
            self._hs = ServerHandshake(
                keyset, int(ctx.mode), ctx.forward_secrecy, ctx.prefer_chacha20,
                shares=ctx._shares if lifetime and ctx.handshake_timeout is not None else None,
                share_lifetime=lifetime or 0.0, nonces=ctx._nonces, **kw,
            )
            self._state = "ch"
        else:
            kw = {"rand": rand} if rand else {}
            ks = keyset.first
            assert ks is not None  # a KeySet is never empty
            self._hs = ClientHandshake(
                ks, int(ctx.mode), ctx.forward_secrecy, ctx.prefer_chacha20,
                shares=ctx._shares if lifetime else None, share_lifetime=lifetime or 0.0, **kw,
            )
            ch = self._hs.client_hello()
            ctx._nonces.add(self._hs.nonce)
            self._state = "sh"
            self._tcp.write(ch)

    def _timed_out(self) -> None:
        if self._state in ("ch", "sh", "cf"):
            self._fail(HandshakeTimeout("after %.3fs" % (time.monotonic() - self._started)))

    def _fail(self, err: BaseException) -> None:
        """Ends a handshake that failed: a server closes without a byte and
        without a reset, a client closes."""
        if self._state in ("failed", "refused", "app"):
            return
        if not self._server and self._hs is not None and self._hs.nonce:
            self._ctx._nonces.discard(self._hs.nonce)
        self._cancel_timer()
        if self._server:
            self._state = "refused"
            self._buf = bytearray()
            try:
                if self._tcp.can_write_eof():
                    self._tcp.write_eof()
            except (OSError, RuntimeError):
                pass
            self._drain_timer = asyncio.get_event_loop().call_later(0.5, self._tcp.close)
            if self._tcp_eof:
                self._tcp.close()
        else:
            self._state = "failed"
            self._tcp.close()
        self._report(err)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(err)

    def _cancel_handshake(self, err: BaseException) -> None:
        """Ends a server handshake in flight, or the drain of a refused
        one, because the server is closing: the connection closes now."""
        if self._state in ("new", "ch", "cf"):
            self._cancel_timer()
            self._state = "failed"
            self._tcp.close()
            self._report(err)
        elif self._state == "refused":
            self._tcp.close()

    def _report(self, err: Optional[BaseException]) -> None:
        if self._on_done is not None:
            key_id = self._res.key_id if self._res else (getattr(self._hs, "key_id", "") or "")
            self._on_done(self._peer, key_id, time.monotonic() - self._started, err)

    def _cancel_timer(self) -> None:
        """Ends what a handshake in flight holds: its timer, its slot, its
        claim on the client nonce."""
        if self._server and self._hs is not None:
            self._hs.release()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._slot is not None and self._caps is not None:
            self._caps.give(self._slot)
            self._slot = None

    def data_received(self, data: bytes) -> None:
        if self._state == "refused":
            self._discarded += len(data)
            if self._discarded > 64 * 1024:
                self._tcp.close()
            return
        if self._state == "failed":
            return
        if self._state == "app" and self._eof:
            return  # after a close record (or a record error) nothing more is read (PROTOCOL 9.3)
        self._buf += data
        self._feed()

    def _feed(self) -> None:
        try:
            self._process()
        except HmacAuthError as e:
            if self._state == "app":
                self._record_error(e)
            else:
                self._fail(e)

    def _process(self) -> None:
        if self._state == "ch":
            n = len(self._buf)
            check_header(self._buf[:HEADER_LEN], MSG_CLIENT_HELLO, "ClientHello")
            if n < CLIENT_HELLO_LEN:
                return
            ch = bytes(self._buf[:CLIENT_HELLO_LEN])
            del self._buf[:CLIENT_HELLO_LEN]
            try:
                sh = self._hs.client_hello(ch)
            finally:
                self._claimed = self._hs.key_id
            if self._caps is not None:
                self._caps.progress(self._slot)  # for the eviction order
            self._tcp.write(sh)
            self._state = "cf"
        if self._state == "cf":
            if len(self._buf) < CLIENT_FINISHED_LEN:
                return
            cf = bytes(self._buf[:CLIENT_FINISHED_LEN])
            del self._buf[:CLIENT_FINISHED_LEN]
            self._established(self._hs.client_finished(cf))
        if self._state == "sh":
            check_header(self._buf[:HEADER_LEN], MSG_SERVER_HELLO, "ServerHello")
            if len(self._buf) < SERVER_HELLO_LEN:
                return
            sh = bytes(self._buf[:SERVER_HELLO_LEN])
            del self._buf[:SERVER_HELLO_LEN]
            self._ctx._nonces.discard(self._hs.nonce)
            cf = self._hs.server_hello(sh)
            self._tcp.write(cf)
            assert self._hs.result is not None
            self._established(self._hs.result)
        if self._state == "app":
            self._deliver()

    def _established(self, res: Result) -> None:
        # The record layer first: if it cannot be set up, the error ends the
        # handshake (in _feed) as any other, and the connection is closed.
        if res.mode != Mode.AUTH:
            peer = self._peer
            addr = ("%s:%s" % peer[:2]) if isinstance(peer, tuple) else str(peer)
            # Not reuse: the transport may keep the buffers it was given.
            sealer, opener, err = record_layer(
                res.secret, int(res.mode), res.flags, self._server, addr, self._ctx._testing_only_update_bytes, False
            )
            if err is not None:
                raise err  # here, where no frame holds a traffic secret
            self._sealer, self._opener = sealer, opener
        self._cancel_timer()
        if self._caps is not None:
            self._caps.done(self)
        self._res = res
        self._mode = Mode(res.mode)
        self._state = "app"
        self._app_transport = _AppTransport(self)
        self._report(None)
        self._app.connection_made(self._app_transport)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._app_transport)

    # -- after the handshake ---------------------------------------------

    def _deliver(self) -> None:

        if self._mode == Mode.AUTH:
            if self._buf and not self._paused:
                data, self._buf = bytes(self._buf), bytearray()
                self._app.data_received(data)
            return
        buf = self._buf
        pos = 0
        try:
            while not self._paused and not self._eof and len(buf) - pos >= HEADER:
                n = int.from_bytes(buf[pos + 1 : pos + 4], "big")
                self._opener.check_length(n)
                total = HEADER + n + TAG
                if len(buf) - pos < total:
                    break
                with memoryview(buf) as mv:
                    rec = mv[pos : pos + total]
                    typ, payload = self._opener.open(rec)
                    data = bytes(payload) if typ == REC_DATA else b""
                    # No view of buf may outlive this block: buf is resized below.
                    del payload
                    rec.release()
                pos += total
                if data:
                    self._app.data_received(data)
                elif typ == REC_CLOSE:
                    self._eof = True
                    self._app_eof()
        finally:
            del buf[:pos]

    def _app_eof(self) -> None:
        keep_open = self._app.eof_received()
        if not keep_open and not self._closing:
            self._app_close()

    def _record_error(self, e: BaseException) -> None:
        self._closing = True
        self._buf = bytearray()
        self._eof = True
        self._tcp.abort() if isinstance(e, ProtocolError) else self._tcp.close()
        self._lost_exc = e

    def eof_received(self) -> Optional[bool]:
        self._tcp_eof = True
        if self._state == "refused":
            return False
        if self._state in ("ch", "cf"):
            n = len(self._buf)
            if self._state == "ch":
                self._fail(ProtocolError("the client closed the connection after %d bytes, before a whole ClientHello" % n))
            else:
                self._fail(AuthFailed(
                    "the client closed the connection instead of proving key %s: it did not accept this server's proof "
                    "(different secret?), or it replayed a ClientHello" % quote(self._claimed)))
            return True
        if self._state == "sh":
            self._client_eof_in_handshake()
            return False
        if self._state != "app":
            return False
        if self._paused:
            # The data still buffered goes first: the end of stream is acted
            # on once the application resumes reading and has it all.
            return True
        return self._eof_in_app()

    def _resumed(self) -> None:
        self._feed()
        if self._tcp_eof and not self._paused and self._state == "app" and not self._tcp.is_closing():
            if not self._eof_in_app():
                self._tcp.close()

    def _eof_in_app(self) -> Optional[bool]:
        """Acts on the TCP end of stream after the handshake; returns
        whether the transport stays open (as eof_received)."""
        if self._mode == Mode.AUTH:
            return self._app.eof_received()
        if not self._eof:
            what = ("the connection ended without a close record" if not self._buf
                    else "the connection ended in the middle of record %d" % self._opener.d.seq)
            self._record_error(self._opener.integrity(what + ": the stream was cut (unexpected EOF)"))
        return True if not self._write_closed else False

    def _client_eof_in_handshake(self) -> None:
        n = len(self._buf)
        ks = self._hs.ks
        if n == 0:
            err: BaseException = AuthFailed(
                "the server closed the connection without a word: closed during the handshake (wrong key, shed, or the "
                "server stopping); check that it has key ID %s with the same secret" % quote(ks.id))
        elif n < HEADER_LEN:
            err = ProtocolError("the server sent %s and closed: it does not speak hmacauth" % quote(bytes(self._buf)))
        else:
            err = ProtocolError("the server closed the connection in the middle of its ServerHello")
        self._fail(err)

    def _evict(self) -> None:
        """Ends this server handshake, the one that has made the least
        progress for the longest, for a new connection when every slot is
        taken: its connection closes and its slot is free at once."""
        from ._server import _evicted

        if self._state not in ("new", "ch", "cf"):
            return
        assert self._caps is not None
        self._cancel_timer()
        self._state = "failed"
        self._tcp.close()
        self._report(_evicted(self._peer, time.monotonic() - self._started, self._caps.slots.max_total))

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._closing = True  # for is_closing(): nothing can be written any more
        self._cancel_timer()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        if self._caps is not None:
            self._caps.done(self)
        if self._state == "sh":
            if isinstance(exc, ConnectionResetError):
                self._client_eof_in_handshake()
        if self._state in ("ch", "sh", "cf", "new"):
            self._fail(exc or ConnectionResetError("the connection closed during the handshake"))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc or ConnectionResetError("the connection closed during the handshake"))
        if self._state == "app":
            lost = getattr(self, "_lost_exc", None)
            self._app.connection_lost(lost or exc)
            self._clear()

    def pause_writing(self) -> None:
        if self._state == "app":
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._state == "app":
            self._app.resume_writing()

    def _app_write(self, data: Any) -> None:
        if self._closing or self._write_closed:
            return
        if self._mode == Mode.AUTH:
            self._tcp.write(data)
            return

        mv = memoryview(data).cast("B")
        for off in range(0, len(mv), MAX_PAYLOAD):
            self._tcp.writelines(self._sealer.seal(REC_DATA, bytes(mv[off : off + MAX_PAYLOAD])))

    def _app_write_eof(self) -> None:
        if self._write_closed:
            return
        self._write_closed = True
        if self._mode != Mode.AUTH and self._sealer is not None:

            self._tcp.writelines(self._sealer.seal(REC_CLOSE))
        if self._tcp.can_write_eof():
            self._tcp.write_eof()

    def _app_close(self) -> None:
        if self._closing:
            return
        if self._mode != Mode.AUTH and not self._write_closed and self._sealer is not None and not self._tcp.is_closing():

            self._write_closed = True
            self._tcp.writelines(self._sealer.seal(REC_CLOSE))
        self._closing = True
        self._tcp.close()

    def _abort(self) -> None:
        self._closing = True
        self._tcp.abort()

    def _clear(self) -> None:
        """Zeroes the session secret and both traffic secrets (the
        connection is gone: nothing reads or writes records any more)."""
        self._cleared = True
        if self._res is not None:
            wipe(self._res.secret)
        for part in (self._sealer, self._opener):
            if part is not None:
                part.d.clear()

    def connection_state(self) -> Any:
        from ._socket import ConnectionState

        if self._res is None:
            return ConnectionState()
        # After close the secret is zeroed: a state without it refuses to
        # export (ExportError), as the socket class's.
        return ConnectionState(self._res, None if self._cleared else bytes(self._res.secret))


class _Caps:
    """The handshake slots of one asyncio server (_server._Slots, shared
    with the threaded Listener: overall, per remote IP, and which
    handshake a new connection evicts when every slot is taken). It also
    holds the connections that have not yet become authenticated (in a
    handshake, or refused and being drained), which closing the server
    ends."""

    def __init__(self, ctx: Context) -> None:
        from ._server import _Slots

        self.slots = _Slots(ctx)
        self.handshaking: Set[_HmacAuthProtocol] = set()
        self.closed = False
        self._idle: List["asyncio.Future[None]"] = []

    def done(self, p: "_HmacAuthProtocol") -> None:
        """p authenticated its client, or its connection is gone."""
        self.handshaking.discard(p)
        if not self.handshaking:
            for f in self._idle:
                if not f.done():
                    f.set_result(None)
            self._idle = []

    def close(self) -> None:
        """Ends every handshake in flight (reported to on_handshake as
        ConnectionAbortedError) and every drain of a refused connection."""
        from ._server import _server_closed

        self.closed = True
        for p in list(self.handshaking):
            p._cancel_handshake(_server_closed())

    async def wait_idle(self) -> None:
        """Returns when the connections close() ended are gone."""
        if self.handshaking:
            f: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
            self._idle.append(f)
            await f

    def take(self, p: "_HmacAuthProtocol", ip: str, peer: Any) -> Any:
        """Takes a slot for p, a connection from peer whose per-IP bucket
        (for IPv6, its /64) is ip, evicting a handshake if every slot is
        taken: the slot to give back, or the ConnectionShed to report.
        asyncio accepts without waiting: a connection that finds every slot
        taken by handshakes that may not be evicted yet is shed."""
        from ._server import ConnectionShed, _EVICT_GRACE, _Pending, _shed_per_ip

        slots = self.slots
        if not slots.admit(ip):
            return _shed_per_ip(peer, slots.max_per_ip)
        now = time.monotonic()
        while not slots.take():
            v, _ = slots.victim(now, True)
            if v is None:
                slots.release(ip)
                return ConnectionShed(
                    "all %d handshake slots (max_handshakes) are taken by handshakes that took a step or started "
                    "within the last %.0fms, or not yet read; if honest clients are shed, raise max_handshakes"
                    % (slots.max_total, _EVICT_GRACE * 1000))
            v.evict()  # frees its slot at once
        # Ranked from the loop's next turn, as Go's unstarted handshakes: a
        # key holder whose ClientHello waits unread behind a long turn of
        # the loop (a flood) has had no chance to take its step yet.
        slot = _Pending(p._evict, ip)
        slots.launch(slot)
        asyncio.get_running_loop().call_soon(self._track, slot)
        return slot

    def _track(self, slot: Any) -> None:
        self.slots.track(slot, time.monotonic())

    def progress(self, slot: Any) -> None:
        if slot is not None:
            self.slots.progress(slot, time.monotonic())

    def give(self, slot: Any) -> None:
        """Gives back the slot of a handshake that ended."""
        self.slots.finish(slot)
        self.slots.release(slot.ip)
        self.slots.give()


async def open_connection(
    host: Optional[str] = None,
    port: Optional[int] = None,
    context: Optional[Context] = None,
    *,
    limit: int = _LIMIT,
    **kwds: Any,
) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connects, runs the client handshake and returns (reader, writer), as
    asyncio.open_connection. Handshake failures raise AuthFailed,
    ProtocolError or HandshakeTimeout. writer.get_extra_info("connection_state")
    gives the ConnectionState (key_id, mode, exporter)."""
    if context is None:
        raise TypeError("open_connection needs an hmacauth Context")
    ctx = context
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    app = asyncio.StreamReaderProtocol(reader, loop=loop)
    waiter: "asyncio.Future[_AppTransport]" = loop.create_future()
    # host and port are None when kwds has sock=, which the stub's
    # overloads of create_connection cannot express with Optional.
    transport, _ = await loop.create_connection(
        lambda: _HmacAuthProtocol(ctx, False, app, waiter), host, port, **kwds  # type: ignore[arg-type]
    )
    try:
        app_transport = await waiter
    except BaseException:
        transport.close()
        raise
    return reader, asyncio.StreamWriter(app_transport, app, reader, loop)


async def start_server(
    client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Union[None, Awaitable[None]]],
    host: Any = None,
    port: Optional[int] = None,
    context: Optional[Context] = None,
    *,
    limit: int = _LIMIT,
    **kwds: Any,
) -> asyncio.AbstractServer:
    """Starts a server whose client_connected_cb gets only authenticated
    connections, as asyncio.start_server. Each handshake runs concurrently
    under the context's handshake timeout; refused connections are closed
    without a byte and without a reset, and reported to
    context.on_handshake. As the threaded Listener, it caps the handshakes
    in flight at context.max_handshakes overall and
    context.max_handshakes_per_ip per remote IP (a connection over it is
    closed at once and reported as ConnectionShed), and when every slot is
    taken a new connection evicts the handshake that has made the least
    progress for the longest (ranked from the loop's turn after it was
    accepted, in which it is read), once that has waited 50 ms (reported as
    ConnectionShed); a connection that finds none evictable yet is closed
    at once (ConnectionShed)."""
    if context is None:
        raise TypeError("start_server needs an hmacauth Context")
    loop = asyncio.get_running_loop()
    caps = _Caps(context)
    from ._server import HandshakeEvent, _report

    def done(peer: Any, key_id: str, duration: float, err: Optional[BaseException]) -> None:
        _report(context, HandshakeEvent(peer, key_id, duration, err))  # type: ignore[arg-type]

    def factory() -> _HmacAuthProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        app = asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)
        return _HmacAuthProtocol(context, True, app, None, done, caps)  # type: ignore[arg-type]

    srv = await loop.create_server(factory, host, port, **kwds)
    return _Server(srv, caps)


class _Server(asyncio.AbstractServer):
    """asyncio's Server, whose close() also ends the handshakes in flight
    (their connections close; each is reported to on_handshake as
    ConnectionAbortedError) and the drains of refused connections, and
    whose wait_closed() also waits for those connections to be gone: a
    closed server leaves no handshake running and no callback to come.
    Authenticated connections are left to the application, as asyncio's."""

    def __init__(self, srv: asyncio.AbstractServer, caps: _Caps) -> None:
        self._srv = srv
        self._caps = caps
        self._forever: Optional["asyncio.Future[None]"] = None

    def __getattr__(self, name: str) -> Any:
        # sockets, and what newer Pythons add (close_clients, abort_clients).
        return getattr(self._srv, name)

    def close(self) -> None:
        self._srv.close()
        self._caps.close()
        if self._forever is not None and not self._forever.done():
            self._forever.cancel()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._srv.get_loop()

    def is_serving(self) -> bool:
        return self._srv.is_serving()

    async def start_serving(self) -> None:
        await self._srv.start_serving()

    async def serve_forever(self) -> None:
        """As asyncio's: serves until cancelled or closed, then closes."""
        if self._forever is not None:
            raise RuntimeError("server %r is already being awaited on serve_forever()" % (self,))
        if self._caps.closed:
            raise RuntimeError("server %r is closed" % (self,))
        await self._srv.start_serving()
        self._forever = self._srv.get_loop().create_future()
        try:
            await self._forever
        finally:
            self._forever = None
            self.close()
            await self.wait_closed()

    async def wait_closed(self) -> None:
        await self._caps.wait_idle()
        await self._srv.wait_closed()

    def __repr__(self) -> str:
        return "<hmacauth asyncio server %r>" % (self._srv,)
