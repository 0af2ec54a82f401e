"""xenbr0's DHCP service: Dom0's address on the guests' default bridge and dnsmasq giving guests
addresses in its subnet, so a guest with a vif on xenbr0 is reachable from Dom0 a few seconds
after boot (what a XenServer client waits for in VM_guest_metrics.networks).

One Dom0 service (``python -m pyxen.host.dhcp --root R``, name ``dhcp``) started by ``pyxen host
start``, restarted by the supervisor, stopped by ``pyxen host stop``. It runs dnsmasq (Debian's
dnsmasq-base) as its child rather than answering DHCP itself: DHCP only, no DNS (``--port=0``),
bound to the bridge alone, leases kept in ``lib/dhcp/xenbr0.leases`` under PYXEN_ROOT so that a
restarted service still knows them and the guests' renewals are acknowledged. dnsmasq gets
PR_SET_PDEATHSIG, so a kill -9 of the service takes dnsmasq with it and the restarted service
starts a fresh one. If dnsmasq dies, the service exits with it and the supervisor starts both again.

The bridge is host-global: every pyxen host in one network namespace shares the one xenbr0
(test hosts with temporary roots, a second ``make run``). Two DHCP servers on one bridge would
hand out the same addresses, so the first service to take the lock of the bridge in that
namespace (``/run/pyxen/dhcp-xenbr0-netns<inode>.lock``) serves; any other stands by, answering
on its socket, and takes over within a second when the serving one stops. The Dom0 address is
added when serving begins and removed when it ends cleanly.

dnsmasq also serves TFTP on the bridge (``xenbr0_tftp_root``, default ``tftp`` under
PYXEN_ROOT) and tells PXE clients (DHCP vendor class "PXEClient": the option ROM of an HVM
guest's emulated NIC booting with boot = "n") to load ``pxelinux.0`` from it, so an unmodified
installer boots over the network (pyxen.testing.installer_media.build_tftp_tree makes Debian's).
dnsmasq drops root after start (to "nobody"), so the folder and what it holds must be readable
by everyone, every folder above it too.

With ``xenbr0_nat = 1`` the serving service also masquerades the subnet out through the
uplink (``xenbr0_nat_uplink``, or the default route's device): an nftables table of its own,
``ip pyxen_<bridge>``, added atomically (replacing one a killed service left) and deleted when
serving ends, and IPv4 forwarding switched on while it serves (set back to what it was).

Settings (host.cfg, read at each start): ``xenbr0_address`` (default "10.80.0.1/24"; "" turns
the service into a no-op that only answers its socket), ``xenbr0_dhcp_lease`` (seconds),
``xenbr0_tftp_root``, ``xenbr0_nat`` and ``xenbr0_nat_uplink``.
The socket answers each connection with one JSON line: state ("serving", "standby" or "off"),
bridge, address, range, lease, dnsmasq's pid, the lease file, the TFTP root, the NAT uplink,
and who serves.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import ipaddress
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from ..backends.net import DEFAULT_BRIDGE
from ..backends.net.device import NetDeviceError, find_bridge
from ..daemon import arguments, daemon_process
from ..hypervisor.hostcfg import BridgeConfig, HostConfig, HostConfigError
from ..paths import Paths
from .services import status_line

log = logging.getLogger("pyxen.host.dhcp")

#: Host-global: where the per-bridge, per-namespace locks live (not under PYXEN_ROOT, which
#: is one host's; the bridge belongs to every host in the namespace).
LOCK_DIR = Path("/run/pyxen")
DNSMASQ = "dnsmasq"
NFT = "nft"
#: What PXE clients are told to load from the TFTP root (pxelinux's, as Debian's netboot tree has).
PXE_BOOT_FILE = "pxelinux.0"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
NFT_TIMEOUT = 10.0
#: How often a standby service tries the lock, and the service checks dnsmasq (seconds).
POLL = 0.5
#: How long dnsmasq must live after its start to count as started (a bad option or a port it
#: cannot bind makes it exit at once).
SETTLE = 0.5
STOP_TIMEOUT = 5.0
IP_TIMEOUT = 10.0
CLIENT_TIMEOUT = 1.0
PR_SET_PDEATHSIG = 1


class DhcpError(RuntimeError):
    """The bridge, its address or dnsmasq could not be set up; the message says which."""


def dhcp_range(address: ipaddress.IPv4Interface) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """The addresses handed out: the longer run of host addresses on either side of Dom0's
    (all of the subnet's after it, for the usual .1)."""
    net = address.network
    first, last = net.network_address + 1, net.broadcast_address - 1
    below = int(address.ip) - int(first)
    above = int(last) - int(address.ip)
    if above >= below:
        return address.ip + 1, last
    return first, address.ip - 1


def lock_path(bridge: str, netns: int) -> Path:
    """The lock whose holder serves DHCP on ``bridge`` in the network namespace ``netns``
    (the inode of /proc/self/ns/net)."""
    return LOCK_DIR / f"dhcp-{bridge}-netns{netns}.lock"


def current_netns() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def tftp_root(paths: Paths, cfg: BridgeConfig) -> Path | None:
    """The folder the TFTP server serves (host.cfg's relative paths are PYXEN_ROOT's), or None."""
    return None if cfg.tftp_root is None else paths.root / cfg.tftp_root


def dnsmasq_argv(paths: Paths, cfg: BridgeConfig, bridge: str = DEFAULT_BRIDGE) -> list[str]:
    """dnsmasq's command line: DHCP (and TFTP for PXE clients, when configured) only on
    ``bridge``, no DNS, in the foreground, logging to stderr (the service's log), nothing read
    from /etc."""
    assert cfg.address is not None
    first, last = dhcp_range(cfg.address)
    argv = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--no-resolv",
            "--no-hosts", f"--interface={bridge}", "--bind-interfaces", "--except-interface=lo",
            f"--dhcp-range={first},{last},{cfg.address.netmask},{cfg.lease}",
            f"--dhcp-leasefile={paths.dhcp_leases(bridge)}", f"--pid-file={paths.pidfile('dnsmasq')}",
            "--dhcp-authoritative", "--log-facility=-"]
    root = tftp_root(paths, cfg)
    if root is not None:
        # PXE ROMs say "PXEClient..." in the vendor class (option 60); only they get a boot file.
        # dnsmasq serves TFTP as nobody: a root it cannot reach (under a 0700 PYXEN_ROOT) is
        # logged and TFTP stays off, rather than the whole DHCP service failing to start.
        argv += ["--enable-tftp", f"--tftp-root={root}", "--tftp-no-fail", "--dhcp-vendorclass=set:pxe,PXEClient",
                 f"--dhcp-boot=tag:pxe,{PXE_BOOT_FILE}"]
    return argv


# --- NAT to the uplink (xenbr0_nat) ------------------------------------------------------------
def nat_table(bridge: str) -> str:
    """The nftables table (family ip) the service owns for ``bridge``'s NAT."""
    return f"pyxen_{bridge}"


def nat_ruleset(bridge: str, network: ipaddress.IPv4Network, uplink: str) -> str:
    """``nft -f -``'s input: the bridge's table replaced atomically (declared, deleted, made
    again, so one left by a killed service goes) with one rule: what leaves through ``uplink``
    from the bridge's subnet is masqueraded."""
    table = nat_table(bridge)
    return (f"table ip {table} {{}}\ndelete table ip {table}\n"
            f"table ip {table} {{\n"
            "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
            f'\t\tip saddr {network} oifname "{uplink}" masquerade\n\t}}\n}}\n')


def nat_add_argv() -> list[str]:
    return [NFT, "-f", "-"]


def nat_delete_argv(bridge: str) -> list[str]:
    return [NFT, "delete", "table", "ip", nat_table(bridge)]


def default_uplink(routes: str) -> str | None:
    """The device of the first default route in ``ip -o -4 route show default``'s output."""
    for line in routes.splitlines():
        words = line.split()
        if words[:1] == ["default"] and "dev" in words[:-1]:
            return words[words.index("dev") + 1]
    return None


def _nft(argv: list[str], script: str | None = None) -> None:
    try:
        done = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=NFT_TIMEOUT)
    except FileNotFoundError:
        raise DhcpError(f"xenbr0_nat: cannot run {argv[0]} (install Debian's nftables)") from None
    except subprocess.TimeoutExpired:
        raise DhcpError(f"{' '.join(argv)}: no answer in {NFT_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        raise DhcpError(f"{' '.join(argv)}: {done.stderr.strip()}")


def read_leases(path: Path) -> list[dict[str, str]]:
    """dnsmasq's lease file: one dict per lease (expiry as epoch seconds, mac, ip, hostname,
    client id)."""
    leases = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            leases.append({"expiry": parts[0], "mac": parts[1], "ip": parts[2], "hostname": parts[3],
                           "client_id": parts[4] if len(parts) > 4 else "*"})
    return leases


def _ip(*args: str) -> str:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DhcpError(f"ip {' '.join(args)}: no answer in {IP_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        raise DhcpError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def has_address(bridge: str, address: ipaddress.IPv4Interface) -> bool:
    out = _ip("-o", "-4", "addr", "show", "dev", bridge)
    return any(w == str(address) for line in out.splitlines() for w in line.split())


def _die_with_parent(parent: int) -> Callable[[], None]:
    """dnsmasq's preexec: SIGTERM when the service dies, however it dies (even kill -9)."""
    def set_pdeathsig() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the service died before the prctl
            os._exit(1)
    return set_pdeathsig


def _stale_dnsmasq(paths: Paths) -> int | None:
    """A dnsmasq of this host left running (its pid file names it and its command line names
    this host's lease file), or None."""
    try:
        pid = int(paths.pidfile("dnsmasq").read_text().split()[0])
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return pid if str(paths.dhcp_leases(DEFAULT_BRIDGE)).encode() in cmd else None


class DhcpService:
    """The service's state and loop."""

    def __init__(self, paths: Paths, cfg: BridgeConfig, bridge: str = DEFAULT_BRIDGE) -> None:
        self.paths = paths
        self.cfg = cfg
        self.bridge = bridge
        self.lock_path = lock_path(bridge, current_netns())
        self.lock: TextIO | None = None
        self.dnsmasq: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.served_by = ""
        #: The uplink masqueraded through while serving, and ip_forward's value before.
        self.nat_uplink: str | None = None
        self.forward_before: str | None = None

    @property
    def state(self) -> str:
        if self.cfg.address is None:
            return "off"
        return "serving" if self.dnsmasq is not None else "standby"

    def status(self) -> dict[str, Any]:
        first_last = dhcp_range(self.cfg.address) if self.cfg.address else None
        return {"pid": os.getpid(), "state": self.state, "bridge": self.bridge,
                "address": str(self.cfg.address) if self.cfg.address else "",
                "range": f"{first_last[0]}-{first_last[1]}" if first_last else "",
                "lease": self.cfg.lease, "dnsmasq": self.dnsmasq.pid if self.dnsmasq else None,
                "leases": str(self.paths.dhcp_leases(self.bridge)),
                "tftp_root": str(tftp_root(self.paths, self.cfg) or ""), "nat": self.nat_uplink or "",
                "served_by": "" if self.dnsmasq else self.served_by}

    # --- serving -------------------------------------------------------------------------------
    def try_serve(self) -> bool:
        """Take the bridge's lock if it is free and start serving; False if another host's
        service holds it. :raise DhcpError: the lock was ours but serving failed."""
        if self.cfg.address is None or self.dnsmasq is not None:
            return self.dnsmasq is not None
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        lock = open(self.lock_path, "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            lock.seek(0)
            holder = lock.read().strip()
            lock.close()
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DhcpError(f"{self.lock_path}: {err.strerror}") from err
            if holder != self.served_by:
                log.info("%s's DHCP is served by another host (%s): standing by", self.bridge, holder)
                self.served_by = holder
            return False
        self.lock = lock
        try:
            self._start_dnsmasq()
            if self.cfg.nat:
                self._start_nat()
        except BaseException:
            self.stop_serving()
            raise
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} root {self.paths.root}\n")
        lock.flush()
        self.served_by = ""
        return True

    def _start_dnsmasq(self) -> None:
        assert self.cfg.address is not None
        try:
            find_bridge(self.bridge)
        except NetDeviceError as err:
            raise DhcpError(err.strerror) from err
        if not has_address(self.bridge, self.cfg.address):
            _ip("addr", "add", str(self.cfg.address), "dev", self.bridge)
            log.info("%s: Dom0 address %s", self.bridge, self.cfg.address)
        stale = _stale_dnsmasq(self.paths)
        if stale is not None:
            log.warning("dnsmasq pid %d of an earlier run still serves: stopping it", stale)
            with contextlib.suppress(ProcessLookupError):
                os.kill(stale, signal.SIGKILL)
        leases = self.paths.dhcp_leases(self.bridge)
        leases.parent.mkdir(parents=True, exist_ok=True)
        leases.touch()
        root = tftp_root(self.paths, self.cfg)
        if root is not None:
            if "," in str(root):
                raise DhcpError(f"xenbr0_tftp_root {root}: dnsmasq takes no ',' in it")
            root.mkdir(parents=True, exist_ok=True)
        argv = dnsmasq_argv(self.paths, self.cfg, self.bridge)
        log.info("starting %s", " ".join(argv))
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent(os.getpid()))
        except OSError as err:
            raise DhcpError(f"cannot run {DNSMASQ}: {err.strerror} (install Debian's dnsmasq-base)") from err
        deadline = time.monotonic() + SETTLE
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DhcpError(f"{DNSMASQ} exited with status {proc.returncode} at start (see the log above)")
            time.sleep(0.05)
        self.dnsmasq = proc
        first, last = dhcp_range(self.cfg.address)
        log.info("serving DHCP on %s: %s-%s, lease %d s (dnsmasq pid %d)", self.bridge, first, last,
                 self.cfg.lease, proc.pid)

    def _start_nat(self) -> None:
        """Masquerade the bridge's subnet out through the uplink, and forward IPv4."""
        assert self.cfg.address is not None
        uplink = self.cfg.nat_uplink or default_uplink(_ip("-o", "-4", "route", "show", "default"))
        if not uplink:
            raise DhcpError("xenbr0_nat: no default route, and no xenbr0_nat_uplink set")
        _nft(nat_add_argv(), nat_ruleset(self.bridge, self.cfg.address.network, uplink))
        self.nat_uplink = uplink
        try:
            before = IP_FORWARD.read_text().strip()
            if before != "1":
                IP_FORWARD.write_text("1\n")
                self.forward_before = before
        except OSError as err:
            raise DhcpError(f"{IP_FORWARD}: {err.strerror}") from err
        log.info("NAT: %s masqueraded out through %s", self.cfg.address.network, uplink)

    def _stop_nat(self) -> None:
        """Undo _start_nat (errors logged: stopping goes on)."""
        if self.nat_uplink is not None:
            try:
                _nft(nat_delete_argv(self.bridge))
            except DhcpError as err:
                log.error("%s", err)
            self.nat_uplink = None
        if self.forward_before is not None:
            try:
                IP_FORWARD.write_text(self.forward_before + "\n")
            except OSError as err:
                log.error("%s: %s", IP_FORWARD, err.strerror)
            self.forward_before = None

    def stop_serving(self) -> None:
        """Stop dnsmasq and NAT, remove Dom0's address (a standby host's service adds it again
        when it takes over), release the lock."""
        self._stop_nat()
        proc, self.dnsmasq = self.dnsmasq, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self.paths.pidfile("dnsmasq").unlink(missing_ok=True)
            if self.cfg.address is not None:
                with contextlib.suppress(DhcpError):
                    if has_address(self.bridge, self.cfg.address):
                        _ip("addr", "del", str(self.cfg.address), "dev", self.bridge)
        self._release()

    def _release(self) -> None:
        if self.lock is not None:
            with contextlib.suppress(OSError):
                self.lock.truncate(0)
            self.lock.close()  # (closing the descriptor releases the flock)
            self.lock = None

    # --- main loop -----------------------------------------------------------------------------
    def run(self) -> int:
        """Serve or stand by until SIGTERM; 1 if dnsmasq died or could not start (the
        supervisor then starts the service again)."""
        try:
            self.try_serve()
        except DhcpError as err:
            log.error("%s", err)
            return 1
        sock_path = self.paths.dhcp_socket
        sock_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(sock_path))
        listener.listen(16)
        listener.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(listener, selectors.EVENT_READ)
        log.info("%s on %s (%s)", self.state, self.bridge, self.cfg.address or "no address configured")
        rc = 0
        try:
            while not self.stopping:
                for _key, _ in sel.select(POLL):
                    self._answer(listener)
                if self.dnsmasq is not None and self.dnsmasq.poll() is not None:
                    log.error("dnsmasq exited with status %s", self.dnsmasq.returncode)
                    self.dnsmasq = None
                    rc = 1
                    break
                if self.state == "standby" and not self.stopping:
                    try:
                        if self.try_serve():
                            log.info("took over %s's DHCP", self.bridge)
                    except DhcpError as err:
                        log.error("%s", err)
                        rc = 1
                        break
        finally:
            self.stop_serving()
            sel.close()
            listener.close()
            sock_path.unlink(missing_ok=True)
        log.info("stopped")
        return rc

    def _answer(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        with conn:
            conn.settimeout(CLIENT_TIMEOUT)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(self.status()).encode() + b"\n")


def query(paths: Paths, timeout: float = 2.0) -> dict[str, Any] | None:
    """The running service's status line, or None if it does not answer within ``timeout``."""
    return status_line(paths.dhcp_socket, timeout)


def main(argv: list[str] | None = None) -> int:
    ns = arguments("python -m pyxen.host.dhcp", "DHCP for guests on xenbr0 (dnsmasq)").parse_args(argv)
    paths = Paths.from_env(ns.root)
    with daemon_process(paths, "dhcp"):
        try:
            cfg = HostConfig.load(paths.host_cfg).xenbr0
        except HostConfigError as err:
            log.error("%s", err)
            return 1
        svc = DhcpService(paths, cfg)

        def stop(signum: int, _frame: object) -> None:
            log.info("%s: stopping", signal.Signals(signum).name)
            svc.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        return svc.run()


if __name__ == "__main__":
    raise SystemExit(main())
