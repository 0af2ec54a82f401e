"""Request handling: one table from message type to handler; errors become wire names here.

Spec: docs/misc/xenstore.txt (every request's payload, reply and errors) and
xen/include/public/io/xs_wire.h.  Argument rules follow C xenstored 4.17: single-argument
requests must hold exactly one NUL, at the very end (EINVAL otherwise); WRITE needs at least
one NUL; an unknown tx_id is ENOENT; a reply larger than 4096 bytes becomes E2BIG; unknown or
removed types (RESTRICT, 23..26 which 4.17 does not know, WATCH_EVENT, ERROR) are ENOSYS.
Events caused by a request are queued before its reply; WATCH replies first, then sends its
initial event.

``process_packet`` never raises: a ``XenstoreError`` is answered with its ``wire`` name, and
anything else is logged with its traceback and answered with EIO.
"""

from __future__ import annotations

import logging
from typing import Callable, Union

from . import quota
from .access_log import log_request
from .connection import Connection, Watch
from .connections import SPECIAL_WATCHES
from .errors import (AlreadyExists, Busy, InvalidArgument, NoEntry, NotSupported,
                     PermissionDenied, TooBig, XenstoreError)
from .perms import OWNER, READ, format_perms, parse as parse_perms, rights
from .store import Node, Parts, canonicalize, check_path, domain_path, split
from .transaction import Transaction
from .wire import (DOMID_SELF, HEADER, OK, PAYLOAD_MAX, Op, Packet, encode, encode_error,
                   encode_watch_event, join_strings, split_strings)
from .xenstored import Xenstored

log = logging.getLogger(__name__)

#: A handler's answer: the reply payload, or the payload and an action to run after the
#: reply is queued (WATCH's initial event).
Result = Union[bytes, tuple[bytes, Callable[[], None]]]
Handler = Callable[[Xenstored, Connection, Packet], Result]


# --- argument parsing ------------------------------------------------------------------------
def _decode(raw: bytes) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidArgument("non-ASCII argument") from None


def onearg(payload: bytes) -> str:
    """The single NUL-terminated argument; :raise InvalidArgument: otherwise."""
    if not payload or payload[-1] != 0 or payload.find(b"\0") != len(payload) - 1:
        raise InvalidArgument("expected exactly one argument")
    return _decode(payload[:-1])


def args(payload: bytes, n: int) -> list[str]:
    """Exactly ``n`` NUL-terminated strings (trailing empty fields tolerated)."""
    if not payload or payload[-1] != 0:
        raise InvalidArgument("arguments must be NUL-terminated")
    parts = payload[:-1].split(b"\0")
    if len(parts) < n or any(parts[n:]):
        raise InvalidArgument(f"expected {n} arguments")
    return [_decode(p) for p in parts[:n]]


def domid_arg(text: str) -> int:
    if not text.isdigit() or len(text) > 10:
        raise InvalidArgument(f"bad domid {text!r}")
    return int(text)


def node_path(xs: Xenstored, conn: Connection, path: str) -> Parts:
    return split(canonicalize(path, conn.domid, xs.config.path_max))


#: Entries of ``Xenstored.read_paths`` before it is emptied (a bound, not a tuning knob).
READ_PATHS_MAX = 4096


def read_parts(xs: Xenstored, conn: Connection, payload: bytes) -> Parts:
    """READ's argument as path components.  Parsing and validating it is a pure function of
    the payload, the caller's domid (relative paths) and the fixed path_max, and reads are
    most of the traffic (backends re-read the same keys), so the result is remembered in
    ``xs.read_paths``; only valid paths are, so errors are always computed afresh."""
    key = (conn.caller.domid, payload)
    memo = xs.read_paths
    parts = memo.get(key)
    if parts is None:
        parts = node_path(xs, conn, onearg(payload))
        if len(memo) >= READ_PATHS_MAX:
            memo.clear()
        memo[key] = parts
    return parts


def transaction(xs: Xenstored, conn: Connection, pkt: Packet) -> Transaction:
    """The request's transaction: the open one named by tx_id, or a fresh tid-0 one."""
    if pkt.tx_id:
        txn = conn.transactions.get(pkt.tx_id)
        if txn is None:
            raise NoEntry(f"no transaction {pkt.tx_id}")
        return txn
    return Transaction(xs.store, 0, conn.caller, xs.config)


def finish(xs: Xenstored, txn: Transaction) -> None:
    """Commit a tid-0 operation and fire its watches (before the reply is queued)."""
    if not txn.tid and txn.changes:
        changes = txn.commit()
        xs.connections.fire(changes, xs.store.root)
    elif not txn.tid and txn.records:
        txn.commit()


def require_privileged(conn: Connection) -> None:
    if not conn.privileged:
        raise PermissionDenied("privileged operation")


# --- node operations --------------------------------------------------------------------------
def do_read(xs: Xenstored, conn: Connection, pkt: Packet) -> Result:
    return transaction(xs, conn, pkt).read(read_parts(xs, conn, pkt.payload))


_READ = int(Op.READ)


def fast_read(xs: Xenstored, conn: Connection, pkt: Packet) -> bool:
    """Answer a READ outside a transaction whose path was seen before and that succeeds,
    without a Transaction object or the generic handler machinery; False leaves the
    request to ``process_packet``'s general path, which produces every error (ENOENT,
    EACCES, E2BIG, EINVAL) exactly as before.  Same reply bytes, same access log line."""
    c = conn.caller
    parts = xs.read_paths.get((c.domid, pkt.payload))
    if parts is None:
        return False
    node: Node | None = xs.store.root
    for name in parts:  # store.lookup, inlined: this is the hottest loop of the daemon
        node = node.children.get(name)  # type: ignore[union-attr]
        if node is None:
            return False
    assert node is not None
    if not c.privileged and not rights(node.perms, c.domid, False, c.target) & READ:
        return False
    value = node.value
    if len(value) > PAYLOAD_MAX:
        return False
    conn.send(HEADER.pack(_READ, pkt.req_id, 0, len(value)) + value)
    if xs.config.access_log_reads:  # log_request skips READ lines otherwise
        log_request(conn.name, 0, _READ, pkt.payload, "OK", True)
    return True


def do_write(xs: Xenstored, conn: Connection, pkt: Packet) -> Result:
    payload = pkt.payload
    nul = payload.find(b"\0")
    if nul < 0:
        raise InvalidArgument("WRITE needs path\\0value")
    parts = node_path(xs, conn, _decode(payload[:nul]))
    txn = transaction(xs, conn, pkt)
    txn.write(parts, payload[nul + 1:])
    finish(xs, txn)
    return OK


def do_mkdir(xs: Xenstored, conn: Connection, pkt: Packet) -> Result:
    parts = node_path(xs, conn, onearg(pkt.payload))
    txn = transaction(xs, conn, pkt)
    txn.mkdir(parts)
    finish(xs, txn)
    return OK


def do_rm(xs: Xenstored, conn: Connection, pkt: Packet) -> Result:
    parts = node_path(xs, conn, onearg(pkt.payload))
    txn = transaction(xs, conn, pkt)
    txn.rm(parts)
    finish(xs, txn)
    return OK


def do_directory(xs: Xenstored, conn: Connection, pkt: Packet) -> Result:
    names = transaction(xs, conn, pkt).directory(node_path(xs, conn, onearg(pkt.payload)))
    return "".join(n + "\0" for n in names).encode()


def do_directory_part(xs: Xenstored, conn: Connection, pkt: Packet) -> Result:
    """``path\\0offset\\0`` -> ``gen\\0`` + whole names from byte ``offset`` that fit, and an
    empty name when the list ends there (C xenstored >= 4.9)."""
    path, offset_text = args(pkt.payload, 2)
    if not offset_text.isdigit():
        raise InvalidArgument("bad offset")
    offset = int(offset_text)
    node = transaction(xs, conn, pkt).node(node_path(xs, conn, path), READ)
    gen = f"{node.gen}\0".encode()
    children = "".join(n + "\0" for n in node.children).encode()
    room = PAYLOAD_MAX - len(gen) - 1
    if offset >= len(children):
        return gen + b"\0"
    end = offset
    while end < len(children):
        nxt = children.index(b"\0", end) + 1
        if nxt - offset > room:
            break
        end = nxt
    if end == offset:
        raise TooBig("child name too long")
    chunk = children[offset:end]
    return gen + chunk + (b"\0" if end == len(children) else b"")


def _special(path: str) -> bool:
    return path in SPECIAL_WATCHES


def do_get_perms(xs: Xenstored, conn: Connection, pkt: Packet) -> Result:
    path = onearg(pkt.payload)
    if _special(path):
        perms = xs.connections.special_perms[path]
    else:
        perms = transaction(xs, conn, pkt).get_perms(node_path(xs, conn, path))
    return join_strings([p.encode() for p in format_perms(perms)])


def do_set_perms(xs: Xenstored, conn: Connection, pkt: Packet) -> Result:
    payload = pkt.payload
    if not payload or payload[-1] != 0:
        raise InvalidArgument("SET_PERMS arguments must be NUL-terminated")
    items = [_decode(p) for p in split_strings(payload)]
    if len(items) < 2:
        raise InvalidArgument("SET_PERMS needs a path and at least one permission")
    path, perms = items[0], parse_perms(items[1:])
    if _special(path):
        c = conn.caller
        old = xs.connections.special_perms[path]
        if not rights(old, c.domid, c.privileged, c.target) & OWNER:
            raise PermissionDenied(path)
        xs.connections.special_perms[path] = perms
        return OK
    txn = transaction(xs, conn, pkt)
    txn.set_perms(node_path(xs, conn, path), perms)
    finish(xs, txn)
    return OK


# --- watches ----------------------------------------------------------------------------------
def do_watch(xs: Xenstored, conn: Connection, pkt: Packet) -> Result:
    """WATCH ``path\\0token\\0``: OK, then one initial event (C order)."""
    payload = pkt.payload
    if not payload or payload[-1] != 0:
        raise InvalidArgument("WATCH arguments must be NUL-terminated")
    parts = payload[:-1].split(b"\0")
    if len(parts) != 2:
        raise InvalidArgument("WATCH takes a path and a token")  # 4.17: no depth argument
    given, token = _decode(parts[0]), parts[1]
    if _special(given):
        path, relative = given, False
    else:
        path = canonicalize(given, conn.domid, xs.config.path_max)
        relative = not given.startswith("/")
    if (path, token) in conn.watches:
        raise AlreadyExists(f"watch {given} {token!r}")
    quota.check_watches(xs.config, conn.caller, len(conn.watches))
    xs.connections.watch(Watch(conn, path, token, relative))
    return OK, lambda: conn.send(encode_watch_event(given, token))


def do_unwatch(xs: Xenstored, conn: Connection, pkt: Packet) -> Result:
    given, token_text = args(pkt.payload, 2)
    path = given if _special(given) else canonicalize(given, conn.domid, xs.config.path_max)
    if not xs.connections.unwatch(conn, path, token_text.encode()):
        raise NoEntry(f"no watch {given} {token_text}")
    return OK


def do_reset_watches(xs: Xenstored, conn: Connection, pkt: Packet) -> Result:
    xs.connections.reset(conn)
    return OK


# --- transactions -----------------------------------------------------------------------------
def do_transaction_start(xs: Xenstored, conn: Connection, pkt: Packet) -> Result:
    if pkt.tx_id:
        raise Busy("transactions do not nest")
    quota.check_transactions(xs.config, conn.caller, len(conn.transactions))
    tid = conn.allocate_tid()
    conn.transactions[tid] = Transaction(xs.store, tid, conn.caller, xs.config)
    return f"{tid}\0".encode()


def do_transaction_end(xs: Xenstored, conn: Connection, pkt: Packet) -> Result:
    arg = onearg(pkt.payload)
    if arg not in ("T", "F"):
        raise InvalidArgument("TRANSACTION_END takes T or F")
    txn = conn.transactions.pop(pkt.tx_id, None) if pkt.tx_id else None
    if txn is None:
        raise NoEntry(f"no transaction {pkt.tx_id}")
    if arg == "T":
        changes = txn.commit()
        xs.connections.fire(changes, xs.store.root)
    return OK


# --- domains ----------------------------------------------------------------------------------
def do_introduce(xs: Xenstored, conn: Connection, pkt: Packet) -> Result:
    require_privileged(conn)
    domid_text, _gfn, port_text = args(pkt.payload, 3)
    domid = domid_arg(domid_text)
    if not port_text.isdigit() or int(port_text) <= 0:
        raise InvalidArgument("bad event channel")
    if xs.domains.introduce(domid):
        xs.connections.fire_special("@introduceDomain")
    return OK


def do_release(xs: Xenstored, conn: Connection, pkt: Packet) -> Result:
    require_privileged(conn)
    xs.release_domain(domid_arg(onearg(pkt.payload)))
    xs.connections.fire_special("@releaseDomain")
    return OK


def do_resume(xs: Xenstored, conn: Connection, pkt: Packet) -> Result:
    require_privileged(conn)
    domid = domid_arg(onearg(pkt.payload))
    if domid != 0 and domid not in xs.domains.table:
        raise NoEntry(f"domain {domid} not introduced")
    return OK


def do_set_target(xs: Xenstored, conn: Connection, pkt: Packet) -> Result:
    require_privileged(conn)
    domid_text, target_text = args(pkt.payload, 2)
    domid, target = domid_arg(domid_text), domid_arg(target_text)
    xs.domains.set_target(domid, target)
    for other in xs.connections.of_domain(domid):
        other.caller = other.caller._replace(target=target)
    return OK


def do_get_domain_path(xs: Xenstored, conn: Connection, pkt: Packet) -> Result:
    return f"{domain_path(domid_arg(onearg(pkt.payload)))}\0".encode()


def do_is_domain_introduced(xs: Xenstored, conn: Connection, pkt: Packet) -> Result:
    require_privileged(conn)
    domid = domid_arg(onearg(pkt.payload))
    return b"T\0" if xs.domains.is_introduced(domid) else b"F\0"


# --- control ----------------------------------------------------------------------------------
CONTROL_HELP = "check\nhelp\nlog\nprint\nquota\n"


def do_control(xs: Xenstored, conn: Connection, pkt: Packet) -> Result:
    """CONTROL (XS_DEBUG): implementation-defined; C's command names where they make sense."""
    require_privileged(conn)
    items = [_decode(p) for p in split_strings(pkt.payload)]
    if not items:
        raise InvalidArgument("CONTROL needs a command")
    cmd = items[0]
    if cmd == "help":
        return CONTROL_HELP.encode() + b"\0"
    if cmd == "print":
        log.info("CONTROL print: %s", " ".join(items[1:]))
        return OK
    if cmd in ("check", "log"):
        return OK
    if cmd == "quota":
        if len(items) > 1:
            domid = domid_arg(items[1])
            text = f"Domain {domid}: nodes {xs.store.owned.get(domid, 0)}\n"
        else:
            c = xs.config
            text = (f"Quota settings:\nnodes {c.quota_nodes}\nnode-size {c.quota_node_size}\n"
                    f"watches {c.quota_watches}\ntransactions {c.quota_transactions}\n"
                    f"node-permissions {c.quota_perms}\npath-max {c.path_max}\n"
                    f"transaction-nodes {c.quota_transaction_nodes}\n")
        return text.encode() + b"\0"
    raise InvalidArgument(f"unknown CONTROL command {cmd!r}")


# --- the table --------------------------------------------------------------------------------
HANDLERS: dict[int, Handler] = {
    Op.CONTROL: do_control,
    Op.DIRECTORY: do_directory,
    Op.READ: do_read,
    Op.GET_PERMS: do_get_perms,
    Op.WATCH: do_watch,
    Op.UNWATCH: do_unwatch,
    Op.TRANSACTION_START: do_transaction_start,
    Op.TRANSACTION_END: do_transaction_end,
    Op.INTRODUCE: do_introduce,
    Op.RELEASE: do_release,
    Op.GET_DOMAIN_PATH: do_get_domain_path,
    Op.WRITE: do_write,
    Op.MKDIR: do_mkdir,
    Op.RM: do_rm,
    Op.SET_PERMS: do_set_perms,
    Op.IS_DOMAIN_INTRODUCED: do_is_domain_introduced,
    Op.RESUME: do_resume,
    Op.SET_TARGET: do_set_target,
    Op.RESET_WATCHES: do_reset_watches,
    Op.DIRECTORY_PART: do_directory_part,
}

#: Requests whose tx_id is ignored (C's XS_FLAG_NOTID); for all others an unknown id is ENOENT.
IGNORE_TX_ID = frozenset({Op.WATCH, Op.UNWATCH, Op.RESET_WATCHES, Op.TRANSACTION_START})


def error_name(exc: BaseException) -> str:
    """The single translation point from an exception to a wire error name."""
    if isinstance(exc, XenstoreError):
        return exc.wire
    return "EIO"


def process_packet(xs: Xenstored, conn: Connection, pkt: Packet) -> None:
    """Answer one request on ``conn``.  Nothrow: every outcome is a reply."""
    op = pkt.op
    if op == _READ and not pkt.tx_id and fast_read(xs, conn, pkt):
        return
    after: Callable[[], None] | None = None
    try:
        handler = HANDLERS.get(op)
        if handler is None:
            raise NotSupported(f"message type {op}")
        if pkt.tx_id and op not in IGNORE_TX_ID and op != Op.TRANSACTION_END \
                and pkt.tx_id not in conn.transactions:
            raise NoEntry(f"no transaction {pkt.tx_id}")
        result = handler(xs, conn, pkt)
        if type(result) is tuple:
            result, after = result
        if len(result) > PAYLOAD_MAX:  # type: ignore[arg-type]
            raise TooBig("reply exceeds 4096 bytes")
        conn.send(HEADER.pack(op, pkt.req_id, pkt.tx_id, len(result)) + result)  # type: ignore
        outcome = "OK"
    except XenstoreError as err:
        outcome = err.wire
        conn.log.debug("%s: %s", _name(op), err)
        conn.send(encode_error(pkt.req_id, pkt.tx_id, outcome))
    except Exception as err:  # noqa: BLE001 - the nothrow guarantee
        outcome = error_name(err)
        conn.log.error("%s failed unexpectedly: %r", _name(op), err)
        conn.log.debug("traceback", exc_info=True)
        conn.send(encode_error(pkt.req_id, pkt.tx_id, outcome))
    log_request(conn.name, pkt.tx_id, op, pkt.payload, outcome, xs.config.access_log_reads)
    if after is not None:
        try:
            after()
        except Exception:  # noqa: BLE001
            conn.log.exception("post-reply action failed")


def _name(op: int) -> str:
    try:
        return Op(op).name
    except ValueError:
        return str(op)


__all__ = ["HANDLERS", "process_packet", "error_name", "encode", "check_path"]
