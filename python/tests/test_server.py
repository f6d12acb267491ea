"""Listener and create_server: only authenticated connections reach accept,
handshakes run concurrently, silent clients do not stall others, caps."""

from __future__ import annotations

import socket
import threading
import unittest
from typing import Any, Callable, List
from unittest import mock

from _support import WAIT, Thread, evictions, make_key, recv_exactly, wait_until

import hmacauth
from hmacauth import Context
from hmacauth._handshake import SERVER_HELLO_LEN, ClientHandshake, KeySet


class Events:
    """The HandshakeEvents reported, in order, with a condition to wait on."""

    def __init__(self) -> None:
        self.list: List[hmacauth.HandshakeEvent] = []
        self.cond = threading.Condition()

    def __call__(self, ev: hmacauth.HandshakeEvent) -> None:
        with self.cond:
            self.list.append(ev)
            self.cond.notify_all()

    def snapshot(self) -> List[hmacauth.HandshakeEvent]:
        with self.cond:
            return list(self.list)

    def wait(self, pred: Callable[[List[hmacauth.HandshakeEvent]], bool]) -> List[hmacauth.HandshakeEvent]:
        with self.cond:
            if not self.cond.wait_for(lambda: pred(self.list), WAIT):
                raise AssertionError("events not seen within %ss: %r" % (WAIT, self.list))
            return list(self.list)


def progressed_client(addr: Any) -> Any:
    """A raw client whose ClientHello passed the server's checks: it has
    read the ServerHello and not yet sent its ClientFinished. Returns the
    socket and the ClientFinished to send."""
    k = make_key()
    hs = ClientHandshake(KeySet([k]).first, 0, False, False)  # type: ignore[arg-type]
    sock = socket.create_connection(addr)
    sock.settimeout(WAIT)
    sock.sendall(hs.client_hello())
    return sock, hs.server_hello(recv_exactly(sock, SERVER_HELLO_LEN))


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
            # As Go's message and the eviction's: address and port.
            err = next(e.error for e in events if isinstance(e.error, hmacauth.ConnectionShed))
            self.assertTrue(any("client 127.0.0.1:%d:" % x.getsockname()[1] in str(err) for x in silent), err)
            for s in silent:
                s.close()

    def test_close_with_every_slot_taken(self) -> None:
        ln = hmacauth.create_server(("127.0.0.1", 0), Context([make_key()], max_handshakes=1, handshake_timeout=WAIT))
        silent = socket.create_connection(ln.address)  # holds the only slot
        with silent:
            wait_until(lambda: ln._slots.per_ip.get("127.0.0.1") == 1)
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
            wait_until(lambda: ln._slots.per_ip.get("127.0.0.1") == 1)
            ln.close()
            self.assertEqual(silent.recv(10), b"")  # closed by the server, not left open
            self.assertTrue(ended.is_set())  # close() waited for the report
            self.assertIsInstance(events[0].error, ConnectionAbortedError)

    def test_close_waits_for_the_handshake_threads(self) -> None:
        # As Go's Close: once close() returns, no thread of the Listener is
        # left and no on_handshake call comes; the handshakes it ended are
        # reported as the server closing them, not as their clients.
        calls: List[hmacauth.HandshakeEvent] = []
        late: List[hmacauth.HandshakeEvent] = []
        closed = threading.Event()

        def record(ev: hmacauth.HandshakeEvent) -> None:
            # A call made after close() returned sees closed set here; one
            # made before keeps close() from returning, so this waits out
            # its bound.
            closed.wait(0.5)
            (late if closed.is_set() else calls).append(ev)

        sctx = Context([make_key()], handshake_timeout=None, max_handshakes_per_ip=-1, on_handshake=record)
        ln = hmacauth.create_server(("127.0.0.1", 0), sctx)
        silent = [socket.create_connection(ln.address) for _ in range(3)]
        try:
            wait_until(lambda: len(ln._inflight) == 3)
            ln.close()
            closed.set()
            left = [t.name for t in threading.enumerate() if t.name.startswith("hmacauth-listener")]
            self.assertEqual(left, [])
            self.assertEqual(len(calls), 3, calls)
            for ev in calls:
                self.assertIsInstance(ev.error, ConnectionAbortedError)
                self.assertIn("server was closed during the handshake", str(ev.error))
                self.assertIsNotNone(ev.error.__cause__)
            self.assertEqual(late, [])
        finally:
            for x in silent:
                x.close()

    def test_close_from_on_handshake(self) -> None:
        # close() waits for the Listener's threads but not for the one it
        # runs on.
        holder: List[hmacauth.Listener] = []
        done = threading.Event()

        def record(ev: hmacauth.HandshakeEvent) -> None:
            holder[0].close()
            done.set()

        ln = hmacauth.create_server(("127.0.0.1", 0), Context([make_key()], on_handshake=record))
        holder.append(ln)
        socket.create_connection(ln.address).close()
        self.assertTrue(done.wait(WAIT))
        ln.close()

    def test_queued_connection_frees_its_slot(self) -> None:
        # As in Go, a connection waiting for accept holds no slot: with one
        # slot, a second key holder is served while the first waits in the
        # queue (the second then waits for room in the queue, holding the
        # slot), and a third once accept makes room.
        events = Events()
        sctx = Context([make_key()], max_handshakes=1, accept_queue=1, max_handshakes_per_ip=-1, on_handshake=events)
        cctx = Context([make_key()])
        with hmacauth.create_server(("127.0.0.1", 0), sctx) as ln:
            c1 = hmacauth.create_connection(ln.address, cctx, timeout=WAIT)
            wait_until(lambda: len(ln._ready) == 1)
            c2 = hmacauth.create_connection(ln.address, cctx, timeout=WAIT)
            events.wait(lambda evs: len(evs) == 2)
            s1, p1 = ln.accept(timeout=WAIT)
            c3 = hmacauth.create_connection(ln.address, cctx, timeout=WAIT)
            s2, p2 = ln.accept(timeout=WAIT)
            s3, p3 = ln.accept(timeout=WAIT)
            self.assertEqual([p1, p2, p3], [c.getsockname() for c in (c1, c2, c3)])
            for c in (c1, c2, c3, s1, s2, s3):
                c.close()
            self.assertEqual([e.error for e in events.snapshot()], [None, None, None])

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

    def test_silent_clients_evicted_for_an_honest_one(self) -> None:
        # Four silent connections hold every slot: an honest client gets in
        # by evicting one of them, long before their handshake timeout.
        events = Events()
        sctx = Context([make_key()], max_handshakes=4, max_handshakes_per_ip=-1, handshake_timeout=5.0, on_handshake=events)
        with hmacauth.create_server(("127.0.0.1", 0), sctx) as ln:
            silent = [socket.create_connection(ln.address) for _ in range(4)]
            try:
                wait_until(lambda: len(ln._inflight) == 4)
                c = hmacauth.create_connection(ln.address, Context([make_key()]), timeout=WAIT)
                s, _ = ln.accept(timeout=WAIT)
                before = events.snapshot()
                with c, s:
                    c.sendall(b"hi")
                    self.assertEqual(recv_exactly(s, 2), b"hi")
                self.assertFalse([e for e in before if isinstance(e.error, hmacauth.HandshakeTimeout)], before)
                evs = evictions(events.wait(lambda evs: len(evictions(evs)) >= 1))
                self.assertEqual(len(evs), 1, evs)
                self.assertIn(evs[0].remote_addr, [x.getsockname() for x in silent])
                self.assertIn("raise max_handshakes", str(evs[0].error))
                victim = next(x for x in silent if x.getsockname() == evs[0].remote_addr)
                victim.settimeout(WAIT)
                self.assertEqual(victim.recv(10), b"")  # closed by the server
            finally:
                for x in silent:
                    x.close()

    def test_least_progress_evicted_first(self) -> None:
        # The oldest handshake has progressed (its ClientHello passed the
        # checks); three silent ones came after it. Three new connections
        # evict the three silent ones, not it, and it then completes.
        events = Events()
        sctx = Context([make_key()], max_handshakes=4, max_handshakes_per_ip=-1, handshake_timeout=WAIT, on_handshake=events)
        with hmacauth.create_server(("127.0.0.1", 0), sctx) as ln:
            p, cf = progressed_client(ln.address)
            silent = [socket.create_connection(ln.address) for _ in range(3)]
            arrivals: List[socket.socket] = []
            try:
                wait_until(lambda: len(ln._inflight) == 4)
                for i in range(3):
                    arrivals.append(socket.create_connection(ln.address))
                    events.wait(lambda evs: len(evictions(evs)) > i)
                evicted = sorted(e.remote_addr for e in evictions(events.snapshot()))
                self.assertEqual(evicted, sorted(x.getsockname() for x in silent))
                p.sendall(cf)
                s, peer = ln.accept(timeout=WAIT)
                s.close()
                self.assertEqual(peer, p.getsockname())
            finally:
                for x in [p] + silent + arrivals:
                    x.close()

    def test_progressed_handshake_evicted_when_none_has_less(self) -> None:
        events = Events()
        sctx = Context([make_key()], max_handshakes=1, max_handshakes_per_ip=-1, handshake_timeout=WAIT, on_handshake=events)
        with hmacauth.create_server(("127.0.0.1", 0), sctx) as ln:
            p, _ = progressed_client(ln.address)
            with p, socket.create_connection(ln.address):
                evs = evictions(events.wait(lambda evs: len(evictions(evs)) == 1))
                self.assertEqual(evs[0].remote_addr, p.getsockname())
                self.assertEqual(p.recv(10), b"")

    def test_evicted_while_draining_its_refusal_keeps_its_reason(self) -> None:
        # A client with a wrong key is refused, and the server drains what
        # it sends (up to 500 ms) in the handshake's slot. Evicted then, it
        # is reported with its own reason, as in Go, not as an eviction.
        events = Events()
        sctx = Context([make_key("good")], max_handshakes=1, max_handshakes_per_ip=-1, on_handshake=events)
        with hmacauth.create_server(("127.0.0.1", 0), sctx) as ln:
            hs = ClientHandshake(KeySet([make_key("bad")]).first, 0, False, False)  # type: ignore[arg-type]
            with socket.create_connection(ln.address) as bad:
                bad.settimeout(WAIT)
                bad.sendall(hs.client_hello())
                self.assertEqual(bad.recv(10), b"")  # refused: the server drains now
                with socket.create_connection(ln.address):  # evicts it, if still draining
                    evs = events.wait(lambda evs: len(evs) == 1)
        self.assertIsInstance(evs[0].error, hmacauth.AuthFailed, evs)
        self.assertEqual(evs[0].key_id, "bad")

    def test_thread_that_does_not_start_fails_one_connection(self) -> None:
        # The accept thread goes on after a handshake thread did not start
        # (a pids cap): that connection is closed and reported, the next
        # one is served.
        events = Events()
        real = threading.Thread.start
        failed = threading.Event()

        def start(t: threading.Thread) -> None:
            if threading.current_thread().name == "hmacauth-listener" and not failed.is_set():
                failed.set()
                raise RuntimeError("can't start new thread")
            real(t)

        sctx = Context([make_key()], on_handshake=events)
        with hmacauth.create_server(("127.0.0.1", 0), sctx) as ln:
            with mock.patch.object(threading.Thread, "start", start):
                with self.assertRaises(hmacauth.AuthFailed):
                    hmacauth.create_connection(ln.address, Context([make_key()]), timeout=WAIT)
                self.assertTrue(failed.is_set())
                c = hmacauth.create_connection(ln.address, Context([make_key()]), timeout=WAIT)
                s, _ = ln.accept(timeout=WAIT)
                c.close()
                s.close()
            evs = events.wait(lambda evs: any(isinstance(e.error, ConnectionAbortedError) for e in evs))
            err = next(e.error for e in evs if isinstance(e.error, ConnectionAbortedError))
            self.assertIn("can't start new thread", str(err))
            self.assertEqual(ln._slots.per_ip, {})

    def test_accept_raises_when_the_accept_thread_fails(self) -> None:
        class Broken(socket.socket):
            def accept(self) -> Any:  # type: ignore[override]
                raise RuntimeError("broken")

        sock = Broken(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with hmacauth.Listener(sock, Context([make_key()])) as ln:
            with self.assertRaises(OSError) as cm:
                ln.accept(timeout=WAIT)
            self.assertNotIsInstance(cm.exception, socket.timeout)
            self.assertIn("accept thread failed", str(cm.exception))
            self.assertIsInstance(cm.exception.__cause__, RuntimeError)

    def test_caps_are_checked(self) -> None:
        for kw in ({"max_handshakes_per_ip": "4"}, {"max_handshakes_per_ip": 1.5}, {"max_handshakes": True},
                   {"max_handshakes": -1}, {"accept_queue": None}):
            with self.subTest(**kw), self.assertRaises(hmacauth.ConfigError):
                Context([make_key()], **kw)  # type: ignore[arg-type]
        self.assertEqual(Context([make_key()], max_handshakes_per_ip=-1).max_handshakes_per_ip, -1)

    def test_slow_report_of_a_shed_does_not_stall_accepting(self) -> None:
        # on_handshake blocks on a shed; another client's handshake still
        # runs and is reported meanwhile, and a handshake is reported once
        # its per-IP slot is free.
        in_shed, release = threading.Event(), threading.Event()
        events = Events()

        def record(ev: hmacauth.HandshakeEvent) -> None:
            if isinstance(ev.error, hmacauth.ConnectionShed):
                in_shed.set()
                release.wait(WAIT)
            events(ev)

        sctx = Context([make_key()], max_handshakes_per_ip=1, on_handshake=record)
        try:
            with hmacauth.create_server(("127.0.0.1", 0), sctx) as ln:
                silent = socket.create_connection(ln.address)
                wait_until(lambda: len(ln._inflight) == 1)
                socket.create_connection(ln.address).close()  # shed
                self.assertTrue(in_shed.wait(WAIT))
                silent.close()
                events.wait(lambda evs: any(isinstance(e.error, hmacauth.ProtocolError) for e in evs))
                c = hmacauth.create_connection(ln.address, Context([make_key()]), timeout=WAIT)
                s, _ = ln.accept(timeout=WAIT)
                c.close()
                s.close()
                self.assertFalse(release.is_set())
                self.assertFalse([e for e in events.snapshot() if isinstance(e.error, hmacauth.ConnectionShed)])
                release.set()
            events.wait(lambda evs: any(isinstance(e.error, hmacauth.ConnectionShed) for e in evs))
            self.assertFalse(ln._reporter.is_alive())
        finally:
            release.set()

    def test_handshake_reported_once_its_per_ip_slot_is_free(self) -> None:
        # Whoever hears of the outcome may connect again from the same IP at
        # once, as with the Go Listener.
        seen: List[Any] = []
        events = Events()
        holder: List[hmacauth.Listener] = []

        def record(ev: hmacauth.HandshakeEvent) -> None:
            seen.append(dict(holder[0]._slots.per_ip))
            events(ev)

        sctx = Context([make_key()], max_handshakes_per_ip=1, on_handshake=record)
        with hmacauth.create_server(("127.0.0.1", 0), sctx) as ln:
            holder.append(ln)
            with socket.create_connection(ln.address):
                wait_until(lambda: len(ln._inflight) == 1)
            events.wait(lambda evs: len(evs) == 1)
            c = hmacauth.create_connection(ln.address, Context([make_key()]), timeout=WAIT)
            s, _ = ln.accept(timeout=WAIT)
            c.close()
            s.close()
            events.wait(lambda evs: len(evs) == 2)
            self.assertEqual([type(e.error).__name__ for e in events.snapshot()], ["ProtocolError", "NoneType"])
            self.assertEqual(seen, [{}, {}])


if __name__ == "__main__":
    unittest.main()
