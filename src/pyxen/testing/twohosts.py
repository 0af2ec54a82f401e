"""A second pyxen host on the same machine that looks like a second machine (needs root).

``second_host(image, bridge)`` gives the second host

- its own network namespace (``pxh<tag>``), its own PYXEN_ROOT, and its own ``xenbr0`` inside
  that namespace. All its daemons run inside the namespace, so backendd makes its vif TAPs
  (``vif<domid>.<devid>``, Xen's names) there: they cannot collide with the first host's;
- a veth pair joining ``bridge`` (the first host's: a test bridge from bridge.py, or its xenbr0)
  to the second host's xenbr0, so guests on both hosts share one L2 segment;
- Dom0 addresses on that link: ``<subnet>.1/24`` on ``bridge`` (the first host's Dom0, the
  root namespace) and ``<subnet>.2/24`` on the second host's xenbr0 (link-local: 169.254.x.y,
  a /24 so no other link-local route, such as a cloud's 169.254.169.254, is touched);
- a real sshd (Debian's openssh-server) inside the namespace on a non-standard port, with a
  throw-away host key and a throw-away client key, whose sessions run commands with the second
  host's PYXEN_ROOT and the venv's ``xl`` first on PATH. So ``ssh -p PORT -i KEY root@ADDR xl
  list`` from the first host is ``xl list`` on the second, and ``xl migrate -s
  "<ssh_command>" <dom> <addr>`` goes over real ssh.

Processes enter the namespace through :func:`netns_argv`, which is ``ip netns exec`` except
that the cgroup hierarchy stays mounted (``ip netns exec`` mounts a fresh /sys without it, which
would leave the second host without the cpu controller its credit scheduler uses), and with a
hostname of its own (``xl info host`` says ``pxh<tag>``).

Everything is removed on exit, also on failure: sshd, the daemons, their QEMUs, any other
process left in the namespace, the veth pair, the address on ``bridge``, the namespace (and with
it its xenbr0 and TAPs) and the temporary directories.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from pyxen.images.demo import DemoImage
from pyxen.paths import Paths

from .bridge import sh
from .host import BIN, Host, qemu_pids_under

#: sshd's port inside the second host's namespace (its own address, so no clash with a host sshd).
SSH_PORT = 2222
#: The /24 of the link between the two Dom0s: .1 is the first host, .2 the second.
DEFAULT_SUBNET = "169.254.78"
SSHD = "/usr/sbin/sshd"
READY_TIMEOUT = 30.0

#: Run by ``sh -c`` in a fresh mount namespace already inside the network namespace: a sysfs
#: of that namespace (so /sys/class/net lists its interfaces) with the cgroup mounts bound back
#: in, moved over /sys; then the command.
_ENTER = ('set -e; t=$1; n=$2; shift 2; mount -t sysfs sysfs "$t"; '
          'mount --rbind /sys/fs/cgroup "$t/fs/cgroup" 2>/dev/null || true; '
          'mount --move "$t" /sys; hostname "$n"; exec "$@"')


def netns_argv(ns: str, sysdir: Path, hostname: str | None = None) -> list[str]:
    """The argv prefix that runs a command inside network namespace ``ns``, as ``ip netns
    exec`` does, keeping /sys/fs/cgroup, in a UTS namespace of its own named ``hostname``
    (default ``ns``). ``sysdir`` is an empty directory it mounts through."""
    return ["unshare", "--mount", "--uts", "--propagation", "slave", "--",
            "nsenter", f"--net=/run/netns/{ns}", "--", "sh", "-c", _ENTER, "sh", str(sysdir),
            hostname or ns]


@dataclass
class SecondHost(Host):
    """A :class:`Host` whose ``run``/``xl`` (and so every Host helper) run inside its network
    namespace, plus what the first host needs to reach it over ssh."""

    ns: str = ""
    #: The second host's Dom0 address on the link, and the first host's.
    addr: str = ""
    local_addr: str = ""
    port: int = SSH_PORT
    #: The throw-away client key for root@addr.
    key: Path = Path()
    #: The ssh command without the host: what ``xl migrate -s`` takes.
    ssh_command: str = ""
    #: The root-namespace end of the veth pair (on the first host's bridge).
    veth: str = ""
    #: The second host's bridge (inside ``ns``).
    bridge: str = "xenbr0"
    workdir: Path = Path()

    def ns_argv(self) -> list[str]:
        return netns_argv(self.ns, self.workdir / "sys")

    def run(self, *argv: str, check: bool = False, timeout: float = 180,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """A pyxen command (``xl``, ``pyxen``: from the venv) inside the namespace."""
        return self.sh(str(BIN / argv[0]), *argv[1:], check=check, timeout=timeout, input=input)

    def sh(self, *argv: str, check: bool = False, timeout: float = 180,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Any command inside the namespace, with the second host's environment."""
        done = subprocess.run([*self.ns_argv(), *argv], env=self.env, capture_output=True,
                              text=True, timeout=timeout, input=input)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr}{done.stdout}")
        return done

    def ssh_argv(self, *command: str) -> list[str]:
        """``ssh ... root@addr command`` as the first host runs it."""
        return [*shlex.split(self.ssh_command), self.addr, *command]

    def ssh(self, *command: str, check: bool = False, timeout: float = 180,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on the second host over ssh, from the first host (this namespace)."""
        done = subprocess.run(self.ssh_argv(*command), capture_output=True, text=True,
                              timeout=timeout, input=input)
        if check and done.returncode != 0:
            raise AssertionError(f"ssh {' '.join(command)} exited {done.returncode}: {done.stderr}{done.stdout}")
        return done


def _ok(*argv: str) -> None:
    done = sh(*argv)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


def _ns_pids(ns: str) -> list[int]:
    out = sh("ip", "netns", "pids", ns).stdout.split()
    return [int(p) for p in out if p.isdigit()]


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _sshd_config(work: Path, addr: str, port: int) -> Path:
    cfg = work / "sshd_config"
    cfg.write_text(
        f"Port {port}\nListenAddress {addr}\nHostKey {work}/host_key\nPidFile {work}/sshd.pid\n"
        f"AuthorizedKeysFile {work}/authorized_keys\nForceCommand {work}/session\n"
        "PermitRootLogin prohibit-password\nAllowUsers root\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nX11Forwarding no\nAllowTcpForwarding no\nPrintMotd no\n"
        "PrintLastLog no\nUseDNS no\nLogLevel VERBOSE\n")
    return cfg


def _session_script(work: Path, env: dict[str, str]) -> Path:
    """sshd's ForceCommand: the command the client asked for, in the second host's environment."""
    lines = ["#!/bin/sh",
             f"export PYXEN_ROOT={shlex.quote(env['PYXEN_ROOT'])}",
             f"export PATH={shlex.quote(str(BIN))}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    if env.get("PYTHONPATH"):
        lines.append(f"export PYTHONPATH={shlex.quote(env['PYTHONPATH'])}")
    lines += ['[ -n "$SSH_ORIGINAL_COMMAND" ] || exec /bin/sh -i',
              'exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"', ""]
    script = work / "session"
    script.write_text("\n".join(lines))
    script.chmod(0o755)
    return script


def _wait_port(addr: str, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited {proc.returncode}: {log.read_text(errors='replace')}")
        try:
            with socket.create_connection((addr, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"sshd not reachable at {addr}:{port} within {READY_TIMEOUT:.0f} s: "
                       f"{log.read_text(errors='replace')}")


@contextmanager
def second_host(image: DemoImage, bridge: str, *, tag: str | None = None,
                subnet: str = DEFAULT_SUBNET, local_addr: str | None = "",
                port: int = SSH_PORT) -> Iterator[SecondHost]:
    """Start a second pyxen host in a network namespace of its own, its xenbr0 joined to the
    first host's ``bridge`` (which must exist) by a veth pair, with an sshd the first host can
    log in to. ``subnet`` is the Dom0s' /24 (``a.b.c``): the second Dom0 is ``a.b.c.2``, and
    ``local_addr`` (default ``a.b.c.1``; None: ``bridge`` already has an address on that /24)
    is put on ``bridge`` for the first. ``tag`` names the namespace ``pxh<tag>`` and the veth
    ``pxh<tag>a``/``b`` (default: from the pid). Yields a :class:`SecondHost`; removes everything
    on exit."""
    tag = tag or f"{os.getpid() % 100000}"
    ns, veth, peer = f"pxh{tag}", f"pxh{tag}a", f"pxh{tag}b"
    addr = f"{subnet}.2"
    local = f"{subnet}.1" if local_addr == "" else local_addr
    if not os.path.isdir(f"/sys/class/net/{bridge}/bridge"):
        raise RuntimeError(f"{bridge} is not a bridge on this host")
    if shutil.which("sshd") is None and not os.path.exists(SSHD):
        raise RuntimeError("no sshd: install Debian's openssh-server")
    work = Path(tempfile.mkdtemp(prefix="pyxen2-", dir="/tmp"))
    root = work / "root"
    root.mkdir()
    (work / "sys").mkdir()
    env = dict(os.environ, PYXEN_ROOT=str(root), PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    env.pop("XENSTORED_PATH", None)
    key = work / "id_ed25519"
    h = SecondHost(Paths.from_env(root), image, env, ns=ns, addr=addr, local_addr=local or "",
                   port=port, key=key, veth=veth, workdir=work,
                   ssh_command=shlex.join([
                       "ssh", "-F", "/dev/null", "-p", str(port), "-i", str(key), "-l", "root",
                       "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                       "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"]))
    made_ns = added_addr = False
    sshd: subprocess.Popen[bytes] | None = None
    try:
        # The namespace, its lo and xenbr0 (at the second Dom0's address), the veth between.
        _ok("ip", "netns", "add", ns)
        made_ns = True
        _ok("ip", "-n", ns, "link", "set", "lo", "up")
        _ok("ip", "-n", ns, "link", "add", h.bridge, "type", "bridge")
        _ok("ip", "link", "add", veth, "type", "veth", "peer", "name", peer, "netns", ns)
        _ok("ip", "link", "set", veth, "master", bridge)
        _ok("ip", "link", "set", veth, "up")
        _ok("ip", "-n", ns, "link", "set", peer, "master", h.bridge)
        _ok("ip", "-n", ns, "link", "set", peer, "up")
        _ok("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", h.bridge)
        _ok("ip", "-n", ns, "link", "set", h.bridge, "up")
        if local:
            _ok("ip", "addr", "add", f"{local}/24", "dev", bridge)
            added_addr = True
        # The second host's daemons, all inside the namespace.
        h.run("pyxen", "host", "start", check=True)
        # sshd with throw-away keys.
        for name in ("host_key", "id_ed25519"):
            _ok("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"pyxen-{name}",
                "-f", str(work / name))
        (work / "authorized_keys").write_text((work / "id_ed25519.pub").read_text())
        _session_script(work, env)
        cfg = _sshd_config(work, addr, port)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        log = work / "sshd.log"
        with open(log, "wb") as out:
            sshd = subprocess.Popen([*h.ns_argv(), SSHD, "-D", "-e", "-f", str(cfg)],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True)
        _wait_port(addr, port, sshd, log)
        yield h
    finally:
        if sshd is not None:
            _quietly(lambda: _stop(sshd))
        if made_ns:
            if root.joinpath("run").exists():
                _quietly(lambda: h.run("pyxen", "host", "destroy-all", timeout=60))  # (not saved)
                _quietly(lambda: h.run("pyxen", "host", "stop", timeout=120))
            _quietly(lambda: _kill_all(qemu_pids_under(root)))
            # Anything else still inside: ssh sessions, a daemon that did not stop.
            deadline = time.monotonic() + 10
            while (left := _ns_pids(ns)) and time.monotonic() < deadline:
                _kill_all(left)
                time.sleep(0.1)
        if added_addr:
            sh("ip", "addr", "del", f"{local}/24", "dev", bridge)
        sh("ip", "link", "del", veth)
        if made_ns:
            sh("ip", "netns", "del", ns)
        shutil.rmtree(work, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()  # (the last exec of netns_argv's prefix is sshd itself)
    proc.wait()


def _quietly(step: Callable[[], object]) -> None:
    """One cleanup step; a failure must not keep the later ones from running."""
    try:
        step()
    except Exception:  # noqa: BLE001 - cleanup goes on whatever happened
        pass
