"""netback under sustained two-way load with real guests: two demo guests on a test bridge each
send FLOWS parallel TCP streams (busybox nc) to the other at once, every byte checked by md5.

What real TCG guests move is bounded by the emulated CPU: on the 2-core box this was written
on, 4 flows each way moved 0.8 MB/s each way with the machine busy (load 4) and 1.8-2.2 MB/s
each way when quiet (128 MiB each way in 61-75 s). 1 GiB each way would take 8-20 minutes, so
this test moves SIZE_MIB each way (16 MiB: about 10-40 s; CI's time budget); the >= 1 GiB each way run goes
through the same netback, TAPs and Linux bridge with the declared-fake guest drivers
(test_net_fake_stress.py). ``PYXEN_NET_STRESS_MIB`` overrides the size.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from pyxen.testing.bridge import link_local_bridge

pytestmark = pytest.mark.integration

PREFIX = "169.254.66"
FLOWS = 4
#: MiB each way, split over FLOWS streams (each a 1 MiB random block repeated).
SIZE_MIB = int(os.environ.get("PYXEN_NET_STRESS_MIB", "16"))


def script(me: str, peer: str, mib_per_flow: int) -> str:
    """Listen for FLOWS streams, send FLOWS streams to ``peer``, print the md5 of each."""
    flows = " ".join(str(k) for k in range(1, FLOWS + 1))
    return (
        "ts() { head -3 /proc/timer_list | sed -n 's/^now at \\([0-9]*\\) nsecs/\\1/p'; }\n"
        f"ip link set eth0 up\nip addr add {me}/16 dev eth0\n"
        f"for k in {flows}; do (sleep 100000 | nc -l -p 500$k | md5sum > /tmp/rx$k) & done\n"
        f"for k in {flows}; do dd if=/dev/urandom of=/tmp/blk$k bs=64k count=16 2>/dev/null; done\n"
        f"gen() {{ for i in $(seq {mib_per_flow}); do cat /tmp/blk$1; done; }}\n"
        f"for k in {flows}; do echo \"tx$k $(gen $k | md5sum)\"; done\n"
        f"for i in $(seq 120); do ping -c 1 -W 1 {peer} >/dev/null 2>&1 && break; done\n"
        "sleep 2\n"
        "t0=$(ts)\n"
        f"for k in {flows}; do (for i in $(seq 30); do gen $k | nc {peer} 500$k && break; sleep 1; done) & done\n"
        "wait_rx() { for k in " + flows + "; do [ -s /tmp/rx$k ] || return 1; done; }\n"
        "for i in $(seq 3000); do wait_rx && break; sleep 0.2; done\n"
        "t1=$(ts)\n"
        f"for k in {flows}; do echo \"rx$k $(cat /tmp/rx$k)\"; done\n"
        "echo \"stress-done $t0 $t1\"\n")


def sums(text: str, kind: str) -> dict[int, str]:
    return {int(k): v for k, v in re.findall(kind + r"(\d) ([0-9a-f]{32})", text)}


@pytest.mark.timeout(480)
def test_two_guests_parallel_flows_both_ways(host) -> None:  # type: ignore[no-untyped-def]
    per_flow = max(1, SIZE_MIB // FLOWS)
    with link_local_bridge() as (br, _):
        for name, me, peer, mac in (("sa", f"{PREFIX}.1", f"{PREFIX}.2", "00:16:3e:00:66:01"),
                                    ("sb", f"{PREFIX}.2", f"{PREFIX}.1", "00:16:3e:00:66:02")):
            host.create(name, memory=256, script=script(me, peer, per_flow),
                        extra_lines=f"vif = ['mac={mac},bridge={br}']\n")
        done = "stress-done \\d+ \\d+\r?\n"  # a whole line: the console may be read mid-line
        a = host.wait_console("sa", "stress-done", timeout=420)
        b = host.wait_console("sb", "stress-done", timeout=60)
        deadline = time.monotonic() + 10
        while not (re.search(done, a) and re.search(done, b)):
            assert time.monotonic() < deadline, (a[-500:], b[-500:])
            time.sleep(0.2)
            a, b = host.console_text("sa"), host.console_text("sb")
        for text in (a, b):
            assert "is not a head" not in text and "soft lockup" not in text, text[-3000:]
        assert len(sums(a, "tx")) == FLOWS and len(sums(b, "tx")) == FLOWS, (a[-2000:], b[-2000:])
        assert sums(b, "rx") == sums(a, "tx"), "a -> b streams differ"
        assert sums(a, "rx") == sums(b, "tx"), "b -> a streams differ"
        for name, text in (("sa", a), ("sb", b)):
            t0, t1 = map(int, re.findall(r"stress-done (\d+) (\d+)", text)[0])
            print(f"{name}: {per_flow * FLOWS} MiB each way in {(t1 - t0) / 1e9:.1f} s "
                  f"({per_flow * FLOWS * 1.048576 / ((t1 - t0) / 1e9):.2f} MB/s each way, {FLOWS} flows)")
        host.xl("destroy", "sa")
        host.xl("destroy", "sb")
