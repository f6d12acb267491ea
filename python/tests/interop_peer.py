"""One end of an interop test, run as its own process by the Go tests
(python_interop_test.go at the repository root) against the Go package.

It listens (printing "ADDR host:port") or dials, then runs the exchange:
the dialer sends --size bytes and half-closes; the listener reads to the
end, answers with the SHA-256 of what it got and --size bytes of its own,
and closes. Every line it prints is for the Go side: "EVENT <error class or
OK> <key ID>" per handshake a listener ran, and one last line "OK k=v ..."
or "ERR <error class> <message>".
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import hmacauth  # noqa: E402


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def recv_exactly(c: hmacauth.HmacAuthSocket, n: int) -> bytes:
    buf = bytearray(n)
    mv = memoryview(buf)
    got = 0
    while got < n:
        m = c.recv_into(mv[got:])
        if m == 0:
            raise EOFError("stream ended after %d of %d bytes" % (got, n))
        got += m
    return bytes(buf)


def read_to_end(c: hmacauth.HmacAuthSocket) -> "hashlib._Hash":
    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    mv = memoryview(buf)
    while True:
        n = c.recv_into(buf)
        if n == 0:
            return h
        h.update(mv[:n])


def exchange(c: hmacauth.HmacAuthSocket, first: bool, size: int) -> str:
    data = os.urandom(size)
    sent = hashlib.sha256(data).hexdigest()
    if first:
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        digest = recv_exactly(c, 32).hex()
        if digest != sent:
            raise AssertionError("the peer got data with SHA-256 %s, this side sent %s" % (digest, sent))
        got = read_to_end(c).hexdigest()
    else:
        got = read_to_end(c).hexdigest()
        c.sendall(bytes.fromhex(got))
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
    st = c.connection_state()
    fields = {
        "sent": sent,
        "got": got,
        "mode": int(st.mode),
        "fs": int(st.forward_secrecy),
        "key_id": st.key_id,
        "export": st.export_keying_material(b"EXPORTER-interop", b"context", 32).hex(),
        "recv_generations": c._opener.d.generation if c._opener else 0,
        "send_generations": c._sealer.d.generation if c._sealer else 0,
    }
    return " ".join("%s=%s" % kv for kv in fields.items())


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["listen", "dial"])
    p.add_argument("--addr", default="127.0.0.1:0")
    p.add_argument("--key-id", required=True)
    p.add_argument("--secret", required=True, help="hex")
    p.add_argument("--mode", type=int, default=0)
    p.add_argument("--fs", type=int, default=0)
    p.add_argument("--chacha", type=int, default=-1)
    p.add_argument("--size", type=int, default=1000)
    p.add_argument("--update-bytes", type=int, default=0)
    p.add_argument("--expect-refusal", action="store_true", help="listen: end at the first refused handshake")
    args = p.parse_args()
    listener = []
    host, _, port = args.addr.rpartition(":")
    key = hmacauth.Key(args.key_id, bytes.fromhex(args.secret))
    events = []

    def event(ev: hmacauth.HandshakeEvent) -> None:
        events.append(ev)
        out("EVENT %s %s" % (type(ev.error).__name__ if ev.error else "OK", ev.key_id or "-"))
        if args.expect_refusal and ev.error is not None and listener:
            listener[0].close()

    try:
        ctx = hmacauth.Context(
            [key],
            hmacauth.Mode(args.mode),
            forward_secrecy=bool(args.fs),
            prefer_chacha20=None if args.chacha < 0 else bool(args.chacha),
            handshake_timeout=10.0,
            on_handshake=event,
        )
        if args.update_bytes:
            ctx._testing_only_update_bytes = args.update_bytes
        if args.role == "listen":
            with hmacauth.create_server((host.strip("[]"), int(port)), ctx) as ln:
                h, pt = ln.address[:2]
                listener.append(ln)
                out("ADDR %s:%d" % (h, pt))
                try:
                    conn, _ = ln.accept(timeout=60)
                except OSError:
                    if events and events[-1].error is not None:
                        raise events[-1].error from None
                    raise
                with conn:
                    result = exchange(conn, False, args.size)
        else:
            with hmacauth.create_connection((host.strip("[]"), int(port)), ctx, timeout=30) as conn:
                result = exchange(conn, True, args.size)
    except Exception as e:  # noqa: BLE001 - reported to the Go side
        out("ERR %s %s" % (type(e).__name__, str(e).replace("\n", " ")))
        return 1
    out("OK " + result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
