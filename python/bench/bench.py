"""hmacauth for Python against Python's ssl module (TLS 1.3), side by side.

    python3 bench/bench.py [--quick]

Connections per second (connect, handshake, a 1-byte echo, close; one
client at a time, the server handling each connection in a thread of its
own, or in a concurrent.futures pool of 8 persistent threads, the same
code for every side; hmacauth also with its own Listener, whose threads
run the handshakes; or with asyncio), and bulk throughput over one connection (256 KiB
writes, 1 MiB reads), all over loopback. TLS uses a self-signed P-256
certificate made at run time with the 'cryptography' package; the same code
shape runs both. Prints a Markdown table: the median of --rounds
interleaved rounds, and the range of the per-round ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import datetime
import os
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from typing import Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import hmacauth  # noqa: E402


def tls_contexts():  # type: ignore[no-untyped-def]
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    d = tempfile.mkdtemp()
    cert_path, key_path = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    server.load_cert_chain(cert_path, key_path)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    client.load_verify_locations(cert_path)
    os.unlink(cert_path)
    os.unlink(key_path)
    os.rmdir(d)
    return client, server


class Side:
    """How one protocol wraps a socket: wrap(sock, server_side)."""

    def __init__(self, name, wrap_client, wrap_server, aio_client=None, aio_server=None, listener_context=None):  # type: ignore[no-untyped-def]
        self.name = name
        self.listener_context = listener_context
        self.wrap_client = wrap_client
        self.wrap_server = wrap_server
        self.aio_client = aio_client
        self.aio_server = aio_server


def sides():  # type: ignore[no-untyped-def]
    tc, ts = tls_contexts()
    key = hmacauth.Key.generate("bench")

    def ha(mode, fs=False):  # type: ignore[no-untyped-def]
        c = hmacauth.Context([key], mode, forward_secrecy=fs)
        s = hmacauth.Context([key], mode, forward_secrecy=fs)
        name = "hmacauth %s%s" % (mode, " + forward secrecy" if fs else "")

        async def aio_client(host, port):  # type: ignore[no-untyped-def]
            return await hmacauth.open_connection(host, port, c)

        async def aio_server(cb, host, port):  # type: ignore[no-untyped-def]
            return await hmacauth.start_server(cb, host, port, s)

        return Side(name, lambda so: c.wrap_socket(so), lambda so: s.wrap_socket(so, server_side=True), aio_client, aio_server, s)

    async def tls_aio_client(host, port):  # type: ignore[no-untyped-def]
        return await asyncio.open_connection(host, port, ssl=tc, server_hostname="localhost")

    async def tls_aio_server(cb, host, port):  # type: ignore[no-untyped-def]
        return await asyncio.start_server(cb, host, port, ssl=ts)

    async def plain_aio_client(host, port):  # type: ignore[no-untyped-def]
        return await asyncio.open_connection(host, port)

    async def plain_aio_server(cb, host, port):  # type: ignore[no-untyped-def]
        return await asyncio.start_server(cb, host, port)

    return {
        "plain": Side("plain TCP", lambda so: so, lambda so: so, plain_aio_client, plain_aio_server),
        "tls": Side("ssl TLS 1.3", lambda so: tc.wrap_socket(so, server_hostname="localhost"),
                    lambda so: ts.wrap_socket(so, server_side=True), tls_aio_client, tls_aio_server),
        "auth": ha(hmacauth.Mode.AUTH),
        "integrity": ha(hmacauth.Mode.INTEGRITY),
        "sealed": ha(hmacauth.Mode.SEALED),
        "sealed_fs": ha(hmacauth.Mode.SEALED, True),
    }


def serve_one(side: Side, handler, raw: socket.socket) -> None:  # type: ignore[no-untyped-def]
    """Runs one accepted connection's handshake (wrap) and the handler:
    the same for every server shape and every side."""
    try:
        conn = side.wrap_server(raw)
        with conn:
            handler(conn)
    except OSError:
        raw.close()


def serve_threads(ls: socket.socket, side: Side, handler) -> threading.Thread:  # type: ignore[no-untyped-def]
    def loop() -> None:
        while True:
            try:
                raw, _ = ls.accept()
            except OSError:
                return
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=serve_one, args=(side, handler, raw), daemon=True).start()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def serve_pool(ls: socket.socket, side: Side, handler, workers: int = 8):  # type: ignore[no-untyped-def]
    """The generic shape with a pool: a thread accepts and hands each
    connection to a concurrent.futures pool of persistent threads, which
    runs its handshake (wrap) and the handler. The same for every side."""
    pool = concurrent.futures.ThreadPoolExecutor(workers)

    def loop() -> None:
        while True:
            try:
                raw, _ = ls.accept()
            except OSError:
                pool.shutdown(wait=False)
                return
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pool.submit(serve_one, side, handler, raw)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def serve_listener(ls: socket.socket, side: Side, handler):  # type: ignore[no-untyped-def]
    """hmacauth's own Listener: its threads run the handshakes, one thread
    takes the authenticated connections from accept() and runs the handler
    (so a connection passes through one more thread than with serve_pool)."""
    ln = getattr(side, "listener_class", hmacauth.Listener)(ls, side.listener_context)

    def loop() -> None:
        while True:
            try:
                conn, _ = ln.accept()
            except OSError:
                return
            with conn:
                try:
                    handler(conn)
                except OSError:
                    pass

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return ln


def echo1(conn) -> None:  # type: ignore[no-untyped-def]
    b = conn.recv(1)
    if b:
        conn.sendall(b)


def conns_per_second_threads(side: Side, seconds: float, shape: str = "thread") -> Tuple[float, float, float]:
    ls = socket.create_server(("127.0.0.1", 0), backlog=128)
    addr = ls.getsockname()
    closer = ls
    if shape == "pool":
        serve_pool(ls, side, echo1)
    elif shape == "listener":
        closer = serve_listener(ls, side, echo1)
    else:
        serve_threads(ls, side, echo1)
    n = 0
    start, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        raw = socket.create_connection(addr)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with side.wrap_client(raw) as c:
            c.sendall(b"x")
            assert c.recv(1) == b"x"
        n += 1
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    closer.close()
    return n, elapsed, cpu


def conns_per_second_pool(side: Side, seconds: float) -> Tuple[float, float, float]:
    return conns_per_second_threads(side, seconds, "pool")


def conns_per_second_listener(side: Side, seconds: float) -> Tuple[float, float, float]:
    return conns_per_second_threads(side, seconds, "listener")


def conns_per_second_asyncio(side: Side, seconds: float) -> Tuple[float, float, float]:
    async def main() -> Tuple[float, float, float]:
        async def cb(reader, writer):  # type: ignore[no-untyped-def]
            b = await reader.read(1)
            writer.write(b)
            await writer.drain()
            writer.close()

        srv = await side.aio_server(cb, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        n = 0
        start, cpu = time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            reader, writer = await side.aio_client("127.0.0.1", port)
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass
            n += 1
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        srv.close()
        await srv.wait_closed()
        return n, elapsed, cpu

    return asyncio.run(main())


def bulk_mb_per_second(side: Side, total: int) -> Tuple[float, float, float]:
    chunk = os.urandom(256 * 1024)
    done = threading.Event()
    got = [0]

    def sink(conn) -> None:  # type: ignore[no-untyped-def]
        buf = bytearray(1 << 20)
        n = 0
        while n < total:
            m = conn.recv_into(buf)
            if not m:
                break
            n += m
        got[0] = n
        conn.sendall(b"k")
        done.set()

    ls = socket.create_server(("127.0.0.1", 0))
    serve_threads(ls, side, sink)
    raw = socket.create_connection(ls.getsockname())
    with side.wrap_client(raw) as c:
        c.recv  # handshake done by wrap
        start, cpu = time.perf_counter(), time.process_time()
        sent = 0
        while sent < total:
            c.sendall(chunk)
            sent += len(chunk)
        assert c.recv(1) == b"k"
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    ls.close()
    assert got[0] == total
    return total / 1e6, elapsed, cpu


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--seconds", type=float, default=1.0, help="per connection-rate run")
    p.add_argument("--mib", type=int, default=128, help="per bulk run")
    args = p.parse_args()
    s = sides()
    plan = [
        ("connections/s, threads", conns_per_second_threads, ("tls", "auth", "sealed", "sealed_fs"), args.seconds),
        ("connections/s, thread pool", conns_per_second_pool, ("tls", "auth", "sealed", "sealed_fs"), args.seconds),
        ("connections/s, hmacauth Listener", conns_per_second_listener, ("auth", "sealed", "sealed_fs"), args.seconds),
        ("connections/s, asyncio", conns_per_second_asyncio, ("tls", "auth", "sealed", "sealed_fs"), args.seconds),
        ("bulk MB/s", bulk_mb_per_second, ("plain", "tls", "auth", "integrity", "sealed"), args.mib << 20),
    ]
    # Rounds are interleaved (every side once per round), so that a burst
    # of load elsewhere on the machine does not hit one side only; ratios
    # are taken within a round.
    results = {}  # (measure, side) -> [value per round]
    for _ in range(args.rounds):
        for what, fn, keys, arg in plan:
            for key in keys:
                results.setdefault((what, key), []).append(fn(s[key], arg))
    import cryptography

    print("Python %s, %s, cryptography %s, %s CPUs, %d interleaved rounds; medians, [range of the per-round ratios]" % (
        ".".join(map(str, sys.version_info[:3])), ssl.OPENSSL_VERSION, cryptography.__version__, os.cpu_count(), args.rounds))
    print()
    print("| measure | side | rate | rate vs ssl TLS 1.3 | CPU per op vs ssl TLS 1.3 | rate vs plain TCP |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")

    def rate(r):  # type: ignore[no-untyped-def]
        return r[0] / r[1]

    def cpu_per_op(r):  # type: ignore[no-untyped-def]
        return r[2] / r[0]

    # The Listener has no TLS counterpart: its rows compare with TLS in the
    # generic pool (the stronger TLS server of the two threaded shapes).
    base_of = {"connections/s, hmacauth Listener": "connections/s, thread pool"}

    def ratio(what, key, base, f, invert=False):  # type: ignore[no-untyped-def]
        bwhat = base_of.get(what, what)
        if (bwhat, base) not in results or (key == base and bwhat == what):
            return ""
        rs = [f(b) / f(a) if invert else f(a) / f(b) for a, b in zip(results[(what, key)], results[(bwhat, base)])]
        return "%.2fx [%.2f-%.2f]" % (statistics.median(rs), min(rs), max(rs))

    for what, _, keys, _ in plan:
        for key in keys:
            v = statistics.median(rate(r) for r in results[(what, key)])
            print("| %s | %s | %.0f | %s | %s | %s |" % (
                what, s[key].name, v, ratio(what, key, "tls", rate),
                ratio(what, key, "tls", cpu_per_op, invert=True), ratio(what, key, "plain", rate)))
    print()
    print("CPU per op vs ssl TLS 1.3: how many times less process CPU (client and server together) "
          "one connection or one MB costs than with TLS. The hmacauth Listener rows compare with "
          "ssl TLS 1.3 in the thread pool.")

if __name__ == "__main__":
    main()
