"""This checkout's hmacauth against another version of it, in one process.

    git archive main python/src | tar -x -C /tmp/main
    python3 python/bench/ab.py /tmp/main/python/src [--rounds 7] [--shape thread|pool|listener|asyncio]
    strace -f -c python3 python/bench/ab.py --count 500 --side sealed   # system calls of 500 connections

The first form measures connections per second (bench.py's
conns_per_second_threads or conns_per_second_asyncio with the server shape
of --shape: the same client and server code as for ssl TLS 1.3, which runs
alongside, except with --shape listener, where each version runs its own
Listener and TLS the generic thread pool) for ModeAuth, ModeSealed and ModeSealed with
forward secrecy, both versions interleaved in every round (which goes
first alternates), and prints the per-round ratios this/other. The other version's package is imported under
another name from a temporary copy. The second form makes a fixed number
of connections with one side ("tls", "auth", "sealed", "sealed_fs"), for
counting system calls.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402  (puts this checkout's src first on sys.path)
import hmacauth  # noqa: E402


def import_other(src: str) -> Any:
    tmp = tempfile.mkdtemp()
    shutil.copytree(os.path.join(src, "hmacauth"), os.path.join(tmp, "hmacauth_other"))
    sys.path.insert(0, tmp)
    import hmacauth_other  # type: ignore[import]

    return hmacauth_other


def side(mod: Any, mode: int, fs: bool) -> bench.Side:
    key = mod.Key.generate("bench")
    c = mod.Context([key], mod.Mode(mode), forward_secrecy=fs)
    s = mod.Context([key], mod.Mode(mode), forward_secrecy=fs)
    async def aio_client(host, port):  # type: ignore[no-untyped-def]
        return await mod.open_connection(host, port, c)

    async def aio_server(cb, host, port):  # type: ignore[no-untyped-def]
        return await mod.start_server(cb, host, port, s)

    side = bench.Side(mod.__name__, lambda so: c.wrap_socket(so), lambda so: s.wrap_socket(so, server_side=True),
                      aio_client, aio_server, s)
    side.listener_class = mod.Listener
    return side


def count(name: str, n: int) -> None:
    sd = bench.sides()[name]
    ls = socket.create_server(("127.0.0.1", 0), backlog=128)
    bench.serve_threads(ls, sd, bench.echo1)
    for _ in range(n):
        raw = socket.create_connection(ls.getsockname())
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with sd.wrap_client(raw) as c:
            c.sendall(b"x")
            assert c.recv(1) == b"x"
    ls.close()
    time.sleep(0.2)  # lets the last server thread finish inside the count


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("other_src", nargs="?", help="the src folder of the version to compare with")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--count", type=int, help="make this many connections with --side and exit")
    p.add_argument("--side", default="sealed", choices=("tls", "auth", "integrity", "sealed", "sealed_fs"))
    p.add_argument("--shape", default="thread", choices=("thread", "pool", "listener", "asyncio"),
                   help="the server's shape, as in bench.py (listener: each version's own Listener; TLS then runs in the pool)")
    args = p.parse_args()
    if args.count:
        count(args.side, args.count)
        return
    if not args.other_src:
        p.error("give the src folder of the version to compare with")
    other = import_other(args.other_src)
    sides: Dict[str, bench.Side] = {"tls": bench.sides()["tls"]}
    for mode, fs, label in ((0, False, "auth"), (2, False, "sealed"), (2, True, "sealed + forward secrecy")):
        sides[label + ", this"] = side(hmacauth, mode, fs)
        sides[label + ", other"] = side(other, mode, fs)
    res: Dict[str, List[Tuple[float, float]]] = {k: [] for k in sides}
    for i in range(args.rounds):
        # Which version goes first alternates from round to round.
        order = list(sides)
        if i % 2:
            order = [order[0]] + [k for pair in zip(order[2::2], order[1::2]) for k in pair]
        for k in order:
            if args.shape == "asyncio":
                n, elapsed, cpu = bench.conns_per_second_asyncio(sides[k], args.seconds)
            else:
                shape = "pool" if args.shape == "listener" and k == "tls" else args.shape
                n, elapsed, cpu = bench.conns_per_second_threads(sides[k], args.seconds, shape)
            res[k].append((n / elapsed, cpu / n))
    import cryptography

    print("Python %s, cryptography %s, %d interleaved rounds, connections/s, server shape %s; medians, [range of the per-round ratios]"
          % (sys.version.split()[0], cryptography.__version__, args.rounds, args.shape))
    print()
    print("| side | conn/s | vs TLS 1.3 | this vs other, rate | this vs other, CPU per connection (less is >1) |")
    print("| --- | ---: | ---: | ---: | ---: |")

    def rng(xs: List[float]) -> str:
        return "%.2fx [%.2f-%.2f]" % (statistics.median(xs), min(xs), max(xs))

    for k, r in res.items():
        vs = rng([a[0] / b[0] for a, b in zip(r, res["tls"])]) if k != "tls" else ""
        rate = cpu = ""
        if k.endswith(", this"):
            o = res[k[: -len(", this")] + ", other"]
            rate = rng([a[0] / b[0] for a, b in zip(r, o)])
            cpu = rng([b[1] / a[1] for a, b in zip(r, o)])
        print("| %s | %.0f | %s | %s | %s |" % (k, statistics.median(x[0] for x in r), vs, rate, cpu))


if __name__ == "__main__":
    main()
