"""Fixtures for xenstore tests that run the real daemon in a temporary PYXEN_ROOT."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from pyxen.xenstore.testing import DaemonProcess


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "pyxen"


@pytest.fixture
def daemon(root: Path) -> Iterator[DaemonProcess]:
    """A fresh daemon per test (tests here kill and restart it)."""
    d = DaemonProcess(root).start()
    yield d
    if d.alive():
        d.stop()
