"""Benchmark pyxen's xenstored (issue 4).

Measures, against a real daemon started in a scratch PYXEN_ROOT (journal fsync on, as in
production):
  * read and write ops/s and p99 latency, 1 and 8 client connections, through pyxen's client
    and through Xen's C libxenstore (Debian's libxenstore.so.4 via ctypes: a real C loop);
  * read latency with 0, 64, 256 and 512 idle connections;
  * watch fan-out: 1 write -> 100 watchers, time until the last one has its event;
  * a 10 000-node tree: build rate, reads in it, a full walk, restart (load) time;
  * the floor: a minimal echo server on the same kind of socket, same clients.
Prints a table and writes bench/results/xenstore.json.  ``--quick`` for a short run.
Goals: >= 20k reads/s for one client; latency at 512 idle within 1.2x of latency at 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import random
import selectors
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from pyxen.xenstore.client import XenstoreClient
from pyxen.testing.libxenstore import LibXenstore
from pyxen.xenstore.testing import DaemonProcess
from pyxen.xenstore.wire import HEADER, Op, PacketReader, encode

RESULTS = Path(__file__).parent / "results" / "xenstore.json"
VALUE = b"v" * 32  # olivierpierre/xenstore-benchmark uses 32-byte values


# --- clients ------------------------------------------------------------------------------
class CClient:
    """Xen's libxenstore through ctypes (pyxen.testing.libxenstore): the same calls a C tool makes."""

    def __init__(self, sock: str) -> None:
        self.xs = LibXenstore(sock)

    def read(self, path: bytes) -> None:
        self.xs.read(path.decode())

    def write(self, path: bytes, value: bytes) -> None:
        self.xs.write(path.decode(), value)

    def close(self) -> None:
        self.xs.close()


class PyClient:
    def __init__(self, sock: str) -> None:
        self.xs = XenstoreClient(sock).connect()

    def read(self, path: bytes) -> None:
        self.xs.read(path.decode())

    def write(self, path: bytes, value: bytes) -> None:
        self.xs.write(path.decode(), value)

    def close(self) -> None:
        self.xs.close()


CLIENTS: dict[str, Callable[[str], Any]] = {"pyxen": PyClient, "libxenstore": CClient}


# --- load generation ------------------------------------------------------------------------
def _worker(kind: str, sock: str, op: str, path: bytes, seconds: float, start_at: float,
            q: "mp.Queue[tuple[int, list[int]]]") -> None:
    c = CLIENTS[kind](sock)
    fn = c.read if op == "read" else (lambda p: c.write(p, VALUE))
    for _ in range(200):  # warm up
        fn(path)
    while time.time() < start_at:
        time.sleep(0.001)
    lat: list[int] = []
    clock = time.perf_counter_ns
    end = clock() + int(seconds * 1e9)
    t = clock()
    while t < end:
        fn(path)
        t2 = clock()
        lat.append(t2 - t)
        t = t2
    c.close()
    q.put((len(lat), lat[:: max(1, len(lat) // 20000)]))


def load(kind: str, sock: str, op: str, conns: int, seconds: float,
         paths: list[bytes]) -> dict[str, float]:
    """``conns`` processes, each with one connection, looping ``op`` for ``seconds``."""
    ctx = mp.get_context("fork")
    q: "mp.Queue[tuple[int, list[int]]]" = ctx.Queue()
    start_at = time.time() + 0.5
    procs = [ctx.Process(target=_worker, args=(kind, sock, op, paths[i % len(paths)], seconds,
                                               start_at, q)) for i in range(conns)]
    for p in procs:
        p.start()
    results = [q.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    total = sum(n for n, _ in results)
    lat = sorted(x for _, sample in results for x in sample)
    return {"ops_per_s": total / seconds, "p50_us": lat[len(lat) // 2] / 1e3,
            "p99_us": lat[int(len(lat) * 0.99)] / 1e3, "ops": total}


# --- the floor: an echo server speaking the same framing ------------------------------------
class _Echo(asyncio.Protocol):
    """Answers every request with its own header and an 8-byte value: framing only."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport
        self.r = PacketReader()

    def data_received(self, data: bytes) -> None:
        for p in self.r.feed(data):
            self.t.write(HEADER.pack(p.op, p.req_id, p.tx_id, 3) + b"OK\0")  # type: ignore


def _echo_main(path: str) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_unix_server(_Echo, path)
        async with server:
            await server.serve_forever()
    asyncio.run(run())


def start_echo(path: str) -> mp.process.BaseProcess:
    p = mp.get_context("fork").Process(target=_echo_main, args=(path,), daemon=True)
    p.start()
    for _ in range(500):
        if os.path.exists(path):
            break
        time.sleep(0.01)
    return p


# --- scenarios ----------------------------------------------------------------------------------
def idle_latency(sock: str, kind: str, idle_counts: list[int], seconds: float,
                 rounds: int = 3) -> dict[str, Any]:
    """Read latency with N idle connections open.  The points are measured in interleaved
    rounds (0, 64, 256, 512, 0, 64, ...) and the median of each point's p50/p99 kept, so a
    burst of load from elsewhere on the host does not land on one point only."""
    samples: dict[str, list[dict[str, float]]] = {str(n): [] for n in idle_counts}
    for _ in range(rounds):
        held: list[socket.socket] = []
        for n in idle_counts:
            while len(held) < n:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(sock)
                held.append(s)
            samples[str(n)].append(load(kind, sock, "read", 1, seconds / rounds, [b"/bench/r"]))
        for s in held:
            s.close()
    return {n: {k: statistics.median(p[k] for p in pts) for k in pts[0]}
            for n, pts in samples.items()}


def fanout(sock: str, watchers: int, rounds: int) -> dict[str, float]:
    """1 write -> ``watchers`` connections watching it: time until all have the event."""
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(watchers):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock)
        s.sendall(encode(Op.WATCH, 1, 0, b"/bench/fan\0t%d\0" % i))
        conns.append(s)
    for s in conns:  # OK + initial event
        got = b""
        while got.count(b"t") < 1 or len(got) < 2 * 16:
            got += s.recv(4096)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    w = XenstoreClient(sock).connect()
    times = []
    for r in range(rounds):
        pending = set(conns)
        t0 = time.perf_counter()
        w.write("/bench/fan", b"%d" % r)
        while pending:
            for key, _ in sel.select(5):
                s = key.fileobj
                try:
                    data = s.recv(65536)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                if data:
                    pending.discard(s)  # type: ignore[arg-type]
        times.append(time.perf_counter() - t0)
    w.close()
    for s in conns:
        s.close()
    times.sort()
    return {"watchers": watchers, "median_ms": statistics.median(times) * 1e3,
            "p99_ms": times[int(len(times) * 0.99)] * 1e3,
            "events_per_s": watchers / statistics.median(times)}


def big_tree(d: DaemonProcess, nodes: int, seconds: float) -> dict[str, float]:
    sock = str(d.socket)
    per_dir = 100
    xs = XenstoreClient(sock).connect()
    t0 = time.perf_counter()
    batch = 500
    names = [f"/bench/tree/d{i // per_dir:03d}/n{i % per_dir:03d}" for i in range(nodes)]
    for i in range(0, nodes, batch):
        chunk = names[i:i + batch]
        xs.transact(lambda t: [t.write(p, VALUE) for p in chunk])
    build = time.perf_counter() - t0
    xs.close()
    sample = [p.encode() for p in random.Random(1).sample(names, 8)]
    reads = load("libxenstore", sock, "read", 1, seconds, sample[:1])
    t0 = time.perf_counter()
    r = subprocess.run(["xenstore-ls", "-f", "/bench/tree"], env=d.env, capture_output=True)
    walk = time.perf_counter() - t0
    lines = r.stdout.count(b"\n")
    t0 = time.perf_counter()
    d.stop()
    d.start()
    restart = time.perf_counter() - t0
    return {"nodes": nodes, "build_nodes_per_s": nodes / build, "read_p50_us": reads["p50_us"],
            "read_ops_per_s": reads["ops_per_s"], "xenstore_ls_walk_s": walk,
            "walk_lines": lines, "restart_s": restart}




def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short run (about 40 s)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ns = ap.parse_args(argv)
    secs = 0.7 if ns.quick else 3.0
    res: dict[str, Any] = {"quick": ns.quick, "host": platform.node(),
                           "python": platform.python_version(), "cpus": os.cpu_count(),
                           "seconds_per_point": secs}
    tmp = tempfile.mkdtemp(prefix="pyxen-bench-")
    d = DaemonProcess(Path(tmp) / "root").start()
    sock = str(d.socket)
    try:
        with XenstoreClient(sock) as xs:
            xs.write("/bench/r", VALUE)
            for i in range(8):
                xs.write(f"/bench/w{i}", VALUE)
        echo_path = os.path.join(tmp, "echo.sock")
        start_echo(echo_path)
        rows = []
        for kind in ("pyxen", "libxenstore"):
            for conns in (1, 8):
                r = load(kind, sock, "read", conns, secs, [b"/bench/r"])
                w = load(kind, sock, "write", conns, secs,
                         [f"/bench/w{i}".encode() for i in range(8)])
                f = load(kind, echo_path, "read", conns, secs, [b"/bench/r"])
                rows.append({"client": kind, "conns": conns, "read": r, "write": w, "floor": f})
        res["throughput"] = rows
        res["idle"] = {k: idle_latency(sock, k, [0, 64, 256, 512], max(secs, 1.5))
                       for k in ("libxenstore", "pyxen")}
        res["fanout"] = fanout(sock, 100, 30 if ns.quick else 200)
        res["tree"] = big_tree(d, 10_000, secs)
    finally:
        if d.alive():
            d.stop()
    render(res)
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(res, indent=2))
    print(f"\nwrote {ns.out}")
    return 0


def render(res: dict[str, Any]) -> None:
    print(f"pyxen xenstored benchmark ({'quick' if res['quick'] else 'full'}, "
          f"{res['cpus']} CPUs, Python {res['python']})\n")
    print(f"{'client':<12} {'conns':>5} | {'read/s':>9} {'p99 us':>8} | {'write/s':>8} "
          f"{'p99 us':>8} | {'floor/s':>9} {'p99 us':>7} | read/floor")
    for row in res["throughput"]:
        r, w, f = row["read"], row["write"], row["floor"]
        print(f"{row['client']:<12} {row['conns']:>5} | {r['ops_per_s']:>9.0f} {r['p99_us']:>8.1f}"
              f" | {w['ops_per_s']:>8.0f} {w['p99_us']:>8.1f} | {f['ops_per_s']:>9.0f} "
              f"{f['p99_us']:>7.1f} | {r['ops_per_s'] / f['ops_per_s']:.2f}")
    print("\nread latency vs idle connections (p50 / p99 us, ratio of p50 to 0 idle)")
    for kind, pts in res["idle"].items():
        base = pts["0"]["p50_us"]
        cells = "  ".join(f"{n}: {p['p50_us']:.1f}/{p['p99_us']:.1f} ({p['p50_us'] / base:.2f}x)"
                          for n, p in pts.items())
        print(f"  {kind:<12} {cells}")
    fo = res["fanout"]
    print(f"\nwatch fan-out, 1 write -> {fo['watchers']} watchers: median {fo['median_ms']:.2f} ms,"
          f" p99 {fo['p99_ms']:.2f} ms ({fo['events_per_s']:.0f} events/s)")
    t = res["tree"]
    print(f"{t['nodes']}-node tree: built at {t['build_nodes_per_s']:.0f} nodes/s, read p50 "
          f"{t['read_p50_us']:.1f} us ({t['read_ops_per_s']:.0f}/s), xenstore-ls walk "
          f"{t['xenstore_ls_walk_s']:.2f} s ({t['walk_lines']} lines), restart "
          f"{t['restart_s']:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
