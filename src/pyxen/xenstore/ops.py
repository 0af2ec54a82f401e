"""The client side of every xenstore request, written once and run by two drivers.

Spec: docs/misc/xenstore.txt (each request's payload and reply) and xs_wire.h.  An operation
method returns what to do, never doing it: most return one ``Request`` (the bytes to send,
what to name in an error, how to decode the reply); compound ones (a transaction's retry
loop) are generators that yield Requests and are sent back each reply ``Packet``.  Nothing
here touches a socket, so the blocking ``client.XenstoreClient`` and the asyncio
``client.AsyncXenstoreClient`` run the very same code: what differs between them is only how
a request reaches xenstored (the driver's ``_drive``).  This is the "sans-I/O" shape of h11
and of the qemu.qmp message layer.

``operation`` turns such a method into a method of whichever driver inherits it:
on a blocking driver ``xs.read(p)`` returns bytes, on an asyncio driver it returns an
awaitable of bytes (mypy sees both, through the overloads of ``operation.__get__``).

``transaction_loop`` is the one EAGAIN retry loop of ``transact``: it yields ``RunBody`` where
the caller's body must run, and each driver runs the body its own way (called or awaited).
"""

from __future__ import annotations

from typing import (TYPE_CHECKING, Any, Awaitable, Callable, Concatenate, Generator, Generic,
                    NamedTuple, ParamSpec, Sequence, TypeVar, overload)

from .errors import Conflict, XenstoreError, error_from_wire
from .wire import Op, Packet, split_strings

if TYPE_CHECKING:
    from .client import AsyncDriver, SyncDriver

P = ParamSpec("P")
T = TypeVar("T")
Value = bytes | str
Event = tuple[str, str]


_RAISE: Any = object()


class Request(Generic[T]):
    """One request, and how to decode its reply: most operations are exactly one.

    ``what`` names its subject (a path, a domid) in errors; ``parse`` turns the reply
    payload into the result; ``missing``, when given, is the result of an ENOENT reply
    (``get``'s default, ``exists``'s False) instead of raising ``NoEntry``.
    """

    __slots__ = ("op", "payload", "tx", "what", "parse", "missing")

    def __init__(self, op: Op, payload: bytes, tx: int, what: str,
                 parse: Callable[[bytes], T], missing: Any = _RAISE) -> None:
        self.op = op
        self.payload = payload
        self.tx = tx
        self.what = what
        self.parse = parse
        self.missing = missing

    def describe(self) -> str:
        """``READ /local/domain/1/name``: how timeouts and disconnects name the request."""
        return f"{self.op.name} {self.what}" if self.what else self.op.name

    def reply(self, pkt: Packet) -> T:
        """The decoded result; :raise XenstoreError: the class an ERROR reply names."""
        if pkt.op == Op.ERROR:
            name = pkt.payload.rstrip(b"\0").decode("ascii", "replace")
            if name == "ENOENT" and self.missing is not _RAISE:
                return self.missing  # type: ignore[no-any-return]
            raise error_from_wire(name, self.what)
        if pkt.op != self.op:
            raise XenstoreError(f"reply type {pkt.op} to request {self.describe()}")
        return self.parse(pkt.payload)


class RunBody(NamedTuple):
    """``transact``'s request to its driver: run the caller's body in transaction ``tx``."""

    tx: int


Effect = Request[Any] | RunBody
#: A compound operation: yields Requests (is sent each reply Packet) or RunBody (is sent
#: the body's result), returns the result.
Gen = Generator[Effect, Any, T]
#: What an operation method returns: one request, or a generator of several.
Operation = Request[T] | Gen[T]


# --- payload building and reply decoding ------------------------------------------------------
def arg(text: str | int) -> bytes:
    """One NUL-terminated argument."""
    return str(text).encode() + b"\0"


def value_bytes(value: Value) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def strings(reply: bytes) -> list[str]:
    return [p.decode() for p in split_strings(reply)]


def text(reply: bytes) -> str:
    return reply.rstrip(b"\0").decode()


def flag(reply: bytes) -> bool:
    return reply.rstrip(b"\0") == b"T"


def ok(reply: bytes) -> None:
    """The reply of a request that answers "OK"."""


def event(pkt: Packet) -> Event:
    """A WATCH_EVENT packet as (path, token)."""
    parts = split_strings(pkt.payload)
    return parts[0].decode(), (parts[1].decode() if len(parts) > 1 else "")


def call(req: Request[T]) -> Gen[T]:
    """One request inside a compound operation: ``x = yield from call(req)``."""
    pkt = yield req
    return req.reply(pkt)


# --- the method descriptor --------------------------------------------------------------------
class operation(Generic[P, T]):
    """Makes a method that returns an ``Operation`` a method of the driver it is looked up
    on: ``xs.read(p)`` is ``xs._drive(NodeOperations.read.fn(xs, p))``."""

    def __init__(self, fn: Callable[Concatenate[Any, P], Operation[T]]) -> None:
        self.fn = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    @overload
    def __get__(self, obj: None, owner: type) -> "operation[P, T]": ...

    @overload
    def __get__(self, obj: "SyncDriver", owner: type) -> Callable[P, T]: ...

    @overload
    def __get__(self, obj: "AsyncDriver", owner: type) -> Callable[P, Awaitable[T]]: ...

    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:
            return self
        fn = self.fn
        drive = obj._drive

        def bound(*args: Any, **kwargs: Any) -> Any:
            return drive(fn(obj, *args, **kwargs))

        bound.__name__ = self.__name__
        bound.__doc__ = self.__doc__
        return bound


def operation_names(cls: type) -> frozenset[str]:
    """The public operations a class offers (for the parity tests)."""
    return frozenset(name for klass in cls.__mro__ for name, attr in vars(klass).items()
                     if isinstance(attr, operation) and not name.startswith("_"))


# --- operations on nodes: allowed inside a transaction ----------------------------------------
def _start_request() -> Request[int]:
    return Request(Op.TRANSACTION_START, b"\0", 0, "", lambda r: int(text(r)))


def _end_request(tx: int, commit: bool) -> Request[None]:
    return Request(Op.TRANSACTION_END, b"T\0" if commit else b"F\0", tx, "", ok)


class NodeOperations:
    """READ, WRITE, MKDIR, RM, DIRECTORY, GET_PERMS, SET_PERMS and the helpers built on them.

    ``tx`` None means the object's own transaction: 0 on a client, the id on a transaction.
    """

    tx: int = 0

    @operation
    def read(self, path: str, tx: int | None = None) -> Operation[bytes]:
        """:raise NoEntry: absent.  :raise PermissionDenied: not readable."""
        return Request(Op.READ, arg(path), self.tx if tx is None else tx, path, bytes)

    @operation
    def get(self, path: str, default: bytes | None = None,
            tx: int | None = None) -> Operation[bytes | None]:
        """``read`` that returns ``default`` for a missing node."""
        return Request(Op.READ, arg(path), self.tx if tx is None else tx, path, bytes,
                       missing=default)

    @operation
    def exists(self, path: str, tx: int | None = None) -> Operation[bool]:
        return Request(Op.READ, arg(path), self.tx if tx is None else tx, path,
                       lambda _: True, missing=False)

    @operation
    def write(self, path: str, value: Value, tx: int | None = None) -> Operation[None]:
        return Request(Op.WRITE, path.encode() + b"\0" + value_bytes(value),
                       self.tx if tx is None else tx, path, ok)

    @operation
    def mkdir(self, path: str, tx: int | None = None) -> Operation[None]:
        return Request(Op.MKDIR, arg(path), self.tx if tx is None else tx, path, ok)

    @operation
    def rm(self, path: str, tx: int | None = None) -> Operation[None]:
        return Request(Op.RM, arg(path), self.tx if tx is None else tx, path, ok)

    @operation
    def directory(self, path: str, tx: int | None = None) -> Operation[list[str]]:
        return Request(Op.DIRECTORY, arg(path), self.tx if tx is None else tx, path, strings)

    ls = directory

    @operation
    def get_perms(self, path: str, tx: int | None = None) -> Operation[list[str]]:
        return Request(Op.GET_PERMS, arg(path), self.tx if tx is None else tx, path, strings)

    @operation
    def set_perms(self, path: str, perms: Sequence[str],
                  tx: int | None = None) -> Operation[None]:
        return Request(Op.SET_PERMS, arg(path) + b"".join(arg(p) for p in perms),
                       self.tx if tx is None else tx, path, ok)


# --- operations of a connection ---------------------------------------------------------------
class ClientOperations(NodeOperations):
    """Node operations plus transactions, watches, domains and CONTROL."""

    @operation
    def transaction_start(self) -> Operation[int]:
        return _start_request()

    @operation
    def transaction_end(self, tx: int, commit: bool = True) -> Operation[None]:
        """:raise Conflict: (EAGAIN) the transaction conflicted; nothing of it is visible."""
        return _end_request(tx, commit)

    @operation
    def watch(self, path: str, token: str = "") -> Operation[None]:
        """Register; xenstored sends one initial event for it (read by ``wait_event``)."""
        return Request(Op.WATCH, arg(path) + arg(token or path), 0, path, ok)

    @operation
    def unwatch(self, path: str, token: str = "") -> Operation[None]:
        return Request(Op.UNWATCH, arg(path) + arg(token or path), 0, path, ok)

    @operation
    def reset_watches(self) -> Operation[None]:
        return Request(Op.RESET_WATCHES, b"\0", 0, "", ok)

    @operation
    def introduce(self, domid: int, gfn: int = 0, evtchn: int = 1) -> Operation[None]:
        """INTRODUCE: the store accepts the domain's own socket; fires @introduceDomain."""
        return Request(Op.INTRODUCE, arg(domid) + arg(gfn) + arg(evtchn), 0, str(domid), ok)

    @operation
    def release(self, domid: int) -> Operation[None]:
        """RELEASE: closes the domain's connection; fires @releaseDomain."""
        return Request(Op.RELEASE, arg(domid), 0, str(domid), ok)

    @operation
    def resume(self, domid: int) -> Operation[None]:
        """RESUME: the domain came back from suspend (xs_resume_domain)."""
        return Request(Op.RESUME, arg(domid), 0, str(domid), ok)

    @operation
    def set_target(self, domid: int, target: int) -> Operation[None]:
        """SET_TARGET: ``domid`` (a stub domain) acts with ``target``'s rights."""
        return Request(Op.SET_TARGET, arg(domid) + arg(target), 0, f"{domid} {target}", ok)

    @operation
    def get_domain_path(self, domid: int) -> Operation[str]:
        return Request(Op.GET_DOMAIN_PATH, arg(domid), 0, str(domid), text)

    @operation
    def is_domain_introduced(self, domid: int) -> Operation[bool]:
        return Request(Op.IS_DOMAIN_INTRODUCED, arg(domid), 0, str(domid), flag)

    @operation
    def control(self, *words: str) -> Operation[bytes]:
        """CONTROL (XS_DEBUG): ``control("quota")``; the reply's bytes."""
        return Request(Op.CONTROL, b"".join(arg(w) for w in words), 0, " ".join(words), bytes)


# --- transactions: the one retry loop ---------------------------------------------------------
def abort(tx: int) -> Gen[None]:
    """End ``tx`` without committing; a failure to say so is ignored (the transaction dies
    with the connection anyway)."""
    if tx:
        try:
            yield from call(_end_request(tx, False))
        except (XenstoreError, OSError):
            pass


def transaction_loop(retries: int) -> Gen[Any]:
    """Start a transaction, run the body (``RunBody``), commit; redo on EAGAIN, as the
    xenstore-* tools and libxl do.  The body's exception aborts and propagates."""
    for _ in range(retries):
        tx = yield from call(_start_request())
        try:
            result = yield RunBody(tx)
        except BaseException:
            yield from abort(tx)
            raise
        try:
            yield from call(_end_request(tx, True))
            return result
        except Conflict:
            continue
    raise Conflict(f"transaction still conflicting after {retries} attempts")


class TransactionOperations(NodeOperations):
    """Node operations bound to one transaction id, and its start/commit/abort."""

    @operation
    def _start(self) -> Gen[None]:
        self.tx = yield from call(_start_request())

    @operation
    def commit(self) -> Gen[None]:
        """:raise Conflict: (EAGAIN) nothing of the transaction is visible."""
        tx, self.tx = self.tx, 0
        yield from call(_end_request(tx, True))

    @operation
    def abort(self) -> Gen[None]:
        tx, self.tx = self.tx, 0
        yield from abort(tx)
