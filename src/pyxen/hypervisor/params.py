"""Hypervisor parameters changed at run time (Xen's hypfs ``/params/<name>``, which libxl's
``libxl_set_parameters`` writes for ``xl set-parameters``).

Xen exposes only its runtime parameters there; a boot-only one (``dom0_mem``, ``sched``) or an
unknown name is not a node (ENOENT), a value the parameter's parser refuses is EINVAL. pyxen's
runtime parameters are Xen's console log thresholds: ``loglvl`` (what reaches the console ring,
``xl dmesg``) and ``guest_loglvl`` (kept; pyxen's guests do not log through the hypervisor).
"""

from __future__ import annotations

import logging
from typing import Any

from .bootline import LOGLEVELS
from .core import Hypervisor, hypercall
from .errors import InvalidArgument, NoSuchEntry

#: Xen's log levels (xen/drivers/char/console.c: parse_loglvl) as Python logging thresholds.
LEVELS = {"none": logging.CRITICAL + 1, "error": logging.ERROR, "warning": logging.WARNING,
          "info": logging.INFO, "debug": logging.DEBUG, "all": 1}
RUNTIME_PARAMS = ("loglvl", "guest_loglvl")


def parse_loglvl(value: str) -> tuple[str, str]:
    """``<level>[/<rate-limited level>]`` as Xen's parse_loglvl: (level, rate-limited level).

    :raise ValueError: a word that is not a level.
    """
    level, _, limited = value.partition("/")
    limited = limited or level
    if level not in LOGLEVELS or limited not in LOGLEVELS:
        raise ValueError(value)
    return level, limited


@hypercall("sysctl.set_parameter")
async def _set_parameter(hv: Hypervisor, args: dict[str, Any]) -> None:
    """Write one runtime parameter (hypfs write of ``/params/<name>``)."""
    op = "sysctl.set_parameter"
    name, value = args.get("name"), args.get("value")
    if not isinstance(name, str) or not isinstance(value, str):
        raise InvalidArgument("arguments 'name' and 'value' must be strings", op)
    if name not in RUNTIME_PARAMS:
        raise NoSuchEntry(f"no runtime parameter /params/{name}", op)
    try:
        level, _ = parse_loglvl(value)
    except ValueError:
        raise InvalidArgument(f"{name}: invalid value '{value}'", op) from None
    if name == "loglvl":
        hv.conring.setLevel(LEVELS[level])
    logging.getLogger("pyxen.hypervisor").warning("%s set to %s", name, value)
