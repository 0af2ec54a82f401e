"""The credit scheduler's weight and cap, set with xl sched-credit, enforced on real vCPUs."""

from __future__ import annotations

import time

import pytest

from ..conftest import Host

pytestmark = pytest.mark.integration

BUSY = "while :; do :; done &"


def cpu_seconds(host: Host, name: str) -> float:
    return float(host.domains()[name]["time"])


def rate(host: Host, names: list[str], seconds: float = 6.0) -> dict[str, float]:
    """CPU seconds per wall second of each domain over a window."""
    before = {n: cpu_seconds(host, n) for n in names}
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    return {n: (cpu_seconds(host, n) - before[n]) / wall for n in names}


def test_sched_credit_table_and_errors(host: Host) -> None:
    host.create("plain", memory=96, extra_lines="cpu_weight = 300\ncap = 50\n")
    out = host.xl("sched-credit").stdout.splitlines()
    assert out[0] == "Cpupool Pool-0: tslice=30ms ratelimit=1000us migration-delay=0us"
    assert out[1] == "Name                                ID Weight  Cap"
    assert out[2].split() == ["Domain-0", "0", "256", "0"]
    assert out[3].split()[2:] == ["300", "50"]
    host.xl("sched-credit", "-d", "plain", "-w", "512")
    assert host.xl("sched-credit", "-d", "plain").stdout.splitlines()[1].split()[2:] == ["512", "50"]
    for args, message in ((["-d", "plain", "-w", "0"], "weight 0 is out of range 1..65535"),
                          (["-d", "plain", "-c", "101"], "cap 101 is out of range 0..100"),
                          (["-w", "5"], "Must specify a domain.")):
        done = host.xl("sched-credit", *args, check=False)
        assert done.returncode == 1 and message in done.stderr
    assert host.xl("sched-credit", "-d", "plain").stdout.splitlines()[1].split()[2:] == ["512", "50"]


def test_cap_limits_a_busy_guest(host: Host) -> None:
    host.create("capped", memory=96, script=BUSY, extra_lines="cap = 25\n")
    host.wait_console("capped")
    capped = rate(host, ["capped"])["capped"]
    assert capped < 0.40, capped  # 25% of one CPU, with slack for TCG's helper threads
    host.xl("sched-credit", "-d", "capped", "-c", "0")
    free = rate(host, ["capped"])["capped"]
    assert free > 0.6 and free > 2 * capped, (capped, free)


def test_weight_shares_a_contended_cpu(host: Host) -> None:
    """Two busy guests pinned on one CPU share it in proportion to their weights."""
    for name, weight in (("heavy", 768), ("light", 256)):
        host.create(name, memory=96, script=BUSY, extra_lines=f'cpus = "1"\ncpu_weight = {weight}\n')
    host.wait_console("heavy")
    host.wait_console("light")
    r = rate(host, ["heavy", "light"], seconds=8.0)
    assert r["heavy"] > 1.8 * r["light"], r  # 3:1 by weight; generous margin for a noisy host
