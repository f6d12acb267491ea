"""Fork safety: a child made by os.fork (a pre-fork server, multiprocessing's
"fork" start method, socketserver.ForkingMixIn) after its parent ran
handshakes with forward secrecy starts with no key share, X25519 result or
client nonce of its parent's (PROTOCOL.md 7.3), and with locks that no
thread of the parent holds. Each child reports through a pipe and exits with
os._exit; one that does not finish within CHILD_WAIT seconds is killed and
the test fails."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import socketserver
import threading
import time
import traceback
import unittest
import warnings
from typing import Any, Callable, Dict, Iterator, Tuple

from _support import HAVE_CRYPTO, WAIT, Thread, make_key, needs_crypto, recv_exactly
from test_keyshare import handshake

import hmacauth
from hmacauth import Context, Mode
from hmacauth import _handshake, _server

needs_fork = unittest.skipUnless(
    hasattr(os, "fork") and hasattr(os, "register_at_fork"), "os.fork or os.register_at_fork is missing here"
)

# How long a child may take; a backstop against a deadlocked child, not a
# speed assertion (a child's handshake takes milliseconds).
CHILD_WAIT = 10.0


@contextlib.contextmanager
def forking() -> Iterator[None]:
    # Python 3.12 and later warn that a fork in a process with threads may
    # deadlock the child: what these tests check does not happen.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def run_in_child(fn: Callable[[], str]) -> str:
    """Runs fn in a child made by os.fork and returns the string it returned;
    raises AssertionError with the child's traceback if it failed, or if it
    did not finish within CHILD_WAIT seconds (it is then killed)."""
    r, w = os.pipe()
    with forking():
        pid = os.fork()
    if pid == 0:
        code = 2
        try:
            os.close(r)
            try:
                out, code = fn(), 0
            except BaseException:  # noqa: B902 - reported to the parent
                out = traceback.format_exc()
            data = out.encode()
            while data:
                data = data[os.write(w, data) :]
        finally:
            os._exit(code)
    os.close(w)
    got = bytearray()
    try:
        deadline = time.monotonic() + CHILD_WAIT
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(
                    "the child did not finish within %ss (deadlocked on a lock held at the fork?); it wrote %r"
                    % (CHILD_WAIT, bytes(got))
                )
            b = os.read(r, 1 << 16)
            if not b:
                break
            got += b
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    out = got.decode()
    if status != 0:
        raise AssertionError("the child failed (wait status %d):\n%s" % (status, out))
    return out


@contextlib.contextmanager
def held_by_thread(lock: Any) -> Iterator[None]:
    """Holds lock from another thread while the block runs."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            release.wait(WAIT)

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    try:
        if not taken.wait(WAIT):
            raise AssertionError("the thread did not take the lock within %ss" % WAIT)
        yield
    finally:
        release.set()
        t.join(WAIT)


def fs_contexts() -> Tuple[Context, Context]:
    k = make_key()
    cc = Context([k], Mode.SEALED, forward_secrecy=True, key_share_lifetime=60)
    sc = Context([k], Mode.SEALED, forward_secrecy=True, key_share_lifetime=60)
    return cc, sc


@needs_fork
@needs_crypto
class ForkTests(unittest.TestCase):
    def test_child_forgets_key_shares_and_nonces(self) -> None:
        cc, sc = fs_contexts()
        handshake(cc, sc)
        cshare, sshare = cc._shares._share, sc._shares._share
        assert cshare is not None and sshare is not None
        self.assertTrue(cshare._secrets and sshare._secrets, "the handshake left no cached X25519 result")
        # As if a client and a server handshake were in flight at the fork.
        nonce = os.urandom(32)
        cc._nonces.add(nonce)
        _handshake._server_nonces.add(nonce)

        def child() -> str:
            kept = [
                name
                for name, v in (
                    ("the client Context's key share", cc._shares._share),
                    ("the server Context's key share", sc._shares._share),
                    ("the client key share's X25519 results", cshare._secrets),
                    ("the server key share's X25519 results", sshare._secrets),
                )
                if v is not None
            ]
            if nonce in cc._nonces:
                kept.append("the client Context's nonces")
            if nonce in _handshake._server_nonces:
                kept.append("the process's server nonces")
            if kept:
                raise AssertionError("the child kept its parent's " + ", ".join(kept))
            handshake(cc, sc)
            c, s = cc._shares._share, sc._shares._share
            assert c is not None and s is not None
            return c.public.hex() + " " + s.public.hex()

        try:
            out = run_in_child(child)
        finally:
            cc._nonces.discard(nonce)
            _handshake._server_nonces.discard(nonce)
        child_c, child_s = (bytes.fromhex(x) for x in out.split())
        self.assertNotEqual(child_c, cshare.public, "the child's client used its parent's key share")
        self.assertNotEqual(child_s, sshare.public, "the child's server used its parent's key share")
        # The parent keeps its own until its lifetime ends.
        self.assertIs(cc._shares._share, cshare)
        self.assertIs(sc._shares._share, sshare)
        self.assertTrue(cshare._secrets and sshare._secrets)

    def test_child_does_not_deadlock_on_key_share_locks(self) -> None:
        cc, sc = fs_contexts()
        handshake(cc, sc)
        sshare = sc._shares._share
        assert sshare is not None
        check_locks(
            self,
            cc,
            sc,
            {
                "the server Context's KeyShares": sc._shares._lock,
                "the client Context's KeyShares": cc._shares._lock,
                "the server Context's KeyShare": sshare._lock,
            },
        )


@needs_fork
class NonceLockTests(unittest.TestCase):
    def test_child_does_not_deadlock_on_nonce_locks(self) -> None:
        k = make_key()
        cc, sc = Context([k]), Context([k])
        handshake(cc, sc)
        check_locks(
            self,
            cc,
            sc,
            {
                "the client Context's ClientNonces": cc._nonces._lock,
                "the process's server nonces": _handshake._server_nonces._lock,
            },
        )


def check_locks(t: unittest.TestCase, cc: Context, sc: Context, locks: Dict[str, Any]) -> None:
    """Forks while another thread holds each lock in turn; each child runs a
    handshake from cc to sc."""
    for name, lock in locks.items():
        with t.subTest(held=name):
            with held_by_thread(lock):
                # The child's handshake reports its exporter output.
                t.assertEqual(len(run_in_child(lambda: handshake(cc, sc).hex())), 64)


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(recv_exactly(self.request, 1))


class _ForkingServer(hmacauth.HmacAuthMixIn, socketserver.ForkingMixIn, socketserver.TCPServer):
    pass


@needs_fork
class ForkingMixInTests(unittest.TestCase):
    def test_lock_held_at_fork(self) -> None:
        # A threading server beside the forking one may hold the mix-in's
        # lock when a request is forked: the child still serves it.
        k = make_key()
        mode, fs = (Mode.SEALED, True) if HAVE_CRYPTO else (Mode.AUTH, False)
        srv = _ForkingServer(("127.0.0.1", 0), _Echo)
        srv.hmacauth_context = Context([k], mode, forward_secrecy=fs)
        try:
            with held_by_thread(_server._wrapped.lock):

                def client() -> bytes:
                    cctx = Context([k], mode, forward_secrecy=fs)
                    with hmacauth.create_connection(srv.server_address, cctx, timeout=CHILD_WAIT) as c:
                        c.sendall(b"x")
                        try:
                            return recv_exactly(c, 1)
                        except socket.timeout:
                            raise AssertionError(
                                "the forked request handler did not answer within %ss "
                                "(deadlocked on a lock held at the fork?)" % CHILD_WAIT
                            ) from None

                t = Thread(client)
                srv.timeout = WAIT
                with forking():
                    srv.handle_request()  # accepts, forks the child that serves
                self.assertEqual(t.join_result(), b"x")
        finally:
            for pid in list(srv.active_children or ()):
                os.kill(pid, signal.SIGKILL)
            srv.server_close()  # reaps the children


if __name__ == "__main__":
    unittest.main()
