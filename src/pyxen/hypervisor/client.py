"""A Dom0 tool's handle on the hypervisor (libxc's xc_interface): sync hypercalls over the socket."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path
from typing import Any

from .errors import HypercallError, from_wire
from .wire import MAX_LINE, Request, WireError, decode_reply, encode_request


class HypervisorUnavailable(HypercallError):
    """The control socket is not there: the host is not started."""


class XenCtrl:
    """One connection to the hypervisor; use as a context manager."""

    def __init__(self, path: Path, timeout: float = 120.0) -> None:
        self.path = path
        self._ids = itertools.count(1)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except OSError as err:
            self.sock.close()
            raise HypervisorUnavailable(
                f"cannot reach the hypervisor at {path} ({err.strerror}); is the host started? "
                "(pyxen host start)") from err
        self._file = self.sock.makefile("rb")

    def __enter__(self) -> "XenCtrl":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()
        self.sock.close()

    def call(self, op: str, **args: Any) -> Any:
        """Make hypercall ``op``; raise the HypercallError subclass the daemon raised."""
        req = Request(next(self._ids), op, args)
        self.sock.sendall(encode_request(req))
        line = self._file.readline(MAX_LINE)
        if not line:
            raise HypercallError(f"the hypervisor closed the connection during {op}", op)
        try:
            reply = decode_reply(line)
        except WireError as err:
            raise HypercallError(f"bad reply to {op}: {err}", op) from err
        if "error" in reply:
            raise from_wire(reply["error"])
        return reply["result"]
