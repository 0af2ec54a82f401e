"""A progress display for long storage work (allocating a full image, copying a disk, building a
guest image): one redrawn bar on a terminal, plain percentage lines in a log or a pipe.

A terminal gets ``label [#######.......]  42%  84.0/200.0 MiB`` redrawn in place with ``\\r``
(the way qemu-img ``-p`` and dd ``status=progress`` show it), ended by a newline when done.
Anything else (a CI log, a pipe to ``tee``) gets one ``label: 40%`` line each time another
``step`` percent is reached, so a log stays short and readable. Rendering is pure (``render_bar``,
``render_line``); ``Progress`` only decides when to write.

``run_qemu_img`` runs a qemu-img command with its own ``-p`` and feeds what it prints into a
``Progress``, so work that qemu-img does is shown the same way.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import tempfile
import time
from typing import Callable, TextIO

MiB = 1 << 20
#: Width of the bar's body in characters (fits 80 columns with a 24-character label).
BAR_WIDTH = 30
#: A non-terminal gets a line each time this many percent more is done.
LINE_STEP = 10
#: A terminal bar is redrawn at most this often (seconds), and always at 100%.
REDRAW_INTERVAL = 0.1
#: What qemu-img -p prints: "    (12.34/100%)" followed by a carriage return.
_QEMU_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


def percent(done: int, total: int) -> int:
    """Whole percent done, 0..100 (a zero total is complete)."""
    if total <= 0:
        return 100
    return max(0, min(100, done * 100 // total))


def render_bar(label: str, done: int, total: int, width: int = BAR_WIDTH) -> str:
    """The terminal line: label, a bar of ``width`` cells, the percentage and MiB done/total."""
    pct = percent(done, total)
    filled = width * pct // 100
    bar = "#" * filled + "." * (width - filled)
    return f"{label} [{bar}] {pct:3d}%  {done / MiB:.1f}/{total / MiB:.1f} MiB"


def render_line(label: str, done: int, total: int) -> str:
    """The plain line for logs: ``label: 40%``."""
    return f"{label}: {percent(done, total)}%"


class Progress:
    """Progress of one piece of work of ``total`` units (bytes, usually).

    :param stream: where to write (default stderr, so stdout stays the command's result).
    :param tty: force the terminal form on or off (default: whether ``stream`` is a terminal).
    """

    def __init__(self, label: str, total: int, stream: TextIO | None = None, tty: bool | None = None,
                 step: int = LINE_STEP, clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self._isatty(self.stream) if tty is None else tty
        self.step = step
        self.clock = clock
        self.done = 0
        self._last_pct = -1
        self._last_draw = float("-inf")
        self._finished = False

    @staticmethod
    def _isatty(stream: TextIO) -> bool:
        try:
            return stream.isatty()
        except (AttributeError, ValueError):
            return False

    def update(self, done: int) -> None:
        """``done`` units of ``total`` are done now."""
        self.done = max(0, min(done, self.total)) if self.total > 0 else done
        pct = percent(self.done, self.total)
        if self.tty:
            now = self.clock()
            if pct != self._last_pct and (pct == 100 or now - self._last_draw >= REDRAW_INTERVAL):
                self.stream.write("\r" + render_bar(self.label, self.done, self.total))
                self.stream.flush()
                self._last_pct, self._last_draw = pct, now
        else:
            shown = 100 if pct == 100 else pct - pct % self.step
            if shown > self._last_pct:
                self.stream.write(f"{self.label}: {shown}%\n")
                self.stream.flush()
                self._last_pct = shown

    def advance(self, units: int) -> None:
        """``units`` more are done."""
        self.update(self.done + units)

    def finish(self) -> None:
        """Show 100% and end the terminal line; idempotent."""
        if self._finished:
            return
        self.update(self.total)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
        self._finished = True

    def __enter__(self) -> "Progress":
        self.update(0)
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.finish()
        elif self.tty:  # leave the bar where it stopped, on its own line
            self.stream.write("\n")
            self.stream.flush()


class QemuImgError(RuntimeError):
    """qemu-img failed; the message is its last line of error output."""


def run_qemu_img(args: list[str], progress: Progress | None = None, timeout: float = 3600.0) -> None:
    """Run ``qemu-img <args>``; with ``progress``, add ``-p`` after the subcommand and show
    qemu-img's percentages on it (its total is taken as 100 units).

    :raise QemuImgError: qemu-img is missing, fails, or exceeds ``timeout`` seconds.
    """
    argv = ["qemu-img", args[0], *(["-p"] if progress is not None else []), *args[1:]]
    if progress is not None:
        progress.total = 100
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors)
        except FileNotFoundError as err:
            raise QemuImgError("qemu-img not found (install qemu-utils)") from err
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        buf = b""
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise QemuImgError(f"qemu-img {args[0]} did not finish in {timeout:.0f} s")
                ready, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
                if not ready:
                    continue
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf = (buf + chunk)[-256:]
                found = _QEMU_PROGRESS.findall(buf)
                if found and progress is not None:
                    progress.update(int(float(found[-1])))
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except (QemuImgError, subprocess.TimeoutExpired) as exc:
            proc.kill()
            proc.wait()
            raise QemuImgError(f"qemu-img {args[0]} did not finish in {timeout:.0f} s") from exc
        finally:
            proc.stdout.close()
        errors.seek(0)
        text = errors.read().decode(errors="replace")
    if rc != 0:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        raise QemuImgError(lines[-1] if lines else f"qemu-img {args[0]} exited {rc}")
    if progress is not None:
        progress.finish()
