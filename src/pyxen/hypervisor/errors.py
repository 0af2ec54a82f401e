"""Errors of the hypervisor, as a hypercall returns them: an errno and the operation's name.

Tree::

    HypercallError(OSError)        .op = "domctl.createdomain", .errno
     +-- NoSuchDomain              ESRCH: no domain with that id
     +-- OutOfMemory               ENOMEM: the host pool cannot cover the reservation
     +-- PermissionDenied          EPERM: caller is not Dom0 (not root)
     +-- InvalidArgument           EINVAL: a malformed or impossible request
     +-- DomainExists              EEXIST: a live domain already has that name or uuid
     +-- DeviceModelError          EIO: QEMU failed to start or to obey
     +-- NotImplementedByXen       ENOSYS: a request this hypervisor has no handler for
     +-- NoSuchEntry               ENOENT: no such node (a hypervisor parameter, as hypfs)

Wire form (control.py): ``{"errno": "ESRCH", "message": "..."}``; ``from_wire`` turns it back into
the same class on the client side, so the toolstack can branch on type.
"""

from __future__ import annotations

import errno as errnomod


class HypercallError(OSError):
    """A hypercall failed; ``op`` names it, ``errno`` says why."""

    errno_value = errnomod.EIO

    def __init__(self, message: str, op: str = "") -> None:
        super().__init__(self.errno_value, message)
        self.op = op
        self.message = message

    def __str__(self) -> str:
        return self.message

    def to_wire(self) -> dict[str, str]:
        return {"errno": errnomod.errorcode.get(self.errno_value, "EIO"), "message": self.message,
                "op": self.op}


class NoSuchDomain(HypercallError):
    errno_value = errnomod.ESRCH


class OutOfMemory(HypercallError):
    errno_value = errnomod.ENOMEM


class PermissionDenied(HypercallError):
    errno_value = errnomod.EPERM


class InvalidArgument(HypercallError):
    errno_value = errnomod.EINVAL


class DomainExists(HypercallError):
    errno_value = errnomod.EEXIST


class DeviceModelError(HypercallError):
    errno_value = errnomod.EIO


class NotImplementedByXen(HypercallError):
    errno_value = errnomod.ENOSYS


class NoSuchEntry(HypercallError):
    errno_value = errnomod.ENOENT


_BY_ERRNO = {c.errno_value: c for c in (NoSuchDomain, OutOfMemory, PermissionDenied,
                                        InvalidArgument, DomainExists, NotImplementedByXen,
                                        NoSuchEntry)}


def from_wire(data: dict[str, str]) -> HypercallError:
    """The error a reply carries, as the class the daemon raised (EIO for unknown names)."""
    code = getattr(errnomod, data.get("errno", "EIO"), errnomod.EIO)
    cls = _BY_ERRNO.get(code, HypercallError)
    err = cls(data.get("message", "hypercall failed"), data.get("op", ""))
    err.errno = code  # an errno without a class of its own (EBUSY, ENODEV...) is kept too
    return err
