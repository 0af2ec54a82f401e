#!/usr/bin/env python3
"""Scale: N demo guests on one pyxen host, created one after another with ``xl create``.

Records, for every guest, how long its ``xl create`` took and when its up line reached its
console; after every create, how long ``xl list`` took and whether its output was right (every
created domain there with its domid, none shut down, crashed, dying or paused); at 1, 10, 30 and
N running guests, the memory and CPU of everything pyxen runs (the daemons and their children:
hypervisor, xenstored, xenconsoled, backendd, monitor, dhcp, xapi, supervisor) and, apart, of
QEMU. Then destroys every guest and checks that nothing of them is left: reservations (``xl info
free_memory`` back), xenstore nodes (/local/domain/<id>, /libxl/<id>, /vm, backends), TAPs,
sockets and fds the daemons held for them, QEMU processes.

Memory: the headline is the slope of the daemons' summed PSS per extra running guest (1 -> 10
-> 30 guests, least squares). PSS, because it sums right across processes (a page shared by two
daemons counts half in each), and a slope, because what a guest costs Dom0 is what grows with
the count; RSS and USS (private pages) are recorded alongside.

No reference exists to run side by side (the goals are absolute): ``python bench/scale.py
[--count N]`` prints a table and writes bench/results/scale.json. Goals: all N=50 up < 300 s,
none lost, ``xl list`` right throughout and <= 100 ms at 50, <= 10 MiB of daemon memory per
extra guest.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pyxen.testing.bench import figure, run_facts  # noqa: E402
from pyxen.testing.host import BIN, UP_LINE, Host, qemu_pids_under, started_host  # noqa: E402
from pyxen.xenstore.client import XenstoreClient  # noqa: E402

MEMORY = 128
COUNT = 50
CHECKPOINTS = (1, 10, 30)
#: Seconds of CPU sampling at each checkpoint (the guests up and idle).
CPU_WINDOW = 5.0
#: ``xl list`` runs at each checkpoint (guests up): the figure at N is their median.
LIST_REPEATS = 5
#: How long the last guest may take to come up once all are created (TCG, loaded machine).
UP_TIMEOUT = 600.0
TICK = os.sysconf("SC_CLK_TCK")
UP = UP_LINE.encode()


# ---- processes ---------------------------------------------------------------------------------
def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _ppids() -> dict[int, int]:
    out = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                out[int(proc.name)] = int(Path(proc, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return out


def process_name(argv: list[str]) -> str:
    """What a process of the host is: the module of a ``python -m`` daemon, else the program."""
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1].removeprefix("pyxen.")
    return Path(argv[0]).name if argv and argv[0] else "?"


def host_processes(root: Path) -> dict[int, str]:
    """Every process the host runs: those naming ``root`` on their command line (the daemons
    and QEMU) and their descendants (dnsmasq, helpers), pid -> name; QEMU is named "qemu"."""
    parents = _ppids()
    mine = {pid for pid in parents if str(root) in " ".join(_cmdline(pid))}
    grew = True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in mine and pid not in mine}
        mine |= more
        grew = bool(more)
    out = {}
    for pid in mine:
        argv = _cmdline(pid)
        if not argv or not argv[0]:
            continue  # gone, or a zombie
        out[pid] = "qemu" if "qemu-system" in argv[0] else process_name(argv)
    return out


def memory_kib(pid: int) -> dict[str, int]:
    """Rss, Pss and Uss (Private_Clean + Private_Dirty) of a process, KiB; zeros if it is gone."""
    got = {"rss": 0, "pss": 0, "uss": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                got[key.lower()] = int(rest.split()[0])
            elif key in ("Private_Clean", "Private_Dirty"):
                got["uss"] += int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return got


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def fd_targets(pid: int) -> list[str]:
    """Where a process's fds point (``socket:[ino]``, paths, ``anon_inode:...``)."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    out = []
    for n in names:
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{n}"))
        except OSError:
            pass
    return out


def tap_names(pid: int) -> list[str]:
    """The TAP interfaces a process holds open (``iff:`` of its /dev/net/tun fds)."""
    out: list[str] = []
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for n in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{n}") != "/dev/net/tun":
                continue
            for line in Path(f"/proc/{pid}/fdinfo/{n}").read_text().splitlines():
                if line.startswith("iff:"):
                    out.append(line.split()[1])
        except OSError:
            pass
    return out


def snapshot(root: Path, window: float) -> dict[str, Any]:
    """Memory of each host process (KiB) and its CPU over ``window`` seconds (% of one core),
    summed into "daemons" (everything but QEMU) and "qemu"."""
    procs = host_processes(root)
    t0, ticks0 = time.monotonic(), {pid: cpu_ticks(pid) for pid in procs}
    time.sleep(window)
    elapsed = time.monotonic() - t0
    per: dict[str, dict[str, Any]] = {}
    for pid, name in sorted(procs.items()):
        mem = memory_kib(pid)
        if not mem["rss"]:
            continue
        cpu = 100.0 * (cpu_ticks(pid) - ticks0[pid]) / TICK / elapsed
        per[f"{name}[{pid}]"] = {**mem, "cpu_pct": round(cpu, 1), "name": name}
    out: dict[str, Any] = {"processes": per}
    for group, members in (("daemons", [p for p in per.values() if p["name"] != "qemu"]),
                           ("qemu", [p for p in per.values() if p["name"] == "qemu"])):
        out[group] = {k: sum(p[k] for p in members) for k in ("rss", "pss", "uss")}
        out[group]["cpu_pct"] = round(sum(p["cpu_pct"] for p in members), 1)
        out[group]["count"] = len(members)
    return out


# ---- the guests ---------------------------------------------------------------------------------
class UpWatcher:
    """Notes when each guest's up line reaches its console log, polling every 50 ms in a thread
    (reading only what each log grew by)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.pending: dict[str, int] = {}  # name -> bytes of its log already read
        self.up: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def watch(self, name: str) -> None:
        with self.lock:
            self.pending[name] = 0

    def _run(self) -> None:
        tails: dict[str, bytes] = {}
        while not self.stop.wait(0.05):
            with self.lock:
                names = list(self.pending.items())
            for name, off in names:
                try:
                    with open(self.host.paths.console_log(name), "rb") as f:
                        f.seek(off)
                        chunk = f.read()
                except FileNotFoundError:
                    continue
                text = tails.get(name, b"") + chunk
                now = time.perf_counter()
                with self.lock:
                    if UP in text:
                        self.up[name] = now
                        del self.pending[name]
                    else:
                        self.pending[name] = off + len(chunk)
                        tails[name] = text[-len(UP):]

    def wait_all(self, names: Iterable[str], timeout: float) -> list[str]:
        """Wait until every one of ``names`` is up; the ones that are not, at the deadline."""
        deadline = time.monotonic() + timeout
        names = list(names)
        while time.monotonic() < deadline:
            with self.lock:
                missing = [n for n in names if n not in self.up]
            if not missing:
                return []
            time.sleep(0.05)
        return missing

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def check_list(out: str, expected: dict[str, int]) -> list[str]:
    """What is wrong in ``xl list`` output, given name -> domid of the guests that should run:
    a missing or extra domain, a wrong id, a state other than running or blocked."""
    problems = []
    rows = {}
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) != 6:
            problems.append(f"unparsable line {line!r}")
            continue
        rows[cols[0]] = cols
    for name, domid in expected.items():
        row = rows.pop(name, None)
        if row is None:
            problems.append(f"{name} missing")
        elif row[1] != str(domid):
            problems.append(f"{name} has id {row[1]}, not {domid}")
        elif row[4][2:] != "----" or row[4][:2] not in ("r-", "-b", "--"):
            problems.append(f"{name} is in state {row[4]}")
    rows.pop("Domain-0", None)
    problems += [f"unexpected domain {name}" for name in rows]
    return problems


@dataclass
class Baseline:
    """What the host had before the guests: leftovers are measured against it."""
    free_memory: int
    sockets: set[str]
    daemon_sockets: dict[str, int]
    backends: dict[str, list[str]] = field(default_factory=dict)


def _sockets_under(root: Path) -> set[str]:
    import stat
    out = set()
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            try:
                if stat.S_ISSOCK(os.lstat(p).st_mode):
                    out.add(os.path.relpath(p, root))
            except OSError:
                pass
    return out


def _daemon_socket_fds(root: Path) -> dict[str, int]:
    return {f"{name}[{pid}]": sum(t.startswith("socket:") for t in fd_targets(pid))
            for pid, name in host_processes(root).items() if name != "qemu"}


def _backends(host: Host) -> dict[str, list[str]]:
    out = {}
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        base = "/local/domain/0/backend"
        for kind in (xs.directory(base) if xs.exists(base) else []):
            out[kind] = xs.directory(f"{base}/{kind}") if xs.exists(f"{base}/{kind}") else []
    return out


def baseline(host: Host) -> Baseline:
    return Baseline(int(host.info("free_memory")), _sockets_under(host.paths.root),
                    _daemon_socket_fds(host.paths.root), _backends(host))


def leftovers(host: Host, before: Baseline, domids: Iterable[int]) -> dict[str, Any]:
    """What the destroyed guests left behind; every value is empty (or 0) on a clean host."""
    domids = set(domids)
    root = host.paths.root
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        local = [d for d in xs.directory("/local/domain") if d != "0"]
        libxl = xs.directory("/libxl") if xs.exists("/libxl") else []
        vm = xs.directory("/vm") if xs.exists("/vm") else []
    backends = {kind: sorted(set(ids) - set(before.backends.get(kind, [])))
                for kind, ids in _backends(host).items()}
    fds_now = _daemon_socket_fds(root)
    return {
        "domains": sorted(set(host.domains()) - {"Domain-0"}),
        "memory_kib_not_returned": before.free_memory * 1024 - int(host.info("free_memory")) * 1024,
        "xenstore_local_domain": local, "xenstore_libxl": libxl, "xenstore_vm": vm,
        "xenstore_backends": {k: v for k, v in backends.items() if v},
        "taps": sorted(t for pid in host_processes(root) for t in tap_names(pid)),
        "sockets": sorted(_sockets_under(root) - before.sockets),
        "daemon_socket_fds_grown": {k: fds_now[k] - v for k, v in before.daemon_sockets.items()
                                    if k in fds_now and fds_now[k] > v},
        "domain_run_dirs": sorted(d.name for d in host.paths.domain_run_dir(0).parent.glob("*")
                                  if d.name.isdigit() and int(d.name) in domids),
        "qemu": qemu_pids_under(root),
    }


def is_clean(left: dict[str, Any]) -> bool:
    return not any(left.values())


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed_xl(host: Host, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    done = subprocess.run([str(BIN / "xl"), *args], env=host.env, capture_output=True, text=True, timeout=120)
    return time.perf_counter() - t0, done


def restarts(out: str, expected: dict[str, int]) -> dict[str, int]:
    """Guests ``xl list`` shows under a new domid: restarted by xl's monitor (on_reboot), name
    -> new domid. Not a wrong listing: a rebooted guest is a new domain, as in Xen."""
    seen = {cols[0]: cols[1] for cols in (line.split() for line in out.splitlines()[1:]) if len(cols) == 6}
    return {name: int(seen[name]) for name, domid in expected.items()
            if name in seen and seen[name].isdigit() and int(seen[name]) != domid}


def timed_list(host: Host, expected: dict[str, int], **extra: Any) -> dict[str, Any]:
    """One ``xl list``: wall seconds, the CPU seconds the xl process used (what the wall time
    is when the machine is not saturated), restarted guests (``expected`` is updated) and what
    is wrong in its output."""
    cpu0 = _children_cpu()
    dt, ls = timed_xl(host, "list")
    row: dict[str, Any] = {"domains": len(expected), "s": dt, "cpu_s": _children_cpu() - cpu0, **extra}
    if ls.returncode != 0:
        return {**row, "problems": [ls.stderr.strip()]}
    moved = restarts(ls.stdout, expected)
    expected.update(moved)
    return {**row, "restarted": moved, "problems": check_list(ls.stdout, expected)}


def run(host: Host, count: int, memory: int = MEMORY, checkpoints: Iterable[int] = CHECKPOINTS,
        cpu_window: float = CPU_WINDOW, list_repeats: int = LIST_REPEATS,
        say: Callable[[str], None] = print) -> dict[str, Any]:
    """Create ``count`` guests one after another, measure, destroy them all, check what is left.
    Every sample goes into the returned dict (see the module docstring)."""
    marks = sorted({c for c in checkpoints if c <= count} | {count})
    before = baseline(host)
    watcher = UpWatcher(host)
    expected: dict[str, int] = {}
    guests: list[dict[str, Any]] = []
    lists: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    measuring = 0.0  # seconds spent sampling (guests already up): not part of "all up"
    t_start = time.perf_counter()
    try:
        samples.append({"domains": 0, **snapshot(host.paths.root, cpu_window)})
        measuring += cpu_window
        t_start = time.perf_counter()
        for i in range(1, count + 1):
            name = f"scale{i}"
            cfg = host.write_cfg(name, memory=memory)  # (DEMO_CMDLINE has no_timer_check)
            watcher.watch(name)
            t0 = time.perf_counter()
            done = subprocess.run([str(BIN / "xl"), "create", "-q", str(cfg)], env=host.env,
                                  capture_output=True, text=True, timeout=300)
            t1 = time.perf_counter()
            guest: dict[str, Any] = {"name": name, "started_s": t0 - t_start, "create_s": t1 - t0,
                                     "rc": done.returncode}
            guests.append(guest)
            if done.returncode != 0:
                guest["error"] = (done.stderr + done.stdout)[-2000:]
                say(f"{name}: xl create exited {done.returncode}: {done.stderr.strip()[-300:]}")
                continue
            guest["domid"] = expected[name] = int(host.xl("domid", name).stdout)
            row = timed_list(host, expected)
            lists.append(row)
            say(f"{name}: domid {guest['domid']}, create {t1 - t0:.2f} s, xl list {row['s'] * 1000:.0f} ms"
                + (f", WRONG: {row['problems']}" if row["problems"] else ""))
            if len(expected) in marks:
                missing = watcher.wait_all(expected, UP_TIMEOUT)
                t_m = time.perf_counter()
                snap = snapshot(host.paths.root, cpu_window)
                samples.append({"domains": len(expected), "not_up": missing, **snap})
                idle = [timed_list(host, expected, idle=True) for _ in range(list_repeats)]
                lists += idle
                dt = statistics.median(row["s"] for row in idle)
                measuring += time.perf_counter() - t_m
                d, q = snap["daemons"], snap["qemu"]
                say(f"== {len(expected)} guests: daemons RSS {d['rss'] / 1024:.1f} MiB, PSS "
                    f"{d['pss'] / 1024:.1f}, USS {d['uss'] / 1024:.1f}, CPU {d['cpu_pct']:.0f}%; "
                    f"QEMU x{q['count']} RSS {q['rss'] / 1024:.0f} MiB, CPU {q['cpu_pct']:.0f}%; "
                    f"xl list (all up) {dt * 1000:.0f} ms")
        missing = watcher.wait_all(expected, UP_TIMEOUT)
    finally:
        watcher.close()
    for g in guests:
        if g["name"] in watcher.up:
            g["up_s"] = watcher.up[g["name"]] - t_start - g["started_s"]
    last_up = max(watcher.up.values(), default=t_start)
    all_up_s = last_up - t_start - measuring
    # What the check sees with the guests still there: proof that it would see a leftover.
    running = leftovers(host, before, expected.values())
    # Destroy them all and look for what is left.
    destroys = []
    for name, domid in expected.items():
        dt, done = timed_xl(host, "destroy", name)
        destroys.append({"name": name, "domid": domid, "s": dt, "rc": done.returncode})
    left = leftovers(host, before, expected.values())
    lost = count - sum(1 for g in guests if "up_s" in g)
    return {"count": count, "memory_mib": memory, "checkpoints": marks, "guests": guests,
            "lists": lists, "samples": samples, "destroys": destroys, "not_up": missing,
            "all_up_s": all_up_s, "measuring_s": measuring, "lost": lost, "leftovers": left,
            "seen_while_running": running,
            "clean": is_clean(left)}


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points."""
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers and figures of a run."""
    count = res["count"]
    at = {s["domains"]: s for s in res["samples"]}
    fit = [n for n in (1, 10, 30) if n in at] or [n for n in at if n]
    if len(fit) < 2:
        fit = sorted(n for n in at if n)
    per = {k: slope([(n, at[n]["daemons"][k] / 1024) for n in fit]) if len(fit) > 1 else 0.0
           for k in ("rss", "pss", "uss")}
    idle = [row for row in res["lists"] if row["domains"] == count and row.get("idle")]
    list_at_n = statistics.median(row["s"] for row in idle) * 1000 if idle else float("nan")
    list_cpu_at_n = statistics.median(row["cpu_s"] for row in idle) * 1000 if idle else float("nan")
    wrong = sum(1 for row in res["lists"] if row["problems"])
    restarted = sorted({name for row in res["lists"] for name in row.get("restarted", {})})
    creates = [g["create_s"] for g in res["guests"]]
    ups = [g["up_s"] for g in res["guests"] if "up_s" in g]
    out = {"all_up_s": res["all_up_s"], "lost": res["lost"], "xl_list_ms_at_n": list_at_n,
           "xl_list_cpu_ms_at_n": list_cpu_at_n, "restarted": restarted,
           "xl_list_wrong": wrong, "mib_per_domain": per, "fit_points": fit,
           "create_s_median": statistics.median(creates) if creates else None,
           "up_s_median": statistics.median(ups) if ups else None, "clean": res["clean"]}
    out["figures"] = [
        figure(f"all {count} guests up (xl create one after another)", "s", value=round(res["all_up_s"], 1),
               goal=("<", 300.0)),
        figure("guests lost (not up, or create failed)", "guests", value=res["lost"], goal=("<=", 0)),
        figure(f"xl list with {count} guests up (median of {LIST_REPEATS})", "ms", value=round(list_at_n, 1),
               goal=("<=", 100.0)),
        figure(f"xl list with {count} guests up: CPU of the xl process", "ms", value=round(list_cpu_at_n, 1)),
        figure("xl list samples wrong", "samples", value=wrong, goal=("<=", 0)),
        figure("guests rebooted and restarted by xl's monitor", "guests", value=len(restarted)),
        figure(f"Dom0 daemons' PSS per extra guest ({' -> '.join(map(str, fit))})", "MiB",
               value=round(per["pss"], 2), goal=("<=", 10.0)),
        figure("left after destroying all", "items", value=sum(1 for v in res["leftovers"].values() if v),
               goal=("<=", 0)),
    ]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=COUNT, help=f"guests (default {COUNT})")
    ap.add_argument("--memory", type=int, default=MEMORY, help=f"MiB per guest (default {MEMORY})")
    ap.add_argument("--cpu-window", type=float, default=CPU_WINDOW)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    ns = ap.parse_args()
    from pyxen.images.demo import build
    # What an installed pyxen has: bytecode for every module. Without it (a checkout, with
    # PYTHONDONTWRITEBYTECODE set as here) each xl run compiles what it imports, which is most
    # of xl list's time.
    compileall.compile_dir(str(ROOT / "src" / "pyxen"), quiet=1)
    facts = run_facts(ROOT)
    with started_host(build(), prefix="pxsc-") as host:
        res = run(host, ns.count, ns.memory, cpu_window=ns.cpu_window, say=lambda s: print(s, flush=True))
    summ = summarize(res)
    print(f"\n{ns.count} demo guests of {ns.memory} MiB, xl create one after another (TCG)")
    print(f"{'guests':>7}{'daemons RSS':>13}{'PSS':>8}{'USS':>8}{'CPU %':>7}{'QEMU RSS':>10}{'CPU %':>7}")
    for s in res["samples"]:
        d, q = s["daemons"], s["qemu"]
        print(f"{s['domains']:>7}{d['rss'] / 1024:>13.1f}{d['pss'] / 1024:>8.1f}{d['uss'] / 1024:>8.1f}"
              f"{d['cpu_pct']:>7.0f}{q['rss'] / 1024:>10.0f}{q['cpu_pct']:>7.0f}")
    for f in summ["figures"]:
        goal = (f"  goal {' '.join(map(str, f['goal']))}: {'met' if f['met'] else 'NOT met'}"
                if "goal" in f else "")
        print(f"  {f['name']}: {f['value']} {f['unit']}{goal}")
    print(f"  per extra guest: RSS {summ['mib_per_domain']['rss']:.2f} MiB, USS {summ['mib_per_domain']['uss']:.2f} MiB")
    if not res["clean"]:
        print(f"  LEFT BEHIND: {json.dumps({k: v for k, v in res['leftovers'].items() if v})}")
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps({
        **facts, "what": f"{ns.count} demo guests ({ns.memory} MiB, no devices) created one after another "
        "with xl create on one pyxen host; boot, xl list, Dom0 memory and CPU, cleanup after destroy",
        "accel": "tcg", "figures": summ["figures"], "summary": {k: v for k, v in summ.items() if k != "figures"},
        **res}, indent=2) + "\n")
    return 0 if res["clean"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
