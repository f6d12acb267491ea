"""HmacAuthSocket: an hmacauth connection over a blocking socket, with the
habits of ssl.SSLSocket."""

from __future__ import annotations

import errno
import io
import math
import select
import socket
import threading
import time
from typing import Any, List, Optional, Tuple, cast

from ._context import Context, Mode
from ._errors import AuthFailed, HandshakeTimeout, HmacAuthError, ProtocolError, quote
from ._handshake import (
    CLIENT_FINISHED_LEN,
    CLIENT_HELLO_LEN,
    FLAG_FORWARD_SECRECY,
    HEADER_LEN,
    MSG_CLIENT_HELLO,
    MSG_SERVER_HELLO,
    SERVER_HELLO_LEN,
    ClientHandshake,
    Result,
    ServerHandshake,
    check_header,
    export,
    wipe,
)
from ._progress import failed, progress
from ._record import (  # constants and classes only: 'cryptography' is imported on first use
    HEADER,
    MAX_PAYLOAD,
    MAX_RECORD,
    REC_CLOSE,
    REC_DATA,
    TAG,
    record_layer,
)

__all__ = ["HmacAuthSocket", "ConnectionState", "create_connection"]

# A refused handshake's peer may have sent more than was read; closing then
# would send a reset. So the refusing side half-closes and discards up to
# this much, for up to this long, before it closes (PROTOCOL.md 7.2 step 4).
REFUSE_DRAIN_BYTES = 64 * 1024
REFUSE_DRAIN_SECONDS = 0.5
# Close sends the close record only if it goes out within this time.
CLOSE_RECORD_TIMEOUT = 5.0

_CLOSED_BY_PEER = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)

# A handshake on a blocking socket does its I/O with MSG_DONTWAIT and waits
# in poll() for the deadline, where the platform has both (Linux, the BSDs,
# macOS): the socket stays blocking, instead of being switched to timeout
# mode and back (an ioctl each time) and then polling before every read and
# write. Each of those system calls releases the GIL, which a server with a
# thread per connection pays for in thread switches.
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0) if hasattr(select, "poll") else 0


def _addr(a: Any) -> str:
    if isinstance(a, tuple) and len(a) >= 2:
        host = a[0]
        return ("[%s]:%d" if ":" in host else "%s:%d") % (host, a[1])
    return str(a)


def refuse(sock: socket.socket) -> None:
    """Closes a refused connection without a reset: half-close, discard
    what the client sent (bounded), then close."""
    try:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        deadline = time.monotonic() + REFUSE_DRAIN_SECONDS
        left = REFUSE_DRAIN_BYTES
        buf = bytearray(16384)
        while left > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            try:
                n = sock.recv_into(buf, min(left, len(buf)))
            except OSError:
                break
            if n == 0:
                break
            left -= n
    finally:
        sock.close()


class ConnectionState:
    """The state of an established connection, with its own copy of the
    session secret: one taken before close still exports."""

    __slots__ = ("handshake_complete", "key_id", "mode", "forward_secrecy", "cipher", "_secret")

    def __init__(self, res: Optional[Result] = None, secret: Optional[bytes] = None) -> None:
        self.handshake_complete = res is not None
        self.key_id = res.key_id if res else ""
        self.mode = Mode(res.mode) if res else Mode.AUTH
        self.forward_secrecy = bool(res.flags & FLAG_FORWARD_SECRECY) if res else False
        self.cipher: Optional[str] = None
        if res and res.mode != Mode.AUTH:
            self.cipher = "ChaCha20-Poly1305" if res.flags & 2 else "AES-256-GCM"
        self._secret = secret

    def export_keying_material(self, label: bytes, context: Optional[bytes], length: int) -> bytes:
        """length bytes bound to this connection (PROTOCOL.md 8); both sides
        get the same. No context and an empty context are the same."""
        if self.handshake_complete and self._secret is None:
            from ._errors import ExportError

            raise ExportError(
                "the connection was closed before connection_state was called, and close cleared the session secret; "
                "call connection_state before close"
            )
        return export(self._secret, label, context, length)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        raise TypeError("hmacauth.ConnectionState is not picklable: it holds the session secret")

    def __repr__(self) -> str:
        return "hmacauth.ConnectionState(handshake_complete=%r, key_id=%r, mode=%s, forward_secrecy=%r)" % (
            self.handshake_complete,
            self.key_id,
            self.mode,
            self.forward_secrecy,
        )


class HmacAuthSocket:
    """An hmacauth connection, made by Context.wrap_socket or
    create_connection. It behaves like a socket: send, sendall, recv,
    recv_into, makefile, shutdown, close, settimeout, fileno, and it is a
    context manager. In ModeAuth the bytes after the handshake are the
    socket's own; in the other modes they travel in records, and recv
    returns b"" only at the peer's close record (a cut stream raises
    IntegrityError). Reads and writes may run in two threads at once.
    """

    def __init__(self, sock: socket.socket, context: Context, server_side: bool = False) -> None:
        if sock.type != socket.SOCK_STREAM:
            raise ValueError("hmacauth needs a stream socket")
        self._sock = sock
        self.context = context
        self.server_side = server_side
        self._res: Optional[Result] = None
        self._hs_err: Optional[BaseException] = None
        self._mode = Mode.AUTH
        self._rlock = threading.Lock()
        self._wlock = threading.Lock()
        self._sealer: Any = None
        self._opener: Any = None
        self._rbuf = bytearray(0)
        self._rmv = memoryview(self._rbuf)
        self._rstart = 0
        self._rend = 0
        self._plain: Any = _EMPTY
        self._poff = 0
        self._rerr: Optional[Exception] = None
        self._reset_seen = False
        self._eof = False
        self._read_closed = False
        self._write_closed = False
        self._pending: List[memoryview] = []
        # The deadline of the read (under _rlock) and of the write (under
        # _wlock) in progress, or None, and whether its first system call
        # is still to come; see _start_call and _before_syscall.
        self._rdeadline: Optional[float] = None
        self._wdeadline: Optional[float] = None
        self._rfirst = self._wfirst = False
        self._closed = False
        self._real_closed = False
        self._io_refs = 0
        self._hs_lock = threading.Lock()
        self._hs_dontwait = 0
        self._secret_lock = threading.Lock()
        try:
            self._peer = _addr(sock.getpeername())
        except OSError:
            self._peer = "?"

    # -- the handshake ---------------------------------------------------

    def do_handshake(self) -> None:
        """Runs the handshake, once; later calls re-raise its error."""
        with self._hs_lock:
            if self._res is not None:
                return
            if self._hs_err is not None:
                raise self._hs_err
            ctx = self.context
            user_timeout = self._sock.gettimeout()
            self._hs_dontwait = _DONTWAIT if user_timeout is None else 0
            limits = [t for t in (ctx.handshake_timeout, user_timeout) if t]
            deadline = time.monotonic() + min(limits) if limits else None
            started = time.monotonic()
            try:
                if self.server_side:
                    res = self._server_handshake(deadline)
                else:
                    res = self._client_handshake(deadline)
                # Inside the try: a connection whose record layer cannot be
                # set up is closed, not left half open.
                self._setup(res)
            except socket.timeout:
                err: BaseException = HandshakeTimeout("after %.3fs" % (time.monotonic() - started))
                self._hs_failed(err)
                raise err from None
            except BaseException as e:
                self._hs_failed(e)
                raise
            if not self._hs_dontwait:
                try:
                    self._sock.settimeout(user_timeout)
                except OSError:
                    pass

    def _hs_failed(self, e: BaseException) -> None:
        self._hs_err = e
        if self.server_side:
            failed()  # before the drain: a Listener that evicts it then keeps this reason
            refuse(self._sock)
        else:
            self._sock.close()

    def _op_timeout(self, deadline: Optional[float]) -> None:
        if deadline is None:
            self._sock.settimeout(None)
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("handshake deadline passed")
        self._sock.settimeout(left)

    def _hs_wait(self, deadline: Optional[float], write: bool) -> None:
        """Waits (with _hs_dontwait) until the socket is ready, raising
        socket.timeout at the deadline."""
        self._wait(deadline, write, "handshake deadline passed")

    def _wait(self, deadline: Optional[float], write: bool, what: str) -> None:
        """Waits until the socket is ready to read (or write), raising
        socket.timeout(what) at the deadline (None: none)."""
        left = None
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout(what)
        fd = self._sock.fileno()
        if fd < 0:
            raise OSError(errno.EBADF, "hmacauth: the socket was closed")
        if hasattr(select, "poll"):
            p = select.poll()
            p.register(fd, select.POLLOUT if write else select.POLLIN)
            ready = bool(p.poll(None if left is None else max(1, math.ceil(left * 1000))))
        else:  # Windows
            r, w, _ = select.select([] if write else [fd], [fd] if write else [], [], left)
            ready = bool(r or w)
        if not ready:
            raise socket.timeout(what)

    def _start_call(self, write: bool, t: Optional[float] = None) -> None:
        """Starts the deadline of a recv or send call (t seconds, by default
        the socket's timeout), under the call's lock: settimeout bounds the
        whole call, as for socket.sendall and ssl.SSLSocket, not each of the
        system calls it makes (a peer trickling a record could otherwise
        hold it for up to a record's length times the timeout). None on a
        blocking or non-blocking socket: no extra system call."""
        if t is None:
            t = self._sock.gettimeout()
        deadline = time.monotonic() + t if t else None
        if write:
            self._wdeadline, self._wfirst = deadline, True
        else:
            self._rdeadline, self._rfirst = deadline, True

    def _before_syscall(self, write: bool) -> None:
        """Called, with a deadline set, before each system call of a recv or
        send call. The first waits under the socket's own timeout, which
        starts with it (one poll saved where one call suffices, as for most
        records); each later one first waits in _wait for what is left. The
        socket's timeout is left alone: a reader and a writer may run at
        once."""
        if write:
            if self._wfirst:
                self._wfirst = False
            else:
                self._wait(self._wdeadline, True, "timed out")
        elif self._rfirst:
            self._rfirst = False
        else:
            self._wait(self._rdeadline, False, "timed out")

    def _hs_recv_into(self, view: memoryview, deadline: Optional[float], reply: bool) -> int:
        """One read. A reply (a message the peer sends only after it has
        read and answered ours) is waited for first: a read that would fail
        with EAGAIN first would be one more system call."""
        if not self._hs_dontwait:
            self._op_timeout(deadline)
            return self._sock.recv_into(view)
        if reply:
            self._hs_wait(deadline, False)
        while True:
            try:
                return self._sock.recv_into(view, 0, self._hs_dontwait)
            except (BlockingIOError, InterruptedError):
                self._hs_wait(deadline, False)

    def _hs_send(self, data: bytes, deadline: Optional[float], step: str) -> None:
        try:
            if self._hs_dontwait:
                mv = memoryview(data)
                while len(mv):
                    try:
                        mv = mv[self._sock.send(mv, self._hs_dontwait) :]
                    except (BlockingIOError, InterruptedError):
                        self._hs_wait(deadline, True)
                return
            self._op_timeout(deadline)
            self._sock.sendall(data)
        except socket.timeout:
            raise
        except OSError as e:
            raise type(e)(e.errno, "%s: %s" % (step, e.strerror or e)) from None

    def _hs_read(
        self, buf: bytearray, deadline: Optional[float], want: Optional[int], name: str, reply: bool = True
    ) -> int:
        """Reads exactly len(buf) bytes, checking the header of message type
        want as it arrives (none for want None: the ClientFinished has no
        header). Returns len(buf), or the number read before an end of
        stream (a reset counts as one)."""
        mv = memoryview(buf)
        n = 0
        while n < len(buf):
            try:
                m = self._hs_recv_into(mv[n:], deadline, reply and n == 0)
            except _CLOSED_BY_PEER:
                m = 0
            if m == 0:
                return n
            n += m
            if want is not None and n - m < HEADER_LEN:
                check_header(mv[: min(n, HEADER_LEN)], want, name)
        return n

    def _client_handshake(self, deadline: Optional[float]) -> Result:
        ctx = self.context
        ks = ctx._keyset.first
        assert ks is not None
        lifetime = ctx.key_share_lifetime
        hs = ClientHandshake(
            ks,
            int(ctx.mode),
            ctx.forward_secrecy,
            ctx.prefer_chacha20,
            rand=ctx._testing_only_rand or _urandom,
            shares=ctx._shares if lifetime else None,
            share_lifetime=lifetime or 0.0,
        )
        ch = hs.client_hello()
        ctx._nonces.add(hs.nonce)
        try:
            self._hs_send(ch, deadline, "sending the ClientHello")
            sh = bytearray(SERVER_HELLO_LEN)
            n = self._hs_read(sh, deadline, MSG_SERVER_HELLO, "ServerHello")
        finally:
            ctx._nonces.discard(hs.nonce)
        if n == 0:
            raise AuthFailed(
                "the server closed the connection without a word: closed during the handshake (wrong key, shed, or the "
                "server stopping); check that it has key ID %s with the same secret" % quote(ks.id)
            )
        if n < HEADER_LEN:
            raise ProtocolError("the server sent %s and closed: it does not speak hmacauth" % quote(bytes(sh[:n])))
        if n < SERVER_HELLO_LEN:
            raise ProtocolError("the server closed the connection in the middle of its ServerHello")
        cf = hs.server_hello(sh)
        self._hs_send(cf, deadline, "sending the ClientFinished")
        assert hs.result is not None
        return hs.result

    def _server_handshake(self, deadline: Optional[float]) -> Result:
        ctx = self.context
        lifetime = ctx.key_share_lifetime
        # A handshake without any deadline makes a key pair of its own
        # (PROTOCOL.md 7.3): a shared one could be held without bound.
        reuse = bool(lifetime) and deadline is not None
        hs = ServerHandshake(
            ctx._keyset,
            int(ctx.mode),
            ctx.forward_secrecy,
            ctx.prefer_chacha20,
            rand=ctx._testing_only_rand or _urandom,
            shares=ctx._shares if reuse else None,
            share_lifetime=lifetime or 0.0,
            nonces=ctx._nonces,
        )
        self._claimed_key_id = ""
        ch = bytearray(CLIENT_HELLO_LEN)
        # The ClientHello is usually there already: the client sends it
        # right after connecting.
        n = self._hs_read(ch, deadline, MSG_CLIENT_HELLO, "ClientHello", reply=False)
        if n < CLIENT_HELLO_LEN:
            raise ProtocolError("the client closed the connection after %d bytes, before a whole ClientHello" % n)
        try:
            try:
                sh = hs.client_hello(ch)
            finally:
                self._claimed_key_id = hs.key_id
            progress()  # for a Listener's eviction order
            self._hs_send(sh, deadline, "sending the ServerHello")
            cf = bytearray(CLIENT_FINISHED_LEN)
            if self._hs_read(cf, deadline, None, "ClientFinished") < CLIENT_FINISHED_LEN:
                raise AuthFailed(
                    "the client closed the connection instead of proving key %s: it did not accept this server's proof "
                    "(different secret?), or it replayed a ClientHello" % quote(hs.key_id)
                )
            return hs.client_finished(cf)
        finally:
            hs.release()

    def _setup(self, res: Result) -> None:
        """Sets up the record layer; the connection counts as established
        (self._res) only once that worked."""
        if res.mode != Mode.AUTH:
            self._setup_records(res)
        self._mode = Mode(res.mode)
        self._res = res

    def _setup_records(self, res: Result) -> None:
        sealer, opener, err = record_layer(
            res.secret, int(res.mode), res.flags, self.server_side, self._peer,
            self.context._testing_only_update_bytes, True,
        )
        if err is not None:
            raise err  # here, where no frame holds a traffic secret
        self._sealer, self._opener = sealer, opener

    # -- properties ------------------------------------------------------

    @property
    def key_id(self) -> Optional[str]:
        """The ID of the key both sides proved, None before the handshake."""
        return self._res.key_id if self._res else None

    @property
    def mode(self) -> Optional[Mode]:
        return self._mode if self._res else None

    def connection_state(self) -> ConnectionState:
        if self._res is None:
            return ConnectionState()
        with self._secret_lock:
            secret = bytes(self._res.secret) if not self._closed else None
        return ConnectionState(self._res, secret)

    def export_keying_material(self, label: bytes, context: Optional[bytes], length: int) -> bytes:
        """Keying material bound to this connection (PROTOCOL.md 8)."""
        return self.connection_state().export_keying_material(label, context, length)

    # -- reading ---------------------------------------------------------

    def _need(self) -> None:
        if self._res is None:
            self.do_handshake()

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._need()
        if self._mode == Mode.AUTH:
            return self._sock.recv(bufsize, flags)
        if flags:
            raise ValueError("flags are not supported on an hmacauth record connection")
        # As socket.recv: a negative size is an error, zero returns at once.
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        if bufsize == 0:
            return b""
        with self._rlock:
            self._start_call(False)
            p, off = self._plain, self._poff
            if off >= len(p):
                p, off = self._next_payload(None), 0
                if p is None:
                    return b""
            end = min(len(p), off + bufsize)
            data = bytes(p[off:end])
            if end < len(p):
                self._plain, self._poff = p, end
            else:
                self._plain, self._poff = _EMPTY, 0
            return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self._need()
        if self._mode == Mode.AUTH:
            return self._sock.recv_into(buffer, nbytes, flags)
        if flags:
            raise ValueError("flags are not supported on an hmacauth record connection")
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        with memoryview(buffer) as whole:
            out = whole.cast("B")
            if nbytes > len(out):
                raise ValueError("buffer too small for requested bytes")
            if nbytes:
                out = out[:nbytes]
            if len(out) == 0:
                return 0
            with self._rlock:
                self._start_call(False)
                p, off = self._plain, self._poff
                if off >= len(p):
                    # A record that fits is decrypted straight into buffer.
                    p, off = self._next_payload(out), 0
                    if p is None:
                        return 0
                    if self._opener.into_out:
                        return len(p)
                n = min(len(out), len(p) - off)
                out[:n] = p[off : off + n]
                if off + n < len(p):
                    self._plain, self._poff = p, off + n
                else:
                    self._plain, self._poff = _EMPTY, 0
                return n

    def _next_payload(self, out: Optional[memoryview]) -> Optional[memoryview]:
        """Reads records up to the next one with data and returns its
        payload (in out, if given and large enough, in ModeSealed), or None
        at the end of the stream."""
        if self._real_closed:
            raise OSError(errno.EBADF, "hmacauth: read after close")
        if self._rerr is not None:
            raise self._rerr
        if self._eof or self._read_closed:
            return None

        while True:
            self._read_at_least(HEADER)
            s = self._rstart
            n = int.from_bytes(self._rmv[s + 1 : s + 4], "big")
            try:
                self._opener.check_length(n)
            except HmacAuthError as e:
                self._rerr = e
                raise
            total = HEADER + n + TAG
            self._read_at_least(total)
            s = self._rstart
            try:
                typ, payload = self._opener.open(self._rmv[s : s + total], out)
            except HmacAuthError as e:
                self._rerr = e
                raise
            self._rstart += total
            if typ == REC_DATA:
                if len(payload):
                    return cast(memoryview, payload)
            elif typ == REC_CLOSE:
                self._eof = True
                return None

    def _read_at_least(self, n: int) -> int:
        """Makes n bytes available from _rstart; an end of stream here is a
        cut stream, which raises IntegrityError."""
        have = self._rend - self._rstart
        if have >= n:
            return n
        if self._rstart + n > len(self._rbuf):
            # Move what is left to the front, growing the buffer (doubling,
            # up to one whole record and some read-ahead) if it is too small.

            size = len(self._rbuf)
            if n > size:
                size = max(n, min(max(2 * size, 16384), MAX_RECORD + 16384))
            left = bytes(self._rmv[self._rstart : self._rend])
            if size != len(self._rbuf):
                self._rmv.release()
                self._rbuf = bytearray(size)
                self._rmv = memoryview(self._rbuf)
            self._rmv[: len(left)] = left
            self._rstart, self._rend = 0, len(left)
        while self._rend - self._rstart < n:
            if self._rdeadline is not None:
                self._before_syscall(False)
            try:
                m = self._sock.recv_into(self._rmv[self._rend :])
            except ConnectionResetError:
                if self._reset_seen:
                    m = 0
                else:
                    self._reset_seen = True
                    raise
            if m == 0 and self._real_closed:
                raise OSError(errno.EBADF, "hmacauth: read after close (close was called while this read waited)")
            if m == 0:
                if self._rend == self._rstart:
                    what = "the connection ended without a close record: the stream was cut (unexpected EOF)"
                else:
                    what = "the connection ended in the middle of record %d: the stream was cut (unexpected EOF)" % self._opener.d.seq
                err: Exception = self._opener.integrity(what)
                self._rerr = err
                raise err
            self._rend += m
        return n

    # -- writing ---------------------------------------------------------

    def _flush_pending(self) -> None:
        while self._pending:
            self._send_buffers(self._pending)

    def _send_buffers(self, bufs: List[Any], flags: int = 0) -> None:
        """Sends every buffer; on an error, what is unsent stays in
        self._pending and goes out first next time."""
        views = [memoryview(b).cast("B") for b in bufs]
        views = [v for v in views if len(v)]
        self._pending = []
        sendmsg = getattr(self._sock, "sendmsg", None)
        try:
            while views:
                if self._wdeadline is not None:
                    self._before_syscall(True)
                if sendmsg is not None:
                    n = sendmsg(views[:64], (), flags)
                else:
                    n = self._sock.send(views[0], flags)
                while n:
                    if n >= len(views[0]):
                        n -= len(views[0])
                        views.pop(0)
                    else:
                        views[0] = views[0][n:]
                        n = 0
        except BaseException:
            # The views may point into the sealer's reused buffer, which
            # the next record overwrites: keep a copy of what is unsent.
            self._pending = [memoryview(bytes(v)) for v in views]
            raise

    def _check_write(self) -> None:
        if self._real_closed:
            raise OSError(errno.EBADF, "hmacauth: write after close")
        if self._write_closed:
            raise OSError(errno.EPIPE, "hmacauth: write after shutdown(SHUT_WR) or close")

    def send(self, data: Any, flags: int = 0) -> int:
        """Sends one record of up to 256 KiB of data; returns its length.
        Once the record is sealed its data is taken: if the socket would
        block or times out before all of it went out, send still returns
        its length and the rest goes out first at the next write (a retry
        of the same data would send it twice). It raises BlockingIOError or
        a timeout only when nothing of data was taken."""
        self._need()
        if self._mode == Mode.AUTH:
            return self._sock.send(data, flags)

        mv = memoryview(data).cast("B")
        if len(mv) == 0:
            return 0
        with self._wlock:
            self._start_call(True)
            self._check_write()
            self._flush_pending()
            chunk = mv[:MAX_PAYLOAD]
            try:
                self._send_buffers(self._sealer.seal(REC_DATA, chunk))
            except (BlockingIOError, InterruptedError, socket.timeout):
                pass  # the unsent rest is in self._pending
            return len(chunk)

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Sends all of data. As socket.sendall, on a timeout or error there
        is no telling how much was taken: the records already sealed go out
        first at the next write, so sending the same data again would
        duplicate part of it; after a timeout, close the connection."""
        self._need()
        if self._mode == Mode.AUTH:
            self._sock.sendall(data, flags)
            return

        mv = memoryview(data).cast("B")
        with self._wlock:
            self._start_call(True)
            self._check_write()
            self._flush_pending()
            for off in range(0, len(mv), MAX_PAYLOAD):
                self._send_buffers(self._sealer.seal(REC_DATA, mv[off : off + MAX_PAYLOAD]))

    def write(self, data: Any) -> int:
        self.sendall(data)
        return len(memoryview(data).cast("B"))

    def read(self, n: int = 65536) -> bytes:
        return self.recv(n)

    def sendfile(self, file: Any, offset: int = 0, count: Optional[int] = None) -> int:
        """Sends a file's contents (through records, so never os.sendfile)."""
        if offset:
            file.seek(offset)
        total = 0
        while count is None or total < count:
            chunk = file.read(262144 if count is None else min(262144, count - total))
            if not chunk:
                break
            self.sendall(chunk)
            total += len(chunk)
        return total

    # -- closing ---------------------------------------------------------

    def _send_close_record(self, flags: int = 0) -> None:
        """Seals the close record and sends it after what is pending; on an
        error, the unsent rest stays in self._pending."""
        if self._write_closed or self._sealer is None:
            self._write_closed = True
            return
        self._write_closed = True
        bufs: List[Any] = list(self._pending)
        self._pending = []
        bufs.extend(self._sealer.seal(REC_CLOSE))
        self._send_buffers(bufs, flags)

    def _close_record_at_close(self) -> None:
        """Sends the close record from close(), after what is pending. On a
        blocking socket it first tries one sendmsg with MSG_DONTWAIT, which
        nearly always takes the 20 bytes; switching the socket to timeout
        mode instead would cost an ioctl and a poll before the send, each a
        system call that releases the GIL (costly with a thread per
        connection). Otherwise it gives up after CLOSE_RECORD_TIMEOUT (or
        the socket's timeout, if shorter) for the whole of it, as a send
        call is bounded: not per system call, which a peer reading slowly
        could stretch to the pending data's length times the timeout."""
        self._wdeadline = None
        t = self._sock.gettimeout()
        if t is None and _DONTWAIT:
            try:
                self._send_close_record(_DONTWAIT)
                return
            except (BlockingIOError, InterruptedError):
                pass  # the unsent rest is in self._pending
        limit = self.context._testing_only_close_record_timeout or CLOSE_RECORD_TIMEOUT
        if t and t < limit:
            limit = t
        self._sock.settimeout(limit)
        self._start_call(True, limit)
        if self._write_closed:
            self._flush_pending()
        else:
            self._send_close_record()

    def shutdown(self, how: int) -> None:
        """SHUT_WR sends the close record (in the record modes) and shuts
        down the socket's write side; SHUT_RD stops reading."""
        if how in (socket.SHUT_WR, socket.SHUT_RDWR) and self._mode != Mode.AUTH:
            with self._wlock:
                self._start_call(True)
                if not self._write_closed:
                    self._send_close_record()
        if how in (socket.SHUT_RD, socket.SHUT_RDWR):
            self._read_closed = True
        self._sock.shutdown(how)

    def close(self) -> None:
        """Sends the close record (in the record modes, if no send is in
        progress in another thread and it goes out, after what a timed-out
        send left, within 5 s or the socket's timeout if shorter, all
        told), closes the socket and drops the session secrets. A recv or (in the record
        modes) a sendall blocked in another thread raises OSError."""
        if self._closed:
            return
        self._closed = True
        if self._io_refs <= 0:
            self._real_close()

    def _real_close(self) -> None:
        if self._real_closed:
            return
        self._real_closed = True
        records = self._res is not None and self._mode != Mode.AUTH
        writing = False
        if records:
            if self._wlock.acquire(blocking=False):
                try:
                    if not self._write_closed:
                        self._close_record_at_close()
                except OSError:
                    pass
                finally:
                    self._wlock.release()
            else:
                writing = True
        # Wakes a recv or a send blocked in another thread (close alone does
        # not). In the record modes every read holds _rlock and every write
        # _wlock, so without a reader or a writer (the common case: one more
        # system call saved) there is none to wake; _real_closed, set
        # above, stops one that starts now.
        how = None
        if writing:
            how = socket.SHUT_RDWR
        elif not records or self._rlock.locked():
            how = socket.SHUT_RD
        if how is not None:
            try:
                self._sock.shutdown(how)
            except OSError:
                pass
        self._sock.close()
        with self._secret_lock:
            if self._res is not None:
                wipe(self._res.secret)
        # Each direction's traffic secret, unless a call in another thread
        # is using it; the AEAD objects go with the connection.
        for lock, part in ((self._rlock, self._opener), (self._wlock, self._sealer)):
            if part is not None and lock.acquire(blocking=False):
                try:
                    part.d.clear()
                finally:
                    lock.release()

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed and self._io_refs <= 0:
            self._real_close()

    def makefile(self, mode: str = "r", buffering: Optional[int] = None, *, encoding: Optional[str] = None,
                 errors: Optional[str] = None, newline: Optional[str] = None) -> Any:
        """As socket.makefile: a file object over this connection."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError("invalid mode %r (only r, w, b allowed)" % (mode,))
        writing = "w" in mode
        reading = "r" in mode or not writing
        assert reading or writing
        binary = "b" in mode
        rawmode = ""
        if reading:
            rawmode += "r"
        if writing:
            rawmode += "w"
        raw = socket.SocketIO(self, rawmode)  # type: ignore[arg-type]
        self._io_refs += 1
        if buffering is None:
            buffering = -1
        if buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if not binary:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buf: Any
        if reading and writing:
            buf = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buf = io.BufferedReader(raw, buffering)
        else:
            buf = io.BufferedWriter(raw, buffering)
        if binary:
            return buf
        text = io.TextIOWrapper(buf, encoding, errors, newline)
        text.mode = mode  # type: ignore[misc]
        return text

    # -- the rest of the socket interface --------------------------------

    def fileno(self) -> int:
        return self._sock.fileno()

    def settimeout(self, value: Optional[float]) -> None:
        """As socket.settimeout; in the record modes the timeout bounds
        each recv, recv_into, send and sendall as a whole."""
        self._sock.settimeout(value)

    def gettimeout(self) -> Optional[float]:
        return self._sock.gettimeout()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def setsockopt(self, *args: Any) -> None:
        self._sock.setsockopt(*args)

    def getsockopt(self, *args: Any) -> Any:
        return self._sock.getsockopt(*args)

    @property
    def family(self) -> int:
        return self._sock.family

    @property
    def type(self) -> int:
        return self._sock.type

    def __enter__(self) -> "HmacAuthSocket":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<hmacauth.HmacAuthSocket peer=%s key_id=%r mode=%s%s>" % (
            self._peer,
            self.key_id,
            self._mode if self._res else None,
            " closed" if self._closed else "",
        )


_EMPTY = memoryview(b"")


def _urandom(n: int) -> bytes:
    import secrets

    return secrets.token_bytes(n)


def create_connection(
    address: Tuple[str, int],
    context: Context,
    timeout: Optional[float] = None,
    source_address: Optional[Tuple[str, int]] = None,
) -> HmacAuthSocket:
    """Connects to address and runs the client handshake: returns an
    authenticated HmacAuthSocket, or raises (AuthFailed, ProtocolError,
    HandshakeTimeout, OSError)."""
    sock = socket.create_connection(address, timeout, source_address)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    return context.wrap_socket(sock, server_side=False)
