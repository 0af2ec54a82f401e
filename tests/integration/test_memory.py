"""Ballooning: xl mem-set moves a running guest's memory, its reservation and ~/memory/target."""

from __future__ import annotations

import re
import time

import pytest

from pyxen.xenstore.client import XenstoreClient

from ..conftest import Host

pytestmark = pytest.mark.integration

REPORT = 'for i in $(seq 300); do echo "memtotal $(awk \'/MemTotal/ {print $2}\' /proc/meminfo)"; sleep 1; done &'


def guest_memtotal(host: Host, name: str) -> int:
    return int(re.findall(r"memtotal (\d+)(?=\r?\n)", host.console_text(name))[-1])


def wait_for(cond, timeout: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.5)


def test_mem_set_balloons_the_guest(host: Host) -> None:
    domid = host.create("bal", memory=256, script=REPORT, extra_lines="maxmem = 320\n")
    host.wait_console("bal")
    wait_for(lambda: host.domains()["bal"]["mem"] == "256")  # pre-ballooned from 320 to 256
    free = int(host.info("free_memory"))
    before = guest_memtotal(host, "bal")

    host.xl("mem-set", "bal", "128m")
    assert int(host.info("free_memory")) == free + 128  # the reservation is returned at once
    wait_for(lambda: host.domains()["bal"]["mem"] == "128")
    wait_for(lambda: guest_memtotal(host, "bal") <= before - 100 * 1024)  # the guest gave 128 MiB back
    with XenstoreClient(host.paths.xenstored_socket) as xs:
        assert xs.read(f"/local/domain/{domid}/memory/target") == str(128 * 1024).encode()

    for size, message in (("400", "memory_dynamic_max must be less than or equal to memory_static_max"),
                          ("lots", "invalid memory size: lots")):
        done = host.xl("mem-set", "bal", size, check=False)
        assert done.returncode == 1 and message in done.stderr
    assert int(host.info("free_memory")) == free + 128  # nothing changed

    host.xl("mem-set", "bal", "320")
    assert int(host.info("free_memory")) == free - 64
    wait_for(lambda: host.domains()["bal"]["mem"] == "320")
    wait_for(lambda: guest_memtotal(host, "bal") > before)

    host.xl("mem-max", "bal", "320")
    bad = host.xl("mem-max", "bal", "1024", check=False)
    assert bad.returncode == 1 and "cannot set domid" in bad.stderr
