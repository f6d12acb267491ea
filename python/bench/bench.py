"""hmacauth for Python against Python's ssl module (TLS 1.3), side by side.

    python3 bench/bench.py [--rounds N] [--in-process]

Connections per second (connect, handshake, a 1-byte echo, close; one
client at a time, the server handling each connection in a thread of its
own, or in a concurrent.futures pool of 8 persistent threads, the same
code for every side; hmacauth also with its own Listener, whose threads
run the handshakes; or with asyncio), and bulk throughput over one connection (256 KiB
writes, 1 MiB reads), all over loopback. The connecting client runs in a
process of its own (this script, started with --client), as a server's
clients do; with --in-process it runs in the server's process instead,
where its Python work competes with the server's for one GIL. TLS uses a self-signed P-256
certificate made at run time with the 'cryptography' package; the same code
shape runs both. Prints a Markdown table: the median of --rounds
interleaved rounds, and the range of the per-round ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import datetime
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import hmacauth  # noqa: E402


def tls_client_context(cert_pem: str) -> ssl.SSLContext:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    client.load_verify_locations(cadata=cert_pem)
    return client


def tls_contexts():  # type: ignore[no-untyped-def]
    """The client and server contexts and the certificate (PEM)."""
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
    os.unlink(cert_path)
    os.unlink(key_path)
    os.rmdir(d)
    pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return tls_client_context(pem), server, pem


class Side:
    """How one protocol wraps a socket: wrap(sock, server_side)."""

    def __init__(self, name, wrap_client, wrap_server, aio_client=None, aio_server=None, listener_context=None, tag=""):  # type: ignore[no-untyped-def]
        self.name = name
        self.tag = tag  # its key in sides(), for a client in another process
        self.listener_context = listener_context
        self.wrap_client = wrap_client
        self.wrap_server = wrap_server
        self.aio_client = aio_client
        self.aio_server = aio_server


class Material:
    """What both ends need: the hmacauth key, TLS's contexts and its
    certificate. A client in another process gets the key and the
    certificate (never TLS's private key) on its standard input."""

    def __init__(self, key=None, tls=None):  # type: ignore[no-untyped-def]
        self.key = key or hmacauth.Key.generate("bench")
        self.tls_client, self.tls_server, self.cert_pem = tls or tls_contexts()

    def for_client(self) -> bytes:
        return json.dumps({"id": self.key.id, "secret": base64.b64encode(self.key.secret).decode("ascii"),
                           "cert": self.cert_pem}).encode("ascii")

    @classmethod
    def of_client(cls, data: bytes) -> "Material":
        d = json.loads(data)
        pem = d["cert"]
        return cls(hmacauth.Key(d["id"], base64.b64decode(d["secret"])), (tls_client_context(pem), None, pem))


def sides(m=None):  # type: ignore[no-untyped-def]
    m = m or Material()
    tc, ts, key = m.tls_client, m.tls_server, m.key

    def ha(tag, mode, fs=False):  # type: ignore[no-untyped-def]
        c = hmacauth.Context([key], mode, forward_secrecy=fs)
        s = hmacauth.Context([key], mode, forward_secrecy=fs)
        name = "hmacauth %s%s" % (mode, " + forward secrecy" if fs else "")

        async def aio_client(host, port):  # type: ignore[no-untyped-def]
            return await hmacauth.open_connection(host, port, c)

        async def aio_server(cb, host, port):  # type: ignore[no-untyped-def]
            return await hmacauth.start_server(cb, host, port, s)

        return Side(name, lambda so: c.wrap_socket(so), lambda so: s.wrap_socket(so, server_side=True), aio_client,
                    aio_server, s, tag)

    async def tls_aio_client(host, port):  # type: ignore[no-untyped-def]
        return await asyncio.open_connection(host, port, ssl=tc, server_hostname="localhost")

    async def tls_aio_server(cb, host, port):  # type: ignore[no-untyped-def]
        return await asyncio.start_server(cb, host, port, ssl=ts)

    async def plain_aio_client(host, port):  # type: ignore[no-untyped-def]
        return await asyncio.open_connection(host, port)

    async def plain_aio_server(cb, host, port):  # type: ignore[no-untyped-def]
        return await asyncio.start_server(cb, host, port)

    return {
        "plain": Side("plain TCP", lambda so: so, lambda so: so, plain_aio_client, plain_aio_server, tag="plain"),
        "tls": Side("ssl TLS 1.3", lambda so: tc.wrap_socket(so, server_hostname="localhost"),
                    lambda so: ts.wrap_socket(so, server_side=True), tls_aio_client, tls_aio_server, tag="tls"),
        "auth": ha("auth", hmacauth.Mode.AUTH),
        "integrity": ha("integrity", hmacauth.Mode.INTEGRITY),
        "sealed": ha("sealed", hmacauth.Mode.SEALED),
        "sealed_fs": ha("sealed_fs", hmacauth.Mode.SEALED, True),
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


def client_loop(side: Side, addr, seconds: float) -> Tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """Connects, handshakes, echoes one byte and closes, one connection
    after another, for seconds: (connections, elapsed, this process's CPU)."""
    n = 0
    start, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        raw = socket.create_connection(addr)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with side.wrap_client(raw) as c:
            c.sendall(b"x")
            assert c.recv(1) == b"x"
        n += 1
    return n, time.perf_counter() - start, time.process_time() - cpu


async def aio_client_loop(side: Side, port: int, seconds: float) -> Tuple[float, float, float]:
    """client_loop with asyncio streams."""
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
    return n, time.perf_counter() - start, time.process_time() - cpu


class ClientProcess:
    """Runs client_loop or aio_client_loop in a new interpreter (this
    script with --client), as a server's clients run: not sharing the
    server's GIL. Its figures add the client's CPU to this process's CPU
    over the same time (the server's)."""

    def __init__(self, m: Material) -> None:
        self.material = m.for_client()

    def argv(self, kind: str, side: Side, port: int, amount: float):  # type: ignore[no-untyped-def]
        return [sys.executable, os.path.abspath(__file__), "--client", kind, side.tag, str(port), repr(amount)]

    @staticmethod
    def result(out: bytes, server_cpu: float) -> Tuple[float, float, float]:
        n, elapsed, cpu = json.loads(out)
        return n, elapsed, cpu + server_cpu

    def run(self, kind: str, side: Side, port: int, amount: float) -> Tuple[float, float, float]:
        """kind "thread" (amount: seconds) or "bulk" (amount: bytes)."""
        cpu = time.process_time()
        out = subprocess.run(self.argv(kind, side, port, amount), input=self.material, stdout=subprocess.PIPE,
                             check=True, timeout=600).stdout
        return self.result(out, time.process_time() - cpu)

    async def arun(self, side: Side, port: int, seconds: float) -> Tuple[float, float, float]:
        cpu = time.process_time()
        p = await asyncio.create_subprocess_exec(*self.argv("asyncio", side, port, seconds), stdin=subprocess.PIPE,
                                                 stdout=subprocess.PIPE)
        try:
            out, _ = await asyncio.wait_for(p.communicate(self.material), seconds + 60)
        finally:
            if p.returncode is None:
                p.kill()
                await p.wait()
        if p.returncode:
            raise RuntimeError("the client process failed (exit code %d)" % p.returncode)
        return self.result(out, time.process_time() - cpu)


def client_main(kind: str, tag: str, port: int, amount: float) -> None:
    side = sides(Material.of_client(sys.stdin.buffer.read()))[tag]
    if kind == "asyncio":
        r = asyncio.run(aio_client_loop(side, port, amount))
    elif kind == "bulk":
        r = bulk_client(side, ("127.0.0.1", port), int(amount))
    else:
        r = client_loop(side, ("127.0.0.1", port), amount)
    print(json.dumps(r))


def conns_per_second_threads(side: Side, seconds: float, shape: str = "thread",
                             client: "ClientProcess | None" = None) -> Tuple[float, float, float]:
    """Connections per second with a threaded server of the given shape;
    the client runs in this process unless client is given."""
    ls = socket.create_server(("127.0.0.1", 0), backlog=128)
    addr = ls.getsockname()
    closer = ls
    if shape == "pool":
        serve_pool(ls, side, echo1)
    elif shape == "listener":
        closer = serve_listener(ls, side, echo1)
    else:
        serve_threads(ls, side, echo1)
    try:
        if client is not None:
            return client.run("thread", side, addr[1], seconds)
        return client_loop(side, addr, seconds)
    finally:
        closer.close()


def conns_per_second_pool(side: Side, seconds: float, client: "ClientProcess | None" = None) -> Tuple[float, float, float]:
    return conns_per_second_threads(side, seconds, "pool", client)


def conns_per_second_listener(side: Side, seconds: float, client: "ClientProcess | None" = None) -> Tuple[float, float, float]:
    return conns_per_second_threads(side, seconds, "listener", client)


def conns_per_second_asyncio(side: Side, seconds: float, client: "ClientProcess | None" = None) -> Tuple[float, float, float]:
    async def main() -> Tuple[float, float, float]:
        async def cb(reader, writer):  # type: ignore[no-untyped-def]
            b = await reader.read(1)
            writer.write(b)
            await writer.drain()
            writer.close()

        srv = await side.aio_server(cb, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        try:
            if client is not None:
                return await client.arun(side, port, seconds)
            return await aio_client_loop(side, port, seconds)
        finally:
            srv.close()
            await srv.wait_closed()

    return asyncio.run(main())


def bulk_client(side: Side, addr, total: int) -> Tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """Sends total bytes in 256 KiB writes and waits for the receiver's
    acknowledgement: (MB, elapsed, this process's CPU)."""
    chunk = os.urandom(256 * 1024)
    raw = socket.create_connection(addr)
    with side.wrap_client(raw) as c:  # the handshake is done by wrap
        start, cpu = time.perf_counter(), time.process_time()
        sent = 0
        while sent < total:
            c.sendall(chunk)
            sent += len(chunk)
        assert c.recv(1) == b"k"
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return total / 1e6, elapsed, cpu


def bulk_mb_per_second(side: Side, total: int, client: "ClientProcess | None" = None) -> Tuple[float, float, float]:
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

    ls = socket.create_server(("127.0.0.1", 0))
    serve_threads(ls, side, sink)
    try:
        if client is not None:
            r = client.run("bulk", side, ls.getsockname()[1], total)
        else:
            r = bulk_client(side, ls.getsockname(), total)
    finally:
        ls.close()
    assert got[0] == total
    return r


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--seconds", type=float, default=1.0, help="per connection-rate run")
    p.add_argument("--mib", type=int, default=128, help="per bulk run")
    p.add_argument("--in-process", action="store_true",
                   help="run the client in the server's process (sharing its GIL), not in a process of its own")
    p.add_argument("--client", nargs=4, metavar=("KIND", "SIDE", "PORT", "AMOUNT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        kind, tag, port, amount = args.client
        client_main(kind, tag, int(port), float(amount))
        return
    m = Material()
    s = sides(m)
    client = None if args.in_process else ClientProcess(m)
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
                results.setdefault((what, key), []).append(fn(s[key], arg, client=client))
    import cryptography

    print("Python %s, %s, cryptography %s, %s CPUs, %d interleaved rounds, the client %s; medians, [range of the per-round ratios]" % (
        ".".join(map(str, sys.version_info[:3])), ssl.OPENSSL_VERSION, cryptography.__version__, os.cpu_count(), args.rounds,
        "in the server's process" if args.in_process else "in a process of its own"))
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
    print("CPU per op vs ssl TLS 1.3: how many times less CPU (client and server together) "
          "one connection or one MB costs than with TLS. The hmacauth Listener rows compare with "
          "ssl TLS 1.3 in the thread pool.")

if __name__ == "__main__":
    main()
