"""xl block-list / network-list: the frontend view of a domain's devices, in xl's columns."""

from __future__ import annotations

import os
import subprocess
from typing import Iterator

import pytest

from ..conftest import Host

pytestmark = pytest.mark.integration


@pytest.fixture
def bridge() -> Iterator[str]:
    """A bridge with nothing on it but the test's vif (no address, no traffic)."""
    br = f"pxbl{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", br, "type", "bridge"], check=True)
    try:
        yield br
    finally:
        subprocess.run(["ip", "link", "del", br])


def test_block_and_network_list(host: Host, bridge: str) -> None:
    img = host.paths.root / "disk.img"
    img.write_bytes(b"\0" * (4 << 20))
    cfg = host.write_cfg("devs", memory=96, extra_lines=(
        f"disk = ['file:{img},xvdb,w']\nvif = ['mac=00:16:3e:12:34:56,bridge={bridge}']\n"))
    host.xl("create", str(cfg))
    domid = int(host.xl("domid", "devs").stdout)
    host.wait_console("devs")

    blocks = host.xl("block-list", "devs").stdout.splitlines()
    assert blocks[0].split() == ["Vdev", "BE", "handle", "state", "evt-ch", "ring-ref", "BE-path"]
    vdev, be, handle, state, evtch, ringref, bepath = blocks[1].split()
    assert (vdev, be, handle, state) == ("51728", "0", str(domid), "4")  # xvdb, Connected
    assert int(evtch) > 0 and int(ringref) >= 8  # refs 0..7 are reserved, as in Xen
    assert bepath == f"/local/domain/0/backend/vbd/{domid}/51728"

    nets = host.xl("network-list", str(domid)).stdout.splitlines()
    assert nets[0].startswith("Idx BE Mac Addr.         handle state evt-ch   tx-/rx-ring-ref BE-path")
    idx, be, mac, handle, state, *_rest = nets[1].split()
    assert (idx, be, mac, handle, state) == ("0", "0", "00:16:3e:12:34:56", "0", "4")
    assert nets[1].split()[-1] == f"/local/domain/0/backend/vif/{domid}/0"

    host.xl("destroy", "devs")
    assert host.xl("block-list", str(domid)).stdout.splitlines()[1:] == []
    assert host.xl("network-list", str(domid)).stdout.splitlines()[1:] == []
