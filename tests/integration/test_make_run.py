"""`make run`'s last step (python -m pyxen.demo): host up, demo domain booted, list and console
shown; a second run changes nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ..conftest import BIN, qemu_pids_under

pytestmark = pytest.mark.integration


def test_demo_is_idempotent() -> None:
    root = Path(tempfile.mkdtemp(prefix="pyxen-", dir="/tmp"))
    env = dict(os.environ, PYXEN_ROOT=str(root), PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    try:
        first = subprocess.run([sys.executable, "-m", "pyxen.demo"], env=env, capture_output=True,
                               text=True, timeout=300)
        assert first.returncode == 0, first.stderr
        lines = first.stdout.splitlines()
        header = next(i for i, line in enumerate(lines) if line.startswith("Name "))
        assert lines[header + 1].split()[0] == "Domain-0"
        demo_row = lines[header + 2].split()
        assert demo_row[0] == "demo" and demo_row[2] == "256"
        assert "pyxen demo guest up" in first.stdout
        qemus = qemu_pids_under(root)
        assert len(qemus) == 1

        second = subprocess.run([sys.executable, "-m", "pyxen.demo"], env=env, capture_output=True,
                                text=True, timeout=300)
        assert second.returncode == 0, second.stderr
        assert "hypervisor   running" in second.stdout and "started" not in second.stdout
        again = next(line for line in second.stdout.splitlines() if line.startswith("demo "))
        assert again.split()[1] == demo_row[1]  # same domain, not a new one
        assert qemu_pids_under(root) == qemus
        assert "pyxen demo guest up" in second.stdout
    finally:
        subprocess.run([str(BIN / "pyxen"), "host", "stop"], env=env, capture_output=True)
        for pid in qemu_pids_under(root):
            os.kill(pid, 9)
        shutil.rmtree(root, ignore_errors=True)
