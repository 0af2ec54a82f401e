"""The ``xl console`` client (Xen's xenconsole): a raw terminal on a guest's console.

xenconsoled serves each guest's console on a socket and names it in the guest's
``/local/domain/<id>/console/tty`` (where Xen's xenconsoled names the pty); this client reads
that key, falling back to ``Paths.console_socket(domid)`` when xenstore has no answer, and
relays keystrokes to the guest and its output to the terminal. Ctrl-] (0x1d) detaches, as in Xen.
Imports no part of the daemon: only paths and the xenstore client.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import sys
import termios
import time
import tty
from pathlib import Path

from ..paths import Paths
from ..xenstore.client import XenstoreClient
from ..xenstore.errors import XenstoreError

ESCAPE = 0x1D  # ^]
#: How long xenstore may take to say where the console is (seconds).
XS_TIMEOUT = 5.0
#: How long to wait for xenconsoled to serve a console that is not there yet (a domain just
#: created, xenconsoled restarting under its supervisor), in seconds.
CONNECT_WAIT = 5.0


class ConsoleUnavailable(RuntimeError):
    """xenconsoled does not serve the domain's console; the message is xl's one line."""


#: xl console -t's names (libxl_console_type); None is the domain's primary console.
CONSOLE_TYPES = ("pv", "serial", "vuart")


def tty_node(xs: XenstoreClient | None, domid: int, ctype: str, num: int = 0) -> str:
    """The xenstore key naming console ``ctype`` number ``num``, as xenconsole looks it up: a
    serial console not in the store falls back to the PV one; PV console 0 is ``console/tty``,
    the others ``device/console/<num>/tty``; the vuart is ``vuart/0/tty``."""
    dp = f"/local/domain/{domid}"
    if ctype == "serial":
        node = f"{dp}/serial/{num}/tty"
        try:
            if xs is not None and xs.get(node) is not None:
                return node
        except (OSError, XenstoreError):
            pass
        ctype = "pv"
    if ctype == "vuart":
        return f"{dp}/vuart/0/tty"
    return f"{dp}/console/tty" if num == 0 else f"{dp}/device/console/{num}/tty"


def console_socket(paths: Paths, domid: int, ctype: str = "pv", num: int = 0) -> Path | None:
    """Where the console is served: its tty key; PV console 0 falls back to xenconsoled's default
    path when xenstore has no answer; None for another console the store does not name."""
    node = f"/local/domain/{domid}/console/tty"
    try:
        with XenstoreClient(paths.xenstored_socket, timeout=XS_TIMEOUT) as xs:
            node = tty_node(xs, domid, ctype, num)
            raw = xs.get(node)
    except (OSError, XenstoreError):
        raw = None
    if raw:
        return Path(raw.decode(errors="replace"))
    return paths.console_socket(domid) if node.endswith(f"/{domid}/console/tty") else None


def parse_escape(text: str) -> int:
    """xenconsole's --escape: ``^X`` (a control character) or one character.

    :raise ValueError: anything else ("Invalid escape argument").
    """
    if len(text) == 2 and text[0] == "^":
        return ord(text[1]) & 0x1F
    if len(text) == 1:
        return ord(text)
    raise ValueError(text)


def connect(paths: Paths, domid: int, wait: float = CONNECT_WAIT, ctype: str = "pv",
            num: int = 0) -> socket.socket:
    """A connection to xenconsoled's socket for ``domid``'s console ``ctype``/``num``, waiting
    up to ``wait`` seconds.

    :raise ConsoleUnavailable: nothing serves that console.
    """
    deadline = time.monotonic() + wait
    while True:
        path = console_socket(paths, domid, ctype, num)
        if path is None:
            if time.monotonic() >= deadline:
                raise ConsoleUnavailable("xenconsole: Could not read tty from store: No such file or directory")
            time.sleep(0.1)
            continue
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(path))
            return s
        except OSError as err:
            s.close()
            if domid == 0 or err.errno not in (errno.ENOENT, errno.ECONNREFUSED) \
                    or time.monotonic() >= deadline:
                raise ConsoleUnavailable(
                    f"Unable to attach console: xenconsoled does not serve domain {domid}'s "
                    f"console ({path}: {err.strerror})") from err
        time.sleep(0.1)


def attach(paths: Paths, domid: int, escape: int = ESCAPE, wait: float = CONNECT_WAIT,
           ctype: str = "pv", num: int = 0) -> int:
    """Relay stdin/stdout to the domain's console until escape or its side closes; xl's exit code."""
    try:
        s = connect(paths, domid, wait, ctype, num)
    except ConsoleUnavailable as err:
        print(str(err), file=sys.stderr)
        return 1
    fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
    saved = None
    if os.isatty(fd_in):
        saved = termios.tcgetattr(fd_in)
        tty.setraw(fd_in, termios.TCSANOW)  # keep what was typed ahead
    stdin_open = True
    try:
        while True:
            watch = [s] + ([fd_in] if stdin_open else [])
            ready, _, _ = select.select(watch, [], [])
            if s in ready:
                data = s.recv(4096)
                if not data:
                    return 0
                os.write(fd_out, data)
            if stdin_open and fd_in in ready:
                data = os.read(fd_in, 1024)
                if not data:
                    stdin_open = False  # keep showing output until the user detaches
                    continue
                if escape in data:
                    data = data[: data.index(escape)]
                    if data:
                        s.sendall(data)
                    return 0
                s.sendall(data)
    finally:
        if saved is not None:
            termios.tcsetattr(fd_in, termios.TCSADRAIN, saved)
            os.write(fd_out, b"\r\n")
        s.close()
