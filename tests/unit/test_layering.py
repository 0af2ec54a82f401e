"""The layering of ARCHITECTURE.md, pinned: cli -> toolstack -> {hypervisor, xenstore, backends,
console}, never back up; the hypervisor knows nothing of the toolstack, the console, the image
builder or the CLI; a command-line tool loads no daemon."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "pyxen"

#: package -> packages it must not import (directly, at any depth of its modules).
FORBIDDEN = {
    "hypervisor": ("toolstack", "console", "images", "cli", "backends", "xenstore", "host", "demo", "xapi"),
    "xenstore": ("toolstack", "console", "images", "cli", "backends", "host", "demo", "xapi"),
    "backends": ("toolstack", "console", "images", "cli", "host", "demo", "xapi"),
    "console": ("toolstack", "images", "cli", "backends", "host", "demo", "xapi"),
    "toolstack": ("cli", "host", "demo", "images", "xapi"),
    "xapi": ("cli", "host", "demo", "images"),
    "libxlu": ("hypervisor", "toolstack", "xenstore", "backends", "console", "cli", "host", "images"),
}
#: Modules that run a daemon or register hypercalls: a tool must not load them.
DAEMON_MODULES = ("pyxen.hypervisor.core", "pyxen.hypervisor.server", "pyxen.hypervisor.qemu",
                  "pyxen.hypervisor.dmop", "pyxen.hypervisor.evtchn", "pyxen.hypervisor.gnttab",
                  "pyxen.hypervisor.memop", "pyxen.hypervisor.vcpu", "pyxen.hypervisor.sched_credit",
                  "pyxen.xenstore.server", "pyxen.xenstore.process", "pyxen.backends.daemon",
                  "pyxen.toolstack.monitor", "qemu.qmp", "pyxen.xapi.server", "aiohttp")


def imported_packages(path: Path, package: str) -> set[str]:
    """The pyxen subpackages a module imports (absolute or relative)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.startswith("pyxen."):
                found.add(node.module.split(".")[1])
            elif node.level >= 2:  # from ..x import y: a sibling package of this one
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("pyxen."))
    found.discard(package)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_downwards(package: str) -> None:
    if not (SRC / package).is_dir():
        pytest.skip(f"no package {package}")
    bad = {}
    for path in sorted((SRC / package).rglob("*.py")):
        wrong = imported_packages(path, package) & set(FORBIDDEN[package])
        if wrong:
            bad[str(path.relative_to(SRC))] = sorted(wrong)
    assert bad == {}


@pytest.mark.parametrize("module", ["pyxen.cli.xl", "pyxen.cli.pyxen", "pyxen.cli.xenstore",
                                    "pyxen.toolstack.domain"])
def test_tools_load_no_daemon(module: str) -> None:
    code = (f"import sys, {module}; "
            "print('\\n'.join(m for m in sys.modules))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    assert sorted(m for m in DAEMON_MODULES if m in loaded) == []
