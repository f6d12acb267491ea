"""HmacAuthSocket over loopback TCP: every mode, big transfers, closing,
the exporter, refusals and key updates."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import unittest
from typing import Any

from _support import HAVE_CRYPTO, WAIT, Thread, listener, modes, needs_crypto, pair, recv_all, recv_exactly, make_key

import hmacauth
from hmacauth import Context, Mode
from hmacauth._record import HEADER, MAX_PAYLOAD, TAG

MIB16 = os.urandom(16 << 20) if HAVE_CRYPTO else b""


def ctxs(mode: Mode = Mode.AUTH, fs: bool = False, **kw):  # type: ignore[no-untyped-def]
    k = make_key()
    return Context([k], mode, forward_secrecy=fs, **kw), Context([k], mode, forward_secrecy=fs, **kw)


class Modes(unittest.TestCase):
    def test_echo_every_mode(self) -> None:
        for mode, fs in modes():
            with self.subTest(mode=str(mode), fs=fs):
                cc, sc = ctxs(mode, fs)
                c, s = pair(cc, sc)
                with c, s:
                    self.assertEqual(c.key_id, "test-key")
                    self.assertEqual(s.key_id, "test-key")
                    st = c.connection_state()
                    self.assertTrue(st.handshake_complete)
                    self.assertEqual(st.mode, mode)
                    self.assertEqual(st.forward_secrecy, fs)
                    c.sendall(b"ping")
                    self.assertEqual(recv_exactly(s, 4), b"ping")
                    s.sendall(b"pong!")
                    self.assertEqual(recv_exactly(c, 5), b"pong!")
                    e1 = c.export_keying_material(b"label", b"ctx", 48)
                    e2 = s.export_keying_material(b"label", b"ctx", 48)
                    self.assertEqual(e1, e2)
                    self.assertEqual(len(e1), 48)
                    self.assertEqual(c.export_keying_material(b"l", None, 16), s.export_keying_material(b"l", b"", 16))
                    self.assertNotEqual(e1, c.export_keying_material(b"label", b"ctx2", 48))
                    with self.assertRaises(hmacauth.ExportError):
                        c.export_keying_material(b"l", b"", 8161)

    @needs_crypto
    def test_16mib_both_ways_half_close(self) -> None:
        for mode, fs in modes():
            with self.subTest(mode=str(mode), fs=fs):
                cc, sc = ctxs(mode, fs)
                c, s = pair(cc, sc)
                with c, s:
                    def server() -> bytes:
                        got = recv_all(s)  # until the client's half-close
                        s.sendall(hashlib.sha256(got).digest())
                        s.sendall(MIB16)
                        s.shutdown(socket.SHUT_WR)
                        return got

                    t = Thread(server)
                    c.sendall(MIB16)
                    c.shutdown(socket.SHUT_WR)
                    self.assertEqual(recv_exactly(c, 32), hashlib.sha256(MIB16).digest())
                    back = recv_all(c)
                    self.assertEqual(hashlib.sha256(back).digest(), hashlib.sha256(MIB16).digest())
                    self.assertEqual(hashlib.sha256(t.join_result()).digest(), hashlib.sha256(MIB16).digest())

    def test_clean_close_is_eof(self) -> None:
        for mode, fs in modes():
            with self.subTest(mode=str(mode), fs=fs):
                c, s = pair(*ctxs(mode, fs))
                with s:
                    c.sendall(b"last words")
                    c.close()
                    self.assertEqual(recv_all(s), b"last words")
                    self.assertEqual(s.recv(10), b"")

    def test_state_and_result_not_picklable(self) -> None:
        # Both hold the session secret: a pickle (to a file, a queue, a
        # cache) would carry it away.
        import copy
        import pickle

        c, s = pair(Context([make_key()]), Context([make_key()]))
        with c, s:
            st = c.connection_state()
            for obj in (st, c._res):
                with self.subTest(type=type(obj).__name__):
                    with self.assertRaises(TypeError):
                        pickle.dumps(obj)
                    with self.assertRaises(TypeError):
                        copy.copy(obj)

    @needs_crypto
    def test_send_would_block_takes_sealed_record(self) -> None:
        # A record sealed by send goes out (first, at the next write) even if
        # the socket would block: send returns its length, and the caller,
        # who retries only what send did not take, duplicates nothing.
        c, s = pair(Context([make_key()], Mode.SEALED), Context([make_key()], Mode.SEALED))
        with c, s:
            c.setblocking(False)
            sent = []
            for i in range(100000):
                m = (b"%08d" % i) * 1024
                try:
                    n = c.send(m)
                except BlockingIOError:
                    break
                self.assertEqual(n, len(m))
                sent.append(m)
            else:
                self.fail("send never would block")
            reader = Thread(lambda: recv_all(s))
            c.setblocking(True)
            c.settimeout(WAIT)
            c.sendall(m)  # the one that would block, again
            sent.append(m)
            c.shutdown(socket.SHUT_WR)
            got = reader.join_result()
            self.assertEqual(len(got), sum(map(len, sent)))
            self.assertTrue(got == b"".join(sent), "the stream differs from what was sent")

    def test_makefile(self) -> None:
        for mode, fs in modes():
            with self.subTest(mode=str(mode), fs=fs):
                c, s = pair(*ctxs(mode, fs))
                with c, s:
                    w = c.makefile("wb")
                    w.write(b"line one\nline two\n")
                    w.flush()
                    w.close()
                    r = s.makefile("rb")
                    self.assertEqual(r.readline(), b"line one\n")
                    self.assertEqual(r.readline(), b"line two\n")
                    r.close()

    @needs_crypto
    def test_recv_into_buffer_sizes(self) -> None:
        """Records decrypted straight into the caller's buffer, or through
        an internal one when they do not fit, arrive the same."""
        for mode in (Mode.INTEGRITY, Mode.SEALED):
            for n in (1, 100, 8191, 8192, 20000, 262144):
                with self.subTest(mode=str(mode), n=n):
                    c, s = pair(*ctxs(mode))
                    with c, s:
                        data = os.urandom(n)
                        for size in (n - 1, n, n + 14, n + 15, n + 16, 1 << 20):
                            if size <= 0:
                                continue
                            c.sendall(data)
                            got = bytearray()
                            buf = bytearray(size + 7)
                            while len(got) < n:
                                m = s.recv_into(memoryview(buf)[7:], min(size, n - len(got)))
                                got += buf[7 : 7 + m]
                            self.assertEqual(bytes(got), data)

    def test_recv_zero_as_socket(self) -> None:
        # As socket.recv: zero returns b"" at once (nothing has arrived:
        # the timeout only bounds a recv that would wait), a negative size
        # and a buffer smaller than nbytes are ValueErrors, and the data
        # stays for the next read.
        for mode, fs in modes():
            with self.subTest(mode=str(mode), fs=fs):
                c, s = pair(*ctxs(mode, fs))
                with c, s:
                    s.settimeout(1.0)
                    self.assertEqual(s.recv(0), b"")
                    self.assertEqual(s.recv_into(bytearray(0)), 0)

    def test_recv_bad_sizes_as_socket(self) -> None:
        for mode, fs in modes():
            with self.subTest(mode=str(mode), fs=fs):
                c, s = pair(*ctxs(mode, fs))
                with c, s:
                    c.sendall(b"data")
                    for call in (lambda: s.recv(-1), lambda: s.recv_into(bytearray(4), -1), lambda: s.recv_into(bytearray(4), 5)):
                        with self.assertRaises(ValueError):
                            call()
                    self.assertEqual(recv_exactly(s, 4), b"data")

    def test_close_wakes_blocked_reader(self) -> None:
        for mode, fs in modes():
            with self.subTest(mode=str(mode), fs=fs):
                c, s = pair(*ctxs(mode, fs))
                with s:
                    started = threading.Event()

                    def reader() -> object:
                        started.set()
                        try:
                            return c.recv(10)
                        except OSError as e:
                            return e

                    t = Thread(reader)
                    started.wait(WAIT)
                    c.close()
                    got = t.join_result()  # bounded: fails if close left it blocked
                    self.assertTrue(got == b"" or isinstance(got, OSError), got)
                    self.assertNotIsInstance(got, hmacauth.IntegrityError)
                    with self.assertRaises(OSError):
                        c.sendall(b"x")

    @needs_crypto
    def test_close_wakes_blocked_writer(self) -> None:
        # A peer that never reads; a thread blocked in sendall; close in
        # another thread ends it with an OSError.
        import select

        for mode in (Mode.INTEGRITY, Mode.SEALED):
            with self.subTest(mode=str(mode)):
                c, s = pair(*ctxs(mode))
                with s:
                    c.settimeout(None)

                    def writer() -> object:
                        try:
                            for _ in range(1000):  # more than any socket buffer takes
                                c.sendall(bytes(1 << 20))
                        except OSError as e:
                            return e
                        return "sent everything"

                    t = Thread(writer)
                    # Until the writer is in sendall and the socket's buffer
                    # is full: it is blocked in the kernel.
                    for _ in range(10000):
                        if c._wlock.locked() and not select.select([], [c.fileno()], [], 0)[1]:
                            break
                        t.join(0.001)
                    else:
                        self.fail("the writer never filled the socket's buffer")
                    c.close()
                    t.join(WAIT)
                    self.assertFalse(t.is_alive(), "close left a sendall blocked in another thread")
                    self.assertIsInstance(t.result, OSError)

    @needs_crypto
    def test_timeout_bounds_a_trickled_recv(self) -> None:
        # settimeout bounds each recv, not each system call: a peer that
        # sends a record one byte per 0.1 s does not hold recv past it.
        from hmacauth._record import REC_DATA

        for mode in (Mode.INTEGRITY, Mode.SEALED):
            with self.subTest(mode=str(mode)):
                c, s = pair(*ctxs(mode))
                with c, s:
                    record = b"".join(bytes(b) for b in s._sealer.seal(REC_DATA, b"x" * 30))
                    self.assertEqual(len(record), 50)
                    stop = threading.Event()
                    sent = [0]

                    def trickle() -> None:
                        for i in range(len(record)):
                            if stop.wait(0.1):
                                return
                            s._sock.sendall(record[i : i + 1])
                            sent[0] += 1

                    t = Thread(trickle)
                    c.settimeout(0.5)
                    try:
                        with self.assertRaises(socket.timeout):
                            c.recv(100)
                        sent_then = sent[0]
                    finally:
                        stop.set()
                        t.join_result()
                    self.assertLess(sent_then, len(record))
                    self.assertEqual(c.gettimeout(), 0.5)

    @needs_crypto
    def test_timeout_bounds_a_slowly_read_sendall(self) -> None:
        # The same for sendall to a peer that reads a little now and then.
        for mode in (Mode.INTEGRITY, Mode.SEALED):
            with self.subTest(mode=str(mode)):
                c, s = pair(*ctxs(mode))
                with c, s:
                    # Small buffers: the kernel's could take all of data.
                    c._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
                    s._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                    data = bytes(4 << 20)
                    stop = threading.Event()
                    got = [0]

                    def sip() -> None:
                        while not stop.wait(0.02):
                            got[0] += len(s._sock.recv(16384))

                    t = Thread(sip)
                    c.settimeout(0.5)
                    try:
                        with self.assertRaises(socket.timeout):
                            c.sendall(data)
                        got_then = got[0]
                    finally:
                        stop.set()
                        t.join_result()
                    self.assertLess(got_then, len(data))
                    self.assertEqual(c.gettimeout(), 0.5)

    @needs_crypto
    def test_cut_stream_is_integrity_error(self) -> None:
        for mode in (Mode.INTEGRITY, Mode.SEALED):
            with self.subTest(mode=str(mode)):
                c, s = pair(*ctxs(mode))
                with s:
                    c.sendall(b"data")
                    c._sock.close()  # no close record
                    self.assertEqual(recv_exactly(s, 4), b"data")
                    with self.assertRaises(hmacauth.IntegrityError) as cm:
                        s.recv(10)
                    self.assertIn("without a close record", str(cm.exception))
                    with self.assertRaises(hmacauth.IntegrityError):
                        s.recv(10)  # sticky

    @needs_crypto
    def test_tampered_record(self) -> None:
        for mode in (Mode.INTEGRITY, Mode.SEALED):
            with self.subTest(mode=str(mode)):
                c, s = pair(*ctxs(mode))
                with c, s:
                    # A record made under c's keys, with one bit flipped.
                    wire = bytearray(b"".join(bytes(b) for b in c._sealer.seal(1, b"payload")))
                    wire[6] ^= 1
                    c._sock.sendall(wire)
                    with self.assertRaises(hmacauth.IntegrityError):
                        s.recv(100)

    @needs_crypto
    def test_key_updates_both_ways(self) -> None:
        for mode in (Mode.INTEGRITY, Mode.SEALED):
            with self.subTest(mode=str(mode)):
                cc, sc = ctxs(mode)
                cc._testing_only_update_bytes = 1000
                sc._testing_only_update_bytes = 1000
                c, s = pair(cc, sc)
                with c, s:
                    data = os.urandom(100_000)
                    for i in range(0, len(data), 700):
                        c.sendall(data[i : i + 700])
                        s.sendall(data[i : i + 700])
                    self.assertEqual(recv_exactly(s, len(data)), data)
                    self.assertEqual(recv_exactly(c, len(data)), data)
                    self.assertGreater(c._sealer.d.generation, 50)
                    self.assertEqual(s._opener.d.generation, c._sealer.d.generation)
                    self.assertEqual(c._opener.d.generation, s._sealer.d.generation)

    @needs_crypto
    def test_stronger_mode_wins(self) -> None:
        k = make_key()
        for cm, sm in ((Mode.AUTH, Mode.SEALED), (Mode.SEALED, Mode.INTEGRITY), (Mode.INTEGRITY, Mode.AUTH)):
            c, s = pair(Context([k], cm), Context([k], sm))
            with c, s:
                want = max(cm, sm)
                self.assertEqual(c.connection_state().mode, want)
                self.assertEqual(s.connection_state().mode, want)
        c, s = pair(Context([k], forward_secrecy=False), Context([k], forward_secrecy=True))
        with c, s:
            self.assertTrue(c.connection_state().forward_secrecy)

    @needs_crypto
    def test_chacha_preference(self) -> None:
        k = make_key()
        for cp, sp, want in ((False, False, "AES-256-GCM"), (True, False, "ChaCha20-Poly1305"), (False, True, "ChaCha20-Poly1305")):
            c, s = pair(Context([k], Mode.SEALED, prefer_chacha20=cp), Context([k], Mode.SEALED, prefer_chacha20=sp))
            with c, s:
                self.assertEqual(c.connection_state().cipher, want)
                c.sendall(b"x")
                self.assertEqual(s.recv(1), b"x")


class CountingSocket(socket.socket):
    """A socket that counts the calls that switch it between blocking and
    timeout mode, and its shutdowns: each is a system call that releases
    the GIL."""

    def __init__(self, raw: socket.socket) -> None:
        super().__init__(raw.family, raw.type, raw.proto, raw.detach())
        self.calls: list = []

    def settimeout(self, value):  # type: ignore[no-untyped-def]
        self.calls.append(("settimeout", value))
        super().settimeout(value)

    def shutdown(self, how):  # type: ignore[no-untyped-def]
        self.calls.append(("shutdown", how))
        super().shutdown(how)


@unittest.skipUnless(hasattr(socket, "MSG_DONTWAIT"), "the platform has no MSG_DONTWAIT")
class BlockingSockets(unittest.TestCase):
    """On a blocking socket the handshake and close leave the socket in
    blocking mode (MSG_DONTWAIT and poll instead of timeout mode)."""

    def test_handshake_and_close_make_no_mode_switches(self) -> None:
        for mode, fs in modes():
            with self.subTest(mode=str(mode), fs=fs):
                cc, sc = ctxs(mode, fs)
                ls = listener()
                with ls:
                    c = CountingSocket(socket.create_connection(ls.getsockname()))
                    raw, _ = ls.accept()
                    s = CountingSocket(raw)
                server = Thread(lambda: sc.wrap_socket(s, server_side=True))
                conn = cc.wrap_socket(c)
                sconn = server.join_result()
                with sconn:
                    conn.sendall(b"ping")
                    self.assertEqual(recv_exactly(sconn, 4), b"ping")
                    conn.close()
                    self.assertEqual(recv_all(sconn), b"")
                self.assertIsNone(c.gettimeout() if c.fileno() >= 0 else None)
                self.assertEqual(c.calls, [] if mode != Mode.AUTH else [("shutdown", socket.SHUT_RD)])
                self.assertEqual(s.calls, [] if mode != Mode.AUTH else [("shutdown", socket.SHUT_RD)])

    def test_handshake_timeout_on_blocking_sockets(self) -> None:
        ls = listener()
        with ls:
            # A server that never answers, to a client socket without a timeout.
            raw = socket.create_connection(ls.getsockname())
            raw.settimeout(None)
            with self.assertRaises(hmacauth.HandshakeTimeout):
                Context([make_key()], handshake_timeout=0.2).wrap_socket(raw)

    @needs_crypto
    def test_close_record_after_a_full_send_buffer(self) -> None:
        # close() first tries the close record without blocking; with the
        # send buffer full it waits for room, and the peer still reads every
        # byte and then a clean end of stream.
        c, s = pair(*ctxs(Mode.SEALED))
        with s:
            c.setblocking(False)
            sent = 0
            chunk = b"z" * 65536
            for _ in range(100000):
                try:
                    sent += c.send(chunk)
                except BlockingIOError:
                    break
            else:
                self.fail("send never would block")
            c.setblocking(True)  # blocking again: close tries MSG_DONTWAIT first
            reader = Thread(lambda: recv_all(s))
            c.close()
            self.assertEqual(len(reader.join_result()), sent)


class CloseBound(unittest.TestCase):
    @needs_crypto
    def test_close_gives_up_on_a_trickling_peer(self) -> None:
        # A peer that reads 4 KiB at a time keeps every system call short,
        # so close() must bound the pending data and the close record as a
        # whole (here 0.3 s): it gives up long before the ~250 KiB pending
        # could trickle out, and the peer then counts fewer bytes than the
        # record and the close record. A close bounded per system call
        # instead sends them all (seconds later).
        record = HEADER + MAX_PAYLOAD + TAG
        for timeout in (None, 1.0):
            with self.subTest(timeout=timeout):
                cc, sc = ctxs(Mode.INTEGRITY)
                cc._testing_only_close_record_timeout = 0.3
                ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                with ls:
                    ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by accept
                    ls.bind(("127.0.0.1", 0))
                    ls.listen(1)
                    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                    raw.settimeout(WAIT)
                    raw.connect(ls.getsockname())

                    def serve() -> Any:
                        s, _ = ls.accept()
                        s.settimeout(WAIT)
                        return sc.wrap_socket(s, server_side=True)

                    server = Thread(serve)
                    c = cc.wrap_socket(raw)
                    s = server.join_result()
                with s:
                    c.settimeout(0.2)
                    self.assertEqual(c.send(bytes(MAX_PAYLOAD)), MAX_PAYLOAD)  # times out, the rest pending
                    self.assertGreater(sum(len(v) for v in c._pending), 128 * 1024)
                    closed = threading.Event()

                    def trickle() -> int:
                        got = 0
                        for _ in range(record // 4096 + 1000):
                            if not closed.is_set():
                                closed.wait(0.05)
                            b = s._sock.recv(4096)
                            if not b:
                                return got
                            got += len(b)
                        raise AssertionError("the stream did not end")

                    peer = Thread(trickle)
                    c.settimeout(timeout)
                    c.close()
                    closed.set()
                    got = peer.join_result()
                    self.assertLess(got, record, "close() sent all the pending data: it was not bounded as a whole")


class Refusals(unittest.TestCase):
    def check_refused(self, client_ctx: Context, server_ctx: Context, server_exc: type, server_msg: str) -> None:
        with self.assertRaises(server_exc) as sm:
            pair(client_ctx, server_ctx)
        self.assertIn(server_msg, str(sm.exception))

    def test_wrong_secret(self) -> None:
        good = make_key("k")
        bad = hmacauth.Key("k", bytes(32))
        self.check_refused(Context([bad]), Context([good]), hmacauth.AuthFailed, "MAC for key ID \"k\" is wrong")

    def test_client_sees_refusal(self) -> None:
        ls = listener()
        with ls:
            def serve() -> None:
                s, _ = ls.accept()
                try:
                    Context([make_key("server-only")]).wrap_socket(s, server_side=True)
                except hmacauth.AuthFailed:
                    return
                raise AssertionError("handshake succeeded")

            t = Thread(serve)
            with self.assertRaises(hmacauth.AuthFailed) as cm:
                hmacauth.create_connection(ls.getsockname(), Context([make_key("unknown")]), timeout=WAIT)
            self.assertIn("closed the connection without a word", str(cm.exception))
            t.join_result()

    def test_unknown_key_id(self) -> None:
        self.check_refused(Context([make_key("a")]), Context([make_key("b")]), hmacauth.AuthFailed, "which this server does not have")

    def test_selfie(self) -> None:
        ctx = Context([make_key()])
        with self.assertRaises(hmacauth.AuthFailed) as cm:
            pair(ctx, ctx)
        self.assertIn("reflection", str(cm.exception))

    def test_two_contexts_one_key_connect(self) -> None:
        c, s = pair(*ctxs())
        c.close()
        s.close()

    def test_client_refuses_forged_server_hello(self) -> None:
        """A server without the key cannot answer: the client reports
        AuthFailed for a wrong MAC, ProtocolError for a foreign protocol."""
        for answer, exc, msg in (
            (b"hmacauth\x01\x02" + bytes(98), hmacauth.AuthFailed, "did not prove key"),
            (b"SSH-2.0-OpenSSH_9.6\r\n", hmacauth.ProtocolError, "does not speak hmacauth"),
            (b"hmacauth\x02\x02", hmacauth.ProtocolError, "version 2"),
            (b"HTTP", hmacauth.ProtocolError, "does not speak hmacauth"),
            (b"hmac", hmacauth.ProtocolError, "sent \"hmac\" and closed"),
            (b"hmacauth\x01\x02" + bytes(20), hmacauth.ProtocolError, "in the middle of its ServerHello"),
        ):
            with self.subTest(answer=answer[:12]):
                ls = listener()
                with ls:
                    def serve() -> None:
                        s, _ = ls.accept()
                        with s:
                            recv_exactly(s, 141)
                            s.sendall(answer)
                            s.shutdown(socket.SHUT_WR)
                            s.recv(100)

                    t = Thread(serve)
                    with self.assertRaises(exc) as cm:
                        hmacauth.create_connection(ls.getsockname(), Context([make_key()]), timeout=WAIT)
                    self.assertIn(msg, str(cm.exception))
                    t.join_result()

    def test_handshake_timeout(self) -> None:
        ls = listener()
        with ls:
            # A server that never answers.
            with self.assertRaises(hmacauth.HandshakeTimeout) as cm:
                hmacauth.create_connection(ls.getsockname(), Context([make_key()], handshake_timeout=0.2), timeout=WAIT)
            self.assertIsInstance(cm.exception, socket.timeout)
        ls = listener()
        with ls:
            # A client that never speaks.
            c = socket.create_connection(ls.getsockname())
            s, _ = ls.accept()
            with c:
                with self.assertRaises(hmacauth.HandshakeTimeout):
                    Context([make_key()], handshake_timeout=0.2).wrap_socket(s, server_side=True)

    def test_weak_key_and_config(self) -> None:
        with self.assertRaises(hmacauth.WeakKey):
            Context([hmacauth.Key("k", b"short")])
        with self.assertRaises(hmacauth.ConfigError):
            Context([])
        with self.assertRaises(hmacauth.ConfigError):
            Context([hmacauth.Key("has space", bytes(32))])
        with self.assertRaises(hmacauth.ConfigError):
            Context([make_key("a"), make_key("a")])
        with self.assertRaises(hmacauth.ConfigError):
            Context([make_key()], mode=7)  # type: ignore[arg-type]

    def test_context_without_cryptography(self) -> None:
        # The Context checks what its settings need as the handshakes do
        # (_handshake.can_run), and says so as they do.
        from unittest import mock

        from hmacauth import _handshake, _record

        def missing() -> None:
            raise hmacauth.ConfigError("no 'cryptography' (the test)")

        cases = [(Mode.AUTH, True, "auth with forward secrecy"), (Mode.SEALED, False, "sealed")]
        with mock.patch.object(_record, "aead_classes", missing), mock.patch.object(_handshake, "_x25519", missing):
            for mode, fs, want in cases:
                with self.subTest(mode=str(mode), fs=fs):
                    with self.assertRaises(hmacauth.ConfigError) as cm:
                        Context([make_key()], mode, forward_secrecy=fs)
                    self.assertIn(
                        "this Context asks for %s, which needs the 'cryptography' package, not installed on this "
                        "machine" % want,
                        str(cm.exception),
                    )


if __name__ == "__main__":
    unittest.main()
