"""``pyxen evtchn [domain]`` and ``xl debug-keys e`` (the same table into ``xl dmesg``) on a
real guest with a disk: the disk ring's ports are listed, bound interdomain to Dom0, while the
guest runs, and are gone after ``xl destroy``."""

from __future__ import annotations

import re
import time

import pytest


pytestmark = pytest.mark.integration

PORT_LINE = re.compile(r"^ +(\d+) \[[01]/0/0\]: s=(\d) n=0 x=0 d=(\d+)(?: p=(\d+))?", re.M)


def _ports(text: str, dom: int) -> list[tuple[int, int, int]]:
    """(port, state, remote domain) rows of ``dom``'s block in the table."""
    block = text.split(f"Event channel information for domain {dom}:", 1)
    if len(block) < 2:
        return []
    mine = block[1].split("Event channel information for domain", 1)[0]
    return [(int(m[1]), int(m[2]), int(m[3])) for m in PORT_LINE.finditer(mine)]


def test_evtchn_lists_a_guests_ports_until_destroy(host) -> None:  # type: ignore[no-untyped-def]
    root = host.paths.root
    (root / "d.img").write_bytes(bytes(1 << 20))
    domid = host.create("ev", memory=128, extra_lines=f"disk = ['file:{root}/d.img,xvdb,w']\n")
    host.wait_console("ev")

    by_name = host.run("pyxen", "evtchn", "ev", check=True).stdout
    assert by_name.startswith(f"Event channel information for domain {domid}:\n"), by_name
    ports = _ports(by_name, domid)
    assert ports and all(state == 2 and remote == 0 for _, state, remote in ports), by_name
    assert host.run("pyxen", "evtchn", str(domid), check=True).stdout == by_name
    everything = host.run("pyxen", "evtchn", check=True).stdout
    assert _ports(everything, domid) == ports
    assert any(remote == domid for _, _, remote in _ports(everything, 0)), everything

    host.xl("debug-keys", "e")
    ring = host.xl("dmesg").stdout
    assert "(XEN) 'e' pressed -> dumping event-channel info" in ring
    assert f"(XEN) Event channel information for domain {domid}:" in ring
    assert all(f"(XEN) {line}" in ring for line in by_name.splitlines())

    host.xl("destroy", "ev")
    deadline = time.monotonic() + 30
    while True:
        after = host.run("pyxen", "evtchn", check=True).stdout
        if not _ports(after, domid) and all(r != domid for _, _, r in _ports(after, 0)):
            break
        assert time.monotonic() < deadline, after
        time.sleep(0.2)
    assert f"domain {domid}:" not in after
    gone = host.run("pyxen", "evtchn", "ev")
    assert gone.returncode == 1 and "invalid domain identifier" in gone.stderr
