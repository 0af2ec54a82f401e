"""The access log: one fixed-column line per request, on logger ``pyxen.xenstore.access``.

Modelled on oxenstored's logging.ml access log: connection, tid, op, then the payload with
NULs shown as spaces, cut to a fixed width; reads only when asked (they dominate traffic).
"""

from __future__ import annotations

import logging

from .wire import Op

access = logging.getLogger("pyxen.xenstore.access")

WIDTH = 180
_READ_OPS = frozenset({Op.READ, Op.DIRECTORY, Op.DIRECTORY_PART, Op.GET_PERMS})


def _op_name(op: int) -> str:
    try:
        return Op(op).name
    except ValueError:
        return f"OP{op}"


def log_request(conn_name: str, tx_id: int, op: int, payload: bytes, result: str,
                log_reads: bool) -> None:
    """One line; cheap no-op unless the access logger is enabled at INFO."""
    if not access.isEnabledFor(logging.INFO) or (op in _READ_OPS and not log_reads):
        return
    text = payload[:WIDTH].replace(b"\0", b" ").decode("ascii", "replace")
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    line = f"{conn_name:>8}.{tx_id:<4} {_op_name(op):<20} {result:<7} {text}"
    access.info(line[:WIDTH])
