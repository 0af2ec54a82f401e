"""Where pyxen keeps its state: one folder, ``PYXEN_ROOT``, default /var/lib/pyxen.

Every socket, pid file, log and database of a host lives under that folder, so two hosts (and
tests) can run side by side. Every part of pyxen asks this module for its paths; none builds
them itself.
"""

from __future__ import annotations

import os

from .records import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # pathlib is imported where a Path is made (see root_from_env)
    from pathlib import Path

DEFAULT_ROOT = "/var/lib/pyxen"
#: Xen's hotplug script directory (libxl__xen_script_dir_path), as libxl writes it into a
#: backend's ``script`` node: one definition for the toolstack, libxl's JSON and blkback.
XEN_SCRIPT_DIR = "/etc/xen/scripts"
#: Xen's default disk script, as libxl names it in a vbd backend's ``script`` node. pyxen runs
#: no script for it: blkback opens ``params`` itself and says ``hotplug-status=connected``.
DEFAULT_BLOCK_SCRIPT = f"{XEN_SCRIPT_DIR}/block"
#: Host-wide cache of built guest images and probe verdicts (not per PYXEN_ROOT: shared by hosts).
CACHE_ROOT = "/var/cache/pyxen"


#: The demo guest's kernel command line (make run's examples/demo.cfg, the XenAPI seed's demo VM,
#: the tests' and the benchmarks' configs, and bench/boot.py's bare QEMU). ``no_timer_check``:
#: Linux's IO-APIC timer check fails on a vCPU starved by a busy host and panics the guest
#: ("IO-APIC + timer doesn't work!"); Linux's advice for virtual machines is to skip it. (Not
#: ``acpi=noirq``: it leaves the guest in legacy PIC mode, which ignores a hot-added vCPU; the
#: ACPI cost it used to save is gone with PV guests on q35, docs/boot.md.)
DEMO_CMDLINE = "console=ttyS0 quiet panic=-1 no_timer_check"


#: The files every xl run opens, as names under a host's root: xl's start-up joins them to
#: ``root_from_env()`` without making a Path (pathlib, which brings urllib.parse and ipaddress,
#: was a tenth of an ``xl list``). Paths's properties of the same names are these under its root.
XL_CONF = "xl.conf"
HYPERVISOR_SOCKET = "run/hypervisor.sock"
XENSTORED_SOCKET = "run/xenstored/socket"


def root_from_env(root: str | os.PathLike[str] | None = None) -> str:
    """A host's state folder: ``root``, else ``$PYXEN_ROOT``, else /var/lib/pyxen; relative to
    the working directory if not absolute (as Path.absolute() makes it)."""
    chosen = os.fspath(root) if root is not None else os.environ.get("PYXEN_ROOT") or DEFAULT_ROOT
    return chosen if os.path.isabs(chosen) else os.path.join(os.getcwd(), chosen)


def cache_dir() -> Path:
    """The image cache: ``$PYXEN_CACHE`` or /var/cache/pyxen."""
    from pathlib import Path
    return Path(os.environ.get("PYXEN_CACHE") or CACHE_ROOT)


def pipe_fifos(base: Path) -> tuple[Path, Path]:
    """(``<base>.in``, ``<base>.out``): the FIFOs of QEMU's ``pipe`` chardev at ``base``
    (qemu: chardev/char-pipe.c)."""
    return base.with_name(base.name + ".in"), base.with_name(base.name + ".out")


class Paths(NamedTuple):
    """The layout of one host's state folder. (A NamedTuple, not a dataclass: every command
    imports this, and dataclasses, with inspect, ast and dis, was a tenth of ``xl list``.)"""

    root: Path

    @classmethod
    def from_env(cls, root: str | os.PathLike[str] | None = None) -> "Paths":
        """Paths for ``root``, else ``$PYXEN_ROOT``, else /var/lib/pyxen (root_from_env)."""
        from pathlib import Path
        return cls(Path(root_from_env(root)))

    # --- configuration -------------------------------------------------------------------
    @property
    def host_cfg(self) -> Path:
        """The host config: the Xen boot line and the host's settings."""
        return self.root / "host.cfg"

    @property
    def auto_dir(self) -> Path:
        """xendomains' folder of domain configs started with the host (/etc/xen/auto)."""
        return self.root / "auto"

    @property
    def xl_conf(self) -> Path:
        """xl's global configuration (Xen's /etc/xen/xl.conf; cli/xl/xlconf.py reads it)."""
        return self.root / XL_CONF

    def domain_cfg(self, name: str) -> Path:
        """A domain's xl.cfg as virt-install writes it, next to the others (Xen's
        /etc/xen/<name>.cfg)."""
        return self.root / f"{name}.cfg"

    @property
    def boot_dir(self) -> Path:
        """Installer kernels and initrds virt-install fetched from an install tree (virtinst's
        /var/lib/xen/virtinst-*)."""
        return self.root / "boot"

    @property
    def images_dir(self) -> Path:
        """Disk images virt-install makes when ``--disk size=N`` names no path (libvirt's
        default pool, /var/lib/libvirt/images)."""
        return self.root / "images"

    @property
    def scripts_dir(self) -> Path:
        """Where a relative hotplug ``script=`` is found (Xen's /etc/xen/scripts)."""
        return self.root / "scripts"

    # --- runtime (sockets and pid files) ------------------------------------------------------
    @property
    def run(self) -> Path:
        return self.root / "run"

    def pidfile(self, daemon: str) -> Path:
        return self.run / f"{daemon}.pid"

    @property
    def xl_lock(self) -> Path:
        """The lock ``xl create`` holds while it builds a domain (Xen's /var/lock/xl), unless
        xl.conf names another ``lockfile``."""
        return self.run / "xl.lock"

    @property
    def hypervisor_socket(self) -> Path:
        """The hypercall socket (Xen's /dev/xen/privcmd)."""
        return self.root / HYPERVISOR_SOCKET

    @property
    def xenstored_dir(self) -> Path:
        return self.run / "xenstored"

    @property
    def xenstored_socket(self) -> Path:
        """xenstored's Dom0 socket (Xen's /var/run/xenstored/socket)."""
        return self.root / XENSTORED_SOCKET

    def xenstored_domain_socket(self, domid: int) -> Path:
        """The socket a guest's own xenstore connection arrives on (its 'ring')."""
        return self.xenstored_dir / "domains" / str(domid)

    @property
    def backends_dir(self) -> Path:
        """The backend daemon's folder: its control socket and one vhost-user socket per device."""
        return self.run / "backends"

    @property
    def backendd_socket(self) -> Path:
        """The backend daemon's control socket (up when it accepts; answers a status line)."""
        return self.backends_dir / "control.sock"

    def domain_run_dir(self, domid: int) -> Path:
        """Sockets of one domain's device model: QMP, console, device sockets."""
        return self.run / "domains" / str(domid)

    def console_pipe(self, domid: int) -> Path:
        """The base name of a guest's console FIFOs (``<base>.out`` carries what the guest
        prints, ``<base>.in`` what it is sent): QEMU's serial ``pipe`` chardev, read by
        xenconsoled. A FIFO keeps what the guest printed while xenconsoled is down, as Xen's
        console ring does, and stalls the guest's console when full instead of dropping."""
        return self.domain_run_dir(domid) / "console"

    def console_fifos(self, domid: int) -> tuple[Path, Path]:
        """(``<base>.in``, ``<base>.out``) of ``console_pipe``."""
        return pipe_fifos(self.console_pipe(domid))

    def qmp_socket(self, domid: int) -> Path:
        """The domain's QEMU's QMP socket (only the hypervisor's device model talks there)."""
        return self.domain_run_dir(domid) / "qmp.sock"

    def device_socket(self, kind: str, domid: int, devid: int) -> Path:
        """The vhost-user socket the backend daemon serves for one device (vbd, vif)."""
        return self.backends_dir / f"{kind}-{domid}-{devid}.sock"

    @property
    def xenconsoled_socket(self) -> Path:
        """xenconsoled's control socket (up when it accepts)."""
        return self.run / "xenconsoled.sock"

    @property
    def dhcp_socket(self) -> Path:
        """The xenbr0 DHCP service's control socket (host/dhcp.py; up when it accepts)."""
        return self.run / "dhcp.sock"

    def console_socket(self, domid: int) -> Path:
        """Where ``xl console`` connects for ``domid`` (served by xenconsoled)."""
        return self.run / "console" / f"{domid}.sock"

    @property
    def monitor_socket(self) -> Path:
        """The toolstack monitor's control socket (xl's per-domain monitor, one per host)."""
        return self.run / "monitor.sock"

    @property
    def domid_history(self) -> Path:
        """The toolstack's recently destroyed domids (libxl's /var/run/xen/domid-history), so a
        requested domid (``xl save -D``) is not reused too soon."""
        return self.run / "domid-history"

    @property
    def xapi_socket(self) -> Path:
        """xapi's Unix socket (XCP's /var/lib/xcp/xapi): XenAPI.xapi_local(), no password."""
        return self.run / "xapi.sock"

    @property
    def supervisor_socket(self) -> Path:
        """The supervisor's control socket (it restarts any daemon that dies)."""
        return self.run / "supervisor.sock"

    # --- persistent state ------------------------------------------------------------------------
    @property
    def lib(self) -> Path:
        return self.root / "lib"

    @property
    def domains_dir(self) -> Path:
        """The hypervisor's domain table, one JSON record per live domain."""
        return self.lib / "domains"

    @property
    def userdata_dir(self) -> Path:
        """The toolstack's per-domain records (libxl's /var/lib/xen/userdata-*): each domain's
        config as JSON, which the monitor needs to restart it."""
        return self.lib / "userdata"

    def hypervisor_state(self, table: str) -> Path:
        """A hypervisor table kept across a restart of its daemon (gnttab, evtchn): the
        guests and their backends outlive the daemon, so their grants and channels must too."""
        return self.lib / "hypervisor" / f"{table}.json"

    @property
    def monitor_dir(self) -> Path:
        """The monitor's notes of restarts it began (so one interrupted by its death is
        finished, exactly once, when it comes back)."""
        return self.lib / "monitor"

    def restart_note(self, name: str) -> Path:
        """The monitor's note of a restart of the domain ``name`` it began and has not finished
        (``xl restore -F`` waits while one is there: the domain is coming back)."""
        return self.monitor_dir / f"restart-{name}.json"

    @property
    def dump_dir(self) -> Path:
        """Core files of on_crash = "coredump-*" (Xen: /var/lib/xen/dump)."""
        return self.lib / "dump"

    def dhcp_leases(self, bridge: str) -> Path:
        """dnsmasq's lease file for ``bridge`` (kept across restarts, so leases renew)."""
        return self.lib / "dhcp" / f"{bridge}.leases"

    @property
    def xenstored_data(self) -> Path:
        return self.lib / "xenstored"

    @property
    def bootloader_dir(self) -> Path:
        """The bootloader's work folders (libxl's /var/lib/xen/bootloader.<domid>.{out,d}):
        the kernel and ramdisk pygrub extracted, kept until QEMU has loaded them."""
        return self.lib / "bootloader"

    # --- logs -------------------------------------------------------------------------------
    @property
    def log(self) -> Path:
        return self.root / "log"

    def daemon_log(self, daemon: str) -> Path:
        return self.log / f"{daemon}.log"

    @property
    def hotplug_log(self) -> Path:
        """The hotplug scripts' stderr, as libxl leaves it in /var/log/xen/xen-hotplug.log."""
        return self.log / "xen-hotplug.log"

    def bootloader_log(self, name: str) -> Path:
        """The bootloader's stderr for domain ``name`` (Xen: /var/log/xen/bootloader.<domid>.log;
        pyxen runs it before the domain has a domid)."""
        return self.log / f"bootloader.{name}.log"

    @property
    def console_log_dir(self) -> Path:
        return self.log / "console"

    def console_log(self, name: str) -> Path:
        """xenconsoled's log of one guest (Xen: /var/log/xen/console/guest-<name>.log)."""
        return self.console_log_dir / f"guest-{name}.log"

    def ensure(self) -> None:
        """Create the folders (sockets need their parent folder)."""
        for d in (self.root, self.run, self.lib, self.log, self.console_log_dir,
                  self.domains_dir, self.xenstored_dir, self.auto_dir):
            d.mkdir(parents=True, exist_ok=True)
        # Non-root clients must be able to reach the sockets to be refused by SO_PEERCRED
        # (rather than by file permissions), as Xen's privcmd refuses them.
        os.chmod(self.root, 0o755)
        os.chmod(self.run, 0o755)
