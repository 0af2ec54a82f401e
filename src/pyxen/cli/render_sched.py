"""Pure rendering and parsing for xl's scheduling and CPU pool commands, with the formats and
messages of Xen 4.17's tools/xl/xl_cpupool.c, xl_sched.c and xl_parse.c (parse_cpurange).

No I/O: the commands (cli/xl/sched.py) fetch, call these, and write the text.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..libxlu.cpumap import format_cpumap
from ..libxlu.domid import parse_uint


class CpuRangeError(ValueError):
    """xl's parse_cpurange refused the text; str() is xl's message."""


def parse_cpurange(text: str, nr_cpus: int, node_cpus: dict[int, list[int]] | None = None) -> set[int]:
    """xl's parse_cpurange: comma-separated ``N``, ``N-M``, ``all``, ``node:N``/``nodes:N-M``,
    each optionally ``^``-prefixed to remove. CPUs beyond the host are dropped, as setting a bit
    beyond libxl's cpumap is. :raise CpuRangeError: with xl's message."""
    cpus: set[int] = set()
    nodes = node_cpus if node_cpus is not None else {0: list(range(nr_cpus))}
    for part in filter(None, text.split(",")):
        neg = part.startswith("^")
        body = part[1:] if neg else part
        is_nodes = False
        for prefix in ("node:", "nodes:"):
            if body.startswith(prefix):
                body, is_nodes = body[len(prefix):], True
                break
        if body == "all":
            if neg:
                raise CpuRangeError('Can\'t combine "^" and "all".')
            cpus |= set(range(nr_cpus))
            continue
        lo_text, dash, hi_text = body.partition("-")
        lo = parse_uint(lo_text)
        hi = parse_uint(hi_text) if dash else lo
        if lo is None or hi is None or hi < lo:
            raise CpuRangeError(f"Invalid pcpu range: {body}.")
        chosen: set[int] = set()
        bound = max(nr_cpus - 1, max(nodes, default=0))  # bits beyond any map are never set
        for n in range(lo, min(hi, bound) + 1):
            if is_nodes:
                if n not in nodes:
                    raise CpuRangeError("libxl_node_to_cpumap failed.")
                chosen |= set(nodes[n])
            elif n < nr_cpus:
                chosen.add(n)
        cpus = cpus - chosen if neg else cpus | chosen
    return cpus


def cpupool_list(pools: Iterable[dict[str, Any]], show_cpus: bool) -> str:
    """``xl cpupool-list [-c]``: Name, then the CPU list or CPUs/Sched/Active/Domain count."""
    lines = ["%-19s" % "Name" + ("CPU list" if show_cpus else "CPUs   Sched     Active   Domain count")]
    for p in pools:
        row = "%-19s" % p["name"]
        if show_cpus:
            row += ",".join(str(c) for c in p["cpus"])
        else:
            row += "%3d %9s       y       %4d" % (len(p["cpus"]), p["sched"], p["n_dom"])
        lines.append(row)
    return "\n".join(lines) + "\n"


def cpupool_create_summary(source: str, name: str, sched: str, n_cpus: int) -> str:
    """What ``xl cpupool-create`` prints before it creates (and all ``-n`` prints)."""
    return (f'Using config file "{source}"\ncpupool name:   {name}\nscheduler:      {sched}\n'
            f"number of cpus: {n_cpus}\n")


def credit_pool_line(pool: dict[str, Any]) -> str:
    """sched_credit_pool_output."""
    return (f"Cpupool {pool['name']}: tslice={pool['tslice_ms']}ms ratelimit={pool['ratelimit_us']}us "
            f"migration-delay={pool['migr_delay_us']}us")


def credit2_pool_line(pool: dict[str, Any]) -> str:
    """sched_credit2_pool_output."""
    return f"Cpupool {pool['name']}: ratelimit={pool['ratelimit_us']}us"


SCHED_HEADER = "%-33s %4s %6s %4s" % ("Name", "ID", "Weight", "Cap")


def sched_row(name: str, domid: int, weight: int, cap: int) -> str:
    """sched_credit_domain_output / sched_credit2_domain_output (the same format)."""
    return "%-33s %4d %6d %4d" % (name, domid, weight, cap)


def sched_by_pool(sched: str, pools: Iterable[dict[str, Any]], doms: Iterable[dict[str, Any]],
                  params: dict[int, tuple[int, int]], only_pool: int | None = None) -> str:
    """sched_domain_output: for each pool running ``sched`` (or only ``only_pool``), its line,
    the header, and a row for each of its domains (``params``: domid -> (weight, cap))."""
    pool_line = credit_pool_line if sched == "credit" else credit2_pool_line
    lines: list[str] = []
    doms = list(doms)
    for p in pools:
        if p["sched"] != sched or (only_pool is not None and p["poolid"] != only_pool):
            continue
        lines += [pool_line(p), SCHED_HEADER]
        lines += [sched_row(d["name"], d["domid"], *params[d["domid"]])
                  for d in doms if d.get("cpupool", 0) == p["poolid"] and d["domid"] in params]
    return "".join(line + "\n" for line in lines)


def vcpu_pin_dryrun(hard: set[int] | None, soft: set[int] | None, nr_cpus: int) -> str:
    """``xl -N vcpu-pin``: the cpumaps it would set."""
    out = "cpumap: " + (format_cpumap(hard, nr_cpus) if hard is not None else "-")
    if soft is not None:
        out += " " + format_cpumap(soft, nr_cpus)
    return out + "\n"


# ---- RTDS (sched_rtds_*_output of xl_sched.c) --------------------------------------------
RTDS_DOMAIN_HEADER = "%-33s %4s %9s %9s %10s" % ("Name", "ID", "Period", "Budget", "Extratime")
RTDS_VCPU_HEADER = "%-33s %4s %4s %9s %9s %10s" % ("Name", "ID", "VCPU", "Period", "Budget", "Extratime")


def rtds_pool_line(name: str) -> str:
    """sched_rtds_pool_output: RTDS has no pool-wide parameter, only this line."""
    return f"Cpupool {name}: sched=RTDS"


def rtds_domain_row(name: str, domid: int, period: int, budget: int, extratime: bool) -> str:
    """sched_rtds_domain_output's row (the domain's defaults, as Xen's getinfo returns)."""
    return "%-33s %4d %9d %9d %10s" % (name, domid, period, budget, "yes" if extratime else "no")


def rtds_vcpu_rows(name: str, domid: int, vcpus: Iterable[dict[str, Any]]) -> list[str]:
    """sched_rtds_vcpu_output: one row per vCPU {vcpuid, period, budget, extratime}."""
    return ["%-33s %4d %4d %9d %9d %10s" % (name, domid, v["vcpuid"], v["period"], v["budget"],
                                            "yes" if v["extratime"] else "no") for v in vcpus]


def rtds_by_pool(pools: Iterable[dict[str, Any]], doms: Iterable[dict[str, Any]],
                 rows: dict[int, list[str]], header: str, only_pool: int | None = None) -> str:
    """sched_domain_output / sched_vcpu_output for RTDS: each RTDS pool's line, ``header``, and
    the rows (``rows``: domid -> its lines) of the pool's domains."""
    lines: list[str] = []
    doms = list(doms)
    for p in pools:
        if p["sched"] != "rtds" or (only_pool is not None and p["poolid"] != only_pool):
            continue
        lines += [rtds_pool_line(p["name"]), header]
        for d in doms:
            if d.get("cpupool", 0) == p["poolid"]:
                lines += rows.get(d["domid"], [])
    return "".join(line + "\n" for line in lines)


def rtds_options_problem(dom: bool, cpupool: bool, n_vcpus: int, opt_all: bool, n_periods: int,
                         n_budgets: int, n_extras: int) -> str | None:
    """main_sched_rtds's checks of its options, in its order: its message, or None."""
    opt_p, opt_b, opt_e, opt_v = n_periods > 0, n_budgets > 0, n_extras > 0, n_vcpus > 0
    if cpupool and (dom or opt_p or opt_b or opt_e or opt_v or opt_all):
        return "Specifying a cpupool is not allowed with other options."
    if not dom and (opt_p or opt_b or opt_e or opt_v):
        return "Missing parameters."
    if dom and not opt_v and not opt_all and (opt_p or opt_b or opt_e):
        return "Must specify VCPU."
    if opt_v and opt_all:
        return "Incorrect VCPU IDs."
    if ((n_vcpus > n_budgets and opt_b) or (n_vcpus > n_periods and opt_p)
            or (n_vcpus > n_extras and opt_e) or n_periods != n_budgets or n_periods != n_extras):
        return "Incorrect number of period, budget and extratime"
    return None


def rtds_invalid(period: int, budget: int) -> str | None:
    """libxl's sched_rtds_validate_params: its message, or None. (The hypervisor's own floor,
    10 us, is checked by the hypervisor: EINVAL.)"""
    if period < 1:
        return f"Invalid VCPU period of {period} (it should be >= 1)"
    if budget < 1:
        return f"Invalid VCPU budget of {budget} (it should be >= 1)"
    if budget > period:
        return f"VCPU budget must be smaller than or equal to period, but {budget} > {period}"
    return None
