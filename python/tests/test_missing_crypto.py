"""A side without the 'cryptography' package refuses a mode or forward
secrecy that its peer asks for, before agreeing to it, and closes the
connection: it never leaves its peer believing the handshake succeeded.

The side without the package is a child process in which importing
'cryptography' fails (sys.modules['cryptography'] = None); the other side
is this process, with the package."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import unittest
from typing import Tuple

from _support import WAIT, Thread, listener, make_key, needs_crypto

import hmacauth
from hmacauth import Context, Mode

SRC = os.path.dirname(os.path.dirname(os.path.abspath(hmacauth.__file__)))

# Prints one line: the handshake's outcome, the socket's fileno() after it
# (-1: closed) and, with do_handshake_on_connect=False, what a later recv
# raises.
CHILD = r"""
import socket, sys
sys.modules["cryptography"] = None
import hmacauth
role, arg, secret = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
ctx = hmacauth.Context([hmacauth.Key("test-key", secret)])
if role == "server":
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    print(ls.getsockname()[1], flush=True)
    s, _ = ls.accept()
else:
    s = socket.create_connection(("127.0.0.1", arg))
s.settimeout(%r)
w = ctx.wrap_socket(s, server_side=role == "server", do_handshake_on_connect=False)
try:
    w.do_handshake()
    out = "established"
except hmacauth.HmacAuthError as e:
    out = "%%s %%d %%s" %% (type(e).__name__, s.fileno(), e)
try:
    w.recv(1)
    out += " | recv returned"
except Exception as e:
    out += " | recv raised %%s" %% type(e).__name__
print(out, flush=True)
""" % (WAIT,)

# The same with asyncio: prints the server's port, then the handshake's
# error (as on_handshake or open_connection reports it).
CHILD_ASYNCIO = r"""
import asyncio, sys
sys.modules["cryptography"] = None
import hmacauth
role, arg, secret = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
key = hmacauth.Key("test-key", secret)

async def main():
    if role == "server":
        done = asyncio.get_running_loop().create_future()
        def on_handshake(ev):
            if not done.done():
                done.set_result(ev.error)
        async def app(r, w):
            w.close()
        ctx = hmacauth.Context([key], on_handshake=on_handshake)
        srv = await hmacauth.start_server(app, "127.0.0.1", 0, ctx)
        print(srv.sockets[0].getsockname()[1], flush=True)
        err = await asyncio.wait_for(done, %r)
        srv.close()
        await srv.wait_closed()
    else:
        try:
            await hmacauth.open_connection("127.0.0.1", arg, hmacauth.Context([key]))
            err = None
        except hmacauth.HmacAuthError as e:
            err = e
    print("%%s %%s" %% (type(err).__name__, err), flush=True)

asyncio.run(main())
""" % (WAIT,)


def child(role: str, port: int = 0, script: str = CHILD) -> "subprocess.Popen[str]":
    env = dict(os.environ, PYTHONPATH=SRC, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.Popen(
        [sys.executable, "-c", script, role, str(port), make_key().secret.hex()],
        stdout=subprocess.PIPE,
        env=env,
        universal_newlines=True,
    )


def outcome(p: "subprocess.Popen[str]") -> str:
    try:
        out, _ = p.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError("the child did not finish within %ss" % WAIT)
    return out.strip().splitlines()[-1]


@needs_crypto
class MissingCryptography(unittest.TestCase):
    CASES = ((Mode.SEALED, False), (Mode.INTEGRITY, False), (Mode.AUTH, True), (Mode.SEALED, True))

    def test_server_without_it_refuses(self) -> None:
        for mode, fs in self.CASES:
            with self.subTest(mode=str(mode), fs=fs):
                p = child("server")
                try:
                    assert p.stdout is not None
                    port = int(p.stdout.readline())
                    with self.assertRaises(hmacauth.AuthFailed) as cm:
                        hmacauth.create_connection(
                            ("127.0.0.1", port), Context([make_key()], mode, forward_secrecy=fs), timeout=WAIT
                        )
                    self.assertIn("closed the connection without a word", str(cm.exception))
                finally:
                    got = outcome(p)
                # Refused, with the socket closed; later calls re-raise.
                self.assertTrue(got.startswith("ConfigError -1 "), got)
                self.assertIn("the client asks for %s" % mode, got)
                self.assertIn("'cryptography' package, not installed on this server", got)
                self.assertTrue(got.endswith("| recv raised ConfigError"), got)

    def against_server(self, mode: Mode, fs: bool, script: str) -> Tuple[BaseException, str]:
        """Runs the child client of script against a server here with mode
        and fs: the server's error and the child's outcome."""
        ls = listener()
        with ls:
            def serve() -> BaseException:
                s, _ = ls.accept()
                s.settimeout(WAIT)
                try:
                    Context([make_key()], mode, forward_secrecy=fs).wrap_socket(s, server_side=True)
                except hmacauth.HmacAuthError as e:
                    return e
                raise AssertionError("the server's handshake succeeded")

            t = Thread(serve)
            got = outcome(child("client", ls.getsockname()[1], script))
            return t.join_result(), got

    def test_client_without_it_refuses(self) -> None:
        for mode, fs in self.CASES:
            with self.subTest(mode=str(mode), fs=fs):
                err, got = self.against_server(mode, fs, CHILD)
                self.assertIsInstance(err, hmacauth.AuthFailed)
                self.assertIn("instead of proving key", str(err))
                self.assertTrue(got.startswith("ConfigError -1 "), got)
                self.assertIn("the server chose %s" % mode, got)
                self.assertIn("not installed on this client", got)
                self.assertTrue(got.endswith("| recv raised ConfigError"), got)

    def test_asyncio_server_without_it_refuses(self) -> None:
        async def connect(port: int, mode: Mode, fs: bool) -> None:
            await hmacauth.open_connection("127.0.0.1", port, Context([make_key()], mode, forward_secrecy=fs))

        for mode, fs in self.CASES:
            with self.subTest(mode=str(mode), fs=fs):
                p = child("server", script=CHILD_ASYNCIO)
                try:
                    assert p.stdout is not None
                    port = int(p.stdout.readline())
                    with self.assertRaises(hmacauth.AuthFailed) as cm:
                        asyncio.run(connect(port, mode, fs))
                    self.assertIn("closed the connection without a word", str(cm.exception))
                finally:
                    got = outcome(p)
                self.assertTrue(got.startswith("ConfigError "), got)
                self.assertIn("the client asks for %s" % mode, got)

    def test_asyncio_client_without_it_refuses(self) -> None:
        for mode, fs in self.CASES:
            with self.subTest(mode=str(mode), fs=fs):
                err, got = self.against_server(mode, fs, CHILD_ASYNCIO)
                self.assertIsInstance(err, hmacauth.AuthFailed)
                self.assertIn("instead of proving key", str(err))
                self.assertTrue(got.startswith("ConfigError "), got)
                self.assertIn("the server chose %s" % mode, got)


if __name__ == "__main__":
    unittest.main()
