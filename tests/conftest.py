"""Shared fixtures: the demo guest image and a started pyxen host in its own PYXEN_ROOT.

Integration tests drive pyxen the way a user does: through the ``xl`` and ``pyxen`` commands,
against real daemons and real QEMU guests. Each host gets a short temporary root (Unix socket
paths are limited to 108 bytes) and is stopped, with every QEMU it started, afterwards.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from pyxen.images.demo import DemoImage, build
from pyxen.testing.host import BIN, BOOT_TIMEOUT, UP_LINE, Host, qemu_pids_under, started_host

__all__ = ["BIN", "BOOT_TIMEOUT", "UP_LINE", "Host", "qemu_pids_under"]


@pytest.fixture(scope="session")
def demo_image() -> DemoImage:
    return build()


@pytest.fixture
def host(demo_image: DemoImage) -> Iterator[Host]:
    with started_host(demo_image) as h:
        yield h
