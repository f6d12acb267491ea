"""A record layer that cannot be set up (here: an AEAD class that refuses
its key) ends the handshake with a ConfigError whose traceback frames hold
no traffic secret, and the session secret is zeroed: error reporters such
as Sentry and pytest --showlocals record frame locals (README: no key
derived from a secret in traceback frames)."""

from __future__ import annotations

import asyncio
import traceback
import unittest
from typing import Any, List, Optional, Tuple
from unittest import mock

from _support import WAIT, Thread, listener, make_key, needs_crypto

import hmacauth
from hmacauth import Context, Mode


class Refusing:
    """An AEAD class whose constructor fails, as 'cryptography' does for an
    algorithm its OpenSSL lacks."""

    failure: type = ValueError
    keys: List[bytes] = []

    def __init__(self, key: bytes) -> None:
        Refusing.keys.append(bytes(key))
        raise Refusing.failure("this AEAD is not available (refused by the test)")


@needs_crypto
class RecordSetupFailure(unittest.TestCase):
    def setUp(self) -> None:
        from hmacauth import _asyncio, _record, _socket

        self.sessions: List[bytearray] = []
        self.secrets: List[bytes] = []
        real = _record.traffic_secrets

        def traffic_secrets(session_secret: Any) -> Tuple[bytes, bytes]:
            self.sessions.append(session_secret)
            c2s, s2c = real(session_secret)
            self.secrets += [c2s, s2c]
            return c2s, s2c

        Refusing.keys = []
        _, _, invalid_tag, buffers = _record.aead_classes()
        patches = [mock.patch.object(_record, "_aeads", (Refusing, Refusing, invalid_tag, buffers))]
        # Wherever traffic_secrets is imported, to see the secrets.
        for mod in (_record, _socket, _asyncio):
            if hasattr(mod, "traffic_secrets"):
                patches.append(mock.patch.object(mod, "traffic_secrets", traffic_secrets))
        for p in patches:
            p.start()
            self.addCleanup(p.stop)

    def check(self, err: Optional[BaseException]) -> None:
        assert err is not None
        text = "".join(traceback.TracebackException.from_exception(err, capture_locals=True).format())
        self.assertTrue(self.secrets and Refusing.keys)
        for s in self.secrets + Refusing.keys:
            for form in (s.hex(), repr(s), repr(bytearray(s))):
                self.assertNotIn(form, text, "a traffic secret or key is in the traceback's frames")
        for session in self.sessions:
            self.assertEqual(bytes(session), bytes(len(session)), "the session secret was not zeroed")
        self.assertIsInstance(err, hmacauth.ConfigError)
        if Refusing.failure is ValueError:  # an error of the package's own passes as it is
            self.assertIn("the record layer could not be set up (ValueError: ", str(err))

    def test_socket(self) -> None:
        for failure in (ValueError, hmacauth.ConfigError):
            with self.subTest(failure=failure.__name__):
                Refusing.failure = failure
                k = make_key()
                ls = listener()
                with ls:
                    def serve() -> Optional[BaseException]:
                        s, _ = ls.accept()
                        s.settimeout(WAIT)
                        try:
                            Context([k], Mode.SEALED).wrap_socket(s, server_side=True)
                        except Exception as e:  # noqa: B902
                            return e
                        return None

                    server = Thread(serve)
                    cerr = None
                    try:
                        hmacauth.create_connection(ls.getsockname(), Context([k], Mode.SEALED), timeout=WAIT)
                    except Exception as e:  # noqa: B902
                        cerr = e
                    serr = server.join_result()
                self.check(cerr)
                self.check(serr)

    def test_asyncio(self) -> None:
        async def main() -> Tuple[Optional[BaseException], Optional[BaseException]]:
            k = make_key()
            events: List[Any] = []

            async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                writer.close()

            srv = await hmacauth.start_server(handler, "127.0.0.1", 0, Context([k], Mode.SEALED, on_handshake=events.append))
            cerr = None
            try:
                port = srv.sockets[0].getsockname()[1]
                try:
                    await asyncio.wait_for(hmacauth.open_connection("127.0.0.1", port, Context([k], Mode.SEALED)), WAIT)
                except Exception as e:  # noqa: B902
                    cerr = e
                for _ in range(int(WAIT / 0.01)):
                    if events:
                        break
                    await asyncio.sleep(0.01)
            finally:
                srv.close()
                await srv.wait_closed()
            return cerr, events[0].error if events else None

        for failure in (ValueError, hmacauth.ConfigError):
            with self.subTest(failure=failure.__name__):
                Refusing.failure = failure
                cerr, serr = asyncio.run(main())
                self.check(cerr)
                self.check(serr)


if __name__ == "__main__":
    unittest.main()
