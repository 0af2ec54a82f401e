"""async_xenapi — Async XenAPI session via JSON-RPC (stdlib only)."""

from .session import AsyncXenAPISession, XenAPIError, client_cert_context

__all__ = ["AsyncXenAPISession", "XenAPIError", "client_cert_context"]
