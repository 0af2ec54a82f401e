"""xenstore errors as semantic classes, each carrying its wire name.

Spec: the ``xsd_errors[]`` table of xen/include/public/io/xs_wire.h and the per-op error rules
of docs/misc/xenstore.txt.  Code inside the daemon raises these; ``process.py`` turns them into
``ERROR "<wire>\\0"`` replies at exactly one point, and anything that is not a
``XenstoreError`` becomes ``EIO`` there.  The client library raises the same classes when a
reply carries an error name, so callers on both sides branch on types, not strings.

    XenstoreError (EIO)
     +-- InvalidArgument (EINVAL)      bad path, bad arguments, RM /
     +-- PermissionDenied (EACCES)     perms deny, or privileged op from a domU
     +-- AlreadyExists (EEXIST)        duplicate WATCH
     +-- NoEntry (ENOENT)              missing node / tx / watch / domain
     +-- OutOfMemory (ENOMEM)
     +-- QuotaExceeded (ENOSPC)        node, node-size, perms, transaction quotas
     +-- Busy (EBUSY)                  TRANSACTION_START inside a transaction
     +-- Conflict (EAGAIN)             transaction conflict at commit
     +-- TooBig (E2BIG)                reply too large; too many watches (4.17)
     +-- NotPermitted (EPERM)          an unprivileged caller changing a node's owner
     +-- NotSupported (ENOSYS)         unknown or unsupported message type
     +-- Unreachable (ConnectionError)   client: cannot connect to xenstored
     +-- Disconnected (ConnectionResetError)  client: xenstored closed the connection
     +-- NoReply (TimeoutError)        client: xenstored did not answer in time

The last three never travel on the wire: the client library raises them for transport
failures.  They are also ``OSError`` subclasses, so ``except OSError`` (a failed syscall, the
daemon gone) and ``except XenstoreError`` (anything xenstore-related) both catch them.
"""

from __future__ import annotations

import errno as _errno


class XenstoreError(Exception):
    """Root of xenstore errors; ``wire`` is the name sent in an ERROR reply."""

    wire: str = "EIO"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.wire)


class InvalidArgument(XenstoreError):
    wire = "EINVAL"


class PermissionDenied(XenstoreError):
    wire = "EACCES"


class AlreadyExists(XenstoreError):
    wire = "EEXIST"


class IsDirectory(XenstoreError):
    wire = "EISDIR"


class NoEntry(XenstoreError):
    wire = "ENOENT"


class OutOfMemory(XenstoreError):
    wire = "ENOMEM"


class QuotaExceeded(XenstoreError):
    wire = "ENOSPC"


class NotEmpty(XenstoreError):
    wire = "ENOTEMPTY"


class NotSupported(XenstoreError):
    wire = "ENOSYS"


class ReadOnly(XenstoreError):
    wire = "EROFS"


class Busy(XenstoreError):
    wire = "EBUSY"


class Conflict(XenstoreError):
    wire = "EAGAIN"


class AlreadyConnected(XenstoreError):
    wire = "EISCONN"


class TooBig(XenstoreError):
    wire = "E2BIG"


class NotPermitted(XenstoreError):
    wire = "EPERM"


class IOFailure(XenstoreError):
    wire = "EIO"


class _TransportError(XenstoreError, OSError):
    """Base of the client's transport errors: an OSError whose ``errno`` says what failed
    and whose ``str`` is the whole one-line message."""

    default_errno = _errno.EIO

    def __init__(self, message: str, errno: int | None = None) -> None:
        OSError.__init__(self, errno if errno is not None else self.default_errno, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Unreachable(_TransportError, ConnectionError):
    """``cannot reach xenstored at <socket> (<strerror>); is the host started?``"""

    default_errno = _errno.ECONNREFUSED


class Disconnected(_TransportError, ConnectionResetError):
    """xenstored closed the connection (it died or dropped us) before answering."""

    default_errno = _errno.ECONNRESET


class NoReply(_TransportError, TimeoutError):
    """``xenstored did not answer READ /path within 10 s``."""

    default_errno = _errno.ETIMEDOUT


_BY_WIRE: dict[str, type[XenstoreError]] = {
    cls.wire: cls
    for cls in (InvalidArgument, PermissionDenied, AlreadyExists, IsDirectory, NoEntry,
                OutOfMemory, QuotaExceeded, IOFailure, NotEmpty, NotSupported, ReadOnly,
                Busy, Conflict, AlreadyConnected, TooBig, NotPermitted)
}

ALL_ERRORS: tuple[type[XenstoreError], ...] = tuple(_BY_WIRE.values())


def error_from_wire(name: str, context: str = "") -> XenstoreError:
    """The error class for an ERROR reply's name (client side); unknown names -> EINVAL,
    as libxenstore does."""
    cls = _BY_WIRE.get(name, InvalidArgument)
    err = cls(f"{name}: {context}" if context else name)
    return err
