"""The hypercall wire format on the control socket: one JSON object per line.

Request ``{"id": 7, "op": "domctl.pausedomain", "args": {"domid": 3}}``; reply
``{"id": 7, "result": ...}`` or ``{"id": 7, "error": {"errno": "ESRCH", "message": ...}}``.
Pure codec: it frames and parses bytes and never touches a socket. Any line a peer sends is
either a Request/reply or a WireError (the daemon answers EINVAL and keeps serving).
"""

from __future__ import annotations

import json

from ..records import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from typing import Any

MAX_LINE = 1 << 20  # a domain config is a few KiB; anything near this is a broken peer
#: The notification a VIRQ_DOM_EXC subscriber receives (a line without an id).
VIRQ_DOM_EXC_LINE = b'{"virq":"dom_exc"}\n'
#: Bound on a domain's save or migration stream (QEMU's migration, either way), seconds. Shared
#: by the daemon, which cancels a stream that runs over, and by its clients, which must wait
#: that long (plus a normal call's bound) before they give up on such a hypercall.
SAVE_TIMEOUT = 600.0
#: A request that passes file descriptors (the migration pipe) names how many in this arg; the
#: daemon answers with a line ``{"id": N, "send_fds": n}`` and reads them (SCM_RIGHTS, with one
#: byte of data) before it runs the call, which then finds them as the list ``args["fds"]``.
SCM_RIGHTS_ARG = "scm_rights"
#: At most this many descriptors per request.
MAX_FDS = 4


class WireError(ValueError):
    """A frame that is not a valid request or reply."""


class Request(NamedTuple):
    """One hypercall on the wire. (A NamedTuple, not a dataclass: xl imports no dataclasses.)"""

    id: int
    op: str
    args: dict[str, Any]


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def encode_request(req: Request) -> bytes:
    return encode({"id": req.id, "op": req.op, "args": req.args})


def _loads(line: bytes) -> Any:
    """json.loads, with every way it refuses a line as WireError: bad JSON or bytes are
    ValueError (UnicodeDecodeError is one), and arrays or objects nested past the interpreter's
    recursion limit raise RecursionError, which is no ValueError."""
    try:
        return json.loads(line)
    except ValueError as err:
        raise WireError(f"not JSON: {err}") from err
    except RecursionError:
        raise WireError("not JSON: nested too deeply") from None


def decode_request(line: bytes) -> Request:
    obj = _loads(line)
    if not isinstance(obj, dict) or not isinstance(obj.get("op"), str):
        raise WireError("a request needs an 'op' string")
    args = obj.get("args", {})
    if not isinstance(args, dict) or not isinstance(obj.get("id", 0), int):
        raise WireError("'args' must be an object and 'id' an integer")
    return Request(obj.get("id", 0), obj["op"], args)


def decode_reply(line: bytes) -> dict[str, Any]:
    obj = _loads(line)
    if not isinstance(obj, dict) or not ({"result", "error", "virq", "send_fds"} & obj.keys()):
        raise WireError("a reply needs 'result' or 'error'")
    return obj
