"""Fixtures for peer tests: a real pyxen xenstored in a temporary PYXEN_ROOT."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from pyxen.xenstore.testing import DaemonProcess


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    d = DaemonProcess(tmp_path_factory.mktemp("pyxen-root")).start()
    yield d
    alive = d.alive()
    code = d.stop()
    assert alive, "xenstored died during the tests:\n" + d.log_text()
    assert code == 0, d.log_text()


@pytest.fixture
def base(request: pytest.FixtureRequest) -> str:
    """A fresh node path per test so tests sharing one daemon do not collide."""
    return "/test/" + request.node.name.replace("[", "-").replace("]", "").replace(".", "-")


@pytest.fixture
def socket_path(daemon: DaemonProcess) -> Path:
    return daemon.socket
