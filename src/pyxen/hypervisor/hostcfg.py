"""The host config, ``$PYXEN_ROOT/host.cfg``: what GRUB's Xen entry, xl.conf and
/etc/sysconfig/xendomains say on a real host.

One frozen object, read once at start and passed down. Written with defaults when missing so a
user has a file to edit. Same syntax as xl.cfg, whose keys are lower case: Xen's XENDOMAINS_SAVE
is ``xendomains_save`` here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from ..libxlu.cfg import ConfigSyntaxError, decode, parse, parse_number
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
# xenbr0, the guests' default bridge: Dom0's address on it, in a private subnet, and a DHCP
# service (dnsmasq) on it that gives guests addresses in that subnet; "" for neither.
xenbr0_address = "10.80.0.1/24"
# Seconds a DHCP lease lasts (dnsmasq's minimum is 120); guests renew at half of it.
xenbr0_dhcp_lease = 3600
# The DHCP service's TFTP server, for HVM guests that boot from the network (boot = "n"): the
# folder it serves (relative to PYXEN_ROOT; "" for no TFTP); PXE clients are told to load
# pxelinux.0 from it (pyxen.testing.installer_media builds Debian's installer tree).
xenbr0_tftp_root = "tftp"
# NAT from xenbr0's subnet to the host's uplink (1: nftables masquerade and IPv4 forwarding
# while the DHCP service serves, removed when it stops), through xenbr0_nat_uplink ("": the
# device of the default route).
xenbr0_nat = 0
xenbr0_nat_uplink = ""

# xendomains (Xen's /etc/sysconfig/xendomains, read again at each host start and stop).
# Relative paths are taken from PYXEN_ROOT.
# Where running domains are saved at host stop, one file per domain named after it; ""
# disables saving (domains are then shut down).
xendomains_save = "save"
# Restore the domains saved there at host start ("true" or "false").
xendomains_restore = "true"
# Arguments after "xl migrate <domid>" (the target host first) to migrate domains away at host
# stop instead of saving them; "" for no migration.
xendomains_migrate = ""
# Domain configs created at host start (Xen's /etc/xen/auto).
xendomains_auto = "auto"
# "true": host stop migrates, saves or shuts down only the domains of those configs; the
# others are shut down by xendomains_shutdown_all. pyxen's default is "false" (Xen's is
# "true"): every running domain is saved at host stop, the one `make run` made by hand too.
xendomains_auto_only = "false"
# "xl shutdown" arguments for a domain neither migrated nor saved ("" to leave it running),
# then for whatever still runs after that ("" to skip).
xendomains_shutdown = "--wait"
xendomains_shutdown_all = "--all --wait"
# Microseconds to wait between two domains created from xendomains_auto.
xendomains_create_usleep = 5000000
# Seconds each xl migrate, save or shutdown may take at host stop before it is killed
# (0: no limit).
xendomains_stop_maxwait = 300

# xapi, the XenAPI server (XML-RPC on / and /RPC2, JSON-RPC on /jsonrpc). Port 0 picks a free
# port; `pyxen host status` prints the address it got.
xapi_bind = "0.0.0.0"
xapi_port = 80
xapi_https_port = 443
# The TLS certificate and key (one PEM file); a self-signed one is made there on first start.
xapi_certificate = "xapi/xapi.pem"
'''


class HostConfigError(ValueError):
    """host.cfg is unreadable or holds a bad value; str() names the file and the key."""


@dataclass(frozen=True)
class XendomainsConfig:
    """xendomains' settings: Xen's sysconfig.xendomains with its defaults, the two folders moved
    from /var/lib/xen/save and /etc/xen/auto into PYXEN_ROOT.

    Folders are kept as written: relative ones are relative to PYXEN_ROOT (``save_dir`` and
    ``auto_dir`` resolve them). None is Xen's empty string: that step is off.
    """

    #: XENDOMAINS_SAVE: where host stop saves each domain (``<save>/<name>``); None: no saving.
    save: Path | None = Path("save")
    #: XENDOMAINS_RESTORE: host start restores the save files found in ``save``.
    restore: bool = True
    #: XENDOMAINS_MIGRATE: the words after ``xl migrate <domid>`` (the target host first).
    migrate: tuple[str, ...] = ()
    #: XENDOMAINS_AUTO: the folder of configs created at host start; None: none.
    auto: Path | None = Path("auto")
    #: XENDOMAINS_AUTO_ONLY: host stop migrates/saves/shuts down only domains named by ``auto``.
    auto_only: bool = False
    #: XENDOMAINS_SHUTDOWN: ``xl shutdown`` options for one domain; None: no shutdown.
    shutdown: tuple[str, ...] | None = ("--wait",)
    #: XENDOMAINS_SHUTDOWN_ALL: ``xl shutdown`` options for what is left; None: skipped.
    shutdown_all: tuple[str, ...] | None = ("--all", "--wait")
    #: XENDOMAINS_CREATE_USLEEP: microseconds between two auto creates.
    create_usleep: int = 5_000_000
    #: XENDOMAINS_STOP_MAXWAIT: seconds before a stuck xl migrate/save/shutdown is killed; 0: never.
    stop_maxwait: int = 300

    def save_dir(self, root: Path) -> Path | None:
        return None if self.save is None else root / self.save

    def auto_dir(self, root: Path) -> Path | None:
        return None if self.auto is None else root / self.auto


#: The xendomains keys of host.cfg (Xen's XENDOMAINS_* variables, lower case); another key
#: starting with ``xendomains_`` is a typo, refused rather than silently ignored.
XENDOMAINS_KEYS = ("xendomains_save", "xendomains_restore", "xendomains_migrate", "xendomains_auto",
                   "xendomains_auto_only", "xendomains_shutdown", "xendomains_shutdown_all",
                   "xendomains_sysrq", "xendomains_usleep", "xendomains_create_usleep",
                   "xendomains_stop_maxwait")


#: dnsmasq's shortest lease (seconds); it raises shorter ones to this.
MIN_LEASE = 120


@dataclass(frozen=True)
class BridgeConfig:
    """xenbr0's Dom0 side (host.cfg's xenbr0_* keys): Dom0's address on the bridge, whose subnet
    the DHCP service (host/dhcp.py) hands out, and the lease time. ``address`` None: no
    address and no DHCP service. ``tftp_root``: the folder the service's TFTP server gives PXE
    clients (relative to PYXEN_ROOT), None for no TFTP. ``nat``: masquerade the subnet out
    through ``nat_uplink`` ("" for the default route's device)."""

    address: ipaddress.IPv4Interface | None = ipaddress.IPv4Interface("10.80.0.1/24")
    lease: int = 3600
    tftp_root: Path | None = Path("tftp")
    nat: bool = False
    nat_uplink: str = ""


BRIDGE_KEYS = ("xenbr0_address", "xenbr0_dhcp_lease", "xenbr0_tftp_root", "xenbr0_nat",
               "xenbr0_nat_uplink")


def bridge(path: Path, settings: Mapping[str, object], text: Callable[[str, str], str]) -> BridgeConfig:
    """The xenbr0_* keys of host.cfg.

    :raise HostConfigError: an unknown key, an address that is not IPv4 with a prefix length
        leaving room for guests, or a lease under dnsmasq's minimum.
    """
    unknown = sorted(k for k in settings if k.startswith("xenbr0_") and k not in BRIDGE_KEYS)
    if unknown:
        raise HostConfigError(f"{path}: unknown setting {unknown[0]} (xenbr0's are {', '.join(BRIDGE_KEYS)})")
    d = BridgeConfig()
    value = text("xenbr0_address", str(d.address))
    address = None
    if value:
        try:
            address = ipaddress.IPv4Interface(value)
        except ValueError:
            raise HostConfigError(f"{path}: xenbr0_address must be an IPv4 address with its prefix "
                                  f"length (like 10.80.0.1/24), not '{value}'") from None
        if "/" not in value or address.network.prefixlen > 29 or address.ip in (
                address.network.network_address, address.network.broadcast_address):
            raise HostConfigError(f"{path}: xenbr0_address '{value}' leaves no addresses for guests "
                                  "(give a host address in a subnet of /29 or larger)")
    lease_text = text("xenbr0_dhcp_lease", str(d.lease))
    try:
        lease = parse_number(lease_text)
    except ValueError:
        raise HostConfigError(f"{path}: xenbr0_dhcp_lease must be a number of seconds, not '{lease_text}'") from None
    if lease < MIN_LEASE:
        raise HostConfigError(f"{path}: xenbr0_dhcp_lease must be at least {MIN_LEASE} s (dnsmasq's "
                              f"minimum), not {lease}")
    tftp = text("xenbr0_tftp_root", str(d.tftp_root))
    nat = text("xenbr0_nat", "0")
    if nat not in ("0", "1"):
        raise HostConfigError(f"{path}: xenbr0_nat must be 0 or 1, not '{nat}'")
    uplink = text("xenbr0_nat_uplink", d.nat_uplink)
    if uplink and (len(uplink) > 15 or "/" in uplink or uplink != uplink.strip() or " " in uplink):
        raise HostConfigError(f"{path}: xenbr0_nat_uplink must be a network device's name, not '{uplink}'")
    if nat == "1" and address is None:
        raise HostConfigError(f"{path}: xenbr0_nat = 1 needs xenbr0_address (the subnet to masquerade)")
    return BridgeConfig(address, lease, Path(tftp) if tftp else None, nat == "1", uplink)


@dataclass(frozen=True)
class XapiConfig:
    """Where xapi listens (host.cfg's xapi_* keys). A port of 0 means any free port; -1
    turns that listener off. Relative paths are taken from PYXEN_ROOT."""

    bind: str = "0.0.0.0"
    port: int = 80
    https_port: int = 443
    certificate: Path = Path("xapi/xapi.pem")


XAPI_KEYS = ("xapi_bind", "xapi_port", "xapi_https_port", "xapi_certificate")


def xapi(path: Path, settings: Mapping[str, object], text: Callable[[str, str], str]) -> XapiConfig:
    """The xapi_* keys of host.cfg. :raise HostConfigError: a bad port or an unknown key."""
    unknown = sorted(k for k in settings if k.startswith("xapi_") and k not in XAPI_KEYS)
    if unknown:
        raise HostConfigError(f"{path}: unknown setting {unknown[0]} (xapi's are {', '.join(XAPI_KEYS)})")
    d = XapiConfig()

    def port(key: str, default: int) -> int:
        value = text(key, str(default))
        try:
            n = int(value, 10)
        except ValueError:
            n = -2
        if not -1 <= n <= 65535:
            raise HostConfigError(f"{path}: {key} must be a port number (0: any, -1: off), not '{value}'")
        return n

    return XapiConfig(text("xapi_bind", d.bind), port("xapi_port", d.port),
                      port("xapi_https_port", d.https_port),
                      Path(text("xapi_certificate", str(d.certificate))))


@dataclass(frozen=True)
class HostConfig:
    """The host's settings."""

    bootline: BootLine
    accel: str = "auto"
    qemu: str = "qemu-system-x86_64"
    xendomains: XendomainsConfig = field(default_factory=XendomainsConfig)
    xenbr0: BridgeConfig = field(default_factory=BridgeConfig)
    xapi: XapiConfig = field(default_factory=XapiConfig)

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
        return cls(bootline, accel, text("qemu", "qemu-system-x86_64"), xendomains(path, settings, text),
                   xenbr0=bridge(path, settings, text), xapi=xapi(path, settings, text))


def xendomains(path: Path, settings: Mapping[str, object], text: Callable[[str, str], str]) -> XendomainsConfig:
    """The xendomains_* keys of host.cfg (``text`` reads one key as a string, with a default).

    :raise HostConfigError: a value Xen's script would misread (a boolean other than
        true/false, a number that is not one), or a setting pyxen cannot honour.
    """
    d = XendomainsConfig()
    unknown = sorted(k for k in settings if k.startswith("xendomains_") and k not in XENDOMAINS_KEYS)
    if unknown:
        raise HostConfigError(f"{path}: unknown setting {unknown[0]} (xendomains' are "
                              f"{', '.join(XENDOMAINS_KEYS)})")

    def folder(key: str, default: Path | None) -> Path | None:
        value = text(key, "" if default is None else str(default))
        return Path(value) if value else None

    def boolean(key: str, default: bool) -> bool:
        value = text(key, "true" if default else "false")
        if value not in ("true", "false"):
            raise HostConfigError(f"{path}: {key} must be \"true\" or \"false\", not '{value}'")
        return value == "true"

    def words(key: str, default: tuple[str, ...] | None) -> tuple[str, ...] | None:
        # Xen expands the variable unquoted: split on blanks, no quote removal.
        value = text(key, " ".join(default or ()))
        return tuple(value.split()) or None

    def number(key: str, default: int) -> int:
        value = text(key, str(default))
        try:
            n = parse_number(value)
        except ValueError:
            raise HostConfigError(f"{path}: {key} must be a number, not '{value}'") from None
        return n

    if text("xendomains_sysrq", ""):
        raise HostConfigError(f"{path}: xendomains_sysrq is not supported: pyxen guests have no "
                              "sysrq handler (xl sysrq is not built); leave it empty")
    number("xendomains_usleep", 100_000)  # (the pause after each sysrq: checked, nothing to time)
    return XendomainsConfig(
        save=folder("xendomains_save", d.save),
        restore=boolean("xendomains_restore", d.restore),
        migrate=words("xendomains_migrate", d.migrate) or (),
        auto=folder("xendomains_auto", d.auto),
        auto_only=boolean("xendomains_auto_only", d.auto_only),
        shutdown=words("xendomains_shutdown", d.shutdown),
        shutdown_all=words("xendomains_shutdown_all", d.shutdown_all),
        create_usleep=number("xendomains_create_usleep", d.create_usleep),
        stop_maxwait=number("xendomains_stop_maxwait", d.stop_maxwait))
