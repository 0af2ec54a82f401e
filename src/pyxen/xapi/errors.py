"""xapi's errors: one exception carrying the wire code and its parameters.

Handlers raise :class:`ApiError`; the dispatcher alone turns it into the wire's failure
envelope (XML-RPC ``ErrorDescription``, JSON-RPC ``error``), so no handler knows the encoding.
Every parameter is a string on the wire, as in xapi.
"""

from __future__ import annotations


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
