"""Shared test helpers: keys, loopback pairs, and whether 'cryptography' is
importable (without it only ModeAuth without forward secrecy is tested)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
import unittest
from typing import Any, Callable, List, Optional, Tuple

import hmacauth

try:
    import cryptography  # noqa: F401

    HAVE_CRYPTO = True
except ImportError:
    HAVE_CRYPTO = False

needs_crypto = unittest.skipUnless(HAVE_CRYPTO, "the 'cryptography' package is not installed")

VECTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "testdata", "vectors")

# Every bounded wait in the tests; a backstop, not a speed assertion.
WAIT = 20.0


def wait_until(pred: Callable[[], bool]) -> None:
    """Polls pred, bounded: for what no event marks (a handshake that
    started)."""
    deadline = time.monotonic() + WAIT
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %ss" % WAIT)
        time.sleep(0.005)


async def until(pred: Callable[[], bool]) -> None:
    """wait_until on an event loop."""
    deadline = time.monotonic() + WAIT
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %ss" % WAIT)
        await asyncio.sleep(0.005)


def evictions(events: List[Any]) -> List[Any]:
    """The HandshakeEvents of handshakes evicted under load."""
    return [e for e in events if isinstance(e.error, hmacauth.ConnectionShed) and "evicted under load" in str(e.error)]


def make_key(key_id: str = "test-key") -> hmacauth.Key:
    return hmacauth.Key(key_id, hashlib.sha256(key_id.encode()).digest())


def modes() -> List[Tuple[hmacauth.Mode, bool]]:
    """The (mode, forward secrecy) pairs this interpreter can run."""
    if not HAVE_CRYPTO:
        return [(hmacauth.Mode.AUTH, False)]
    return [(m, fs) for m in hmacauth.Mode for fs in (False, True)]


class Thread(threading.Thread):
    """A thread whose result or exception join_result returns or raises."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.exc: Optional[BaseException] = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as e:  # noqa: B902 - re-raised in join_result
            self.exc = e

    def join_result(self) -> Any:
        self.join(WAIT)
        if self.is_alive():
            raise AssertionError("thread did not finish within %ss" % WAIT)
        if self.exc is not None:
            raise self.exc
        return self.result


def listener() -> socket.socket:
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(128)
    return ls


def pair(client_ctx: hmacauth.Context, server_ctx: hmacauth.Context) -> Tuple[Any, Any]:
    """A connected, handshaken (client, server) over loopback TCP; raises
    the server's error first, then the client's."""
    ls = listener()
    with ls:
        def serve() -> Any:
            s, _ = ls.accept()
            s.settimeout(WAIT)
            return server_ctx.wrap_socket(s, server_side=True)

        t = Thread(serve)
        cexc = None
        c = None
        try:
            c = hmacauth.create_connection(ls.getsockname(), client_ctx, timeout=WAIT)
        except BaseException as e:  # noqa: B902
            cexc = e
        try:
            s = t.join_result()
        except BaseException:
            if c is not None:
                c.close()
            raise
        if cexc is not None:
            s.close()
            raise cexc
        return c, s


def recv_exactly(s: Any, n: int) -> bytes:
    buf = bytearray(n)
    mv = memoryview(buf)
    got = 0
    while got < n:
        m = s.recv_into(mv[got:])
        if m == 0:
            raise EOFError("stream ended after %d of %d bytes" % (got, n))
        got += m
    return bytes(buf)


def recv_all(s: Any) -> bytes:
    out = bytearray()
    while True:
        b = s.recv(1 << 20)
        if not b:
            return bytes(out)
        out += b
