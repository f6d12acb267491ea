"""Hostile input: probes and malformed messages to a Python server and
client, as the Go tests send them, and fuzzing of the parsers (with
hypothesis where it is installed)."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import unittest

from _support import HAVE_CRYPTO, WAIT, Thread, listener, make_key, needs_crypto, recv_exactly

import hmacauth
from hmacauth import Context, Mode
from hmacauth._handshake import ClientHandshake, KeySchedule, KeySet, ServerHandshake

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    HAVE_HYPOTHESIS = True
except ImportError:
    HAVE_HYPOTHESIS = False


def good_client_hello(key: hmacauth.Key = make_key()) -> bytes:
    return ClientHandshake(KeySchedule(key), 0, False, False).client_hello()


def serve_once(ctx: Context, send: bytes, close_write: bool = True):  # type: ignore[no-untyped-def]
    """Sends raw bytes to a Python server handshake; returns (the server's
    exception, what the client read back, whether the close was a reset)."""
    ls = listener()
    with ls:
        def serve() -> BaseException:
            s, _ = ls.accept()
            try:
                ctx.wrap_socket(s, server_side=True)
            except hmacauth.HmacAuthError as e:
                return e
            raise AssertionError("the handshake succeeded")

        t = Thread(serve)
        c = socket.create_connection(ls.getsockname())
        c.settimeout(WAIT)
        with c:
            c.sendall(send)
            if close_write:
                c.shutdown(socket.SHUT_WR)
            got = b""
            reset = False
            try:
                while True:
                    b = c.recv(4096)
                    if not b:
                        break
                    got += b
            except ConnectionResetError:
                reset = True
        return t.join_result(), got, reset


class Probes(unittest.TestCase):
    def test_probes_refused_without_a_byte_or_reset(self) -> None:
        ch = bytearray(good_client_hello())
        bad_pad = bytearray(ch)
        bad_pad[13 + len("test-key")] = 1
        bad_len = bytearray(ch)
        bad_len[12] = 65
        bad_id = bytearray(ch)
        bad_id[13] = 0x20
        bad_mode = bytearray(ch)
        bad_mode[10] = 3
        bad_mac = bytearray(ch)
        bad_mac[-1] ^= 1
        cases = [
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", hmacauth.ProtocolError, "does not speak hmacauth"),
            (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", hmacauth.ProtocolError, "does not speak hmacauth"),
            (b"SSH-2.0-OpenSSH_9.6\r\n", hmacauth.ProtocolError, "does not speak hmacauth"),
            (b"hmacauth\x02\x01" + bytes(131), hmacauth.ProtocolError, "version 2"),
            (b"hmacauth\x01\x02" + bytes(131), hmacauth.ProtocolError, "message type 2"),
            (bytes(bad_pad), hmacauth.ProtocolError, "padding is not zero"),
            (bytes(bad_len), hmacauth.ProtocolError, "key ID length is 65"),
            (bytes(bad_id), hmacauth.ProtocolError, "invalid key ID"),
            (bytes(bad_mode), hmacauth.ProtocolError, "mode 3"),
            (bytes(bad_mac), hmacauth.AuthFailed, "is wrong"),
            (bytes(ch[:100]), hmacauth.ProtocolError, "after 100 bytes"),
            (bytes(ch), hmacauth.AuthFailed, "closed the connection instead of proving"),
            (bytes(ch) + b"\x04" + os.urandom(30_000), hmacauth.ProtocolError, "expected a ClientFinished"),
            (b"", hmacauth.ProtocolError, "after 0 bytes"),
        ]
        ctx = Context([make_key()])
        for send, exc, msg in cases:
            with self.subTest(msg=msg):
                err, got, reset = serve_once(ctx, send)
                self.assertIsInstance(err, exc)
                self.assertIn(msg, str(err))
                if len(send) < 141 or send[:141] != bytes(ch):
                    self.assertEqual(got, b"")  # nothing for strangers
                else:
                    self.assertEqual(len(got), 108)  # a ServerHello, then the end
                self.assertFalse(reset, "the server reset the connection")

    def test_replayed_client_hello_in_flight_refused(self) -> None:
        """PROTOCOL.md 7.2 step 3: a second ClientHello with the nonce of a
        server handshake still in flight is a replay, refused without a
        ServerHello, whichever server of the process it reaches."""
        ch = good_client_hello()
        ctx = Context([make_key()])
        ls = listener()
        with ls:
            first = Thread(lambda: ctx.wrap_socket(ls.accept()[0], server_side=True))
            with socket.create_connection(ls.getsockname()) as a:
                a.settimeout(WAIT)
                a.sendall(ch)
                self.assertEqual(len(recv_exactly(a, 108)), 108)  # a ServerHello: the handshake is in flight
                # The threaded server class.
                err, got, reset = serve_once(Context([make_key()]), ch)
                self.assertIsInstance(err, hmacauth.AuthFailed)
                self.assertIn("still in flight: a replay of a recorded ClientHello", str(err))
                self.assertEqual(got, b"")
                # The asyncio server.
                events: list = []

                async def replay() -> bytes:
                    srv = await hmacauth.start_server(
                        lambda r, w: None, "127.0.0.1", 0, Context([make_key()], on_handshake=events.append))
                    try:
                        r, w = await asyncio.open_connection("127.0.0.1", srv.sockets[0].getsockname()[1])
                        w.write(ch)
                        got = await asyncio.wait_for(r.read(), WAIT)
                        w.close()
                        return got
                    finally:
                        srv.close()
                        await srv.wait_closed()

                self.assertEqual(asyncio.run(replay()), b"")
                self.assertEqual(len(events), 1)
                self.assertIsInstance(events[0].error, hmacauth.AuthFailed)
                self.assertIn("still in flight", str(events[0].error))
            with self.assertRaises(hmacauth.AuthFailed):
                first.join_result()
        # Once that handshake ended, its nonce is free again.
        err, got, _ = serve_once(ctx, ch)
        self.assertIn("closed the connection instead of proving", str(err))

    def test_postgres_ssl_request_refused_at_once(self) -> None:
        """PostgreSQL's 8-byte SSLRequest waits for an answer: it is refused
        at its first byte, not at the handshake timeout."""
        ctx = Context([make_key()], handshake_timeout=60)
        err, got, _ = serve_once(ctx, struct.pack(">II", 8, 80877103), close_write=False)
        self.assertIsInstance(err, hmacauth.ProtocolError)
        self.assertEqual(got, b"")

    @needs_crypto
    def test_records_without_data_capped(self) -> None:
        k = make_key()
        from _support import pair

        c, s = pair(Context([k], Mode.SEALED), Context([k], Mode.SEALED))
        with c, s:
            for _ in range(17):
                c._send_buffers(c._sealer.seal(1, b""))
            with self.assertRaises(hmacauth.ProtocolError) as cm:
                s.recv(10)
            self.assertIn("more than 16 records in a row without application data", str(cm.exception))

    @needs_crypto
    def test_record_type_and_length_rules(self) -> None:
        from _support import pair

        k = make_key()
        for typ, payload, exc, msg in (
            (9, b"x", hmacauth.ProtocolError, "unknown type 9"),
            (2, b"x", hmacauth.ProtocolError, "close record with a payload"),
            (3, b"x", hmacauth.ProtocolError, "key update record with a payload"),
        ):
            with self.subTest(msg=msg):
                c, s = pair(Context([k], Mode.INTEGRITY), Context([k], Mode.INTEGRITY))
                with c, s:
                    c._send_buffers(c._sealer.seal(typ, payload))
                    with self.assertRaises(exc) as cm:
                        s.recv(10)
                    self.assertIn(msg, str(cm.exception))
        c, s = pair(Context([k], Mode.SEALED), Context([k], Mode.SEALED))
        with c, s:
            c._sock.sendall(b"\x01\x04\x00\x01")  # 262145 bytes announced
            with self.assertRaises(hmacauth.IntegrityError) as cm:
                s.recv(10)
            self.assertIn("more than the 262144 allowed", str(cm.exception))


class ServerHelloChecks(unittest.TestCase):
    """A ServerHello with a valid MAC (from a holder of the key) that breaks
    the negotiation rules is refused with ProtocolError, in the order of
    PROTOCOL.md 7.2."""

    def server_hello(self, ch: bytes, mode: int, flags: int, share: bytes = bytes(32)) -> bytes:
        from hmacauth._handshake import hmac256

        ks = KeySchedule(make_key())
        body = b"hmacauth\x01\x02" + bytes((mode, flags)) + bytes(32) + share
        return body + hmac256(ks.k_sh, ch, body)

    def test_rules(self) -> None:
        cases = [
            # (client mode, fs, chacha), (server mode, flags, share), message
            ((0, False, False), (0, 0x04, bytes(32)), "unknown flags 0x04"),
            ((0, False, False), (3, 0, bytes(32)), "server chose mode 3"),
            ((2, False, False), (1, 0, bytes(32)), "server chose integrity, but this client asked for at least sealed"),
            ((0, True, False), (0, 0, bytes(32)), "did not agree to forward secrecy"),
            ((0, False, True), (0, 0, bytes(32)), "asked for ChaCha20-Poly1305"),
            ((0, False, False), (0, 0, b"\x01" * 32), "key share without forward secrecy"),
        ]
        for (cm, fs, chacha), (sm, flags, share), msg in cases:
            with self.subTest(msg=msg):
                client = ClientHandshake(KeySchedule(make_key()), cm, fs, chacha)
                ch = client.client_hello()
                with self.assertRaises(hmacauth.ProtocolError) as cm_:
                    client.server_hello(self.server_hello(ch, sm, flags, share))
                self.assertIn(msg, str(cm_.exception))
        # A wrong MAC is AuthFailed whatever the mode and flags.
        client = ClientHandshake(KeySchedule(make_key()), 0, False, False)
        client.client_hello()
        sh = bytearray(self.server_hello(client.ch, 9, 0xFF))
        sh[-1] ^= 1
        with self.assertRaises(hmacauth.AuthFailed):
            client.server_hello(bytes(sh))

    @needs_crypto
    def test_low_order_share(self) -> None:
        client = ClientHandshake(KeySchedule(make_key()), 0, True, False)
        ch = client.client_hello()
        with self.assertRaises(hmacauth.ProtocolError) as cm:
            client.server_hello(self.server_hello(ch, 0, 1, bytes(32)))  # the zero point
        self.assertIn("low-order", str(cm.exception))


def fuzz_parsers(data: bytes) -> None:
    """Every parser of peer input raises only this package's errors."""
    key = make_key()
    keys = KeySet([key])
    for ch in (data, (good_client_hello()[:10] + data)[:141].ljust(141, b"\0")):
        try:
            ServerHandshake(keys, 0, False, False).client_hello(ch)
        except hmacauth.HmacAuthError:
            pass
    client = ClientHandshake(KeySchedule(key), 0, False, False)
    client.client_hello()
    for sh in (data, (b"hmacauth\x01\x02" + data)[:108].ljust(108, b"\0")):
        try:
            client.server_hello(sh)
        except hmacauth.HmacAuthError:
            pass
    try:
        hmacauth.parse_keys(data)
    except hmacauth.HmacAuthError:
        pass
    if HAVE_CRYPTO and len(data) >= 4:
        from hmacauth._record import Direction, Opener

        for mode in (1, 2):
            op = Opener(mode, Direction(bytes(32), data[0] & 2), "client")
            n = int.from_bytes(data[1:4], "big")
            try:
                op.check_length(n)
                op.open(memoryview(data[: 4 + n + 16]))
            except (hmacauth.HmacAuthError, IndexError):
                pass


class Fuzz(unittest.TestCase):
    def test_random_inputs(self) -> None:
        rnd = random.Random(1)
        for _ in range(300):
            fuzz_parsers(bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 300))))

    if HAVE_HYPOTHESIS:

        @settings(max_examples=300, deadline=None, database=None)
        @given(st.binary(max_size=400))
        def test_hypothesis(self, data: bytes) -> None:
            fuzz_parsers(data)


if __name__ == "__main__":
    unittest.main()
