"""xl's commands for hardware and features pyxen does not provide: each exists (listed by
``xl help``, found by xl's lookup, its ``-h`` and argument count as in Xen) and then refuses
with one line naming why, exit 1, having changed nothing.

Why refuse rather than leave them out: a Xen administrator's script that calls ``xl pci-list``
gets a sentence saying what pyxen lacks instead of xl's bare "command not implemented", and the
command's name still counts in xl's prefix lookup (so ``xl us`` stays ambiguous as in Xen).
"""

from __future__ import annotations

import sys
from typing import Callable

from . import cmdtable
from .common import honours_dryrun, required_message

_PCI = ("pyxen passes no PCI devices through to guests: there is no IOMMU or pciback, a guest "
        "sees only its emulated and paravirtual devices")
_USB = "pyxen passes no USB controllers or host USB devices through to guests (no pvusb or qusb backend)"
_PSR = ("pyxen emulates no Intel Platform Shared Resource features (CMT, CAT, MBA): guests run "
        "as QEMU processes under TCG, with no cache or memory-bandwidth monitoring to report")

#: Every command refused here and the reason it gives.
REASONS: dict[str, str] = {
    "pci-attach": _PCI, "pci-detach": _PCI, "pci-list": _PCI, "pci-assignable-add": _PCI,
    "pci-assignable-remove": _PCI, "pci-assignable-list": _PCI,
    "usbctrl-attach": _USB, "usbctrl-detach": _USB, "usbdev-attach": _USB, "usbdev-detach": _USB,
    "usb-list": _USB,
    **{name: _PSR for name in ("psr-hwinfo", "psr-cmt-attach", "psr-cmt-detach", "psr-cmt-show",
                               "psr-cat-set", "psr-cat-show", "psr-mba-set", "psr-mba-show")},
    **{name: "pyxen has no virtual TPM (it needs a vTPM stub domain and its manager)"
       for name in ("vtpm-attach", "vtpm-list", "vtpm-detach")},
    **{name: "pyxen has no paravirtual keyboard backend (vkbd); a guest's keyboard is its VNC console"
       for name in ("vkb-attach", "vkb-list", "vkb-detach")},
    **{name: "pyxen has no paravirtual display backend (vdispl)"
       for name in ("vdispl-attach", "vdispl-list", "vdispl-detach")},
    **{name: "pyxen has no paravirtual sound backend (vsnd)"
       for name in ("vsnd-attach", "vsnd-list", "vsnd-detach")},
    "remus": "pyxen has no Remus/COLO checkpointing replication (use xl migrate to move a domain)",
    "sharing": "pyxen's hypervisor does no memory page sharing between domains",
    "devd": ("pyxen runs every backend in Dom0's daemons; it has no driver domains for xl devd "
             "to serve"),
}


def refusal(name: str, reason: str) -> Callable[[list[str]], int]:
    """A command that answers ``-h`` with xl's help (stdout, exit 0) and too few arguments
    with def_getopt's message (exit 2), then refuses with ``xl <name>: <reason>`` (exit 1)."""
    spec = cmdtable.lookup(name)
    assert spec is not None and spec.name == name, name

    def run(argv: list[str]) -> int:
        words = [a for a in argv if not a.startswith("-") or a == "-"]
        if "-h" in argv:
            sys.stdout.write(cmdtable.command_help(spec))
            return 0
        if len(words) < cmdtable.REQARGS.get(name, 0):
            sys.stderr.write(required_message(name, cmdtable.REQARGS[name]))
            sys.stdout.write(cmdtable.command_help(spec))
            return 2
        print(f"xl {name}: {reason}", file=sys.stderr)
        return 1

    return honours_dryrun(run)  # it changes nothing, with or without -N


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    name: (refusal(name, reason), spec.desc)
    for name, reason in REASONS.items() if (spec := cmdtable.lookup(name)) is not None
}
