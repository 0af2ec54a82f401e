"""Shared fixtures: the demo guest image and a started pyxen host in its own PYXEN_ROOT.

Integration tests drive pyxen the way a user does: through the ``xl`` and ``pyxen`` commands,
against real daemons and real QEMU guests. Each host gets a short temporary root (Unix socket
paths are limited to 108 bytes) and is stopped, with every QEMU it started, afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

import pyxen
from pyxen.images.demo import DemoImage, build
from pyxen.testing.bench import compile_bytecode
from pyxen.testing.host import BIN, BOOT_TIMEOUT, UP_LINE, Host, qemu_pids_under, started_host

__all__ = ["BIN", "BOOT_TIMEOUT", "UP_LINE", "Host", "qemu_pids_under"]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile pyxen's modules once before any test: every ``xl``/``pyxen`` command and every
    daemon a test starts is a new interpreter, and with PYTHONDONTWRITEBYTECODE set (as it is
    in this machine's shells) none of them caches what it compiles: each compiled the modules
    it imports again, thousands of times in a run (bench/'s compile_bytecode, for the same
    reason). Compiling is about 1 s once; a fresh tree's run no longer pays it per command."""
    compile_bytecode(Path(pyxen.__file__).resolve().parents[2])


@pytest.fixture(scope="session")
def demo_image() -> DemoImage:
    return build()


@pytest.fixture
def host(demo_image: DemoImage) -> Iterator[Host]:
    with started_host(demo_image) as h:
        yield h


@pytest.fixture(scope="module")
def quiet_host(demo_image: DemoImage) -> Iterator[Host]:
    """One host shared by a module's tests that leave it as they found it: commands that are
    refused and checked to change nothing, or that only read. A host per such test (4-5 s of
    start and stop each) tested no more than a shared one; a test that creates, kills or
    restarts anything takes ``host``. Its xenbr0 has no address and no DHCP service: it idles
    beside the module's other hosts and must not serve the bridge in their place."""
    with started_host(demo_image, xenbr0=False) as h:
        yield h
