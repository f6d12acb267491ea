"""Listener and create_server: only authenticated connections reach accept,
handshakes run concurrently, silent clients do not stall others, caps."""

from __future__ import annotations

import socket
import threading
import time
import unittest

from _support import WAIT, Thread, recv_all, recv_exactly, make_key

import hmacauth
from hmacauth import Context


class ListenerTests(unittest.TestCase):
    def test_only_authenticated_reach_accept(self) -> None:
        events = []
        changed = threading.Condition()

        def record(ev: hmacauth.HandshakeEvent) -> None:
            with changed:
                events.append(ev)
                changed.notify_all()

        def kinds() -> list:
            return sorted(type(e.error).__name__ for e in events)

        sctx = Context([make_key("good")], on_handshake=record, handshake_timeout=2.0)
        with hmacauth.create_server(("127.0.0.1", 0), sctx) as ln:
            addr = ln.address
            # A silent client, a prober and a wrong key go first.
            silent = socket.create_connection(addr)
            probe = socket.create_connection(addr)
            probe.sendall(b"GET / HTTP/1.1\r\n\r\n")
            with self.assertRaises(hmacauth.AuthFailed):
                hmacauth.create_connection(addr, Context([make_key("bad")]), timeout=WAIT)
            # The prober is refused at its first wrong byte, without a byte back.
            probe.settimeout(WAIT)
            self.assertEqual(probe.recv(100), b"")
            probe.close()
            # A good client is accepted while the silent one still waits.
            c = hmacauth.create_connection(addr, Context([make_key("good")]), timeout=WAIT)
            s, peer = ln.accept(timeout=WAIT)
            with c, s:
                self.assertEqual(s.key_id, "good")
                c.sendall(b"hi")
                self.assertEqual(recv_exactly(s, 2), b"hi")
            silent.close()
            # A refusal is reported once its connection is closed, which
            # may come after the client has seen it.
            with changed:
                done = changed.wait_for(lambda: {"AuthFailed", "ProtocolError", "NoneType"} <= set(kinds()), WAIT)
            self.assertTrue(done, kinds())

    def test_many_concurrent(self) -> None:
        sctx = Context([make_key()], max_handshakes_per_ip=-1)
        with hmacauth.create_server(("127.0.0.1", 0), sctx) as ln:
            addr = ln.address
            n = 50

            def server() -> int:
                got = 0
                for _ in range(n):
                    s, _ = ln.accept(timeout=WAIT)
                    with s:
                        s.sendall(recv_exactly(s, 5))
                        got += 1
                return got

            t = Thread(server)
            cctx = Context([make_key()])

            def client() -> bytes:
                with hmacauth.create_connection(addr, cctx, timeout=WAIT) as c:
                    c.sendall(b"hello")
                    return recv_exactly(c, 5)

            threads = [Thread(client) for _ in range(n)]
            for th in threads:
                self.assertEqual(th.join_result(), b"hello")
            self.assertEqual(t.join_result(), n)

    def test_per_ip_cap_sheds(self) -> None:
        events = []
        shed = threading.Event()

        def record(ev: hmacauth.HandshakeEvent) -> None:
            events.append(ev)
            if isinstance(ev.error, hmacauth.ConnectionShed):
                shed.set()

        sctx = Context([make_key()], max_handshakes_per_ip=2, on_handshake=record)
        with hmacauth.create_server(("127.0.0.1", 0), sctx) as ln:
            silent = [socket.create_connection(ln.address) for _ in range(3)]
            self.assertTrue(shed.wait(WAIT))
            for s in silent:
                s.close()

    def test_close_with_every_slot_taken(self) -> None:
        ln = hmacauth.create_server(("127.0.0.1", 0), Context([make_key()], max_handshakes=1, handshake_timeout=WAIT))
        silent = socket.create_connection(ln.address)  # holds the only slot
        with silent:
            # No event marks a handshake that started: poll, bounded.
            deadline = time.monotonic() + WAIT
            while ln._per_ip.get("127.0.0.1") != 1 and time.monotonic() < deadline:
                time.sleep(0.005)
            ln.close()
            self.assertFalse(ln._thread.is_alive(), "the accept loop still waits for a slot")

    def test_close_ends_handshakes_in_flight(self) -> None:
        # Without a handshake timeout a silent client's handshake would wait
        # for ever: close ends it, and its connection is closed.
        events = []
        ended = threading.Event()

        def record(ev: hmacauth.HandshakeEvent) -> None:
            events.append(ev)
            ended.set()

        ln = hmacauth.create_server(("127.0.0.1", 0), Context([make_key()], handshake_timeout=None, on_handshake=record))
        with socket.create_connection(ln.address) as silent:
            silent.settimeout(WAIT)
            # No event marks a handshake that started: poll, bounded.
            deadline = time.monotonic() + WAIT
            while ln._per_ip.get("127.0.0.1") != 1 and time.monotonic() < deadline:
                time.sleep(0.005)
            ln.close()
            self.assertEqual(silent.recv(10), b"")  # closed by the server, not left open
            self.assertTrue(ended.wait(WAIT))
            self.assertIsInstance(events[0].error, hmacauth.HmacAuthError)

    def test_per_ip_bucket_is_ipv6_64(self) -> None:
        # As the Go package: one IPv6 host commonly has a whole /64.
        from hmacauth._server import _ip_key

        self.assertEqual(_ip_key(("2001:db8:1:2::1", 1, 0, 0)), _ip_key(("2001:db8:1:2:ffff::9", 2, 0, 0)))
        self.assertNotEqual(_ip_key(("2001:db8:1:2::1", 1, 0, 0)), _ip_key(("2001:db8:1:3::1", 1, 0, 0)))
        self.assertEqual(_ip_key(("::ffff:192.0.2.1", 1, 0, 0)), _ip_key(("192.0.2.1", 1)))
        self.assertNotEqual(_ip_key(("192.0.2.1", 1)), _ip_key(("192.0.2.2", 1)))
        self.assertNotEqual(_ip_key(("fe80::1%eth0", 1, 0, 2)), _ip_key(("fe80::1%eth1", 1, 0, 3)))
        self.assertEqual(_ip_key("/tmp/unix.sock"), "")

    def test_close_ends_accept(self) -> None:
        ln = hmacauth.create_server(("127.0.0.1", 0), Context([make_key()]))
        t = Thread(lambda: ln.accept())
        ln.close()
        with self.assertRaises(OSError):
            t.join_result()


if __name__ == "__main__":
    unittest.main()
