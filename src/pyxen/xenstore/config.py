"""xenstored's limits and settings: one frozen object, passed down, never module globals.

Spec: the quota table of docs/misc/xenstore.txt and C xenstored 4.17's defaults
(tools/xenstore/xenstored_core.c, flags -E -S -W -t -A -M -Q).  Quotas apply to unprivileged
domains only; the Dom0 socket is never limited (C behaviour).  A config file uses
oxenstored.conf's ``key = value`` lines with the field names below (``#`` comments).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class XenstoredConfig:
    """Every limit of the daemon; each default is Xen's, with the reason it exists."""

    #: -E: nodes a domain may own, so one guest cannot fill Dom0's memory with nodes.
    quota_nodes: int = 1000
    #: -S: bytes of one node record (header + perms + value + child names); C fails at >=.
    quota_node_size: int = 2048
    #: -W: watches per domain; each costs a trie entry and event fan-out on every write.
    quota_watches: int = 128
    #: -t: open transactions per domain; each pins a snapshot and a read set.
    quota_transactions: int = 10
    #: -A: permission entries per node, bounding the cost of every access check.
    quota_perms: int = 5
    #: -Q transaction-nodes: distinct nodes one transaction may touch (commit-check cost).
    quota_transaction_nodes: int = 1024
    #: -M: path length (the part after /local/domain/<N>/ for paths below it); EINVAL.
    path_max: int = 2048
    #: ox maxwatchevents: events queued for a slow unprivileged reader before dropping,
    #: so a guest that never reads cannot make Dom0 buffer without bound.
    max_watch_events: int = 1024
    #: Bytes of output (replies and events) one connection may have queued, unread by its
    #: client, before xenstored stops reading that connection's requests; it reads again
    #: once the queue drained to a quarter.  A client that pipelines requests and never
    #: reads the replies is so throttled instead of growing the daemon's memory (C
    #: xenstored's quota-outstanding, oxenstored's maxrequests).  Events are not throttled
    #: by reading less: a privileged watcher that lets 16 times this pile up is
    #: disconnected (it notices, where a dropped event would pass silently).
    max_output: int = 1 << 20
    #: Mode of the Dom0 socket. 0666 lets non-root tools connect (pyxen runs unprivileged in
    #: labs); such clients are still Dom0-socket clients, exactly like C's socket peers.
    socket_mode: int = 0o666
    #: Mode of the per-domain sockets (the device model, run by the same user, connects).
    domain_socket_mode: int = 0o600
    #: Journal size after which a snapshot is written and the journal restarted.
    journal_compact_bytes: int = 8 * 1024 * 1024
    #: Log READ/DIRECTORY/GET_PERMS in the access log too (ox logs reads only on request).
    access_log_reads: bool = False
    #: fsync the journal before acknowledging writes; tests of throughput may turn it off.
    fsync: bool = True

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> "XenstoredConfig":
        """:raise ValueError: for an unknown key or a value of the wrong type."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, raw in values.items():
            key = key.replace("-", "_")
            if key not in names:
                raise ValueError(f"unknown xenstored setting {key!r}")
            default = getattr(cls, key)
            if isinstance(default, bool):
                value: Any = raw if isinstance(raw, bool) else str(raw).lower() in (
                    "1", "true", "yes", "on")
            elif isinstance(raw, str):
                value = int(raw, 0)
            else:
                value = int(raw)
            kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> "XenstoredConfig":
        """Parse ``key = value`` lines, then apply ``overrides`` (CLI flags win)."""
        values: dict[str, Any] = {}
        for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if "=" not in line:
                raise ValueError(f"{path}:{lineno}: expected key = value")
            key, value = (s.strip() for s in line.split("=", 1))
            values[key] = value
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(values)

    def replace(self, **changes: Any) -> "XenstoredConfig":
        return dataclasses.replace(self, **changes)


DEFAULT_CONFIG = XenstoredConfig()
