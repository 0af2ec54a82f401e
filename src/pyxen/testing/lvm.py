"""A throw-away LVM volume group on a loop device, for tests that need ``phy:/dev/<vg>/<lv>``.

The backing file is sparse, so a group of tens of GiB (room for the seed's ``lvcreate -L40G``)
costs only the blocks written. Everything made is removed on exit, LVs first.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

from ..storage import lvm

_counter = 0


@contextlib.contextmanager
def loop_volume_group(size: int = 64 << 30, prefix: str = "pyxentest") -> Iterator[str]:
    """Yield the name of a new volume group on a sparse ``size``-byte loop device."""
    global _counter
    _counter += 1
    vg = f"{prefix}{os.getpid()}n{_counter}"
    with tempfile.TemporaryDirectory(prefix="pyxen-vg-") as tmp:
        backing = Path(tmp) / "pv.img"
        with open(backing, "wb") as f:
            f.truncate(size)
        loop = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True,
                              capture_output=True, text=True, timeout=30).stdout.strip()
        try:
            lvm._run(["pvcreate", "-q", loop], f"physical volume {loop}")
            lvm._run(["vgcreate", "-q", vg, loop], f"volume group {vg}")
            try:
                yield vg
            finally:
                for lv in lvm.lvs(vg):
                    with contextlib.suppress(lvm.LvmError):
                        lvm.deactivate(vg, lv.name)
                lvm._run(["vgremove", "-ffy", vg], f"volume group {vg}")
                lvm._run(["pvremove", "-ffy", loop], f"physical volume {loop}")
        finally:
            for dev in lvm._loops():  # LV loops left over by a failed test, then the PV's
                if dev.get("back-file") == loop:
                    subprocess.run(["losetup", "--detach", str(dev["name"])], timeout=30, check=False)
            subprocess.run(["losetup", "--detach", loop], timeout=30, check=False)
