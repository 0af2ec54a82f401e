"""pyxen: the Xen virtualization platform, hosted on Linux and written in Python.

The hypervisor's job (domains, memory, scheduling, event channels, grant tables) and Domain 0's
job (xenstored, xenconsoled, backends, device models, xl, XenAPI) are done by Python daemons; the
CPU itself is virtualized by QEMU (KVM where the host can run stock guests, TCG otherwise).
"""

from __future__ import annotations

import sys

# (typing is not imported: pyxen.records says why; its own TYPE_CHECKING, not records', so that
# every program, pygrub too, loads no pyxen module but its own)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

#: The Xen release whose interfaces pyxen follows (xl info's xen_major/xen_minor/xen_extra).
XEN_MAJOR, XEN_MINOR, XEN_EXTRA = 4, 17, ".0-pyxen"


def _quiet(logging: Any) -> None:
    """A library's logging: pyxen's records go where the program configured logging (the
    daemons do), and nowhere (not logging's last-resort stderr) where it did not."""
    logging.getLogger(__name__).addHandler(logging.NullHandler())


class _QuietWhenLoggingLoads:
    """Adds pyxen's NullHandler when ``logging`` is first imported, not here: importing logging
    (with traceback, threading, string) was a fifth of ``xl list``'s time, and xl's light
    commands never log. A meta path finder that hands that one import to the finders after it
    and runs ``_quiet`` once the module has executed; for every other name it answers None."""

    @classmethod
    def find_spec(cls, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "logging" or "logging" in sys.modules:
            return None
        for finder in sys.meta_path:
            spec = None if finder is cls else getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def exec_then_quiet(module: Any) -> None:
            exec_module(module)
            _quiet(module)
        spec.loader.exec_module = exec_then_quiet
        return spec


if "logging" in sys.modules:
    _quiet(sys.modules["logging"])
else:
    sys.meta_path.insert(0, _QuietWhenLoggingLoads)  # type: ignore[arg-type]
