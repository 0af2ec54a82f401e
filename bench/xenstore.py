"""Benchmark pyxen's xenstored (issues 4 and 13) against an echo floor on the same socket.

Setup: a real xenstored (``python -m pyxen.xenstore``, journal fsync on as in production) in a
scratch PYXEN_ROOT, on its Unix socket.  No hypervisor runs there: xenstored waits for one on
inotify, so, as on a host whose hypervisor is up, its event loop holds no timer (a pending
timer gives every epoll_wait a timeout, which cost ~5 us per request here).  The clients:
  * C client: bench/xs_load.c, built here with gcc against Debian's libxenstore (libxen-dev).
    N processes, each with its own ``xs_open()`` connection, loop ``xs_read``/``xs_write`` and
    time every call -- exactly what a C toolstack does (one request in flight per connection).
  * pyxen client: ``pyxen.xenstore.client.XenstoreClient`` in N Python processes.
The floors, driven by the same C client on the same kind of socket (Unix stream):
  * Python echo (the goals' reference): a minimal asyncio server built on xenstored's own
    transport class (``pyxen.xenstore.server.PacketProtocol``: same event loop, same recv path,
    ``wire.PacketReader`` framing) that answers each request with a reply of the size xenstored
    gives (READ: the 32-byte value; others "OK").  What the Python transport costs with no
    store behind it: xenstored/echo is the share of time that is not request handling.
  * C echo: the same server in C (``xs_load echo``, epoll), for context: what Python costs.
Each round measures, for 1 and 8 connections: xenstored reads and Python echo reads in 3
alternating short slices each (a burst of load from elsewhere lands on both), then C echo
reads, xenstored writes (C client), pyxen-client reads; then C-client read latency with 0 and
512 idle connections open.  Headline figures are medians of per-round ratios.
Goals (issue 13): 1 client reads/s >= 0.9 x the Python echo; 8 clients >= 0.8 x; read p50 with
512 idle connections <= 1.2 x with none.  Also, once: watch fan-out 1 write -> 100 watchers,
and a 10 000-node tree (build, read, xenstore-ls walk, restart).
Prints a table and writes bench/results/xenstore.json.  ``--quick`` for a short run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
# The daemon is a subprocess: it must import this tree's pyxen too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])

from pyxen.testing.bench import figure, run_facts  # noqa: E402
from pyxen.xenstore.client import XenstoreClient  # noqa: E402
from pyxen.xenstore.server import PacketProtocol  # noqa: E402
from pyxen.xenstore.testing import DaemonProcess  # noqa: E402
from pyxen.xenstore.wire import HEADER, OK, Op, PacketReader, encode  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "xenstore.json"
VALUE = b"v" * 32  # olivierpierre/xenstore-benchmark uses 32-byte values
XS_LOAD_C = Path(__file__).with_name("xs_load.c")
IDLE = 512


# --- the C client and C echo ----------------------------------------------------------------
def build_xs_load(out_dir: Path) -> Path:
    """Compile bench/xs_load.c against Debian's libxenstore; exit with one line if the
    header (package libxen-dev, in the Makefile's DEBS) is missing."""
    if not Path("/usr/include/xenstore.h").exists():
        sys.exit("bench/xenstore.py: /usr/include/xenstore.h missing: apt-get install libxen-dev "
                 "(or make deps)")
    if shutil.which("gcc") is None:
        sys.exit("bench/xenstore.py: gcc missing: apt-get install gcc")
    exe = out_dir / "xs_load"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(XS_LOAD_C), "-lxenstore"],
                   check=True)
    return exe


def c_load(exe: Path, sock: str, op: str, conns: int, seconds: float,
           path: str) -> dict[str, float]:
    """``conns`` C processes (one libxenstore connection each) looping ``op`` on ``path``
    (writes: ``path<i>``); ops/s and latency percentiles measured by the C program."""
    args = [str(exe), op, sock, str(conns), str(seconds), path]
    if op == "write":
        args.append(str(len(VALUE)))
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"xs_load {op} on {sock}: {done.stderr.strip()}")
    return json.loads(done.stdout)


# --- the pyxen (Python) client -------------------------------------------------------------
def _py_worker(sock: str, path: str, seconds: float, start_at: float,
               q: "mp.Queue[tuple[int, list[int]]]") -> None:
    xs = XenstoreClient(sock).connect()
    for _ in range(200):  # warm up
        xs.read(path)
    while time.time() < start_at:
        time.sleep(0.001)
    lat: list[int] = []
    clock = time.perf_counter_ns
    end = clock() + int(seconds * 1e9)
    t = clock()
    while t < end:
        xs.read(path)
        t2 = clock()
        lat.append(t2 - t)
        t = t2
    xs.close()
    q.put((len(lat), lat[:: max(1, len(lat) // 20000)]))


def py_load(sock: str, conns: int, seconds: float, path: str) -> dict[str, float]:
    """``conns`` Python processes, each with one pyxen client connection, reading ``path``."""
    ctx = mp.get_context("fork")
    q: "mp.Queue[tuple[int, list[int]]]" = ctx.Queue()
    start_at = time.time() + 0.5
    procs = [ctx.Process(target=_py_worker, args=(sock, path, seconds, start_at, q))
             for _ in range(conns)]
    for p in procs:
        p.start()
    results = [q.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    total = sum(n for n, _ in results)
    lat = sorted(x for _, sample in results for x in sample)
    return {"ops": total, "seconds": seconds, "ops_per_s": total / seconds,
            "p50_us": lat[len(lat) // 2] / 1e3, "p99_us": lat[int(len(lat) * 0.99)] / 1e3}


# --- the Python echo floor -----------------------------------------------------------------
class EchoProtocol(PacketProtocol):
    """xenstored's transport with the store taken out: every request is answered with a
    reply of xenstored's size (READ: the 32-byte value, else "OK\\0"), type/ids kept."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.reader = PacketReader()

    def data_received(self, data: bytes) -> None:
        for p in self.reader.feed(data):
            payload = VALUE if p.op == Op.READ else OK
            self.transport.write(HEADER.pack(p.op, p.req_id, p.tx_id, len(payload)) + payload)


def _echo_main(path: str) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_unix_server(EchoProtocol, path, backlog=1024)
        async with server:
            await server.serve_forever()
    asyncio.run(run())


def start_py_echo(path: str) -> mp.process.BaseProcess:
    p = mp.get_context("fork").Process(target=_echo_main, args=(path,), daemon=True)
    p.start()
    _wait_socket(path)
    return p


def _wait_socket(path: str) -> None:
    for _ in range(500):
        if os.path.exists(path):
            return
        time.sleep(0.01)
    raise TimeoutError(f"nobody listens on {path}")


# --- one round --------------------------------------------------------------------------------
#: xenstored and its echo floor alternate this many times per round (short slices), so a
#: burst of load from elsewhere on the host lands on both sides rather than on one.
PAIRS = 3


def paired(exe: Path, sock: str, py_echo: str, conns: int, secs: float,
           flip: bool) -> dict[str, Any]:
    """xenstored reads and Python echo reads in PAIRS alternating slices of secs/PAIRS each;
    each side's ops/s is its total over its slices, p50/p99 the median of its slices'."""
    slices: dict[str, list[dict[str, float]]] = {"xenstored_read": [], "py_echo_read": []}
    for k in range(PAIRS):
        order = [("xenstored_read", sock), ("py_echo_read", py_echo)]
        if (k + flip) % 2:
            order.reverse()
        for name, path in order:
            slices[name].append(c_load(exe, path, "read", conns, secs / PAIRS, "/bench/r"))
    out: dict[str, Any] = {}
    for name, pts in slices.items():
        ops = sum(p["ops"] for p in pts)
        seconds = sum(p["seconds"] for p in pts)
        out[name] = {"ops": ops, "seconds": seconds, "ops_per_s": ops / seconds,
                     "p50_us": statistics.median(p["p50_us"] for p in pts),
                     "p99_us": statistics.median(p["p99_us"] for p in pts), "slices": pts}
    return out


def one_round(exe: Path, sock: str, py_echo: str, c_echo: str, secs: float,
              flip: bool) -> dict[str, Any]:
    """For 1 and 8 connections: xenstored vs the Python echo (alternating slices), then the
    context points, in an order that alternates between rounds so that no side always runs
    first; then read latency with 0 and IDLE idle connections."""
    out: dict[str, Any] = {}
    for conns in (1, 8):
        points = [("c_echo_read", lambda: c_load(exe, c_echo, "read", conns, secs, "/bench/r")),
                  ("xenstored_write", lambda: c_load(exe, sock, "write", conns, secs, "/bench/w")),
                  ("pyclient_read", lambda: py_load(sock, conns, secs, "/bench/r"))]
        if flip:
            points.reverse()
        row = paired(exe, sock, py_echo, conns, secs, flip)
        row.update({name: fn() for name, fn in points})
        out[str(conns)] = row
    idle: dict[str, Any] = {}
    for n in ((IDLE, 0) if flip else (0, IDLE)):
        held = []
        for _ in range(n):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock)
            held.append(s)
        idle[str(n)] = c_load(exe, sock, "read", 1, secs, "/bench/r")
        for s in held:
            s.close()
    out["idle"] = idle
    return out


# --- once-only scenarios --------------------------------------------------------------------
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
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                try:
                    data = ready.recv(65536)
                except BlockingIOError:
                    continue
                if data:
                    pending.discard(ready)
        times.append(time.perf_counter() - t0)
    w.close()
    for s in conns:
        s.close()
    times.sort()
    return {"watchers": watchers, "median_ms": statistics.median(times) * 1e3,
            "p99_ms": times[int(len(times) * 0.99)] * 1e3,
            "events_per_s": watchers / statistics.median(times)}


def big_tree(d: DaemonProcess, exe: Path, nodes: int, seconds: float) -> dict[str, float]:
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
    sample = random.Random(1).choice(names)
    reads = c_load(exe, sock, "read", 1, seconds, sample)
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


# --- summary --------------------------------------------------------------------------------
def median_of(rounds: list[dict[str, Any]], fn: Any) -> float:
    return statistics.median(fn(r) for r in rounds)


def summarize(rounds: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Medians of each point and of the per-round ratios; the headline figures."""
    summary: dict[str, Any] = {}
    for conns in ("1", "8"):
        pts = rounds[0][conns].keys()
        s: dict[str, Any] = {name: {k: median_of(rounds, lambda r, n=name, k=k: r[conns][n][k])
                                for k in ("ops_per_s", "p50_us", "p99_us")} for name in pts}
        per_round = [r[conns]["xenstored_read"]["ops_per_s"] / r[conns]["py_echo_read"]["ops_per_s"]
                     for r in rounds]
        s["ratio_to_py_echo"] = statistics.median(per_round)
        s["ratio_to_py_echo_range"] = [min(per_round), max(per_round)]
        s["p50_ratio_to_py_echo"] = median_of(
            rounds, lambda r: r[conns]["xenstored_read"]["p50_us"]
            / r[conns]["py_echo_read"]["p50_us"])
        s["ratio_to_c_echo"] = median_of(
            rounds, lambda r: r[conns]["xenstored_read"]["ops_per_s"]
            / r[conns]["c_echo_read"]["ops_per_s"])
        summary[conns] = s
    idle_points: dict[str, Any] = {n: {k: median_of(rounds, lambda r, n=n, k=k: r["idle"][n][k])
                                   for k in ("p50_us", "p99_us", "ops_per_s")}
                                for n in ("0", str(IDLE))}
    summary["idle"] = idle_points
    per_round = [r["idle"][str(IDLE)]["p50_us"] / r["idle"]["0"]["p50_us"] for r in rounds]
    idle_points["p50_ratio"] = statistics.median(per_round)
    idle_points["p50_ratio_range"] = [min(per_round), max(per_round)]
    one, eight, idle = summary["1"], summary["8"], summary["idle"]
    figures = [
        figure("xenstored reads/s, 1 C client, vs Python echo floor", "reads/s",
               pyxen=one["xenstored_read"]["ops_per_s"], reference=one["py_echo_read"]["ops_per_s"],
               ratio=one["ratio_to_py_echo"], goal=(">=", 0.9)),
        figure("xenstored reads/s, 8 C clients, vs Python echo floor", "reads/s",
               pyxen=eight["xenstored_read"]["ops_per_s"],
               reference=eight["py_echo_read"]["ops_per_s"], ratio=eight["ratio_to_py_echo"],
               goal=(">=", 0.8)),
        figure(f"xenstored read p50, {IDLE} idle connections vs none", "us",
               pyxen=idle[str(IDLE)]["p50_us"], reference=idle["0"]["p50_us"],
               ratio=idle["p50_ratio"], goal=("<=", 1.2)),
        figure("xenstored reads/s, 1 C client, vs C echo (context)", "reads/s",
               pyxen=one["xenstored_read"]["ops_per_s"], reference=one["c_echo_read"]["ops_per_s"],
               ratio=one["ratio_to_c_echo"]),
        figure("xenstored read p50 latency, 1 C client, vs Python echo floor (context)", "us",
               pyxen=one["xenstored_read"]["p50_us"], reference=one["py_echo_read"]["p50_us"],
               ratio=one["p50_ratio_to_py_echo"]),
        figure("xenstored reads/s, 1 C client (libxenstore)", "reads/s",
               value=one["xenstored_read"]["ops_per_s"]),
        figure("xenstored reads/s, 8 C clients (libxenstore)", "reads/s",
               value=eight["xenstored_read"]["ops_per_s"]),
        figure("xenstored writes/s, 1 C client (each fsync'd before its reply)", "writes/s",
               value=one["xenstored_write"]["ops_per_s"]),
    ]
    return summary, figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (about a minute)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ns = ap.parse_args(argv)
    secs = 0.45 if ns.quick else 0.9
    nrounds = ns.rounds or (3 if ns.quick else 10)  # the host is noisy: many short rounds
    res: dict[str, Any] = run_facts(ROOT)
    res["what"] = ("Debian's C libxenstore clients (1 and 8 connections) reading a 32-byte node "
                   "from pyxen's xenstored (fsync on) on its Unix socket, against a minimal "
                   "Python asyncio echo server on xenstored's own transport class answering "
                   "with replies of the same size, interleaved in the same run")
    res.update(quick=ns.quick, seconds_per_point=secs, idle_connections=IDLE)
    tmp = Path(tempfile.mkdtemp(prefix="pyxen-bench-"))
    exe = build_xs_load(tmp)
    d = DaemonProcess(tmp / "root").start()
    sock = str(d.socket)
    procs: list[Any] = []
    try:
        with XenstoreClient(sock) as xs:
            xs.write("/bench/r", VALUE)
            for i in range(8):
                xs.write(f"/bench/w{i}", VALUE)
        py_echo = str(tmp / "py-echo.sock")
        procs.append(start_py_echo(py_echo))
        c_echo = str(tmp / "c-echo.sock")
        procs.append(subprocess.Popen([str(exe), "echo", c_echo, str(len(VALUE))]))
        _wait_socket(c_echo)
        rounds = []
        for i in range(nrounds):
            rounds.append(one_round(exe, sock, py_echo, c_echo, secs, flip=bool(i % 2)))
            print(f"round {i + 1}/{nrounds}: 1 client {_ratio(rounds[-1], '1'):.2f}, "
                  f"8 clients {_ratio(rounds[-1], '8'):.2f} of the Python echo", flush=True)
        res["rounds"] = rounds
        res["summary"], res["figures"] = summarize(rounds)
        res["fanout"] = fanout(sock, 100, 30 if ns.quick else 200)
        res["tree"] = big_tree(d, exe, 10_000, secs)
    finally:
        for p in procs:
            p.kill()
        if d.alive():
            d.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    res["loadavg_after"] = list(os.getloadavg())
    render(res)
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nwrote {ns.out}")
    return 0


def _ratio(r: dict[str, Any], conns: str) -> float:
    return float(r[conns]["xenstored_read"]["ops_per_s"] / r[conns]["py_echo_read"]["ops_per_s"])


ROWS = [("xenstored_read", "xenstored READ", "C (libxenstore, xs_load.c)"),
        ("py_echo_read", "echo floor, Python", "C (libxenstore, xs_load.c)"),
        ("c_echo_read", "echo, C (context)", "C (libxenstore, xs_load.c)"),
        ("xenstored_write", "xenstored WRITE", "C (libxenstore, xs_load.c)"),
        ("pyclient_read", "xenstored READ", "Python (pyxen client)")]


def _span(r: list[float]) -> str:
    return f"[{r[0]:.2f}-{r[1]:.2f}]"


def render(res: dict[str, Any]) -> None:
    s = res["summary"]
    print(f"\npyxen xenstored benchmark ({'quick' if res['quick'] else 'full'}: "
          f"{len(res['rounds'])} rounds x {res['seconds_per_point']} s per point; "
          f"{res['machine']['cores']} cores; medians)\n")
    print("server: xenstored = pyxen's daemon (Python, fsync on); echo floor = minimal asyncio "
          "server on\nxenstored's transport class (Python) answering with same-size replies; "
          "C echo = same in C (epoll)\n")
    print(f"{'server':<20} {'client':<28} {'conns':>5} | {'ops/s':>9} {'p50 us':>8} {'p99 us':>8}")
    for conns in ("1", "8"):
        for key, server, client in ROWS:
            p = s[conns][key]
            print(f"{server:<20} {client:<28} {conns:>5} | {p['ops_per_s']:>9.0f} "
                  f"{p['p50_us']:>8.1f} {p['p99_us']:>8.1f}")
    print(f"\nper-round ratio ranges: 1 client {_span(s['1']['ratio_to_py_echo_range'])}, "
          f"8 clients {_span(s['8']['ratio_to_py_echo_range'])}, idle p50 "
          f"{_span(s['idle']['p50_ratio_range'])}; load average before "
          f"{res['machine']['loadavg_before'][0]:.1f}, after {res['loadavg_after'][0]:.1f}\n")
    for f in res["figures"]:
        if "ratio" in f:
            goal = f"  goal {f['goal'][0]} {f['goal'][1]}: {'met' if f['met'] else 'NOT met'}" \
                if "goal" in f else ""
            print(f"{f['name']}: {f['pyxen']:.1f} / {f['reference']:.1f} {f['unit']} -> "
                  f"ratio {f['ratio']:.2f}{goal}")
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
