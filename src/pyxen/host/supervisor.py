"""The supervisor: restarts any of Dom0's daemons that dies, as systemd's ``Restart=always`` does
on a host that runs pyxen's units (systemd/ at the top of the tree).

``pyxen host start`` leaves one running (``python -m pyxen.host.supervisor --root R``, pid file
``run/supervisor.pid``, log ``log/supervisor.log``). It notices a death at once through a pidfd
per daemon (Linux's pidfd_open works for daemons it did not start too) and, as a fallback, by
re-reading the pid files every POLL seconds; it then starts the daemon again with the very
logic ``host start`` uses (:func:`services.start_service`), in the services' order. Only the
dead daemon is restarted: the others reconnect to it, which is what makes each one expendable.

A daemon that dies at once every time would be restarted in a loop; as systemd's
StartLimitBurst/StartLimitIntervalSec (defaults 5 in 10 s), at most START_LIMIT_BURST starts
of one daemon fall in any START_LIMIT_INTERVAL; past that the supervisor logs "start limit hit"
once and waits for the window to slide (systemd would give up until ``reset-failed``; here the
host has no operator to reset it, so it keeps trying at that slow rate).

``pyxen host stop`` stops the supervisor first (SIGTERM: it exits, abandoning a start under
way), then the daemons, so the two never fight. Its control socket answers every connection
with one JSON line: its pid and, per daemon, pid, restarts and state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ..daemon import arguments, daemon_process
from ..paths import Paths
from .services import Service, ServiceError, available_services, running_pid, start_service, status_line

log = logging.getLogger("pyxen.host.supervisor")

#: How often pid files are re-read (a death without a pidfd event: a daemon that removed its own
#: pid file on a clean exit, or one replaced by ``host start``).
POLL = 0.2
#: systemd's DefaultStartLimitBurst / DefaultStartLimitIntervalSec.
START_LIMIT_BURST = 5
START_LIMIT_INTERVAL = 10.0
#: How long a status client may take to read its line before it is dropped.
CLIENT_TIMEOUT = 1.0


@dataclass
class Watched:
    """What the supervisor knows of one daemon."""

    svc: Service
    pid: int | None = None
    #: A pidfd on ``pid``: readable once the process has exited.
    pidfd: int | None = None
    #: Monotonic times of the starts inside the current rate-limit window.
    starts: deque[float] = field(default_factory=deque)
    restarts: int = 0
    limited: bool = False
    last_error: str = ""

    @property
    def state(self) -> str:
        if self.pid is not None:
            return "running"
        return "start-limit-hit" if self.limited else "down"


class Supervisor:
    """Keeps ``services`` running on the host at ``paths``."""

    def __init__(self, paths: Paths, services: list[Service],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.paths = paths
        self.watched = [Watched(s) for s in services]
        self.clock = clock
        self.stopping = False
        self.selector = selectors.DefaultSelector()

    # --- one pass ------------------------------------------------------------------------------
    def check(self) -> None:
        """Look at every daemon in start order; restart each one that is not running."""
        for w in self.watched:
            if self.stopping:
                return
            pid = running_pid(self.paths, w.svc)
            if pid != w.pid:
                self._watch(w, pid)
            if pid is None:
                self._restart(w)

    def _watch(self, w: Watched, pid: int | None) -> None:
        if w.pidfd is not None:
            self.selector.unregister(w.pidfd)
            os.close(w.pidfd)
            w.pidfd = None
        w.pid = pid
        if pid is None:
            return
        try:
            w.pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # died in between: the next check restarts it
            w.pid = None
            return
        except OSError:  # no pidfd on this kernel: the POLL re-read still sees the death
            return
        self.selector.register(w.pidfd, selectors.EVENT_READ, w)

    def _restart(self, w: Watched) -> None:
        now = self.clock()
        while w.starts and now - w.starts[0] >= START_LIMIT_INTERVAL:
            w.starts.popleft()
        if len(w.starts) >= START_LIMIT_BURST:
            if not w.limited:
                wait = START_LIMIT_INTERVAL - (now - w.starts[0])
                log.error("%s: start limit hit (%d starts within %.0f s); next try in %.1f s",
                          w.svc.name, len(w.starts), START_LIMIT_INTERVAL, wait)
                w.limited = True
            return
        w.limited = False
        w.starts.append(now)
        log.warning("%s is not running; starting it", w.svc.name)
        try:
            pid, started = start_service(self.paths, w.svc, abort=lambda: self.stopping)
        except (ServiceError, OSError) as err:
            w.last_error = str(err).splitlines()[0]
            log.error("%s: restart failed: %s", w.svc.name, err)
            return
        w.restarts += started
        w.last_error = ""
        log.warning("%s %s (pid %d)", w.svc.name, "restarted" if started else "was already back", pid)
        self._watch(w, pid)

    def _reap(self) -> None:
        """Collect the exit status of daemons this process started, so none stays a zombie."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            log.warning("pid %d exited (%s)", pid, _describe(status))

    # --- control socket ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What the control socket answers: this process and each daemon's state."""
        return {"pid": os.getpid(),
                "services": {w.svc.name: {"pid": w.pid, "state": w.state, "restarts": w.restarts,
                                          "error": w.last_error} for w in self.watched}}

    def _answer(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        with conn:
            conn.settimeout(CLIENT_TIMEOUT)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(self.status()).encode() + b"\n")

    # --- main loop -----------------------------------------------------------------------------
    def run(self) -> int:
        sock_path = self.paths.supervisor_socket
        sock_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(sock_path))
        listener.listen(16)
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ, None)
        log.info("supervising %s (pid %d)", ", ".join(w.svc.name for w in self.watched), os.getpid())
        try:
            while not self.stopping:
                self.check()
                for key, _ in self.selector.select(POLL):
                    if key.data is None:
                        self._answer(listener)
                self._reap()
        finally:
            for w in self.watched:
                self._watch(w, None)
            self.selector.close()
            listener.close()
            sock_path.unlink(missing_ok=True)
        log.info("stopped")
        return 0


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"status {os.waitstatus_to_exitcode(status)}"


def query(paths: Paths, timeout: float = 2.0) -> dict[str, Any] | None:
    """The running supervisor's status line, or None if it does not answer within ``timeout``."""
    return status_line(paths.supervisor_socket, timeout)


def main(argv: list[str] | None = None) -> int:
    ns = arguments("python -m pyxen.host.supervisor", "restart any of Dom0's daemons that dies").parse_args(argv)
    paths = Paths.from_env(ns.root)
    with daemon_process(paths, "supervisor"):
        sup = Supervisor(paths, available_services())

        def stop(signum: int, _frame: object) -> None:
            log.info("%s: stopping", signal.Signals(signum).name)
            sup.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        return sup.run()


if __name__ == "__main__":
    raise SystemExit(main())
