"""The in-process xapi the unit tests drive: a seeded server in a temporary root, its
dispatcher called directly (no HTTP), root's password set with state.set_password."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

import pyxen.xapi.handlers  # noqa: F401  (registers every handler, as the daemon does)
from pyxen.paths import Paths
from pyxen.xapi.errors import ApiError
from pyxen.xapi.server import Xapi
from pyxen.xapi.state import set_password

GiB = 1024 ** 3
PASSWORD = "s3cret"


@pytest.fixture
async def xapi(tmp_path: Path) -> AsyncIterator[Xapi]:
    paths = Paths(tmp_path)
    set_password(paths, PASSWORD)
    server = Xapi(paths)
    server.start_state(4 * GiB, 2)
    server._loop = asyncio.get_running_loop()  # what serve() sets: commits wake event waiters
    yield server
    server.executor.shutdown(wait=True)
    server.db.close()


async def call(x: Xapi, method: str, *params: Any) -> Any:
    return await x.dispatcher.call(method, params)


async def fails(x: Xapi, method: str, *params: Any) -> list[str]:
    with pytest.raises(ApiError) as e:
        await x.dispatcher.call(method, params)
    return e.value.description


async def login(x: Xapi) -> str:
    return str(await call(x, "session.login_with_password", "root", PASSWORD))


async def wait_task(x: Xapi, s: str, task: str) -> dict[str, Any]:
    for _ in range(200):
        rec = await call(x, "task.get_record", s, task)
        if rec["status"] not in ("pending", "cancelling"):
            return dict(rec)
        await asyncio.sleep(0.01)
    raise AssertionError(f"task {task} still {rec['status']}")


