"""Every daemon is expendable: kill -9 of each of Dom0's daemons while two guests do disk and
network I/O (issue 8, "Faults").

Two demo guests share one host for the whole module (booting is the slow part). Each runs three
loops that print to its console: a numbered heartbeat every HB_INTERVAL s (``hb N``), numbered 4 KiB
block writes to its own raw disk served by blkback, each made durable with fsync before it is
acknowledged (``ack N``; block N starts with ``blk N``), and pings of the other guest over a
vif on a test bridge (``net N``). For each daemon in SERVICES, one kill is made and observed
(fixture ``kill``), and each consequence is its own test, so a failure names what was lost:

  (a) the supervisor restarted the daemon (new pid, socket accepts) within RESTART_WITHIN;
  (b) both guests keep running: same QEMU pids, new heartbeats, none missing;
  (c) no acknowledged disk write is lost (the host reads the images back);
  (d) no acknowledged xenstore write is lost (``pyxen xenstore write`` before, read after);
  (e) ``xl list`` shows both guests in a running state within 5 s of the kill;
  (f) disk and network I/O go on after the kill.

A case that fails today for a cause owned elsewhere carries ``xfail(strict=True)`` naming it
(KNOWN below); when that cause is fixed the mark turns the pass into a failure, so it is removed.
Run under ``flock /tmp/pyxen-net.lock`` (the vifs' TAP names are host-global).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from pyxen.host.services import SERVICES, Service, connects, running_pid
from pyxen.images.demo import DemoImage
from pyxen.testing.bridge import link_local_bridge
from pyxen.testing.host import Host, qemu_pids_under, started_host

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PREFIX = "169.254.78"
GUESTS = {"flt1": (f"{PREFIX}.1", f"{PREFIX}.2", "00:16:3e:00:78:01"),
          "flt2": (f"{PREFIX}.2", f"{PREFIX}.1", "00:16:3e:00:78:02")}
#: (a): "within a few seconds"; test_supervisor.py holds an idle host to 2.5 s.
RESTART_WITHIN = 5.0
#: (e): the issue's bound.
XL_LIST_WITHIN = 5.0
#: How long the guests get after a kill to show progress (TCG on a loaded 2-core machine).
PROGRESS_WITHIN = 30.0
#: The heartbeat's period. The issue asks for 0.5 s; 0.1 s makes a console outage of the length
#: of a daemon's restart (>= 0.3 s here) lose a line every time rather than by chance, so a
#: console that drops output fails this test deterministically.
HB_INTERVAL = 0.1
#: Heartbeats that must follow the kill: 4 s of the guest's life after it.
BEATS_AFTER = int(4 / HB_INTERVAL)

#: The guest's loops; {me}, {peer}: link-local addresses. The disk is the one with vdev xvdb.
SCRIPT = """ip link set eth0 up; ip addr add {me}/16 dev eth0
for d in /sys/block/vd*; do [ "$(cat $d/serial)" = xvdb ] && B=/dev/${{d##*/}}; done
(i=0; while :; do i=$((i+1)); echo "hb $i"; sleep {hb}; done) &
(j=0; while :; do j=$((j+1)); echo "blk $j" | dd of=$B bs=4096 seek=$j count=1 conv=sync,fsync,notrunc 2>/dev/null && echo "ack $j"; sleep 0.3; done) &
(k=0; while :; do k=$((k+1)); ping -c 1 -W 1 {peer} >/dev/null 2>&1 && echo "net $k"; sleep 0.5; done) &
"""
DISK_BYTES = 32 << 20
BLOCK = 4096

#: (check, daemon) -> (why it fails today, naming the cause and its owner; whether it applies to
#: an observed kill). Applied as xfail(strict=True) when it applies, so a fix shows as XPASS.
KNOWN: dict[tuple[str, str], tuple[str, Callable[["Observation"], bool]]] = {}

#: The daemons killed so far in this module, in order (the host is shared by the kills).
KILLED: list[str] = []


def numbers(text: str, tag: str) -> list[int]:
    return [int(n) for n in re.findall(rf"(?<![a-z]){tag} (\d+)(?=\r?\n)", text)]


@dataclass
class Guests:
    host: Host
    bridge: str
    images: dict[str, Path]
    domids: dict[str, int]


@dataclass
class Observation:
    """What one kill did; filled by the ``kill`` fixture, judged by the tests."""

    daemon: str
    old_pid: int
    #: Daemons killed earlier in this module (their effects may last).
    killed_before: list[str] = field(default_factory=list)
    new_pid: int | None = None
    back_after: float | None = None
    xl_list_after: float | None = None
    xl_list_last: str = ""
    qemu_before: set[int] = field(default_factory=set)
    qemu_after: set[int] = field(default_factory=set)
    at_kill: dict[str, dict[str, int]] = field(default_factory=dict)
    consoles: dict[str, str] = field(default_factory=dict)
    xenstore_path: str = ""
    xenstore_value: str = ""
    xenstore_read: str = ""


@pytest.fixture(scope="module")
def guests(demo_image: DemoImage) -> Iterator[Guests]:
    with link_local_bridge(tag="flt") as (br, _), started_host(demo_image, prefix="pxflt-") as host:
        images, domids = {}, {}
        for name, (me, peer, mac) in GUESTS.items():
            img = host.paths.root / f"{name}.img"
            with open(img, "wb") as f:
                f.truncate(DISK_BYTES)
            images[name] = img
            domids[name] = host.create(name, script=SCRIPT.format(me=me, peer=peer, hb=HB_INTERVAL),
                        extra_lines=f"disk = ['file:{img},xvdb,w']\nvif = ['mac={mac},bridge={br}']\n")
        for name in GUESTS:
            host.wait_console(name)
        g = Guests(host, br, images, domids)
        _wait_progress(g, {n: _counts(host.console_text(n)) for n in GUESTS}, beats=4, acks=2, net=2)
        yield g


def _counts(text: str) -> dict[str, int]:
    return {tag: max(numbers(text, tag), default=0) for tag in ("hb", "ack", "net")}


def _wait_progress(g: Guests, base: dict[str, dict[str, int]], beats: int, acks: int, net: int,
                   timeout: float = PROGRESS_WITHIN) -> bool:
    """Wait until every guest shows ``beats`` heartbeats, ``acks`` disk acks and ``net`` pings
    past ``base``; False on timeout (the tests then say which stopped)."""
    deadline = time.monotonic() + timeout
    want = {"hb": beats, "ack": acks, "net": net}
    while time.monotonic() < deadline:
        now = {n: _counts(g.host.console_text(n)) for n in GUESTS}
        if all(now[n][t] >= base[n][t] + want[t] for n in GUESTS for t in want):
            return True
        time.sleep(0.25)
    return False


def _xl_list_ok(host: Host, domids: dict[str, int]) -> tuple[bool, str]:
    """Whether ``xl list`` answers with Domain-0 and both guests, under their ids, in a running
    state (r or b)."""
    try:
        done = host.run("xl", "list", timeout=XL_LIST_WITHIN)
    except subprocess.TimeoutExpired:
        return False, "xl list timed out"
    text = done.stdout + done.stderr
    if done.returncode != 0:
        return False, text
    rows = {ln.split()[0]: ln.split() for ln in done.stdout.splitlines()[1:] if ln.split()}
    ok = "Domain-0" in rows and all(n in rows and rows[n][1] == str(domids[n]) and rows[n][4].strip("-") in ("r", "b")
                                    for n in GUESTS)
    return ok, text


def _daemon(name: str) -> Service:
    return next(s for s in SERVICES if s.name == name)


@pytest.fixture(scope="module")
def kill(request: pytest.FixtureRequest, guests: Guests) -> Observation:
    """Kill ``request.param`` with SIGKILL once and record what follows."""
    name: str = request.param
    svc = _daemon(name)
    host, paths = guests.host, guests.host.paths
    old = running_pid(paths, svc)
    assert old is not None, f"{name} is not running before the kill"
    obs = Observation(name, old, killed_before=list(KILLED))
    KILLED.append(name)
    obs.xenstore_path = f"/faults/{name}"
    obs.xenstore_value = f"acked-before-kill-{name}-{time.time_ns()}"
    host.run("pyxen", "xenstore", "write", obs.xenstore_path, obs.xenstore_value, check=True, timeout=30)
    obs.qemu_before = set(qemu_pids_under(paths.root))
    obs.at_kill = {n: _counts(host.console_text(n)) for n in GUESTS}

    t0 = time.monotonic()
    os.kill(old, signal.SIGKILL)

    def poll_xl_list() -> None:
        while time.monotonic() - t0 < 3 * XL_LIST_WITHIN:
            ok, obs.xl_list_last = _xl_list_ok(host, guests.domids)
            if ok:
                obs.xl_list_after = time.monotonic() - t0
                return
            time.sleep(0.1)

    lister = threading.Thread(target=poll_xl_list, daemon=True)
    lister.start()
    while time.monotonic() - t0 < 3 * RESTART_WITHIN:
        pid = running_pid(paths, svc)
        if pid is not None and pid != old and connects(svc.socket(paths)):
            obs.new_pid, obs.back_after = pid, time.monotonic() - t0
            break
        time.sleep(0.02)
    lister.join()

    _wait_progress(guests, obs.at_kill, beats=BEATS_AFTER, acks=3, net=3)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # xenstored may still be starting when (a) failed
        done = host.run("pyxen", "xenstore", "read", obs.xenstore_path, timeout=10)
        if done.returncode == 0:
            obs.xenstore_read = done.stdout.strip()
            break
        obs.xenstore_read = f"(exit {done.returncode}: {done.stderr.strip()})"
        time.sleep(0.25)
    obs.qemu_after = set(qemu_pids_under(paths.root))
    obs.consoles = {n: host.console_text(n) for n in GUESTS}
    if os.environ.get("PYXEN_FAULTS_KEEP"):  # debugging: keep the logs of each kill
        keep = Path(os.environ["PYXEN_FAULTS_KEEP"]) / name
        keep.mkdir(parents=True, exist_ok=True)
        os.system(f"cp -r {paths.log} {keep}/")
    return obs


def daemons() -> list[Any]:
    """SERVICES as parameters of the ``kill`` fixture: skipped when the daemon's module is not
    written yet."""
    return [pytest.param(svc.name, id=svc.name, marks=[] if svc.available() else
                         [pytest.mark.skip(reason=f"{svc.module} is not written yet")]) for svc in SERVICES]


def known(request: pytest.FixtureRequest, check: str, obs: Observation) -> None:
    """Mark this test xfail(strict=True) if KNOWN says ``check`` fails today for this kill."""
    entry = KNOWN.get((check, obs.daemon))
    if entry is not None and entry[1](obs):
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=entry[0]))


@pytest.mark.parametrize("kill", daemons(), indirect=True)
def test_a_supervisor_restarts_it(request: pytest.FixtureRequest, kill: Observation) -> None:
    known(request, "restart", kill)
    assert kill.back_after is not None, f"{kill.daemon} not back within {3 * RESTART_WITHIN} s"
    assert kill.new_pid != kill.old_pid
    assert kill.back_after <= RESTART_WITHIN, f"{kill.daemon} back after {kill.back_after:.1f} s"


@pytest.mark.parametrize("kill", daemons(), indirect=True)
def test_b_guests_keep_running_and_logging(request: pytest.FixtureRequest, kill: Observation) -> None:
    known(request, "guests", kill)
    assert kill.qemu_after == kill.qemu_before and len(kill.qemu_before) == len(GUESTS)
    for name, text in kill.consoles.items():
        beats = numbers(text, "hb")
        first = kill.at_kill[name]["hb"]  # this kill's: earlier kills are judged by their own case
        assert beats and beats[-1] >= first + BEATS_AFTER, \
            f"{name}: heartbeats stopped at {beats[-1] if beats else None} (at kill: {first})"
        missing = sorted(set(range(first, beats[-1] + 1)) - set(beats))
        assert not missing, f"{name}: heartbeats missing from its console log after the kill: {missing[:20]}"


@pytest.mark.parametrize("kill", daemons(), indirect=True)
def test_c_no_acknowledged_disk_write_is_lost(request: pytest.FixtureRequest, kill: Observation, guests: Guests) -> None:
    known(request, "disk", kill)
    for name, text in kill.consoles.items():
        acked = numbers(text, "ack")
        assert acked, f"{name}: no disk write was ever acknowledged"
        with open(guests.images[name], "rb") as img:
            lost = []
            for n in acked:
                img.seek(n * BLOCK)
                if not img.read(BLOCK).startswith(f"blk {n}\n".encode()):
                    lost.append(n)
        assert not lost, f"{name}: acknowledged blocks not in the image: {lost[:20]}"


@pytest.mark.parametrize("kill", daemons(), indirect=True)
def test_d_no_acknowledged_xenstore_write_is_lost(request: pytest.FixtureRequest, kill: Observation) -> None:
    known(request, "xenstore", kill)
    assert kill.xenstore_read == kill.xenstore_value


@pytest.mark.parametrize("kill", daemons(), indirect=True)
def test_e_xl_list_answers_within_5s(request: pytest.FixtureRequest, kill: Observation) -> None:
    known(request, "xl-list", kill)
    assert kill.xl_list_after is not None, f"xl list never right after the kill:\n{kill.xl_list_last}"
    assert kill.xl_list_after <= XL_LIST_WITHIN, f"xl list right only after {kill.xl_list_after:.1f} s"


@pytest.mark.parametrize("kill", daemons(), indirect=True)
def test_f_disk_and_network_io_go_on(request: pytest.FixtureRequest, kill: Observation) -> None:
    known(request, "io", kill)
    for name, text in kill.consoles.items():
        now = _counts(text)
        assert now["ack"] >= kill.at_kill[name]["ack"] + 3, \
            f"{name}: disk writes stopped at ack {now['ack']} (at kill: {kill.at_kill[name]['ack']})"
        assert now["net"] >= kill.at_kill[name]["net"] + 3, \
            f"{name}: pings stopped at net {now['net']} (at kill: {kill.at_kill[name]['net']})"
