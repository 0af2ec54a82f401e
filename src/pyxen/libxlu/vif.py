"""A vif's ``rate=`` (xl-network-configuration(5), "rate"): Xen's libxlu_vif.c grammar and
arithmetic, so a rate gives the same "bytes,usecs" pair libxl writes to the backend's ``rate``
node and netback enforces.

Grammar: ``<N><unit>/s[@<interval>]``. ``<N>`` is read as C's strtoull(.., 0) reads it (so a
leading 0 means octal, as in Xen); units G, M, K are powers of 1000, ``B`` bytes and ``b`` bits
(divided by 8 after scaling). The interval is ``<N>`` followed by ``us``, ``ms`` or ``s`` (bare
``u``/``m`` work too, a bare number is seconds); the default is 50 ms. The bytes per interval
are ``bytes_per_sec * interval_usecs // 1000000``, truncated as libxlu does.

Errors carry libxlu's wording (``config parsing error in vif: invalid rate in `X'``); the caller
prefixes the config source (the file name, or "command line" for network-attach).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: libxlu_vif.c's two patterns (POSIX extended, anchored).
_BYTES_PER_SEC_RE = re.compile(r"[0-9]+[GMK]?[Bb]/s")
_INTERVAL_RE = re.compile(r"[0-9]+[mu]?s?")
#: libxlu's default replenishment interval (50 ms).
DEFAULT_INTERVAL_USECS = 50_000
UINT32_MAX = 0xFFFFFFFF
UINT64_MAX = 0xFFFFFFFFFFFFFFFF


class RateError(ValueError):
    """A rate libxlu refuses; ``str()`` is its message without the config source."""

    def __init__(self, what: str, text: str) -> None:
        super().__init__(f"config parsing error in vif: {what} in `{text}'")


@dataclass(frozen=True)
class Rate:
    """libxl_device_nic's rate_bytes_per_interval and rate_interval_usecs."""

    bytes_per_interval: int
    interval_usecs: int

    @property
    def xenstore(self) -> str:
        """The backend's ``rate`` node, as libxl__set_xenstore_nic writes it."""
        return f"{self.bytes_per_interval},{self.interval_usecs}"


def _strtoull0(text: str) -> tuple[int, str]:
    """C's strtoull(text, &end, 0) on a string known to start with decimal digits: a leading
    0 makes it octal (and stops at the first 8 or 9)."""
    if text.startswith("0"):
        m = re.match(r"0[0-7]*", text)
        assert m is not None
        return int(m.group(0), 8), text[m.end():]
    m = re.match(r"[0-9]+", text)
    assert m is not None
    return int(m.group(0)), text[m.end():]


def _bytes_per_sec(text: str) -> int:
    if not _BYTES_PER_SEC_RE.fullmatch(text):
        raise RateError("invalid rate", text)
    value, rest = _strtoull0(text)
    if value == 0 or value > UINT32_MAX:
        raise RateError("rate overflow", text)
    value *= {"G": 1000 ** 3, "M": 1000 ** 2, "K": 1000}.get(rest[:1], 1)
    if rest[:1] == "b" or rest[1:2] == "b":
        value //= 8
    return value


def _interval_usecs(text: str) -> int:
    if not _INTERVAL_RE.fullmatch(text):
        raise RateError("invalid replenishment interval", text)
    value, rest = _strtoull0(text)
    if value == 0 or value > UINT32_MAX:
        raise RateError("replenishment interval overflow", text)
    if rest[:1] in ("s", ""):
        value *= 1000 * 1000
    elif rest[:1] == "m":
        value *= 1000
    if value > UINT32_MAX:
        raise RateError("replenishment interval overflow", text)
    return value


def parse_rate(text: str) -> Rate:
    """``rate=`` as xlu_vif_parse_rate reads it. :raise RateError: with libxlu's message."""
    amount, at, interval = text.partition("@")
    if amount == "":
        raise RateError("no rate specified", text)
    per_sec = _bytes_per_sec(amount)
    usecs = _interval_usecs(interval) if at else DEFAULT_INTERVAL_USECS
    if per_sec > UINT64_MAX // usecs:
        raise RateError("rate overflow", text)
    return Rate(per_sec * usecs // 1_000_000, usecs)


__all__ = ["DEFAULT_INTERVAL_USECS", "Rate", "RateError", "parse_rate"]
