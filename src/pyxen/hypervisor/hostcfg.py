"""The host config, ``$PYXEN_ROOT/host.cfg``: what GRUB's Xen entry and xl.conf say on a real host.

One frozen object, read once at start and passed down. Written with defaults when missing so a
user has a file to edit. Same syntax as xl.cfg.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..libxlu.cfg import ConfigSyntaxError, decode, parse
from .bootline import BootLine, BootLineError

DEFAULT_COMMANDLINE = "dom0_mem=1024M loglvl=all sched=credit"
ACCELS = ("auto", "kvm", "tcg")

DEFAULT_TEXT = f'''# pyxen host config (the Xen boot line and host settings).
# The hypervisor's boot line, as on GRUB's multiboot line for xen.gz.
xen_commandline = "{DEFAULT_COMMANDLINE}"
# CPU virtualization for guests: "auto" uses KVM only when a probe shows it can run a stock
# guest kernel, else TCG; "kvm" or "tcg" force one.
accel = "auto"
# The QEMU binary that runs each DomU (and is the device model of HVM guests).
qemu = "qemu-system-x86_64"
'''


class HostConfigError(ValueError):
    """host.cfg is unreadable or holds a bad value; str() names the file and the key."""


@dataclass(frozen=True)
class HostConfig:
    """The host's settings."""

    bootline: BootLine
    accel: str = "auto"
    qemu: str = "qemu-system-x86_64"

    @classmethod
    def load(cls, path: Path) -> "HostConfig":
        """Read ``path``, writing the defaults there first if it does not exist."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(DEFAULT_TEXT)
        try:
            settings = parse(decode(path.read_bytes(), str(path)), str(path))
        except (OSError, ConfigSyntaxError) as err:
            raise HostConfigError(str(err)) from err

        def text(key: str, default: str) -> str:
            if key not in settings:
                return default
            v = settings[key].value
            if not isinstance(v, str):
                raise HostConfigError(f"{path}:{settings[key].line}: {key} must be a string")
            return v

        try:
            bootline = BootLine.parse(text("xen_commandline", DEFAULT_COMMANDLINE))
        except BootLineError as err:
            raise HostConfigError(f"{path}: xen_commandline: {err}") from err
        accel = text("accel", "auto")
        if accel not in ACCELS:
            raise HostConfigError(f"{path}: accel must be one of {', '.join(ACCELS)}, not '{accel}'")
        return cls(bootline, accel, text("qemu", "qemu-system-x86_64"))
