"""Pure helpers start nothing and load no daemon: importing them pulls in neither the
hypervisor daemon's modules (core, server, the hypercall registrars, the QEMU engine), nor
qemu.qmp, nor (for the hypervisor's own pure modules) the toolstack (issue 8's layering)."""

from __future__ import annotations

import subprocess
import sys

import pytest

DAEMON = ("pyxen.hypervisor.core", "pyxen.hypervisor.server", "pyxen.hypervisor.qemu",
          "pyxen.hypervisor.evtchn", "pyxen.hypervisor.vcpu", "pyxen.hypervisor.dmop",
          "pyxen.hypervisor.memop", "pyxen.hypervisor.gnttab", "pyxen.hypervisor.sched_credit", "qemu.qmp")


def loaded_by(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return set(out.stdout.split())


@pytest.mark.parametrize("module", ["pyxen.libxlu.cfg", "pyxen.libxlu.cpumap", "pyxen.libxlu.domid",
                                    "pyxen.hypervisor.evtchn_abi", "pyxen.hypervisor.hostcfg",
                                    "pyxen.hypervisor.wire", "pyxen.toolstack.config", "pyxen.cli.render"])
def test_pure_module_loads_no_daemon(module: str) -> None:
    loaded = loaded_by(module)
    assert not loaded & set(DAEMON), sorted(loaded & set(DAEMON))
    if module.startswith(("pyxen.libxlu", "pyxen.hypervisor")):
        assert not {m for m in loaded if m.startswith(("pyxen.toolstack", "pyxen.cli", "pyxen.console"))}
