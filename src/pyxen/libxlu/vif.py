"""xl's vif spec strings exactly as Xen reads them: the ``key=value`` loop of xl_parse.c
(parse_config_data's strtok over ",", parse_nic_config) and libxlu_vif.c's rate parser
(xlu_vif_parse_rate). docs/man/xl-network-configuration.5.pod describes the keys.

Pure: text in, a frozen ``VifSpec`` (libxl_device_nic's field names) out, plus the lines xl
prints. Two kinds of trouble, as in xl:

* reported and ignored: an unknown key, a bad ``mac=``, a bad ``type=`` make
  parse_nic_config return 1, which parse_config_data does not look at, so the domain is still
  built with what was read (a MAC parsed up to its bad octet keeps the octets before it);
  ``netdev=`` and ``accel=`` print a notice. These lines come back in ``VifParse.messages``.
* fatal: a bad ``rate=`` (xlu_vif_parse_rate's EINVAL/EOVERFLOW) and a ``devid=``/``mtu=`` that
  is not a number make xl exit 1: ``VifSyntaxError``.

What a vif does (bridge, rate limiting, MTU, the QEMU model) is the toolstack's and the
network backend's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .cfg import ULONG_MAX, strtoul_prefix

UINT32_MAX = (1 << 32) - 1
UINT64_MAX = (1 << 64) - 1
#: The rate interval when ``rate=`` names none (libxlu_vif.c: "Default to 50ms").
DEFAULT_RATE_INTERVAL_USECS = 50000

#: The string keys parse_nic_config copies into libxl_device_nic as they are (key -> field).
STRING_KEYS = {
    "bridge": "bridge", "gatewaydev": "gatewaydev", "ip": "ip", "script": "script",
    "backend": "backend_domname", "vifname": "ifname", "model": "model",
    "forwarddev": "coloft_forwarddev", "vlan": "vlan",
}
#: The COLO keys (unstable in Xen), each copied into the field of the same name.
COLO_KEYS = tuple(
    [f"colo_sock_{n}_{p}" for n in ("mirror", "compare_sec_in", "redirector0", "redirector1",
                                    "redirector2", "compare_pri_in", "compare_notify")
     for p in ("id", "ip", "port")]
    + ["colo_filter_mirror_queue", "colo_filter_mirror_outdev"]
    + [f"colo_filter_redirector{i}_{p}" for i in (0, 1) for p in ("queue", "indev", "outdev")]
    + ["colo_compare_pri_in", "colo_compare_sec_in", "colo_compare_out",
       "colo_compare_notify_dev"]
    + [f"colo_sock_sec_redirector{i}_{p}" for i in (0, 1) for p in ("id", "ip", "port")]
    + [f"colo_filter_sec_redirector{i}_{p}" for i in (0, 1) for p in ("queue", "indev", "outdev")]
    + ["colo_filter_sec_rewriter0_queue", "colo_checkpoint_host", "colo_checkpoint_port"])


#: What parse_nic_config prints and carries on past without counting it an error (its return
#: stays 0, so network-attach goes on too): deprecated or unsupported keys.
NETDEV_NOTICE = "the netdev parameter is deprecated, please use gatewaydev instead"
ACCEL_NOTICE = "the accel parameter for vifs is currently not supported"
NOTICES = (NETDEV_NOTICE, ACCEL_NOTICE)


class VifSyntaxError(ValueError):
    """A vif spec that makes xl exit 1; ``messages`` are the lines xl prints (str(): the last,
    the one that stopped it)."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = tuple(messages)
        super().__init__(self.messages[-1])


@dataclass(frozen=True)
class VifSpec:
    """libxl_device_nic as parse_config_data leaves it. None: not given (libxl's default
    applies later); ``mac`` is None when all six bytes are zero (libxl then makes one up)."""

    devid: int
    mac: str | None = None
    bridge: str | None = None
    ip: str | None = None
    script: str | None = None
    backend_domname: str | None = None
    ifname: str | None = None
    model: str | None = None
    nictype: str | None = None
    rate_bytes_per_interval: int = 0
    rate_interval_usecs: int = 0
    gatewaydev: str | None = None
    coloft_forwarddev: str | None = None
    vlan: str | None = None
    mtu: int = 0
    trusted: bool | None = None
    #: The colo_* keys given, as (libxl field name, value), in COLO_KEYS order.
    colo: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Rate:
    """libxl_device_nic's rate_bytes_per_interval and rate_interval_usecs, as netback takes them."""

    bytes_per_interval: int
    interval_usecs: int

    @property
    def xenstore(self) -> str:
        """The backend's ``rate`` node, as libxl__set_xenstore_nic writes it."""
        return f"{self.bytes_per_interval},{self.interval_usecs}"


@dataclass(frozen=True)
class VifParse:
    """One vif entry read: the spec and the lines xl printed while reading it."""

    spec: VifSpec
    messages: tuple[str, ...] = field(default=())


# ---- rate (libxlu_vif.c) ------------------------------------------------------------------------
_BYTES_RE = re.compile(r"[0-9]+[GMK]?[Bb]/s")
_USECS_RE = re.compile(r"[0-9]+[mu]?s?")


def _strtoull0(text: str) -> tuple[int, str]:
    """strtoull(p, &p, 0) on text the regexes let through: (value, what follows). An overflow
    gives ULLONG_MAX, which every caller refuses as larger than UINT32_MAX."""
    value, used = strtoul_prefix(text, 0)
    return (0, text) if value is None else (value, text[used:])


def parse_rate(rate: str, source: str) -> tuple[int, int]:
    """xlu_vif_parse_rate: ``RATE[@INTERVAL]`` as (bytes per interval, interval in usecs).

    RATE is ``<n>[GMK]<B|b>/s`` (SI multiples; ``b`` is bits, divided by 8), INTERVAL is
    ``<n>[m|u][s]`` (no unit or ``s``: seconds), 50 ms when absent.
    :raise VifSyntaxError: libxlu's line, "<source>: config parsing error in vif: ..."."""
    def fail(msg: str, what: str) -> VifSyntaxError:
        return VifSyntaxError([f"{source}: config parsing error in vif: {msg} in `{what}'"])

    bytes_text, at, interval_text = rate.partition("@")
    if bytes_text == "":
        raise fail("no rate specified", rate)
    if not _BYTES_RE.fullmatch(bytes_text) or "\n" in bytes_text:
        raise fail("invalid rate", bytes_text)
    bps, rest = _strtoull0(bytes_text)
    if bps == 0 or bps > UINT32_MAX:
        raise fail("rate overflow", bytes_text)
    bps *= {"G": 1000 ** 3, "M": 1000 ** 2, "K": 1000}.get(rest[:1], 1)
    if rest[:1] == "b" or rest[1:2] == "b":
        bps //= 8
    usecs = DEFAULT_RATE_INTERVAL_USECS
    if at:
        if not _USECS_RE.fullmatch(interval_text) or "\n" in interval_text:
            raise fail("invalid replenishment interval", interval_text)
        usecs, rest = _strtoull0(interval_text)
        if usecs == 0 or usecs > UINT32_MAX:
            raise fail("replenishment interval overflow", interval_text)
        if rest[:1] in ("s", ""):
            usecs *= 1000 * 1000
        elif rest[:1] == "m":
            usecs *= 1000
        if usecs > UINT32_MAX:
            raise fail("replenishment interval overflow", interval_text)
    if usecs != 0 and bps > UINT64_MAX // usecs:
        raise fail("rate overflow", rate)
    return (bps * usecs) // 1000000, usecs


# ---- the key=value loop (xl_parse.c) -------------------------------------------------------------
def _tokens(spec: str) -> list[tuple[int, int]]:
    """strtok(buf, ","): (start, end) of each token; then xl skips leading spaces."""
    out: list[tuple[int, int]] = []
    for m in re.finditer(r"[^,]+", spec):
        start = m.start()
        while start < m.end() and spec[start] == " ":
            start += 1
        out.append((start, m.end()))
    return out


def _parse_ulong(text: str) -> int:
    """xl's parse_ulong: strtoul base 10, trailing text ignored; none or ULONG_MAX is fatal."""
    value, _ = strtoul_prefix(text, 10)
    if value is None or value == ULONG_MAX:
        raise VifSyntaxError([f'xl: failed to convert "{text}" to number'])
    return value


def _parse_mac(buf: str, start: int) -> tuple[list[int], bool]:
    """The mac= loop: six strtoul(.., 16) reads, each skipping one character after the last,
    whatever it is. ``buf`` is xl's strtok buffer (this token ends in a NUL, later tokens
    are still there), so a short MAC reads on into the next key as xl does. Returns the bytes
    set and whether all six were good."""
    mac = [0] * 6
    pos = start
    for i in range(6):
        text = buf[pos:].split("\0", 1)[0] if pos < len(buf) else ""
        value, used = strtoul_prefix(text, 16)
        if value is None or (value & UINT32_MAX) > 255:
            return mac, False
        mac[i] = value & 0xFF
        pos += used + 1
    return mac, True


def parse_mac(text: str) -> tuple[list[int], bool]:
    """``mac=``'s value alone, read as parse_nic_config reads it (network-detach's MAC)."""
    return _parse_mac(text + "\0", 0)


def parse_vif(spec: str, index: int, source: str = "command line") -> VifParse:
    """One ``vif=[...]`` entry: ``index`` is its position (the default devid).

    :raise VifSyntaxError: where xl exits (rate=, devid=, mtu=)."""
    fields: dict[str, object] = {"devid": index}
    colo: dict[str, str] = {}
    messages: list[str] = []
    tokens = _tokens(spec)
    buf = list(spec + "\0")
    for start, end in tokens:
        if end < len(spec):
            buf[end] = "\0"  # strtok ends the token in place; later commas are still there
        token = spec[start:end]
        key, eq, value = token.partition("=")
        if not eq:
            if token in ("trusted", "untrusted"):
                fields["trusted"] = token == "trusted"
            else:
                messages.append(f"unrecognized argument `{token}'")
            continue
        if key == "type":
            if value in ("vif", "ioemu"):
                fields["nictype"] = "vif" if value == "vif" else "vif_ioemu"
            else:
                messages.append("Invalid parameter `type'.")
        elif key == "mac":
            mac, ok = _parse_mac("".join(buf), start + 4)
            if not ok:
                messages.append("Invalid parameter `mac'.")
            fields["mac"] = ":".join(f"{b:02x}" for b in mac) if any(mac) else None
        elif key == "netdev":
            messages.append(NETDEV_NOTICE)
            fields["gatewaydev"] = value
        elif key in STRING_KEYS:
            fields[STRING_KEYS[key]] = value
        elif key == "rate":
            try:
                fields["rate_bytes_per_interval"], fields["rate_interval_usecs"] = \
                    parse_rate(value, source)
            except VifSyntaxError as err:
                raise VifSyntaxError(messages + list(err.messages)) from None
        elif key in COLO_KEYS:
            colo[key] = value
        elif key == "accel":
            messages.append(ACCEL_NOTICE)
        elif key in ("devid", "mtu"):
            try:
                number = _parse_ulong(value)
            except VifSyntaxError as err:
                raise VifSyntaxError(messages + list(err.messages)) from None
            # libxl_devid is an int, mtu a uint32: C's conversions
            fields[key] = ((number + (1 << 31)) % (1 << 32)) - (1 << 31) if key == "devid" \
                else number & UINT32_MAX
        else:
            messages.append(f"unrecognized argument `{token}'")
    fields["colo"] = tuple((k, colo[k]) for k in COLO_KEYS if k in colo)
    return VifParse(VifSpec(**fields), tuple(messages))  # type: ignore[arg-type]
