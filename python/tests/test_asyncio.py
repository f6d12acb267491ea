"""asyncio: open_connection and start_server in every mode, against each
other and against the threaded API, and 1,000 concurrent connections with
good and bad clients and no task left behind."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
import time
import unittest
from typing import Any, List

from _support import WAIT, Thread, evictions, make_key, modes, needs_crypto, recv_all, until

import hmacauth
from hmacauth import Context, Mode


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        data = await reader.read()  # to the end of stream
        writer.write(hashlib.sha256(data).digest() + data)
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


# A handshake may be evicted once it has waited this long (the rule under
# test, as the Go Listener's evictGrace; asyncio sheds rather than waits).
GRACE = 0.05


class AsyncioTests(unittest.TestCase):
    def run_async(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run(coro)

    def test_echo_every_mode(self) -> None:
        async def main() -> None:
            for mode, fs in modes():
                k = make_key()
                srv = await hmacauth.start_server(echo, "127.0.0.1", 0, Context([k], mode, forward_secrecy=fs))
                port = srv.sockets[0].getsockname()[1]
                reader, writer = await hmacauth.open_connection("127.0.0.1", port, Context([k], mode, forward_secrecy=fs))
                st = writer.get_extra_info("connection_state")
                self.assertEqual((st.mode, st.forward_secrecy, st.key_id), (mode, fs, k.id))
                data = os.urandom(1 << 20)
                writer.write(data)
                writer.write_eof()
                got = await reader.read()
                self.assertEqual(got[:32], hashlib.sha256(data).digest())
                self.assertEqual(got[32:], data)
                writer.close()
                await writer.wait_closed()
                srv.close()
                await srv.wait_closed()

        self.run_async(main())

    def test_interop_with_threaded_server(self) -> None:
        for mode, fs in modes():
            with self.subTest(mode=str(mode), fs=fs):
                k = make_key()
                ln = hmacauth.create_server(("127.0.0.1", 0), Context([k], mode, forward_secrecy=fs))
                with ln:
                    def serve() -> bytes:
                        s, _ = ln.accept(timeout=WAIT)
                        with s:
                            got = recv_all(s)
                            s.sendall(got[::-1])
                            exp = s.export_keying_material(b"x", b"y", 16)
                        return exp

                    t = Thread(serve)

                    async def main() -> bytes:
                        reader, writer = await hmacauth.open_connection(*ln.address, context=Context([k], mode, forward_secrecy=fs))
                        writer.write(b"abcdef")
                        writer.write_eof()
                        self.assertEqual(await reader.read(), b"fedcba")
                        exp = writer.get_extra_info("connection_state").export_keying_material(b"x", b"y", 16)
                        writer.close()
                        await writer.wait_closed()
                        return exp

                    self.assertEqual(self.run_async(main()), t.join_result())

    def test_refusals(self) -> None:
        async def main() -> None:
            events = []
            srv = await hmacauth.start_server(echo, "127.0.0.1", 0, Context([make_key("a")], on_handshake=events.append))
            port = srv.sockets[0].getsockname()[1]
            with self.assertRaises(hmacauth.AuthFailed):
                await hmacauth.open_connection("127.0.0.1", port, Context([make_key("b")]))
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            self.assertEqual(await reader.read(), b"")  # nothing for strangers
            writer.close()
            srv.close()
            await srv.wait_closed()
            self.assertEqual(sorted(type(e.error).__name__ for e in events), ["AuthFailed", "ProtocolError"])

        self.run_async(main())

    def test_caps_shed(self) -> None:
        async def main() -> None:
            events = []
            shed, freed = asyncio.Event(), asyncio.Event()

            def record(ev: hmacauth.HandshakeEvent) -> None:
                events.append(ev)
                if isinstance(ev.error, hmacauth.ConnectionShed):
                    shed.set()
                if sum(isinstance(e.error, hmacauth.ProtocolError) for e in events) == 2:
                    freed.set()  # both silent clients' handshakes have ended

            srv = await hmacauth.start_server(echo, "127.0.0.1", 0, Context([make_key()], max_handshakes_per_ip=2, on_handshake=record))
            port = srv.sockets[0].getsockname()[1]
            silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            await asyncio.wait_for(shed.wait(), WAIT)
            for _, w in silent:
                w.close()
            await asyncio.wait_for(freed.wait(), WAIT)
            # Slots free again: a good client gets through.
            reader, writer = await hmacauth.open_connection("127.0.0.1", port, Context([make_key()]))
            writer.write(b"x")
            writer.write_eof()
            self.assertEqual((await reader.read())[32:], b"x")
            writer.close()
            srv.close()
            await srv.wait_closed()

        self.run_async(main())

    def test_slow_reader_paused_backpressure_and_eof(self) -> None:
        # A reader that does not read pauses the TCP transport (the buffer
        # stays bounded) and the server's clean close is acted on only after
        # every buffered byte was delivered.
        n = 4 << 20

        async def main(mode: Mode) -> None:
            k = make_key()
            done = asyncio.Event()

            async def cb(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                writer.write(b"x" * n)
                writer.close()
                await writer.wait_closed()
                done.set()

            srv = await hmacauth.start_server(cb, "127.0.0.1", 0, Context([k], mode))
            port = srv.sockets[0].getsockname()[1]
            reader, writer = await hmacauth.open_connection("127.0.0.1", port, Context([k], mode))
            proto = writer.get_extra_info("hmacauth")
            # Not reading: wait until the server has sent all and closed, or
            # until this side's TCP transport stopped reading.
            for _ in range(int(WAIT / 0.01)):
                if done.is_set() or not proto._tcp.is_reading():
                    break
                await asyncio.sleep(0.01)
            self.assertLess(len(proto._buf), 1 << 20, "buffered while the application did not read")
            got = 0
            while True:
                d = await asyncio.wait_for(reader.read(1 << 16), WAIT)
                if not d:
                    break
                got += len(d)
            self.assertEqual(got, n)
            writer.close()
            srv.close()
            await srv.wait_closed()

        for mode, fs in modes():
            if not fs:
                with self.subTest(mode=str(mode)):
                    self.run_async(main(mode))

    @needs_crypto
    def test_nothing_buffered_after_close_record(self) -> None:
        # PROTOCOL 9.3: after a close record the reader reads nothing more;
        # what a peer sends after it is dropped, not buffered.
        k = make_key()
        ln = hmacauth.create_server(("127.0.0.1", 0), Context([k], Mode.SEALED))

        def serve() -> None:
            c, _ = ln.accept()
            try:
                c._send_close_record()
                junk = b"\x01" * (1 << 20)
                for _ in range(16):
                    c._sock.sendall(junk)
            finally:
                c.close()

        async def main() -> None:
            th = Thread(serve)
            reader, writer = await hmacauth.open_connection(*ln.address, Context([k], Mode.SEALED))
            self.assertEqual(await asyncio.wait_for(reader.read(), WAIT), b"")
            await asyncio.get_running_loop().run_in_executor(None, th.join_result)
            self.assertLess(len(writer.get_extra_info("hmacauth")._buf), 1 << 20)
            writer.close()

        try:
            self.run_async(main())
        finally:
            ln.close()

    def test_connection_state_after_close_refuses_export(self) -> None:
        async def main() -> None:
            k = make_key()
            srv = await hmacauth.start_server(echo, "127.0.0.1", 0, Context([k]))
            port = srv.sockets[0].getsockname()[1]
            reader, writer = await hmacauth.open_connection("127.0.0.1", port, Context([k]))
            before = writer.get_extra_info("connection_state")
            writer.close()
            await writer.wait_closed()
            # A state taken before close keeps its own copy and still exports.
            self.assertEqual(len(before.export_keying_material(b"tok", b"", 16)), 16)
            after = writer.get_extra_info("connection_state")
            self.assertTrue(after.handshake_complete)
            with self.assertRaises(hmacauth.ExportError):
                after.export_keying_material(b"tok", b"", 16)
            srv.close()
            await srv.wait_closed()

        self.run_async(main())

    def test_close_ends_handshakes_in_flight(self) -> None:
        # A client that got its ServerHello and never sends the
        # ClientFinished, and one that sent half a ClientHello: close() ends
        # both handshakes at once (not at the 60 s handshake timeout), and
        # wait_closed() returns with nothing left running; serve_forever
        # cancelled does the same.
        from hmacauth._handshake import ClientHandshake, KeySet, SERVER_HELLO_LEN

        async def main(forever: bool) -> None:
            k = make_key()
            events = []
            sctx = Context([k], handshake_timeout=60.0, on_handshake=events.append)
            called = []

            async def cb(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                called.append(1)
                writer.close()

            srv = await hmacauth.start_server(cb, "127.0.0.1", 0, sctx)
            port = srv.sockets[0].getsockname()[1]
            serving = asyncio.ensure_future(srv.serve_forever()) if forever else None
            r1, w1 = await asyncio.open_connection("127.0.0.1", port)
            hs = ClientHandshake(KeySet([k]).first, 0, False, False)  # type: ignore[arg-type]
            w1.write(hs.client_hello())
            await asyncio.wait_for(r1.readexactly(SERVER_HELLO_LEN), WAIT)  # the server's handshake is in flight
            r2, w2 = await asyncio.open_connection("127.0.0.1", port)
            w2.write(hs.client_hello()[:50])
            await w2.drain()
            if serving is not None:
                serving.cancel()
                with self.assertRaises(asyncio.CancelledError):
                    await asyncio.wait_for(serving, WAIT)
            else:
                srv.close()
            await asyncio.wait_for(srv.wait_closed(), WAIT)
            self.assertEqual(await asyncio.wait_for(r1.read(), WAIT), b"")
            try:
                self.assertEqual(await asyncio.wait_for(r2.read(), WAIT), b"")
            except ConnectionResetError:
                pass  # still in the listening socket's queue when it closed
            w1.close()
            w2.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            self.assertEqual(others, [])
            self.assertEqual(called, [])
            # The second connection may still have been in accept's queue.
            self.assertGreaterEqual(len(events), 1)
            for e in events:
                self.assertIsInstance(e.error, ConnectionAbortedError)
                self.assertIn("server was closed during the handshake", str(e.error))

        for forever in (False, True):
            with self.subTest(serve_forever=forever):
                self.run_async(main(forever))

    def test_keyring(self) -> None:
        # The server takes the Keyring's keys at each handshake; an empty
        # Keyring fails a handshake with ConfigError, on either side.
        async def main() -> None:
            old, new = make_key("old"), make_key("new")
            ring = hmacauth.Keyring([old])
            events = []
            srv = await hmacauth.start_server(echo, "127.0.0.1", 0, Context(keyring=ring, on_handshake=events.append))
            port = srv.sockets[0].getsockname()[1]
            with self.assertRaises(hmacauth.AuthFailed):
                await hmacauth.open_connection("127.0.0.1", port, Context([new]))
            ring.set([old, new])
            reader, writer = await hmacauth.open_connection("127.0.0.1", port, Context([new]))
            self.assertEqual(writer.get_extra_info("connection_state").key_id, "new")
            writer.close()
            await writer.wait_closed()
            with self.assertRaises(hmacauth.ConfigError):
                await hmacauth.open_connection("127.0.0.1", port, Context(keyring=hmacauth.Keyring()))
            srv.close()
            await srv.wait_closed()
            empty = await hmacauth.start_server(echo, "127.0.0.1", 0, Context(keyring=hmacauth.Keyring(), on_handshake=events.append))
            with self.assertRaises(hmacauth.AuthFailed):
                await hmacauth.open_connection("127.0.0.1", empty.sockets[0].getsockname()[1], Context([old]))
            empty.close()
            await empty.wait_closed()
            self.assertIsInstance(events[-1].error, hmacauth.ConfigError)

        self.run_async(main())

    def test_1000_connections_good_and_bad(self) -> None:
        async def main() -> None:
            k = make_key()
            events = []
            # The handshake timeout is generous: on a loaded machine a server
            # handshake that times out after its client finished would read as
            # a bad echo; the bad clients here are refused at once anyway.
            sctx = Context([k], handshake_timeout=WAIT, on_handshake=events.append, max_handshakes=2000, max_handshakes_per_ip=-1)
            srv = await hmacauth.start_server(echo, "127.0.0.1", 0, sctx)
            port = srv.sockets[0].getsockname()[1]
            good_ctx, bad_ctx = Context([k]), Context([hmacauth.Key(k.id, bytes(32))])

            async def good(i: int) -> str:
                reader, writer = await hmacauth.open_connection("127.0.0.1", port, good_ctx)
                msg = b"%d" % i
                writer.write(msg)
                writer.write_eof()
                got = await reader.read()
                writer.close()
                await writer.wait_closed()
                return "ok" if got == hashlib.sha256(msg).digest() + msg else "bad echo"

            async def wrong_key() -> str:
                try:
                    await hmacauth.open_connection("127.0.0.1", port, bad_ctx)
                except hmacauth.AuthFailed:
                    return "refused"
                return "accepted"

            async def prober() -> str:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"\x16\x03\x01\x02\x00")
                got = await reader.read()
                writer.close()
                return "refused" if got == b"" else "answered"

            jobs = []
            for i in range(1000):
                jobs.append(good(i) if i % 4 < 2 else wrong_key() if i % 4 == 2 else prober())
            results = await asyncio.wait_for(asyncio.gather(*jobs), WAIT * 3)
            self.assertEqual(results.count("ok"), 500)
            self.assertEqual(results.count("refused"), 500)
            srv.close()
            await srv.wait_closed()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            self.assertEqual(others, [])
            self.assertEqual(sum(e.error is None for e in events), 500)

        self.run_async(main())

    def test_silent_clients_evicted_for_an_honest_one(self) -> None:
        # Four silent connections hold every slot: an honest client gets in
        # by evicting one of them (not shed with a misleading AuthFailed),
        # long before their handshake timeout.
        async def main() -> None:
            k = make_key()
            events: List[Any] = []
            sctx = Context([k], max_handshakes=4, max_handshakes_per_ip=-1, handshake_timeout=5.0, on_handshake=events.append)
            srv = await hmacauth.start_server(echo, "127.0.0.1", 0, sctx)
            port = srv.sockets[0].getsockname()[1]
            silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
            await until(lambda: len(srv._caps.handshaking) == 4)
            await asyncio.sleep(2 * GRACE)
            reader, writer = await asyncio.wait_for(hmacauth.open_connection("127.0.0.1", port, Context([k])), WAIT)
            self.assertFalse([e for e in events if isinstance(e.error, hmacauth.HandshakeTimeout)], events)
            ev = evictions(events)
            self.assertEqual(len(ev), 1, events)
            self.assertIn(ev[0].remote_addr, [w.get_extra_info("sockname") for _, w in silent])
            self.assertIn("raise max_handshakes", str(ev[0].error))
            writer.write(b"x")
            writer.write_eof()
            self.assertEqual((await asyncio.wait_for(reader.read(), WAIT))[32:], b"x")
            writer.close()
            for _, w in silent:
                w.close()
            srv.close()
            await srv.wait_closed()

        self.run_async(main())

    def test_least_progress_evicted_first(self) -> None:
        # The oldest handshake has progressed (its ClientHello passed the
        # checks); three silent ones came after it. Three new connections
        # evict the three silent ones, not it, and it then completes.
        from hmacauth._handshake import ClientHandshake, KeySet, SERVER_HELLO_LEN

        async def main() -> None:
            k = make_key()
            events: List[Any] = []
            sctx = Context([k], max_handshakes=4, max_handshakes_per_ip=-1, handshake_timeout=WAIT, on_handshake=events.append)
            srv = await hmacauth.start_server(echo, "127.0.0.1", 0, sctx)
            port = srv.sockets[0].getsockname()[1]
            hs = ClientHandshake(KeySet([k]).first, 0, False, False)  # type: ignore[arg-type]
            pr, pw = await asyncio.open_connection("127.0.0.1", port)
            pw.write(hs.client_hello())
            cf = hs.server_hello(await asyncio.wait_for(pr.readexactly(SERVER_HELLO_LEN), WAIT))
            silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            await until(lambda: len(srv._caps.handshaking) == 4)
            await asyncio.sleep(2 * GRACE)
            arrivals = []
            for i in range(3):
                arrivals.append(await asyncio.open_connection("127.0.0.1", port))
                await until(lambda: len(evictions(events)) > i)
            self.assertEqual(sorted(e.remote_addr for e in evictions(events)),
                             sorted(w.get_extra_info("sockname") for _, w in silent))
            pw.write(cf)
            me = pw.get_extra_info("sockname")
            await until(lambda: any(e.remote_addr == me and e.error is None for e in events))
            for _, w in [(pr, pw)] + silent + arrivals:
                w.close()
            srv.close()
            await srv.wait_closed()

        self.run_async(main())

    def test_handshake_not_evictable_before_the_loop_reads_it(self) -> None:
        # Under a flood one turn of the loop can outlast the grace: a
        # handshake accepted in it is ranked only from the next turn, in
        # which the loop reads its client, as Go's unstarted handshakes.
        from hmacauth._asyncio import _Caps

        class Proto:  # the part of _HmacAuthProtocol that _Caps uses
            def _evict(self) -> None:
                raise AssertionError("evicted")

        async def main() -> None:
            caps = _Caps(Context([make_key()], max_handshakes=1, max_handshakes_per_ip=-1))
            slots = caps.slots
            slot = caps.take(Proto(), "127.0.0.1", ("127.0.0.1", 1))
            later = time.monotonic() + 10 * GRACE
            self.assertEqual(slots.victim(later, False), (None, 0.0))
            self.assertIsInstance(caps.take(Proto(), "127.0.0.2", ("127.0.0.2", 2)), hmacauth.ConnectionShed)
            await asyncio.sleep(0)  # the loop's next turn
            later = time.monotonic() + 10 * GRACE
            self.assertIs(slots.victim(later, False)[0], slot)
            caps.give(slot)
            # One that ends before its turn leaves the balance exact.
            caps.give(caps.take(Proto(), "127.0.0.1", ("127.0.0.1", 1)))
            await asyncio.sleep(0)
            self.assertEqual((slots.used, slots.unstarted, slots.per_ip), (0, 0, {}))
            self.assertEqual(slots.victim(later, False), (None, 0.0))

        self.run_async(main())

    def test_closing_and_cleared_after_peer_reset(self) -> None:
        # After the peer resets the connection, the server's writer says it
        # is closing, and both traffic secrets are zeroed with the session
        # secret.
        for mode, fs in modes():
            with self.subTest(mode=str(mode), fs=fs):
                async def main() -> None:
                    k = make_key()
                    done: "asyncio.Future[asyncio.StreamWriter]" = asyncio.get_running_loop().create_future()

                    async def cb(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                        try:
                            await reader.read()
                        except OSError:
                            pass
                        done.set_result(writer)

                    srv = await hmacauth.start_server(cb, "127.0.0.1", 0, Context([k], mode, forward_secrecy=fs))
                    port = srv.sockets[0].getsockname()[1]
                    _, w = await hmacauth.open_connection("127.0.0.1", port, Context([k], mode, forward_secrecy=fs))
                    w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    w.transport.abort()  # a reset
                    writer = await asyncio.wait_for(done, WAIT)
                    self.assertTrue(writer.is_closing())
                    p = writer.get_extra_info("hmacauth")
                    self.assertEqual(bytes(p._res.secret), bytes(len(p._res.secret)))
                    if mode != Mode.AUTH:
                        for d in (p._sealer.d, p._opener.d):
                            self.assertEqual(bytes(d.secret), bytes(len(d.secret)))
                    srv.close()
                    await srv.wait_closed()

                self.run_async(main())


if __name__ == "__main__":
    unittest.main()
