"""The test vectors of testdata/vectors, byte for byte: every message and
derived value of hmacauth1.json and every record of records.json."""

from __future__ import annotations

import json
import os
import unittest
from typing import Dict, List

from _support import VECTORS, needs_crypto

from hmacauth import Key
from hmacauth._handshake import (
    ClientHandshake,
    KeySchedule,
    KeySet,
    ServerHandshake,
    expand_label,
    export,
)


def load(name: str) -> Dict:
    with open(os.path.join(VECTORS, name)) as f:
        return json.load(f)


def feeder(values: List[str]):  # type: ignore[no-untyped-def]
    """A random source that returns the vector's values in order."""
    queue = [bytes.fromhex(v) for v in values if v]

    def rand(n: int) -> bytes:
        v = queue.pop(0)
        assert len(v) == n, (len(v), n)
        return v

    return rand


class HandshakeVectors(unittest.TestCase):
    def run_vector(self, v: Dict) -> None:
        key = Key(v["key"]["id"], bytes.fromhex(v["key"]["secret"]))
        ks = KeySchedule(key)
        d = v["derived"]
        self.assertEqual(ks.k_ch.hex(), d["k_ch"])
        self.assertEqual(ks.k_sh.hex(), d["k_sf"])
        self.assertEqual(ks.k_cf.hex(), d["k_cf"])
        self.assertEqual(ks.k_ses.hex(), d["k_ses"])
        cl, sv = v["client"], v["server"]
        client = ClientHandshake(
            ks, cl["mode"], cl["forward_secrecy"], not cl["aes_hardware"],
            rand=feeder([cl["nonce"], cl["x25519_private"]]),
        )
        server = ServerHandshake(
            KeySet([key]), sv["mode"], sv["forward_secrecy"], not sv["aes_hardware"],
            rand=feeder([sv["nonce"], sv["x25519_private"]]),
        )
        m = v["messages"]
        ch = client.client_hello()
        self.assertEqual(ch.hex(), m["client_hello"])
        self.assertEqual(ch[11], cl["flags"])
        sh = server.client_hello(ch)
        self.assertEqual(sh.hex(), m["server_hello"])
        cf = client.server_hello(sh)
        self.assertEqual(cf.hex(), m["client_finished"])
        res = server.client_finished(cf)
        r = v["result"]
        for side in (client.result, res):
            assert side is not None
            self.assertEqual(side.mode, r["mode"])
            self.assertEqual(side.flags, r["flags"])
            self.assertEqual(bytes(side.secret).hex(), r["session_secret"])
        for e in v["exporter"]:
            out = export(bytes(res.secret), e["label"].encode(), bytes.fromhex(e["context"]), e["length"])
            self.assertEqual(out.hex(), e["output"])
            self.assertEqual(expand_label(bytes(res.secret), "exporter", 32).hex(), e["exporter_secret"])

    def test_vectors(self) -> None:
        doc = load("hmacauth1.json")
        self.assertEqual(doc["protocol"], "hmacauth/1")
        ran = 0
        for v in doc["vectors"]:
            fs = v["client"]["forward_secrecy"] or v["server"]["forward_secrecy"]
            # Without 'cryptography' a handshake refuses a record mode too.
            if (fs or v["result"]["mode"] != 0) and not _crypto():
                continue
            with self.subTest(v["name"]):
                self.run_vector(v)
                ran += 1
        self.assertGreater(ran, 0)


def _crypto() -> bool:
    from _support import HAVE_CRYPTO

    return HAVE_CRYPTO


@needs_crypto
class RecordVectors(unittest.TestCase):
    def test_records(self) -> None:
        from hmacauth._record import Direction, Opener, Sealer, traffic_secrets

        doc = load("records.json")
        hs = {h["name"]: h for h in load("hmacauth1.json")["vectors"]}
        for v in doc["vectors"]:
            with self.subTest(v["name"]):
                s = bytes.fromhex(v["session_secret"])
                if "handshake" in v:
                    self.assertEqual(hs[v["handshake"]]["result"]["session_secret"], v["session_secret"])
                c2s, s2c = traffic_secrets(s)
                for t0, gens in ((c2s, v["c2s"]), (s2c, v["s2c"])):
                    d = Direction(t0, v["flags"])
                    for g in gens:
                        self.assertEqual(bytes(d.secret).hex(), g["traffic_secret"])
                        self.assertEqual(d.iv.to_bytes(12, "big").hex(), g["iv"])
                        d.update()
                sealer = Sealer(v["mode"], Direction(c2s, v["flags"]))
                opener = Opener(v["mode"], Direction(c2s, v["flags"]), "client")
                records = v["client_records"]
                i = 0
                while i < len(records):
                    r = records[i]
                    if r["type"] == 3:
                        i += 1  # made by the sealer before the next record
                        continue
                    # A key update right after 10 payload bytes, as the vectors do.
                    sealer.update_bytes = 10
                    wire = b"".join(bytes(b) for b in sealer.seal(r["type"], bytes.fromhex(r["payload"])))
                    want = "".join(x["wire"] for x in records[i - 1 : i + 1]) if i and records[i - 1]["type"] == 3 else r["wire"]
                    self.assertEqual(wire.hex(), want)
                    pos = 0
                    while pos < len(wire):
                        n = 4 + int.from_bytes(wire[pos + 1 : pos + 4], "big") + 16
                        typ, payload = opener.open(memoryview(wire[pos : pos + n]))
                        pos += n
                    self.assertEqual(typ, r["type"])
                    self.assertEqual(bytes(payload).hex(), r["payload"])
                    i += 1


class HmacTests(unittest.TestCase):
    def test_hmac256_is_hmac_sha256(self) -> None:
        # hmac256 is built from hashlib.sha256 (it keeps the GIL); it must
        # equal the standard library's HMAC for every key length, including
        # keys longer than SHA-256's 64-byte block, and any split of the message.
        import hashlib
        import hmac

        from hmacauth._handshake import hmac256

        for klen in (0, 1, 10, 32, 63, 64, 65, 100, 200):
            key = hashlib.sha256(b"k%d" % klen).digest() * 7
            key = key[:klen]
            for parts in ((b"",), (b"abc",), (b"a", b"", b"bc" * 1500), (bytes(range(256)), b"x", bytes((1,)))):
                self.assertEqual(hmac256(key, *parts), hmac.new(key, b"".join(parts), "sha256").digest(), (klen, parts))


if __name__ == "__main__":
    unittest.main()
