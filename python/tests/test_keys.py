"""Keys and key files: the Go package's format, permission and owner
checks, and a Key that never shows its secret."""

from __future__ import annotations

import base64
import os
import pickle
import stat
import tempfile
import traceback
import unittest
from typing import Any, Callable, List

import hmacauth
from hmacauth import ConfigError, Key, WeakKey, load_keys, parse_keys

SECRET = bytes(range(32))
B64 = base64.b64encode(SECRET).decode()


class KeyTests(unittest.TestCase):
    def test_repr_hides_secret(self) -> None:
        k = Key("id-1", SECRET)
        for text in (repr(k), str(k), "%s" % k, "{}".format(k), f"{k!r}", repr([k]), repr(hmacauth.Context([k]))):
            self.assertNotIn(SECRET.hex(), text)
            self.assertNotIn(B64[:20], text)
            self.assertNotIn(repr(SECRET), text)
        self.assertIn("32 bytes redacted", repr(k))
        with self.assertRaises(TypeError):
            pickle.dumps(k)

    def test_generate(self) -> None:
        a, b = Key.generate("x"), Key.generate("x")
        self.assertEqual(len(a.secret), 32)
        self.assertNotEqual(a, b)
        with self.assertRaises(ConfigError):
            Key.generate("bad id")

    def test_validate(self) -> None:
        with self.assertRaises(WeakKey) as cm:
            Key("k", bytes(31)).validate()
        self.assertTrue(str(cm.exception).startswith("hmacauth: weak key: key \"k\" has a 31-byte secret"))
        for bad in ("", "a" * 65, "sp ace", "tab\t", "é"):
            with self.subTest(bad=bad), self.assertRaises(ConfigError):
                Key(bad, SECRET).validate()
        Key("a" * 64, SECRET).validate()


class ParseTests(unittest.TestCase):
    def test_format(self) -> None:
        text = (
            "\ufeff# hmacauth keys: ID SECRET (base64, at least 32 bytes)\r\n"
            "2026-06 %s\r\n"
            "\n"
            "2026-01\t%s   # old, drop soon\n"
            "k#3 %s\n" % (B64, B64.rstrip("="), base64.b64encode(bytes(40)).decode())
        )
        keys = parse_keys(text)
        self.assertEqual([k.id for k in keys], ["2026-06", "2026-01", "k#3"])
        self.assertEqual(keys[0].secret, SECRET)
        self.assertEqual(keys[1].secret, SECRET)
        self.assertEqual(len(keys[2].secret), 40)

    def test_format_as_go_refuses(self) -> None:
        # As keyfile.go: only the first '#' of a line can start a comment,
        # and only at the line's start or after a blank; base64 whose length
        # is not a multiple of 4 has no padding.
        sec = base64.b64encode(bytes(range(32))).decode()
        self.assertEqual(parse_keys("a %s # note" % sec)[0].id, "a")
        self.assertEqual(parse_keys("a#b %s" % sec)[0].id, "a#b")
        with self.assertRaisesRegex(ConfigError, "has 4 fields"):
            parse_keys("a#b %s   # note" % sec)
        raw = base64.b64encode(bytes(range(34))).decode()  # 48 characters, no padding
        self.assertEqual(len(parse_keys("k " + raw[:46])[0].secret), 34)
        with self.assertRaisesRegex(ConfigError, "not valid base64"):
            parse_keys("k " + raw[:46] + "=")  # 47 characters with padding
        with self.assertRaisesRegex(ConfigError, "not valid base64"):
            parse_keys("k " + raw[:44] + "A=")
        from hmacauth._keys import _decode_secret

        for bad in ("AA=", "A=", "AAAAA=", "AAAAAA="):
            with self.subTest(s=bad), self.assertRaises(ValueError):
                _decode_secret(bad)
        for good, want in (("AA", b"\0"), ("AA==", b"\0"), ("AAA", b"\0\0"), ("AAA=", b"\0\0")):
            self.assertEqual(_decode_secret(good), want)

    def test_errors_name_the_line_never_the_secret(self) -> None:
        cases = [
            ("a %s extra\n" % B64, ConfigError, "line 1: has 3 fields"),
            ("a\n", ConfigError, "line 1: has 1 fields"),
            ("\na not-base64!\n", ConfigError, "line 2: the secret (second field) is not valid base64"),
            ("a %s\n" % base64.b64encode(bytes(16)).decode(), WeakKey, "line 1: the secret has 16 bytes"),
            ("a %s\na %s\n" % (B64, B64), ConfigError, "line 2: the key ID is the same as on line 1"),
            ("# nothing\n", ConfigError, "holds no keys"),
            ("%s %s\n" % ("x" * 65, B64), ConfigError, "line 1: the key ID (first field) is not valid"),
        ]
        for text, exc, msg in cases:
            with self.subTest(msg=msg):
                with self.assertRaises(exc) as cm:
                    parse_keys(text)
                self.assertIn(msg, str(cm.exception))
                self.assertNotIn(B64[:16], str(cm.exception))
                self.assertNotIn("not-base64", str(cm.exception))

    def test_too_large(self) -> None:
        with self.assertRaises(ConfigError):
            parse_keys(b"#" * (hmacauth.MAX_KEY_FILE_SIZE + 1))


def traceback_with_locals(call: Callable[[Any], Any], arg: List[Any]) -> str:
    """call(arg.pop())'s error, formatted with the locals of every frame of
    its traceback, as error reporters record it (Sentry by default, pytest
    --showlocals). The argument leaves arg before the call, so that this
    frame does not hold it."""
    try:
        call(arg.pop())
    except hmacauth.HmacAuthError as e:
        return "".join(traceback.TracebackException.from_exception(e, capture_locals=True).format())
    raise AssertionError("no error")


def client_hello_for(key: Key) -> bytes:
    from hmacauth._handshake import ClientHandshake, KeySchedule

    return ClientHandshake(KeySchedule(key), 0, False, False).client_hello()


class SecretsInTracebacks(unittest.TestCase):
    """No frame of a refusal's traceback holds secret material when it is
    raised."""

    GOOD = base64.b64encode(bytes(range(100, 132))).decode()

    def bad_files(self) -> List[str]:
        return [
            "good %s\nbad %s extra\n" % (self.GOOD, B64),
            "good %s\nbad %s!\n" % (self.GOOD, B64[:-1]),
            "good %s\nbad %s\n" % (self.GOOD, B64[:24]),
        ]

    def check(self, text: str) -> None:
        self.assertIn("line 2", text)
        for secret in (self.GOOD, B64[:24], B64[:-1]):
            self.assertNotIn(secret, text)
        self.assertNotIn(SECRET.hex(), text)
        self.assertNotIn(repr(SECRET)[2:-1], text)

    def test_parse_keys(self) -> None:
        for i, data in enumerate(self.bad_files()):
            with self.subTest(case=i):
                self.check(traceback_with_locals(parse_keys, [data]))
                self.check(traceback_with_locals(parse_keys, [data.encode()]))

    def test_load_keys(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "keys")
            for i, data in enumerate(self.bad_files()):
                with self.subTest(case=i):
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    with os.fdopen(fd, "w") as f:
                        f.write(data)
                    self.check(traceback_with_locals(load_keys, [path]))

    def test_server_refusing_a_wrong_key(self) -> None:
        from hmacauth._handshake import KeySet, ServerHandshake

        server_key = Key("k", SECRET)
        ch = client_hello_for(Key("k", bytes(32)))
        text = traceback_with_locals(ServerHandshake(KeySet([server_key]), 0, False, False).client_hello, [ch])
        self.assertIn("MAC for key ID \"k\" is wrong", text)
        self.check_derived(text)

    def check_derived(self, text: str) -> None:
        from hmacauth._handshake import KeySchedule

        ks = KeySchedule(Key("k", SECRET))
        for derived in (ks.k_ch, ks.k_sh, ks.k_cf, ks.k_ses, SECRET):
            self.assertNotIn(derived.hex(), text)
            self.assertNotIn(repr(derived)[2:-1], text)
        self.assertNotIn(B64, text)

    def test_socket_server_refusing_a_wrong_key(self) -> None:
        # The same through the blocking socket's server handshake.
        import socket as socketmod

        ls = socketmod.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        with ls:
            c = socketmod.create_connection(ls.getsockname())
            with c:
                c.sendall(client_hello_for(Key("k", bytes(32))))
                c.shutdown(socketmod.SHUT_WR)
                s, _ = ls.accept()
                s.settimeout(20)
                ctx = hmacauth.Context([Key("k", SECRET)])
                text = traceback_with_locals(lambda sock: ctx.wrap_socket(sock, server_side=True), [s])
        self.assertIn("MAC for key ID \"k\" is wrong", text)
        self.check_derived(text)

    def test_internal_key_holders_not_picklable(self) -> None:
        import copy

        from hmacauth._handshake import KeySchedule, KeySet

        objs: List[Any] = [KeySchedule(Key("k", SECRET)), KeySet([Key("k", SECRET)])]
        try:
            from hmacauth._record import Direction

            objs.append(Direction(SECRET, 0))
        except hmacauth.ConfigError:
            pass  # no 'cryptography': a Direction cannot be made
        for obj in objs:
            with self.subTest(type=type(obj).__name__):
                with self.assertRaises(TypeError):
                    pickle.dumps(obj)
                with self.assertRaises(TypeError):
                    copy.copy(obj)


class LoadTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.path = os.path.join(self.dir, "keys")
        with open(self.path, "w") as f:
            f.write("k1 %s\n" % B64)

    def tearDown(self) -> None:
        os.unlink(self.path)
        os.rmdir(self.dir)

    def test_modes(self) -> None:
        for mode in (0o600, 0o400, 0o640, 0o440):
            os.chmod(self.path, mode)
            self.assertEqual(load_keys(self.path)[0].id, "k1")
        for mode in (0o644, 0o660, 0o604, 0o602):
            os.chmod(self.path, mode)
            with self.subTest(mode=oct(mode)), self.assertRaises(ConfigError) as cm:
                load_keys(self.path)
            self.assertIn("has mode 0%o, so other users can read or change it" % mode, str(cm.exception))

    @unittest.skipUnless(hasattr(os, "geteuid") and os.geteuid() == 0, "changing a file's owner needs root")
    def test_owner(self) -> None:
        os.chmod(self.path, 0o600)
        os.chown(self.path, 12345, -1)
        with self.assertRaises(ConfigError) as cm:
            load_keys(self.path)
        self.assertIn("is owned by uid 12345, not by uid 0", str(cm.exception))

    def test_not_regular(self) -> None:
        with self.assertRaises(ConfigError):
            load_keys(self.dir)

    def test_missing(self) -> None:
        with self.assertRaises(OSError) as cm:
            load_keys(self.path + ".missing")
        self.assertNotIsInstance(cm.exception, hmacauth.HmacAuthError)

    def test_symlink_checks_target(self) -> None:
        os.chmod(self.path, 0o644)
        link = self.path + ".link"
        os.symlink(self.path, link)
        try:
            with self.assertRaises(ConfigError):
                load_keys(link)
        finally:
            os.unlink(link)


if __name__ == "__main__":
    unittest.main()


class KeyringTests(unittest.TestCase):
    """Rotation without a restart, as the Go package's Keyring."""

    def test_rotation(self) -> None:
        from _support import pair

        old, new = Key("old", bytes(range(32))), Key("new", bytes(range(1, 33)))
        ring = hmacauth.Keyring([old])
        server = hmacauth.Context(keyring=ring)
        with_old, with_new = hmacauth.Context([old]), hmacauth.Context([new])
        c, s = pair(with_old, server)
        with c, s:
            self.assertEqual(s.key_id, "old")
            with self.assertRaises(hmacauth.AuthFailed):
                pair(with_new, server)
            ring.set([old, new])  # servers first
            c2, s2 = pair(with_new, server)
            with c2, s2:
                self.assertEqual(s2.key_id, "new")
            ring.set([new])
            with self.assertRaises(hmacauth.AuthFailed):
                pair(with_old, server)
            # The connection made before the change keeps its key.
            c.sendall(b"still here")
            self.assertEqual(s.recv(100), b"still here")
        # A client proves the first key of its Keyring.
        client_ring = hmacauth.Keyring([new, old])
        c3, s3 = pair(hmacauth.Context(keyring=client_ring), server)
        with c3, s3:
            self.assertEqual(c3.key_id, "new")

    def test_empty_and_invalid(self) -> None:
        from _support import WAIT, listener

        ring = hmacauth.Keyring()
        self.assertEqual(ring.ids(), [])
        with listener() as ls:
            with self.assertRaises(ConfigError) as cm:
                hmacauth.create_connection(ls.getsockname(), hmacauth.Context(keyring=ring), timeout=WAIT)
        self.assertIn("Keyring holds no keys", str(cm.exception))
        ring.set([Key("k", SECRET)])
        for bad in ([], [Key("k", SECRET), Key("k", SECRET)], [Key("w", bytes(8))]):
            with self.subTest(bad=len(bad)):
                with self.assertRaises((ConfigError, WeakKey)):
                    ring.set(bad)
                self.assertEqual(ring.ids(), ["k"])
        self.assertNotIn(SECRET.hex(), repr(ring))
        self.assertNotIn(SECRET.hex(), repr(hmacauth.Context(keyring=ring)))
        self.assertIn("'k'", repr(ring))
        with self.assertRaises(TypeError):
            pickle.dumps(ring)
        with self.assertRaises(ConfigError):
            hmacauth.Context(keyring=[Key("k", SECRET)])  # type: ignore[arg-type]
