"""Per-domain quotas: checks that apply to unprivileged callers only.

Spec: docs/misc/xenstore.txt (quota section) and C xenstored 4.17: node count per owner
(-E, ENOSPC), node record size (-S, ENOSPC when >= the limit), permission entries per node
(-A, ENOSPC), open transactions (-t, ENOSPC), nodes touched per transaction (ENOSPC), watches
(-W, E2BIG in 4.17).  Privileged callers (Dom0, the local socket) are never limited.
The limits come from the ``XenstoredConfig`` passed in, never from module state.
"""

from __future__ import annotations

from .config import XenstoredConfig
from .errors import QuotaExceeded, TooBig
from .perms import Caller


def check_nodes(config: XenstoredConfig, caller: Caller, owned: int, adding: int) -> None:
    """:raise QuotaExceeded: if ``caller`` would own more than quota_nodes nodes."""
    if caller.privileged or adding <= 0:
        return
    if owned + adding > config.quota_nodes:
        raise QuotaExceeded(f"dom{caller.domid} owns {owned} nodes (quota {config.quota_nodes})")


def check_node_size(config: XenstoredConfig, caller: Caller, size: int) -> None:
    if not caller.privileged and size >= config.quota_node_size:
        raise QuotaExceeded(f"node of {size} bytes (quota {config.quota_node_size})")


def check_perms(config: XenstoredConfig, caller: Caller, entries: int) -> None:
    if not caller.privileged and entries > config.quota_perms:
        raise QuotaExceeded(f"{entries} permission entries (quota {config.quota_perms})")


def check_transactions(config: XenstoredConfig, caller: Caller, open_now: int) -> None:
    if not caller.privileged and open_now >= config.quota_transactions:
        raise QuotaExceeded(f"{open_now} open transactions (quota {config.quota_transactions})")


def check_transaction_nodes(config: XenstoredConfig, caller: Caller, touched: int) -> None:
    if not caller.privileged and touched > config.quota_transaction_nodes:
        raise QuotaExceeded(f"transaction touches {touched} nodes")


def check_watches(config: XenstoredConfig, caller: Caller, watches: int) -> None:
    """4.17 answers E2BIG here (HEAD: ENOSPC); Debian's clients are 4.17."""
    if not caller.privileged and watches >= config.quota_watches:
        raise TooBig(f"{watches} watches (quota {config.quota_watches})")
