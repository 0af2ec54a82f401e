"""Running a device's hotplug script with Xen's convention (libxl_linux.c get_hotplug_env,
libxl__hotplug_disk / __hotplug_nic, libxl_device.c device_hotplug), for disks and vifs alike.

Xen's convention, which a Xen user's own scripts (and Debian's /etc/xen/scripts) rely on:

- argv: ``<script> add|remove`` for a vbd; ``<script> online|offline type_if=vif`` for a vif;
- environment, on top of the caller's: ``script`` (the script's path), ``XENBUS_TYPE`` (the
  backend kind), ``XENBUS_PATH`` (``backend/<kind>/<domid>/<devid>``, relative to the backend
  domain's home, as xenstore-read resolves it for Dom0), ``XENBUS_BASE_PATH`` (``backend``);
  vifs also get ``netdev`` (the gatewaydev node) and ``vif`` (the interface name): the network
  code passes those in ``extra_env``;
- stdin is /dev/null; a script reports through xenstore: ``hotplug-status`` = ``connected``
  (or ``error``/``busy`` with a sentence in ``hotplug-error``);
- one run may take LIBXL_HOTPLUG_TIMEOUT (40 s), then it is killed.

pyxen adds ``XENSTORED_PATH`` so that the xenstore tools a script calls (Debian's
xenstore-utils) reach this host's xenstored, and ``PYXEN_ROOT``. A relative script name is
looked up in ``$PYXEN_ROOT/scripts`` (Xen's /etc/xen/scripts). What the scripts write on stderr
(and stdout, which libxl sends there too) is appended to ``log/xen-hotplug.log``.

The messages are libxl's (``script: <hotplug-error>``, ``<script> add [pid] exited with error
status N``, ``killing execution of <script> add because of timeout``); a script that exits 0
but never says ``connected`` gets xend's "could not be connected. Hotplug scripts not working."
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from ..paths import Paths

#: libxl's LIBXL_HOTPLUG_TIMEOUT: how long one run of a script may take (seconds).
HOTPLUG_TIMEOUT = 40.0
#: How long the toolstack waits for ``hotplug-status`` once the script has exited (libxl's
#: LIBXL_INIT_TIMEOUT, seconds): a script that exits 0 has normally written it already.
STATUS_TIMEOUT = 10.0
#: The argument a script gets for attaching and detaching, by backend kind.
ACTIONS: dict[str, tuple[str, str]] = {"vbd": ("add", "remove"), "vif": ("online", "offline")}


class HotplugScriptError(RuntimeError):
    """A hotplug script failed or timed out: the message is libxl's lines (one per line)."""


@dataclass(frozen=True)
class HotplugDevice:
    """The device a script is run for (libxl__device: kind, frontend domid, devid)."""

    kind: str
    domid: int
    devid: int
    backend_domid: int = 0

    @property
    def xenbus_path(self) -> str:
        """``XENBUS_PATH`` as libxl gives it: relative to the backend domain's home."""
        return f"backend/{self.kind}/{self.domid}/{self.devid}"

    @property
    def backend_path(self) -> str:
        return f"/local/domain/{self.backend_domid}/{self.xenbus_path}"


def resolve_script(paths: Paths, script: str) -> Path:
    """An absolute script path as given; a name relative to ``$PYXEN_ROOT/scripts`` (libxl
    makes a relative ``script=`` absolute against /etc/xen/scripts the same way)."""
    p = Path(script)
    return p if p.is_absolute() else paths.scripts_dir / p


def action_word(kind: str, add: bool) -> str:
    """``add``/``remove`` (vbd) or ``online``/``offline`` (vif)."""
    try:
        return ACTIONS[kind][0 if add else 1]
    except KeyError:
        raise ValueError(f"no hotplug script convention for device kind '{kind}'") from None


def hotplug_argv(script: Path, kind: str, add: bool) -> list[str]:
    """The script's argv (libxl__hotplug_disk / libxl__hotplug_nic)."""
    argv = [str(script), action_word(kind, add)]
    if kind == "vif":
        argv.append("type_if=vif")
    return argv


def hotplug_env(paths: Paths, dev: HotplugDevice, script: Path,
                extra_env: Mapping[str, str] | None = None,
                base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The script's environment: ``base`` (default: this process's) plus get_hotplug_env's
    variables, ``XENSTORED_PATH``/``PYXEN_ROOT``, and ``extra_env`` (a vif's netdev and vif)."""
    env = dict(os.environ if base is None else base)
    env.update({"script": str(script), "XENBUS_TYPE": dev.kind, "XENBUS_PATH": dev.xenbus_path,
                "XENBUS_BASE_PATH": "backend", "XENSTORED_PATH": str(paths.xenstored_socket),
                "PYXEN_ROOT": str(paths.root)})
    env.update(extra_env or {})
    return env


def run_hotplug_script(paths: Paths, dev: HotplugDevice, script: str, add: bool,
                       extra_env: Mapping[str, str] | None = None,
                       read_error: Callable[[], str | None] | None = None,
                       timeout: float = HOTPLUG_TIMEOUT) -> None:
    """Run ``script`` for ``dev`` (``add``: attach, else detach) and wait for it, at most
    ``timeout`` seconds (then it is killed with its process group). Its output goes to
    ``paths.hotplug_log``.

    ``read_error`` returns the device's ``hotplug-error`` node (the caller has the xenstore
    connection); it is asked only when the script failed.

    :raise HotplugScriptError: the script cannot be run, exits non-zero or times out; the
        message is libxl's (``script: <hotplug-error>`` first when the script left one).
    """
    path = resolve_script(paths, script)
    argv = hotplug_argv(path, dev.kind, add)
    what = " ".join(argv[:2])
    paths.hotplug_log.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.hotplug_log, "ab") as logf:
        logf.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {what} ({dev.xenbus_path})\n".encode())
        logf.flush()
        try:
            proc = subprocess.Popen(argv, env=hotplug_env(paths, dev, path, extra_env),
                                    stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                    start_new_session=True)
        except OSError as err:
            raise HotplugScriptError(f"cannot execute {what}: {err.strerror}") from err
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            raise HotplugScriptError(f"killing execution of {what} because of timeout") from None
    if status == 0:
        return
    lines = []
    error = read_error() if read_error is not None else None
    if error:
        lines.append(f"script: {error}")
    if status < 0:
        lines.append(f"{what} [{proc.pid}] died due to fatal signal {signal.Signals(-status).name}")
    else:
        lines.append(f"{what} [{proc.pid}] exited with error status {status}")
    raise HotplugScriptError("\n".join(lines))


def wait_hotplug_status(read: Callable[[str], str | None], dev: HotplugDevice,
                        timeout: float = STATUS_TIMEOUT,
                        sleep: Callable[[float], None] = time.sleep,
                        clock: Callable[[], float] = time.monotonic) -> None:
    """Until the script's ``hotplug-status`` says ``connected``. ``read(key)`` reads a node of
    the device's backend directory (None when missing).

    :raise HotplugScriptError: ``error``/``busy`` (with the script's ``hotplug-error``), or
        nothing within ``timeout``: xend's "Hotplug scripts not working".
    """
    deadline = clock() + timeout
    while True:
        status = read("hotplug-status")
        if status == "connected":
            return
        if status in ("error", "busy"):
            error = read("hotplug-error") or f"hotplug-status is {status}"
            raise HotplugScriptError(f"script: {error}")
        if clock() >= deadline:
            raise HotplugScriptError(f"Device {dev.devid} ({dev.kind}) could not be connected. "
                                     "Hotplug scripts not working.")
        sleep(0.05)


__all__ = ["ACTIONS", "HOTPLUG_TIMEOUT", "HotplugDevice", "HotplugScriptError", "STATUS_TIMEOUT",
           "action_word", "hotplug_argv", "hotplug_env", "resolve_script", "run_hotplug_script",
           "wait_hotplug_status"]
