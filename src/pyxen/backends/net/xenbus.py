"""netback's xenbus side (placeholder until net/device.py lands)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..daemon import DeviceBackend


async def make_net(be: "DeviceBackend") -> tuple[Any, dict[str, str]]:
    raise OSError(95, "netback is not available yet")
