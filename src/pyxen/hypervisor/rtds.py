"""RTDS's per-vCPU parameters as data (pure): defaults, xen/common/sched/rt.c's ranges, and
the cgroup cpu bandwidth pyxen gives a domain for them. The hypercalls are sched_rtds.py's; the
Hypervisor (core.enforce_sched) uses domain_bandwidth here for a domain of an RTDS pool.
"""

from __future__ import annotations

from .domain import Domain
from .errors import InvalidArgument

#: RTDS_DEFAULT_PERIOD / RTDS_DEFAULT_BUDGET (us), what a new vCPU has, with extratime set.
DEFAULT_PERIOD, DEFAULT_BUDGET = 10000, 4000
#: RTDS_MIN_PERIOD, RTDS_MIN_BUDGET (10 us); RTDS_MAX_PERIOD is STIME_DELTA_MAX in ns.
MIN_PERIOD = MIN_BUDGET = 10
MAX_PERIOD = (2**63 - 1) // 1000
#: What the cgroup cpu controller accepts: a period of 1 ms .. 1 s, a quota of at least 1 ms.
CG_PERIOD_MIN, CG_PERIOD_MAX, CG_QUOTA_MIN = 1000, 1_000_000, 1000


def vcpu_params(dom: Domain, vcpu: int) -> tuple[int, int, bool]:
    """vCPU ``vcpu``'s (period, budget, extratime) as set, else RTDS's defaults."""
    if vcpu < len(dom.rtds) and dom.rtds[vcpu]:
        period, budget, extra = dom.rtds[vcpu]
        return int(period), int(budget), bool(extra)
    return DEFAULT_PERIOD, DEFAULT_BUDGET, True


def check_vcpu(period: object, budget: object, op: str) -> tuple[int, int]:
    """rt.c's putvcpuinfo range check (EINVAL): 10 us <= period, 10 us <= budget <= period."""
    for key, v in (("period", period), ("budget", budget)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise InvalidArgument(f"'{key}' must be an integer", op)
    assert isinstance(period, int) and isinstance(budget, int)
    if not MIN_PERIOD <= period <= MAX_PERIOD:
        raise InvalidArgument(f"period {period}us is out of range {MIN_PERIOD}..{MAX_PERIOD}", op)
    if not MIN_BUDGET <= budget <= period:
        raise InvalidArgument(f"budget {budget}us is out of range {MIN_BUDGET}..{period} (the period)", op)
    return period, budget


def bandwidth(params: list[tuple[int, int, bool]]) -> tuple[int | None, int]:
    """The cgroup (quota, period) in us for vCPUs with these (period, budget, extratime); quota
    None is no limit (a vCPU with extratime may use any idle CPU). The cgroup's period is the
    shortest vCPU period within what the controller takes; the quota is the sum of the shares."""
    if not params or any(extra for _, _, extra in params):
        return None, min((p for p, _, _ in params), default=DEFAULT_PERIOD)
    period = min(max(min(p for p, _, _ in params), CG_PERIOD_MIN), CG_PERIOD_MAX)
    quota = round(sum(b / p for p, b, _ in params) * period)
    return max(quota, CG_QUOTA_MIN), period


def domain_bandwidth(dom: Domain) -> tuple[int | None, int]:
    """bandwidth() of the domain's online vCPUs."""
    return bandwidth([vcpu_params(dom, n) for n in range(max(1, dom.online_vcpus))])
