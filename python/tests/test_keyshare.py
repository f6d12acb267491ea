"""Key share reuse (PROTOCOL.md 7.3): a Context's X25519 key pair serves
the handshakes of one lifetime and remembers the results computed with it,
by peer share, at most 256, until the lifetime ends; with a negative
lifetime every handshake makes its own key pair and nothing is kept. The
X25519 exchanges are counted through a wrapper around KeyPair.exchange."""

from __future__ import annotations

import asyncio
import os
import threading
import unittest
from typing import Any, Callable, List

from _support import WAIT, Thread, make_key, needs_crypto, pair, recv_exactly

import hmacauth
from hmacauth import Context, Mode, ProtocolError
from hmacauth import _handshake
from hmacauth._handshake import MAX_CACHED_SECRETS, KeyPair, KeyShares

# Low-order X25519 points (RFC 7748 section 6.1's check, the list of
# libsodium's blocklist): each gives an all-zero result, which is refused.
LOW_ORDER = [
    bytes(32),
    bytes([1]) + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
]


class CountExchanges:
    """Counts the X25519 exchanges made while it is entered."""

    def __enter__(self) -> "CountExchanges":
        self.n = 0
        self._lock = threading.Lock()
        self._orig: Callable[[Any, bytes], bytes] = KeyPair.exchange
        orig = self._orig

        def counted(pair: Any, peer: bytes) -> bytes:
            with self._lock:
                self.n += 1
            return orig(pair, peer)

        KeyPair.exchange = counted  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        KeyPair.exchange = self._orig  # type: ignore[method-assign]


def peers(n: int) -> List[bytes]:
    return [KeyPair(os.urandom(32)).public for _ in range(n)]


def handshake(cc: Context, sc: Context) -> bytes:
    """One connection with one byte each way; returns its exporter output."""
    c, s = pair(cc, sc)
    with c, s:
        c.sendall(b"x")
        s.sendall(recv_exactly(s, 1))
        recv_exactly(c, 1)
        out = c.export_keying_material(b"test", None, 32)
        assert out == s.export_keying_material(b"test", None, 32)
        return bytes(out)


@needs_crypto
class KeyShareTests(unittest.TestCase):
    def test_second_handshake_reuses_results(self) -> None:
        k = make_key()
        cc = Context([k], Mode.SEALED, forward_secrecy=True, key_share_lifetime=60)
        sc = Context([k], Mode.SEALED, forward_secrecy=True, key_share_lifetime=60)
        with CountExchanges() as count:
            first = handshake(cc, sc)
            self.assertEqual(count.n, 2)  # one per side
            second = handshake(cc, sc)
            self.assertEqual(count.n, 2, "the second handshake, with the same key shares, computed X25519 again")
        # The session secrets still differ, through the nonces and transcript.
        self.assertNotEqual(first, second)

    def test_asyncio_reuses_results(self) -> None:
        k = make_key()
        cc = Context([k], Mode.SEALED, forward_secrecy=True, key_share_lifetime=60)
        sc = Context([k], Mode.SEALED, forward_secrecy=True, key_share_lifetime=60)

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readexactly(1))
            await writer.drain()
            writer.close()

        async def main() -> int:
            srv = await hmacauth.start_server(echo, "127.0.0.1", 0, sc)
            port = srv.sockets[0].getsockname()[1]
            with CountExchanges() as count:
                for _ in range(3):
                    reader, writer = await asyncio.wait_for(hmacauth.open_connection("127.0.0.1", port, cc), WAIT)
                    writer.write(b"x")
                    self.assertEqual(await asyncio.wait_for(reader.readexactly(1), WAIT), b"x")
                    writer.close()
                    await writer.wait_closed()
            srv.close()
            await srv.wait_closed()
            return count.n

        self.assertEqual(asyncio.run(main()), 2)

    def test_bounded(self) -> None:
        shares = KeyShares()
        share = shares.get(60)
        ps = peers(MAX_CACHED_SECRETS + 44)
        with CountExchanges() as count:
            want = [share.exchange(p) for p in ps]
            self.assertEqual(count.n, len(ps))
            self.assertEqual([share.exchange(p) for p in ps], want)
            self.assertEqual(count.n, len(ps) + 44, "the first 256 peer shares should have been remembered, no more")
        self.assertEqual(len(share._secrets or {}), MAX_CACHED_SECRETS)
        for p, dh in zip(ps, want):
            self.assertEqual(KeyPair.exchange(share.pair, p), dh)

    def test_threads_share_the_cache(self) -> None:
        shares = KeyShares()
        share = shares.get(60)
        ps = peers(MAX_CACHED_SECRETS + 44)
        want = {p: KeyPair.exchange(share.pair, p) for p in ps}
        with CountExchanges() as count:
            def run(rev: bool) -> None:
                for _ in range(2):
                    for p in reversed(ps) if rev else ps:
                        if share.exchange(p) != want[p]:
                            raise AssertionError("wrong X25519 result from the cache")

            ts = [Thread(lambda rev=i % 2 == 1: run(rev)) for i in range(4)]
            for t in ts:
                t.join_result()
            # Each peer share is computed at least once and, once
            # remembered, never again: far fewer than 4 threads x 2 passes.
            self.assertLess(count.n, 8 * len(ps))
        self.assertEqual(len(share._secrets or {}), MAX_CACHED_SECRETS)

    def test_low_order_refused_and_not_remembered(self) -> None:
        shares = KeyShares()
        share = shares.get(60)
        with CountExchanges() as count:
            for p in LOW_ORDER:
                for _ in range(2):
                    with self.assertRaises(ProtocolError):
                        share.exchange(p)
            self.assertEqual(count.n, 2 * len(LOW_ORDER))
            self.assertEqual(share._secrets, {})
            good = peers(1)[0]
            share.exchange(good)
            share.exchange(good)
            self.assertEqual(count.n, 2 * len(LOW_ORDER) + 1)

    def test_dropped_at_lifetime_end(self) -> None:
        shares = KeyShares()
        share = shares.get(1.0)
        p = peers(1)[0]
        with CountExchanges() as count:
            dh = share.exchange(p)
            self.assertEqual(share.exchange(p), dh)
            self.assertEqual(count.n, 1)
            # The timer drops the key pair and its results, with no
            # handshake coming to replace them.
            timer = shares._timer
            assert timer is not None
            timer.join(WAIT)
            self.assertFalse(timer.is_alive())
            self.assertIsNone(shares._share)
            self.assertIsNone(share._secrets)
            # A handshake that took it before finishes with it, and
            # remembers nothing.
            self.assertEqual(share.exchange(p), dh)
            self.assertEqual(share.exchange(p), dh)
            self.assertEqual(count.n, 3)
            self.assertIsNone(share._secrets)
            # New handshakes get a new key pair.
            self.assertNotEqual(shares.get(1.0).public, share.public)

    def test_negative_lifetime_keeps_nothing(self) -> None:
        k = make_key()
        cc = Context([k], Mode.SEALED, forward_secrecy=True, key_share_lifetime=-1)
        sc = Context([k], Mode.SEALED, forward_secrecy=True, key_share_lifetime=-1)
        with CountExchanges() as count:
            handshake(cc, sc)
            handshake(cc, sc)
            self.assertEqual(count.n, 4)
        self.assertIsNone(cc._shares._share)
        self.assertIsNone(sc._shares._share)
        self.assertIsNone(cc._shares._timer)
        self.assertIsNone(sc._shares._timer)


if __name__ == "__main__":
    unittest.main()
