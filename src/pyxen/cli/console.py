"""The ``xl console`` client (Xen's xenconsole): a raw terminal on a guest's console.

Keystrokes go to the guest, its output to the terminal; Ctrl-] (0x1d) detaches, as in Xen.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import termios
import tty
from pathlib import Path

ESCAPE = 0x1D  # ^]


def attach(sock_path: Path, escape: int = ESCAPE) -> int:
    """Relay stdin/stdout to the console socket until escape or the guest side closes."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(sock_path))
    except OSError as err:
        print(f"Unable to attach console: {sock_path}: {err.strerror}", file=sys.stderr)
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
