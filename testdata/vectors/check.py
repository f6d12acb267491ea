#!/usr/bin/env python3
"""Check the hmacauth/1 test vectors against an independent implementation.

This is the handshake and key schedule of PROTOCOL.md, written from that
document with the Python standard library only (X25519 from RFC 7748 in pure
Python, for the forward-secrecy vectors). It rebuilds every message and
derived value of each vector from the vector's inputs (key, modes, forward
secrecy wishes, AES hardware, nonces, X25519 private keys) and compares them
with the file.

Usage: python3 check.py hmacauth1.json
Exit status 0 if every value matches, 1 on a mismatch, 2 on bad usage.
"""

import hashlib
import hmac
import json
import sys

LABEL = b"hmacauth/1"
MAGIC = b"hmacauth"
VERSION = 1
FLAG_FS = 0x01
FLAG_CHACHA = 0x02


def hmac256(key, *parts):
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


def hkdf_extract(salt, ikm):  # RFC 5869, 2.2
    return hmac256(salt, ikm)


def hkdf_expand(prk, info, length):  # RFC 5869, 2.3
    out, t, i = b"", b"", 0
    while len(out) < length:
        i += 1
        t = hmac256(prk, t, info, bytes([i]))
        out += t
    return out[:length]


def u16(n):
    return n.to_bytes(2, "big")


# X25519, RFC 7748 section 5.
P = 2**255 - 19
A24 = 121665


def x25519(k, u):
    k = bytearray(k)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    k = int.from_bytes(k, "little")
    x1 = int.from_bytes(u, "little") & ((1 << 255) - 1)
    x2, z2, x3, z3, swap = 1, 0, x1, 1, 0
    for t in reversed(range(255)):
        bit = (k >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b = (x2 + z2) % P, (x2 - z2) % P
        aa, bb = a * a % P, b * b % P
        e = (aa - bb) % P
        c, d = (x3 + z3) % P, (x3 - z3) % P
        da, cb = d * a % P, c * b % P
        x3 = (da + cb) ** 2 % P
        z3 = x1 * (da - cb) ** 2 % P
        x2 = aa * bb % P
        z2 = e * (aa + A24 * e) % P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, P - 2, P) % P).to_bytes(32, "little")


BASE = (9).to_bytes(32, "little")


def key_schedule(secret):  # PROTOCOL.md section 4
    prk = hkdf_extract(LABEL, secret)
    k = {"prk": prk}
    for name, label in [("k_ch", "client hello"), ("k_sf", "server finished"),
                        ("k_cf", "client finished"), ("k_ses", "session")]:
        k[name] = hkdf_expand(prk, LABEL + b" " + label.encode(), 32)
    return k


def handshake(v):
    """Computes every value of vector v from its inputs, as a flat dict."""
    key_id = v["key"]["id"].encode("ascii")
    secret = bytes.fromhex(v["key"]["secret"])
    assert 1 <= len(key_id) <= 64 and all(0x21 <= c <= 0x7E for c in key_id)
    assert len(secret) >= 32
    cl, sv = v["client"], v["server"]
    ks = key_schedule(secret)
    got = {"derived." + n: val for n, val in ks.items()}

    # ClientHello, section 5.1; its flags, section 6: a side without AES
    # hardware asks for ChaCha20-Poly1305.
    c_flags = FLAG_FS if cl["forward_secrecy"] else 0
    if not cl["aes_hardware"]:
        c_flags |= FLAG_CHACHA
    got["client.flags"] = c_flags
    ch = (MAGIC + bytes([VERSION, 1, cl["mode"], c_flags, len(key_id)])
          + key_id + bytes(64 - len(key_id)) + bytes.fromhex(cl["nonce"]))
    ch += hmac256(ks["k_ch"], ch)
    assert len(ch) == 141

    # Negotiation, section 6, and ServerHello, section 5.2.
    mode = max(cl["mode"], sv["mode"])
    flags = FLAG_FS if (c_flags & FLAG_FS or sv["forward_secrecy"]) else 0
    if c_flags & FLAG_CHACHA or not sv["aes_hardware"]:
        flags |= FLAG_CHACHA
    s_share = c_share = bytes(32)
    dh = b""
    if flags & FLAG_FS:
        c_priv = bytes.fromhex(cl["x25519_private"])
        s_priv = bytes.fromhex(sv["x25519_private"])
        s_share, c_share = x25519(s_priv, BASE), x25519(c_priv, BASE)
        dh = x25519(c_priv, s_share)
        assert dh == x25519(s_priv, c_share) and dh != bytes(32)
        got["client.x25519_public"] = c_share
        got["server.x25519_public"] = s_share
    sh = MAGIC + bytes([VERSION, 2, mode, flags]) + bytes.fromhex(sv["nonce"]) + s_share
    sh += hmac256(ks["k_sf"], ch, sh)
    assert len(sh) == 108

    # ClientFinished, section 5.3.
    cf = bytes([3]) + c_share
    cf += hmac256(ks["k_cf"], ch, sh, cf)
    assert len(cf) == 65

    # Session secret, section 4.
    th = hashlib.sha256(ch + sh + cf).digest()
    s = hkdf_extract(th, ks["k_ses"] + dh)

    got.update({
        "messages.client_hello": ch, "messages.server_hello": sh,
        "messages.client_finished": cf,
        "macs.client_hello": ch[109:], "macs.server_hello": sh[76:],
        "macs.client_finished": cf[33:],
        "result.mode": mode, "result.flags": flags,
        "result.forward_secrecy": bool(flags & FLAG_FS), "result.dh": dh,
        "result.transcript_hash": th, "result.session_secret": s,
    })

    # Exporter, section 8.
    for i, e in enumerate(v["exporter"]):
        label, context = e["label"].encode(), bytes.fromhex(e["context"])
        exp = hkdf_expand(s, LABEL + b" exporter", 32)
        info = u16(len(label)) + label + u16(len(context)) + context
        got["exporter[%d].exporter_secret" % i] = exp
        got["exporter[%d].output" % i] = hkdf_expand(exp, info, e["length"])
    return got


def lookup(v, path):
    for part in path.replace("[", ".").replace("]", "").split("."):
        v = v[int(part)] if part.isdigit() else v[part]
    return v


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    if doc["protocol"] != "hmacauth/1":
        print("not an hmacauth/1 vector file", file=sys.stderr)
        return 2
    failed = checked = 0
    for v in doc["vectors"]:
        for path, val in handshake(v).items():
            want = lookup(v, path)
            have = val.hex() if isinstance(val, bytes) else val
            checked += 1
            if have != want:
                failed += 1
                print("%s: %s: file has %s, spec gives %s" % (v["name"], path, want, have))
    if checked == 0:
        print("no values checked", file=sys.stderr)
        return 1
    print("%d vectors, %d values checked, %d mismatches" % (len(doc["vectors"]), checked, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
