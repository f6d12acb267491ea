#!/usr/bin/env python3
"""Independent check of the hmacauth/1 record-layer test vectors.

Written from PROTOCOL.md (section 9) alone: rebuilds the traffic secrets,
keys, IVs, nonces and every record's bytes of records.json from its session
secret and payloads, and compares. A vector that names a handshake of
hmacauth1.json starts from that handshake's session secret, mode and flags,
which check.py (the independent handshake) computes from the handshake's
inputs here. HKDF is RFC 5869 with the standard library; the AEADs come from
the 'cryptography' package.

Exit status: 0 all match, 1 a mismatch, 2 'cryptography' is not installed.
"""
import hashlib
import hmac
import json
import os
import sys

sys.dont_write_bytecode = True  # keep the vector directory clean
import check  # noqa: E402 (the handshake, for the vectors that start from one)

try:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
except ImportError:
    print("the 'cryptography' package is not installed", file=sys.stderr)
    sys.exit(2)


def expand(prk, label, length):
    info = b"hmacauth/1 " + label.encode()
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:length]


def generations(secret, n):
    gens = []
    for _ in range(n):
        gens.append({"traffic_secret": secret.hex(),
                     "key": expand(secret, "key", 32).hex(),
                     "iv": expand(secret, "iv", 12).hex()})
        secret = expand(secret, "traffic update", 32)
    return gens


def main(path):
    doc = json.load(open(path))
    with open(os.path.join(os.path.dirname(path), "hmacauth1.json")) as f:
        handshakes = {h["name"]: h for h in json.load(f)["vectors"]}
    bad = 0
    for v in doc["vectors"]:
        s = bytes.fromhex(v["session_secret"])
        problems = []
        if "handshake" in v:
            hs = check.handshake(handshakes[v["handshake"]])
            if hs["result.session_secret"] != s:
                problems.append("session secret of handshake " + v["handshake"])
            if (hs["result.mode"], hs["result.flags"]) != (v["mode"], v["flags"]):
                problems.append("mode and flags of handshake " + v["handshake"])
        c2s = generations(expand(s, "c2s traffic", 32), len(v["c2s"]))
        s2c = generations(expand(s, "s2c traffic", 32), len(v["s2c"]))
        if c2s != v["c2s"]:
            problems.append("c2s keys")
        if s2c != v["s2c"]:
            problems.append("s2c keys")
        aead = ChaCha20Poly1305 if v["flags"] & 0x02 else AESGCM
        for r in v["client_records"]:
            g = c2s[r["generation"]]
            iv = bytes.fromhex(g["iv"])
            nonce = bytes(a ^ b for a, b in zip(iv, bytes(4) + r["seq"].to_bytes(8, "big")))
            payload = bytes.fromhex(r["payload"])
            header = bytes([r["type"]]) + len(payload).to_bytes(3, "big")
            a = aead(bytes.fromhex(g["key"]))
            if v["mode"] == 2:  # ModeSealed: the header is the additional data
                wire = header + a.encrypt(nonce, payload, header)
            else:  # ModeIntegrity: header and payload are the additional data
                wire = header + payload + a.encrypt(nonce, b"", header + payload)
            if nonce.hex() != r["nonce"] or wire.hex() != r["wire"]:
                problems.append("record generation %d seq %d" % (r["generation"], r["seq"]))
        print("%-32s %s" % (v["name"], "ok" if not problems else "MISMATCH: " + ", ".join(problems)))
        bad += bool(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "records.json"))
