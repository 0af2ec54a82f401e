"""xapi's errors: one exception carrying the wire code and its parameters.

Handlers raise :class:`ApiError`; the dispatcher alone turns it into the wire's failure
envelope (XML-RPC ``ErrorDescription``, JSON-RPC ``error``), so no handler knows the encoding.
Every parameter is a string on the wire, as in xapi.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class ApiError(Exception):
    """``ApiError("HANDLE_INVALID", "VM", ref)`` -> ``["HANDLE_INVALID", "VM", ref]``."""

    def __init__(self, code: str, *params: object) -> None:
        self.code = code
        self.params = [str(p) for p in params]
        super().__init__(code, *self.params)

    @property
    def description(self) -> list[str]:
        return [self.code, *self.params]

    def __str__(self) -> str:
        return " ".join(self.description)


def handle_invalid(cls: str, ref: str) -> ApiError:
    return ApiError("HANDLE_INVALID", cls, ref)


@contextmanager
def domain_work() -> Iterator[None]:
    """Around a call into xenops: its failure (one line naming the domain and the step) becomes
    xapi's ``INTERNAL_ERROR [message]``. Calls whose failure has its own xapi code
    (VM_MIGRATE_FAILED, DEVICE_DETACH_REJECTED, VM_SHUTDOWN_TIMEOUT) catch it themselves."""
    from .xenops import XenopsError  # (xenops loads the toolstack: only when there is domain work)
    try:
        yield
    except XenopsError as err:
        raise ApiError("INTERNAL_ERROR", str(err)) from err
