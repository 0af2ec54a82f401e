"""A started pyxen host in its own short PYXEN_ROOT, driven as a user drives it: through the
``xl`` and ``pyxen`` commands, against real daemons and real QEMU guests (Unix socket paths are
limited to 108 bytes, so roots are short paths under /tmp). Used by tests/conftest.py and bench/.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from pyxen.hypervisor.hostcfg import DEFAULT_TEXT
from pyxen.images.demo import DemoImage
from pyxen.paths import DEMO_CMDLINE, Paths

BIN = Path(sys.executable).parent
#: How long a TCG guest on a loaded 2-core machine may take to boot to its up line.
BOOT_TIMEOUT = 120.0
UP_LINE = "pyxen demo guest up"


def qemu_pids_under(root: Path) -> list[int]:
    """QEMU processes whose command line names a path under ``root``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmd and str(root).encode() in cmd:
            pids.append(int(proc.name))
    return pids


def daemon_argvs(root: Path) -> dict[int, list[str]]:
    """The pyxen daemons serving ``root`` (``python -m pyxen.<module> ... <root> ...``): pid ->
    command line. The daemons' twin of qemu_pids_under."""
    found: dict[int, list[str]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"-m" in argv and any(a.startswith(b"pyxen.") for a in argv) and str(root).encode() in argv:
            found[int(proc.name)] = [a.decode(errors="replace") for a in argv]
    return found


@dataclass
class Host:
    """A running pyxen host and helpers to use it as a user would."""

    paths: Paths
    image: DemoImage
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *argv: str, check: bool = False, timeout: float = 180,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [str(BIN / argv[0]), *argv[1:]]
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout,
                              input=input)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr}{done.stdout}")
        return done

    def xl(self, *args: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run("xl", *args, check=check, **kw)  # type: ignore[arg-type]

    def write_cfg(self, name: str, memory: int = 128, vcpus: int = 1, script: str | None = None,
                  extra_lines: str = "", cmdline_extra: str = "") -> Path:
        """A demo-guest config; ``script`` runs in the guest before its up line."""
        extra = f"{DEMO_CMDLINE} {cmdline_extra}".strip()
        if script is not None:
            extra += " pyxen.run=" + base64.b64encode(script.encode()).decode()
        cfg = self.paths.root / f"{name}.cfg"
        cfg.write_text(
            f'name = "{name}"\nmemory = {memory}\nvcpus = {vcpus}\n'
            f'kernel = "{self.image.kernel}"\nramdisk = "{self.image.ramdisk}"\n'
            f'extra = "{extra}"\n{extra_lines}')
        return cfg

    def create(self, name: str = "demo", **kw: object) -> int:
        cfg = self.write_cfg(name, **kw)  # type: ignore[arg-type]
        self.xl("create", str(cfg))
        return int(self.xl("domid", name).stdout)

    def console_text(self, name: str) -> str:
        try:
            return self.paths.console_log(name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_console(self, name: str, needle: str = UP_LINE, timeout: float = BOOT_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.console_text(name)
            if needle in text:
                return text
            time.sleep(0.1)
        raise AssertionError(f"{name}: no '{needle}' on the console within {timeout} s:\n{self.console_text(name)[-2000:]}")

    def domains(self) -> dict[str, dict[str, str]]:
        """xl list, parsed: name -> {id, mem, vcpus, state, time}."""
        out = self.xl("list").stdout.splitlines()
        rows = {}
        for line in out[1:]:
            name, domid, mem, vcpus, state, t = line.split()
            rows[name] = {"id": domid, "mem": mem, "vcpus": vcpus, "state": state, "time": t}
        return rows

    @contextmanager
    def supervisor_held(self) -> Iterator[None]:
        """Stop the supervisor for the block, so a daemon the test kills stays down until the
        test brings it back; afterwards ``pyxen host start`` restarts whatever is down (its exit
        status also counts xendomains' configs, which are the test's business)."""
        from pyxen.host.services import SUPERVISOR, stop_service
        stop_service(self.paths, SUPERVISOR)
        try:
            yield
        finally:
            self.run("pyxen", "host", "start")

    def info(self, field_name: str) -> str:
        return self.xl("info", field_name).stdout.strip()

    def xs_read(self, path: str) -> str | None:
        """One xenstore node's value, or None when it does not exist."""
        from pyxen.xenstore.client import XenstoreClient
        with XenstoreClient(self.paths.xenstored_socket) as xs:
            raw = xs.get(path)
        return raw.decode() if raw is not None else None

    def xs_subtree(self, domid: int) -> dict[str, str]:
        """The domain's xenstore area: path relative to /local/domain/<domid> -> value."""
        from pyxen.xenstore.client import XenstoreClient
        base = f"/local/domain/{domid}"
        out: dict[str, str] = {}
        with XenstoreClient(self.paths.xenstored_socket) as xs:
            def walk(rel: str) -> None:
                path = f"{base}/{rel}" if rel else base
                if rel:
                    out[rel] = (xs.get(path) or b"").decode()
                for child in xs.directory(path):
                    walk(f"{rel}/{child}" if rel else child)
            walk("")
        return out


@contextmanager
def started_host(image: DemoImage, prefix: str = "pyxen-", xenbr0: bool = True) -> Iterator[Host]:
    """``pyxen host start`` in a fresh root; stopped, with every QEMU under it, on exit. The
    guests a test leaves are destroyed first: ``host stop`` would save or shut them down
    (xendomains), which is slow and is the business of the tests that check it. ``xenbr0``
    False: no address and no DHCP service on xenbr0 (a benchmark's host, whose guests have no
    NIC, then never serves the machine's bridge in place of a test's host)."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    env = dict(os.environ, PYXEN_ROOT=str(root), PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    env.pop("XENSTORED_PATH", None)  # (set by libxenstore.py's binding for another daemon)
    h = Host(Paths.from_env(root), image, env)
    # xapi on free ports: the default 80/443 belong to the machine's own host (`make run`).
    h.paths.host_cfg.write_text(DEFAULT_TEXT.replace("xapi_port = 80", "xapi_port = 0")
                                .replace("xapi_https_port = 443", "xapi_https_port = 0")
                                .replace('xenbr0_address = "10.80.0.1/24"',
                                         'xenbr0_address = "10.80.0.1/24"' if xenbr0 else 'xenbr0_address = ""'))
    pem = h.paths.root / "xapi" / "xapi.pem"
    if _XAPI_PEM:  # the first host's (see _XAPI_PEM)
        pem.parent.mkdir(parents=True, exist_ok=True)
        pem.write_bytes(_XAPI_PEM[0])
        pem.chmod(0o600)
    try:
        h.run("pyxen", "host", "start", check=True)
        if not _XAPI_PEM and pem.exists():
            _XAPI_PEM.append(pem.read_bytes())
        yield h
    finally:
        # What `pyxen host destroy-all` and `pyxen host stop` do, in this process (two fewer
        # interpreters to start per test).
        from pyxen.cli.pyxen import host_stop
        from pyxen.host.xendomains import destroy_all
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    destroy_all(h.paths)
                except OSError:
                    pass  # no hypervisor to ask: host_stop starts it again for xendomains
                host_stop(h.paths)
        finally:
            for pid in qemu_pids_under(root):
                os.kill(pid, signal.SIGKILL)
            shutil.rmtree(root, ignore_errors=True)


#: The TLS certificate the first test host's xapi made, given to every later one: making an
#: RSA key costs 0.3-1 s of CPU per host start, and one made per test session tests the same.
_XAPI_PEM: list[bytes] = []
