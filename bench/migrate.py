"""Save, restore and live migration: pyxen (``xl save``, ``xl restore``, ``xl migrate``) against
bare QEMU's own migration of the same guest, in one invocation, interleaved (a pyxen round, a
bare round, a pyxen round, ...), for an idle guest and for one that dirties memory.

Guest: the demo kernel and initramfs, MEMORY MiB, 1 vCPU, the accelerator pyxen's host picks.
It prints ``tick <n>`` every TICK_MS ms (a busybox loop: ``usleep``); the "dirty" one also
copies a DIRTY_MIB MiB file of random bytes over another in its RAM-backed /tmp, again and
again (a working set of DIRTY_MIB MiB rewritten with non-zero data as fast as the vCPU goes)
and prints ``dirtied <passes>`` every second pass: the rate it reaches before each operation,
passes x DIRTY_MIB over host time, is in the results as ``dirty_mib_s``. (QEMU's own
``calc-dirty-rate`` is no use here: page sampling compares page contents, which the copy keeps
the same, and dirty-bitmap mode crashed QEMU 7.2 under TCG.)

Downtime is what the guest's user sees: this process tails the guest's console log(s) every
POLL_S and stamps each tick line with the host time it appeared. Across an operation the
longest gap between consecutive ticks, minus the usual gap (median of the ticks before), is the
downtime; the counter must go on without reset (at most one line lost at the switch). QEMU's
own figure (query-migrate ``downtime``) is recorded too: for bare QEMU from QMP, for pyxen from
the hypervisor's log line (``saving completed: qemu {...}``).

(a) pyxen, on a host started by this script: ``xl save <dom> <file>`` (time of the command),
    ``xl restore <file>`` (time of the command), downtime from the last tick before the save to
    the first after the restore. ``xl migrate -s "" <dom> "<enter the second host> xl
    migrate-receive"`` to a second host (pyxen.testing.twohosts), total = the command's time;
    reported as "not built" while ``xl migrate`` says "command not implemented".
(b) bare qemu-system-x86_64 with pyxen's machine shape (pc, memfd RAM share=on, -nodefaults,
    the same kernel, initrd, command line, memory (with pyxen's 8 KiB TCG pad), accelerator), serial console to a file,
    driven by QMP: save = stop + migrate to ``exec:cat > file`` + quit; restore = a new QEMU
    with ``-incoming defer``, migrate-incoming ``exec:cat file``, cont; migration = a second
    QEMU with ``-incoming defer`` listening on a Unix socket, ``migrate unix:...`` from the
    first with pyxen's max-bandwidth, total = from starting the receiver to the guest running
    on it.

Prints a table (medians [min-max]) and the median of per-round ratios pyxen/bare, writes
bench/results/migrate.json with every round. ``python bench/migrate.py [ROUNDS]``.
Goals: downtime pyxen/bare <= 1.5, total migration time pyxen/bare <= 1.3.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

from qemu.qmp import QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

from pyxen.hypervisor import qemu as pyxen_qemu
from pyxen.hypervisor.accel import choose
from pyxen.images.demo import DemoImage, build
from pyxen.paths import DEMO_CMDLINE
from pyxen.testing.bench import figure as headline, run_facts
from pyxen.testing.bridge import link_local_bridge
from pyxen.testing.host import BIN, Host, started_host
from pyxen.testing.twohosts import SecondHost, second_host

ROUNDS = 3
MEMORY = 256
TICK_MS = 20
DIRTY_MIB = 32
POLL_S = 0.002
#: Ticks seen before an operation starts (the guest is up and its loops run).
WARM_TICKS = 100
TIMEOUT = 300.0
QMP_TIMEOUT = 30.0
#: The bare migration gets the bandwidth cap pyxen's xl migrate sets (QEMU's default is 32 MiB/s).
MAX_BANDWIDTH: int = getattr(pyxen_qemu, "MIGRATE_MAX_BANDWIDTH", 1 << 30)
CMDLINE = DEMO_CMDLINE
NOT_BUILT = "not built"

COUNTER = f'i=0; while true; do echo "tick $i"; i=$((i+1)); usleep {TICK_MS * 1000}; done &\n'
DIRTY = (f"dd if=/dev/urandom of=/tmp/src bs=64k count={DIRTY_MIB * 16} 2>/dev/null\n"
         "cp /tmp/src /tmp/dst\n"
         "n=0; while true; do dd if=/tmp/src of=/tmp/dst bs=64k conv=notrunc 2>/dev/null; n=$((n+1)); "
         "[ $((n % 2)) = 0 ] && echo \"dirtied $n\"; done &\n")
WORKLOADS = {"idle": COUNTER, "dirty": COUNTER + DIRTY}
TICK = re.compile(rb"^tick (\d+)\r?$")
DIRTIED = re.compile(rb"^dirtied (\d+)\r?$")
QEMU_STATS = re.compile(r"domain \d+: (saving|restoring|migrating|receiving) completed: qemu (\{.*\})")
#: What a guest that died and booted again leaves on its console.
CRASH = re.compile(r"Kernel panic|BUG:|Oops|general protection|pyxen demo guest: \d")


class Ticks:
    """The guest's ``tick <n>`` lines as they appear in its console log files (one or more: a
    migrated guest's console is on the receiver), each stamped with the host time it was first
    seen. A thread polls the files every POLL_S; a file that is replaced or truncated is read
    again from its start."""

    def __init__(self, *paths: Path) -> None:
        self.paths = list(paths)
        self.seen: list[tuple[float, int]] = []
        #: The dirtying loop's pass count lines, stamped the same way.
        self.dirtied: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def add(self, path: Path) -> None:
        self.paths.append(path)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        state: dict[Path, tuple[Any, int, bytes]] = {}  # path -> (file, inode, partial line)
        while not self._stop.is_set():
            for path in list(self.paths):
                f, ino, part = state.get(path, (None, -1, b""))
                try:
                    now_ino = path.stat().st_ino
                except FileNotFoundError:
                    continue
                if f is None or now_ino != ino or os.fstat(f.fileno()).st_size < f.tell():
                    if f is not None:
                        f.close()
                    f, ino, part = open(path, "rb"), now_ino, b""
                data = f.read()
                if data:
                    now = time.perf_counter()
                    lines = (part + data).split(b"\n")
                    part = lines.pop()
                    for line in lines:
                        m = TICK.match(line)
                        if m:
                            self.seen.append((now, int(m.group(1))))
                        elif m := DIRTIED.match(line):
                            self.dirtied.append((now, int(m.group(1))))
                state[path] = (f, ino, part)
            time.sleep(POLL_S)
        for f, _, _ in state.values():
            f.close()

    def dirty_rate(self) -> float | None:
        """MiB/s the guest's dirtying loop rewrote (passes x DIRTY_MIB over host time), from
        the pass lines seen so far; None for a guest without the loop."""
        seen = list(self.dirtied)
        if len(seen) < 2:
            return None
        return (seen[-1][1] - seen[0][1]) * DIRTY_MIB / (seen[-1][0] - seen[0][0])

    def wait(self, count: int, after: float = 0.0, timeout: float = TIMEOUT) -> None:
        """Until ``count`` ticks have been seen after host time ``after``."""
        deadline = time.monotonic() + timeout
        while sum(1 for t, _ in list(self.seen) if t > after) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {count} ticks within {timeout:.0f} s on {self.paths}")
            time.sleep(0.02)

    def gap(self, start: float, end: float) -> dict[str, Any]:
        """The counter across an operation from host time ``start`` to ``end``: the longest gap
        between consecutive ticks from the last one before ``start`` to the first after
        ``end``, the usual gap (median over the 2 s before ``start``) and their difference,
        the downtime. Raises if the counter was reset or lost more than one line."""
        seen = list(self.seen)
        before = [i for i, (t, _) in enumerate(seen) if t < start]
        after = [i for i, (t, _) in enumerate(seen) if t > end]
        if not before or not after:
            raise RuntimeError("no ticks on both sides of the operation")
        a, b = before[-1], after[0]
        span = seen[a:b + 1]
        numbers = [n for _, n in seen[a:min(len(seen), b + 5)]]
        steps = [y - x for x, y in zip(numbers, numbers[1:])]
        if any(s < 1 for s in steps) or sum(s - 1 for s in steps) > 1:
            raise RuntimeError(f"the counter did not go on: {numbers}")
        usual_window = [t for t, _ in seen[:a + 1] if t > start - 2.0]
        usual = statistics.median(y - x for x, y in zip(usual_window, usual_window[1:])) \
            if len(usual_window) > 2 else TICK_MS / 1000
        longest = max(y[0] - x[0] for x, y in zip(span, span[1:]))
        return {"downtime_s": longest - usual, "max_gap_s": longest, "usual_gap_s": usual,
                "first_tick_after_s": seen[b][0] - end}


# --- pyxen ----------------------------------------------------------------------------------

def xl_migrate_built(host: Host) -> bool:
    """Whether this tree's xl has a ``migrate`` command (before it is merged, xl answers
    "command not implemented")."""
    done = host.run("xl", "migrate")
    return "command not implemented" not in done.stderr + done.stdout


def qemu_reported(host: Host, what: str, mark: int) -> dict[str, Any] | None:
    """QEMU's own figures for the last ``what`` (saving/restoring/migrating) the hypervisor
    logged after byte ``mark`` of its log; None if it logged none (a tree without the line)."""
    try:
        text = host.paths.daemon_log("hypervisor").read_text(errors="replace")[mark:]
    except FileNotFoundError:
        return None
    found = [json.loads(m.group(2)) for m in QEMU_STATS.finditer(text) if m.group(1) == what]
    return found[-1] if found else None


def log_mark(host: Host) -> int:
    try:
        return len(host.paths.daemon_log("hypervisor").read_text(errors="replace"))
    except FileNotFoundError:
        return 0


def crash_excerpt(logs: list[Path]) -> str:
    """The lines of the first crash message in ``logs`` (a guest that booted again), or the
    end of the last log: why a counter went back to 0."""
    text = "".join(p.read_text(errors="replace") for p in logs if p.exists())
    m = CRASH.search(text)
    return text[m.start():m.start() + 600] if m else text[-600:]


def pyxen_save_restore(host: Host, name: str, script: str, tmp: Path) -> dict[str, Any]:
    """xl create, then xl save and xl restore of the running guest."""
    host.create(name, memory=MEMORY, script=script)
    ticks = Ticks(host.paths.console_log(name))
    try:
        host.wait_console(name)
        ticks.wait(WARM_TICKS)
        rate = ticks.dirty_rate()  # before the operation
        save = tmp / f"{name}.save"
        mark = log_mark(host)
        t0 = time.perf_counter()
        host.xl("save", name, str(save), timeout=TIMEOUT)
        t1 = time.perf_counter()
        host.xl("restore", str(save), timeout=TIMEOUT)
        t2 = time.perf_counter()
        ticks.wait(5, after=t2)
        out = {"save_s": t1 - t0, "restore_s": t2 - t1, "save_file_mib": save.stat().st_size / 2**20,
               **ticks.gap(t0, t2), "qemu_save": qemu_reported(host, "saving", mark),
               "dirty_mib_s": rate}
        save.unlink()
        return out
    finally:
        ticks.close()
        host.xl("destroy", name, check=False)


def pyxen_migrate(host: Host, h2: SecondHost, name: str, script: str) -> dict[str, Any]:
    """xl create on this host, then ``xl migrate`` to the second pyxen host ``h2`` (its own
    network namespace, PYXEN_ROOT and daemons) with ``-s ""``: the receiver is entered
    directly, not over ssh, so the transport is a pipe as the bare QEMU's is a Unix socket.
    Total = the command's time (to "Migration successful.": the guest runs on ``h2``)."""
    host.create(name, memory=MEMORY, script=script)
    ticks = Ticks(host.paths.console_log(name), h2.paths.console_log(f"{name}--incoming"),
                  h2.paths.console_log(name))
    try:
        host.wait_console(name)
        ticks.wait(WARM_TICKS)
        rate = ticks.dirty_rate()  # before the operation
        receiver = shlex.join([*h2.ns_argv(), "env", f"PYXEN_ROOT={h2.paths.root}",
                               str(BIN / "xl"), "migrate-receive"])
        mark = log_mark(host)
        t0 = time.perf_counter()
        done = host.xl("migrate", "-s", "", name, receiver, check=False, timeout=TIMEOUT)
        t1 = time.perf_counter()
        if done.returncode != 0:
            raise RuntimeError(f"xl migrate exited {done.returncode}: {done.stderr[-1500:]}")
        ticks.wait(5, after=t1)
        try:
            gap = ticks.gap(t0, t1)
        except RuntimeError as err:
            raise RuntimeError(f"{err}; the receiver's console: {crash_excerpt(ticks.paths[1:])}") from err
        return {"total_s": t1 - t0, **gap,
                "qemu_migrate": qemu_reported(host, "migrating", mark), "dirty_mib_s": rate}
    finally:
        ticks.close()
        host.xl("destroy", name, check=False)
        h2.xl("destroy", name, check=False)


# --- bare QEMU ------------------------------------------------------------------------------

class BareQemu:
    """One qemu-system-x86_64 with pyxen's machine shape, its serial console in ``log`` and a
    QMP socket; ``incoming`` starts it waiting for a migration stream (``-incoming defer``)."""

    def __init__(self, image: DemoImage, accel: str, script: str, work: Path, tag: str,
                 incoming: bool = False) -> None:
        import base64
        self.log = work / f"{tag}.log"
        self.qmp_path = work / f"{tag}.qmp"
        self.qmp_path.unlink(missing_ok=True)
        append = f"{CMDLINE} pyxen.run=" + base64.b64encode(script.encode()).decode()
        # The same RAM size as pyxen's guest: under TCG, 8 KiB over (pyxen_qemu.TCG_RAM_PAD_KIB),
        # without which QEMU 7.2 loses pages in a live migration (docs/save-restore.md section 8):
        # the reference is a migration that keeps the guest's memory, at the same cost.
        ram = f"{MEMORY * 1024 + (pyxen_qemu.TCG_RAM_PAD_KIB if accel != 'kvm' else 0)}K"
        argv = ["qemu-system-x86_64", "-name", f"bare-{tag}", "-machine", "pc,memory-backend=mem",
                "-accel", accel, "-cpu", "host" if accel == "kvm" else "max", "-smp", "1",
                "-m", ram, "-object", f"memory-backend-memfd,id=mem,size={ram},share=on",
                "-nodefaults", "-no-user-config", "-no-reboot", "-display", "none", "-vga", "none",
                "-chardev", f"file,id=console0,path={self.log},append=on", "-serial", "chardev:console0",
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                "-kernel", str(image.kernel), "-initrd", str(image.ramdisk), "-append", append]
        if incoming:
            argv += ["-incoming", "defer"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + QMP_TIMEOUT
        while not self.qmp_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bare QEMU did not start: {self._stderr()}")
            time.sleep(0.005)
        self.qmp = QEMUMonitorProtocol(str(self.qmp_path))
        self.qmp.settimeout(QMP_TIMEOUT)
        self.qmp.connect()

    def _stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")[-1500:]

    def cmd(self, name: str, **args: object) -> Any:
        try:
            return self.qmp.cmd(name, **args)
        except QMPError as err:
            raise RuntimeError(f"QMP {name}: {err}") from err

    def migration_done(self) -> dict[str, Any]:
        """Until this QEMU's migration (out or in) completes, bounded by TIMEOUT."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            st = self.cmd("query-migrate")
            if st.get("status") == "completed":
                return dict(st)
            if st.get("status") in ("failed", "cancelled"):
                raise RuntimeError(f"bare migration {st['status']}: {st.get('error-desc', '')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"bare migration took more than {TIMEOUT:.0f} s")
            time.sleep(0.005)

    def wait_running(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while self.cmd("query-status").get("status") != "running":
            if time.monotonic() > deadline:
                raise RuntimeError("bare receiver never ran the guest")
            time.sleep(0.005)

    def quit(self) -> None:
        try:
            self.qmp.cmd("quit")
            self.qmp.close()
        except Exception:  # noqa: BLE001 - a QEMU already gone is what quit wants
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def stats(st: dict[str, Any]) -> dict[str, Any]:
    """The parts of query-migrate a result keeps (QEMU's times are ms)."""
    ram = st.get("ram", {})
    return {k: st[k] for k in ("total-time", "downtime", "setup-time") if k in st} | {
        "ram": {k: ram[k] for k in ("transferred", "duplicate", "normal", "dirty-sync-count",
                                     "dirty-pages-rate", "mbps") if k in ram}}


def bare_save_restore(image: DemoImage, accel: str, script: str, work: Path) -> dict[str, Any]:
    """As xl save and xl restore do it, with QEMU alone: the guest is stopped, its state goes
    to a file and the QEMU quits; a new QEMU loads it and runs it."""
    vm = BareQemu(image, accel, script, work, "sr")
    ticks = Ticks(vm.log)
    vm2: BareQemu | None = None
    try:
        ticks.wait(WARM_TICKS)
        rate = ticks.dirty_rate()  # before the operation
        save = work / "bare.save"
        t0 = time.perf_counter()
        vm.cmd("stop")
        vm.cmd("migrate", uri=f"exec:cat > {shlex.quote(str(save))}")
        st = vm.migration_done()
        vm.quit()
        t1 = time.perf_counter()
        vm2 = BareQemu(image, accel, script, work, "sr", incoming=True)
        vm2.cmd("migrate-incoming", uri=f"exec:cat {shlex.quote(str(save))}")
        vm2.migration_done()
        vm2.cmd("cont")
        t2 = time.perf_counter()
        ticks.wait(5, after=t2)
        out = {"save_s": t1 - t0, "restore_s": t2 - t1, "save_file_mib": save.stat().st_size / 2**20,
               **ticks.gap(t0, t2), "qemu_save": stats(st), "dirty_mib_s": rate}
        save.unlink()
        return out
    finally:
        ticks.close()
        for v in (vm, vm2):
            if v is not None:
                v.quit()
        vm.log.unlink(missing_ok=True)


def bare_migrate(image: DemoImage, accel: str, script: str, work: Path) -> dict[str, Any]:
    """QEMU's own live migration to a second QEMU over a Unix socket."""
    src = BareQemu(image, accel, script, work, "src")
    ticks = Ticks(src.log)
    dst: BareQemu | None = None
    sock = work / "migrate.sock"
    try:
        ticks.wait(WARM_TICKS)
        rate = ticks.dirty_rate()  # before the operation
        src.cmd("migrate-set-parameters", **{"max-bandwidth": MAX_BANDWIDTH})
        t0 = time.perf_counter()
        dst = BareQemu(image, accel, script, work, "dst", incoming=True)
        ticks.add(dst.log)
        dst.cmd("migrate-incoming", uri=f"unix:{sock}")
        src.cmd("migrate", uri=f"unix:{sock}")
        st = src.migration_done()
        dst.wait_running()
        t1 = time.perf_counter()
        ticks.wait(5, after=t1)
        try:
            gap = ticks.gap(t0, t1)
        except RuntimeError as err:
            raise RuntimeError(f"{err}; the receiver's console: {crash_excerpt([dst.log])}") from err
        return {"total_s": t1 - t0, **gap, "qemu_migrate": stats(st), "dirty_mib_s": rate}
    finally:
        ticks.close()
        for v in (src, dst):
            if v is not None:
                v.quit()
        for p in (src.log, work / "dst.log", sock):
            p.unlink(missing_ok=True)


# --- the run --------------------------------------------------------------------------------

def attempt(step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One measurement; a failure is recorded in the round (with its message), not hidden."""
    try:
        return step()
    except Exception as err:  # noqa: BLE001 - the round records what went wrong
        return {"error": f"{type(err).__name__}: {err}"}


def spread(values: list[float]) -> dict[str, float] | None:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)} if values else None


#: (operation, where the figure is in a round's result, scale to seconds); QEMU's are in ms.
METRICS = (("save_restore", ("save_s",), 1.0), ("save_restore", ("restore_s",), 1.0),
           ("save_restore", ("downtime_s",), 1.0), ("save_restore", ("qemu_save", "downtime"), 1e-3),
           ("migrate", ("total_s",), 1.0), ("migrate", ("downtime_s",), 1.0),
           ("migrate", ("qemu_migrate", "downtime"), 1e-3))
GOALS = {("migrate", "total_s"): 1.3, ("migrate", "downtime_s"): 1.5}


def figure(result: dict[str, Any], where: tuple[str, ...], scale: float) -> float | None:
    """One number of a result, in seconds; None where the result has none (an error, or a
    pyxen tree whose hypervisor does not log QEMU's figures)."""
    value: Any = result
    for key in where:
        value = value.get(key) if isinstance(value, dict) else None
    return value * scale if isinstance(value, (int, float)) else None


def summarize(rounds: list[dict[str, Any]], migrate_built: bool) -> dict[str, Any]:
    """Per workload and figure: median [min-max] of pyxen and of bare QEMU over the rounds that
    have it, and the median of per-round ratios pyxen/bare over the rounds that have both."""
    out: dict[str, Any] = {}
    for wl in WORKLOADS:
        for op, where, scale in METRICS:
            key = f"{wl}.{op}.{'.'.join(where)}"
            pairs = [(figure(r[wl]["pyxen"][op], where, scale), figure(r[wl]["bare"][op], where, scale))
                     for r in rounds]
            pyxen = [p for p, _ in pairs if p is not None]
            bare = [b for _, b in pairs if b is not None]
            ratios = [p / b for p, b in pairs if p is not None and b]
            out[key] = {"pyxen": spread(pyxen) if op != "migrate" or migrate_built else NOT_BUILT,
                        "bare": spread(bare), "ratio": spread(ratios), "rounds": len(ratios),
                        "goal": GOALS.get((op, where[0]))}
    return out


def print_table(summary: dict[str, Any], rounds: int, accel: str) -> None:
    print(f"\nsave/restore and migration, {MEMORY} MiB guest, {accel}, {rounds} interleaved rounds "
          f"(median [min-max] s; ratio = median of per-round pyxen/bare)")
    print(f"{'workload.operation.figure':<42}{'pyxen':>24}{'bare qemu':>24}{'ratio':>8}")

    def cell(v: Any) -> str:
        if v == NOT_BUILT:
            return "not built (xl migrate)"
        return f"{v['median']:.3f} [{v['min']:.3f}-{v['max']:.3f}]" if v else "none"

    for key, s in summary.items():
        r = s["ratio"]
        ratio = f"{r['median']:>8.2f}" if r else f"{'-':>8}"
        goal = "" if s["goal"] is None or not r else \
            f"  goal <= {s['goal']}: {'met' if r['median'] <= s['goal'] else 'NOT met'}"
        print(f"{key:<42}{cell(s['pyxen']):>24}{cell(s['bare']):>24}{ratio}{goal}")


#: The README table's "what" (bench/table.py).
WHAT = ("`xl save` + `xl restore` and `xl migrate` to a second host vs bare QEMU's own QMP "
        "migration of the same 256 MiB guest, idle and dirtying 32 MiB, rounds interleaved")

def figures(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline figures (pyxen.testing.bench.figure, imported as headline): per workload, save, restore, migration
    total and downtime as seconds against bare QEMU; goals on the migration's total and downtime."""
    goals = result.get("goals", {})
    out = []
    for wl in ("idle", "dirty"):
        for key, label in (("save_restore.save_s", "save"), ("save_restore.restore_s", "restore"),
                           ("migrate.total_s", "migration total"), ("migrate.downtime_s", "migration downtime")):
            s = result["summary"].get(f"{wl}.{key}")
            if s is None:
                continue
            goal = goals.get(key)
            out.append(headline(f"{wl} {label}", "s", pyxen=s["pyxen"]["median"], reference=s["bare"]["median"],
                              ratio=s["ratio"]["median"], goal=("<=", goal) if goal else None))
    return out


def main() -> int:
    rounds_n = int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-ups below
    root = Path(__file__).resolve().parents[1]
    facts = run_facts(root)
    image = build()
    accel = choose("auto", "qemu-system-x86_64").accel
    work = Path(tempfile.mkdtemp(prefix="pxmig-", dir="/tmp"))
    rounds: list[dict[str, Any]] = []
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        host = stack.enter_context(started_host(image, prefix="pxm-"))
        built = xl_migrate_built(host)
        if built:  # the second host, for the whole run
            bridge, _ = stack.enter_context(link_local_bridge())
            h2 = stack.enter_context(second_host(image, bridge))
        for n in range(rounds_n):
            rnd: dict[str, Any] = {"round": n}
            for wl, script in WORKLOADS.items():
                name = f"m{wl}{n}"
                pyxen = {"save_restore": attempt(lambda: pyxen_save_restore(host, name, script, work)),
                         "migrate": attempt(lambda: pyxen_migrate(host, h2, f"{name}l", script)) if built
                         else {"error": NOT_BUILT}}
                bare = {"save_restore": attempt(lambda: bare_save_restore(image, accel, script, work)),
                        "migrate": attempt(lambda: bare_migrate(image, accel, script, work))}
                rnd[wl] = {"pyxen": pyxen, "bare": bare}
                print(f"round {n} {wl}: {json.dumps(rnd[wl], default=str)}", flush=True)
            rounds.append(rnd)
    summary = summarize(rounds, built)
    print_table(summary, rounds_n, accel)
    out = Path(__file__).parent / "results" / "migrate.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        **facts, "rounds": rounds_n, "accel": accel, "memory_mib": MEMORY, "tick_ms": TICK_MS,
        "poll_s": POLL_S, "dirty_working_set_mib": DIRTY_MIB, "bare_max_bandwidth": MAX_BANDWIDTH,
        "xl_migrate": "built" if built else NOT_BUILT,
        "load": {"idle": "tick loop only", "dirty": f"tick loop + dd of a {DIRTY_MIB} MiB random file "
                 "over another in /tmp (RAM), back to back"},
        "downtime": "longest host-observed gap between console ticks across the operation, minus "
                    "the usual gap before it",
        "summary": summary, "runs": rounds, "goals": {"migrate.downtime_s": 1.5, "migrate.total_s": 1.3}},
        indent=2) + "\n")
    data = json.loads(out.read_text())
    out.write_text(json.dumps({**data, "what": WHAT, "figures": figures(data)}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
