"""xl's commands on vCPUs, schedulers and CPU pools: vcpu-list, vcpu-pin, vcpu-set,
sched-credit, sched-credit2, sched-rtds, cpupool-create, cpupool-list, cpupool-destroy, cpupool-rename,
cpupool-cpu-add, cpupool-cpu-remove, cpupool-migrate, cpupool-numa-split.

Options, messages and exit codes are those of Xen 4.17's tools/xl/xl_vcpu.c, xl_sched.c and
xl_cpupool.c. Where Xen's xl prints a libxl error and still exits 0 (cpupool-cpu-add and
cpupool-cpu-remove), so does this one.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any, Callable

from ...hypervisor.client import XenCtrl
from ...hypervisor.cpupool import SCHEDULERS as POOL_SCHEDULERS
from ...hypervisor.errors import HypercallError
from ...libxlu.cfg import ConfigSyntaxError, atoi, decode, parse
from ...libxlu.cpumap import format_cpumap
from ...libxlu.domid import parse_uint
from ...paths import Paths
from ...toolstack import domain as libxl
from ...toolstack import sched as libxl_sched
from .. import render
from .. import render_sched as rs
from .common import GLOBALS, Usage, ctrl, honours_dryrun, integer, new_parser, positionals

#: libxl's ERROR_FAIL (libxl_types.idl), as xl prints it in "rc: %d".
ERROR_FAIL = -3


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _strerror(err: HypercallError) -> str:
    return os.strerror(err.errno or errno.EIO)


def _pool(xc: XenCtrl, qualifier: str) -> int | None:
    """A pool's id (name or number), or None after xl's "unknown cpupool" line."""
    try:
        return libxl_sched.pool_id(xc, qualifier)
    except libxl_sched.PoolNotFound:
        _err(f"unknown cpupool '{qualifier}'")
        return None


def _nr_cpus(xc: XenCtrl) -> int:
    return int(xc.call("sysctl.physinfo")["nr_cpus"])


def _cpurange(text: str, nr_cpus: int) -> set[int] | None:
    try:
        return rs.parse_cpurange(text, nr_cpus)
    except rs.CpuRangeError as err:
        _err(str(err))
        return None


# ---- vCPUs ------------------------------------------------------------------------------
def cmd_vcpu_list(argv: list[str]) -> int:
    p = new_parser("vcpu-list", "List the VCPUs for all/some domains")
    p.add_argument("domain", nargs="*")
    ns = p.parse_args(argv)
    with ctrl() as xc:
        nr_cpus = _nr_cpus(xc)
        doms = libxl.list_domains(xc)
        if ns.domain:
            wanted = [libxl.resolve(xc, a).domid for a in ns.domain]
            doms = [d for w in wanted for d in doms if d["domid"] == w]
        rows = [(d["name"], d["domid"], v) for d in doms
                for v in xc.call("domctl.getvcpuinfo", domid=d["domid"])]
    sys.stdout.write(render.xl_vcpu_list(rows, nr_cpus))
    return 0


@honours_dryrun
def cmd_vcpu_pin(argv: list[str]) -> int:
    """With the global -N, xl_vcpu.c prints the parsed maps (``cpumap: <hard|->[ <soft>]``, in
    print_bitmap's text over the online CPUs) and pins nothing."""
    p = new_parser("vcpu-pin", "Set which CPUs a VCPU can use")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("-i", "--ignore-global-affinity-masks", dest="ignore", action="store_true")
    p.add_argument("domain")
    p.add_argument("vcpu")
    p.add_argument("hard")
    p.add_argument("soft", nargs="?")
    ns = p.parse_args(argv)
    with ctrl() as xc:
        ref = libxl.resolve(xc, ns.domain)
        vcpuid = parse_uint(ns.vcpu)
        if vcpuid is None:
            if ns.vcpu != "all":
                _err(f"Error: Invalid argument {ns.vcpu} as VCPU.")
                return 1
            if ns.force:
                _err("Error: --force and 'all' as VCPU not allowed.")
                return 1
        nr_cpus = _nr_cpus(xc)
        hard = soft = None
        if ns.hard != "-":
            hard = _cpurange(ns.hard, nr_cpus)
            if hard is None:
                return 1
        if ns.soft is not None and ns.soft != "-":
            soft = _cpurange(ns.soft, nr_cpus)
            if soft is None:
                return 1
        if GLOBALS.dryrun:
            text = "-" if hard is None else format_cpumap(hard, nr_cpus)
            if soft is not None:
                text += " " + format_cpumap(soft, nr_cpus)
            sys.stdout.write(f"cpumap: {text}\n")
            sys.stdout.flush()
            return 0
        # xl.conf's global affinity masks (vm.cpumask...) are "all" in pyxen, so applying them
        # only finds an empty map, as apply_global_affinity_masks does; -i skips even that.
        if hard is not None and not hard and not ns.ignore:
            _err("vcpu hard affinity map is empty")
            return 1
        if vcpuid is not None:
            try:
                libxl_sched.pin(xc, ref.domid, [vcpuid], _l(hard), _l(soft), ns.force)
            except HypercallError as err:
                _err(f"libxl: error: Domain {ref.domid}:Setting vcpu affinity: {err}")
                _err(f"Could not set affinity for vcpu `{vcpuid}'.")
                return 1
            return 0
        vcpus = [v["vcpu"] for v in xc.call("domctl.getvcpuinfo", domid=ref.domid)]
        failed = False
        for n in vcpus:
            try:
                libxl_sched.pin(xc, ref.domid, [n], _l(hard), _l(soft))
            except HypercallError as err:
                _err(f"libxl: warning: Domain {ref.domid}:Failed to set affinity for {n}: {err}")
                failed = True
        if failed:
            _err("Could not set affinity.")
    return 0


def _l(cpus: set[int] | None) -> list[int] | None:
    return None if cpus is None else sorted(cpus)


def cmd_vcpu_set(argv: list[str]) -> int:
    p = new_parser("vcpu-set", "Set the number of active VCPUs allowed for the domain")
    p.add_argument("-i", "--ignore-host", dest="ignore_host", action="store_true")
    p.add_argument("domain")
    p.add_argument("vcpus")
    ns = positionals(p, argv)
    with ctrl() as xc:
        ref = libxl.resolve(xc, ns.domain)
        digits = len(ns.vcpus) - len(ns.vcpus.lstrip("0123456789"))
        if digits == 0 or int(ns.vcpus[:digits]) > 0x7FFFFFFF:
            _err("Error: Invalid argument.")
            return 1
        want = int(ns.vcpus[:digits])  # strtoul: the leading digits
        try:
            info = xc.call("domctl.getdomaininfo", domid=ref.domid)
        except HypercallError:
            _err(f"Domain {ref.domid} does not exist.")
            return 1
        host = _nr_cpus(xc)
        if not ns.ignore_host and want > info["online_vcpus"] and want > host:
            _err(f"You are overcommmitting! You have {host} physical CPUs and want {want} vCPUs! "
                 "Aborting, use --ignore-host to continue")
            return 1
        if want == 0 or want > info["max_vcpus"]:
            _err(f"libxl: error: Domain {ref.domid}:Requested {want} VCPUs, however maxcpus is "
                 f"{info['max_vcpus']}!" if want else f"libxl: error: Domain {ref.domid}:Requested 0 VCPUs!")
            _err(f"libxl_set_vcpuonline failed domid={ref.domid} max_vcpus={want}, rc: {ERROR_FAIL}")
            return 1
        try:
            libxl_sched.set_vcpus(xc, Paths.from_env(), ref.domid, want)
        except (HypercallError, OSError) as err:
            _err(f"libxl: error: Domain {ref.domid}:{err}")
            _err(f"libxl_set_vcpuonline failed domid={ref.domid} max_vcpus={want}, rc: {ERROR_FAIL}")
            return 1
    return 0


# ---- schedulers -------------------------------------------------------------------------
def _sched_cmd(sched: str) -> Callable[[list[str]], int]:
    """sched-credit and sched-credit2: main_sched_credit / main_sched_credit2."""
    name = "sched-credit" if sched == "credit" else "sched-credit2"

    def run(argv: list[str]) -> int:
        p = new_parser(name, f"Get/set {sched} scheduler parameters")
        p.add_argument("-d", "--domain")
        p.add_argument("-w", "--weight", type=integer)
        p.add_argument("-c", "--cap", type=integer)
        p.add_argument("-s", "--schedparam", action="store_true")
        if sched == "credit":
            p.add_argument("-t", "--tslice_ms", type=integer)
            p.add_argument("-m", "--migration_delay_us", type=integer)
        p.add_argument("-r", "--ratelimit_us", type=integer)
        p.add_argument("-p", "--cpupool")
        ns = positionals(p, argv)
        tslice = getattr(ns, "tslice_ms", None)
        migr = getattr(ns, "migration_delay_us", None)
        dom_opts = ns.domain is not None or ns.weight is not None or ns.cap is not None
        if sched == "credit" and (ns.cpupool or ns.schedparam) and dom_opts:
            _err("Specifying a cpupool or schedparam is not allowed with domain options.")
            return 1
        if sched == "credit2" and ns.cpupool and dom_opts:
            _err("Specifying a cpupool is not allowed with other options.")
            return 1
        if ns.domain is None and (ns.weight is not None or ns.cap is not None):
            _err("Must specify a domain.")
            return 1
        if sched == "credit" and not ns.schedparam and (tslice, ns.ratelimit_us, migr) != (None, None, None):
            _err("Must specify schedparam to set schedule parameter values.")
            return 1
        with ctrl() as xc:
            if ns.schedparam:
                poolid = 0
                if ns.cpupool:
                    found = _pool(xc, ns.cpupool)
                    if found is None:
                        return 1
                    poolid = found
                return _schedparam(xc, sched, poolid, tslice, ns.ratelimit_us, migr)
            if ns.domain is None:
                only = None
                if ns.cpupool:
                    only = _pool(xc, ns.cpupool)
                    if only is None:
                        return 1
                doms = libxl.list_domains(xc)
                params = {}
                for d in doms:
                    info = xc.call("domctl.scheduler_op.getinfo", domid=d["domid"])
                    params[d["domid"]] = (info["weight"], info["cap"])
                sys.stdout.write(rs.sched_by_pool(sched, libxl_sched.list_pools(xc), doms, params, only))
                return 0
            ref = libxl.resolve(xc, ns.domain)
            info = xc.call("domctl.scheduler_op.getinfo", domid=ref.domid)
            if ns.weight is None and ns.cap is None:
                print(rs.SCHED_HEADER, flush=True)
                if info.get("sched", "credit") != sched:  # sched_domain_get
                    _err(f"libxl_domain_sched_params_get returned {info['sched']} not {sched}.")
                    return 1
                print(rs.sched_row(ref.name, ref.domid, info["weight"], info["cap"]))
                return 0
            if info.get("sched", "credit") != sched:
                _err(f"libxl: error: Domain {ref.domid}:the domain's cpupool runs {info['sched']}, not {sched}")
                _err("libxl_domain_sched_params_set failed.")
                return 1
            change = {k: v for k, v in (("weight", ns.weight), ("cap", ns.cap)) if v is not None}
            try:
                xc.call("domctl.scheduler_op.putinfo", domid=ref.domid, **change)
            except HypercallError as err:
                _err(f"libxl: error: Domain {ref.domid}:{err}\nlibxl_domain_sched_params_set failed.")
                return 1
        return 0
    return run


def _schedparam(xc: XenCtrl, sched: str, poolid: int, tslice: int | None, ratelimit: int | None,
                migr: int | None) -> int:
    """-s: a pool's scheduler parameters, shown or set."""
    pool = xc.call("sysctl.scheduler_op.getinfo", poolid=poolid)
    name = "Credit" if sched == "credit" else "Credit2"
    showing = (tslice, ratelimit, migr) == (None, None, None)
    if pool["sched"] != sched:
        # The scheduler's own sysctl refuses a pool of another scheduler (EINVAL). xl shows the
        # pool's line as unavailable (exit 0); a set fails in the get before it (credit) or in
        # the set itself (credit2).
        verb = "getting" if showing or sched == "credit" else "Setting"
        _err(f"libxl: error: {verb} {name} scheduler parameters: Invalid argument")
        _err(f"libxl_sched_{sched}_params_{'get' if verb == 'getting' else 'set'} failed.")
        if showing:
            print(f"Cpupool {pool['name']}: [sched params unavailable]")
            return 0
        return 1
    if showing:
        print(rs.credit_pool_line(pool) if sched == "credit" else rs.credit2_pool_line(pool))
        return 0
    change: dict[str, Any] = {k: v for k, v in (("tslice_ms", tslice), ("ratelimit_us", ratelimit),
                                                ("migr_delay_us", migr)) if v is not None}
    try:
        xc.call("sysctl.scheduler_op.putinfo", poolid=poolid, sched=sched, **change)
    except HypercallError as err:
        _err(f"libxl: error: {err}")
        _err(f"libxl_sched_{sched}_params_set failed.")
        return 1
    return 0


# ---- RTDS -------------------------------------------------------------------------------
def _rtds_sched_error(domid: int, verb: str, what: str) -> int:
    """libxl's refusal of per-vCPU parameters on a domain of another scheduler."""
    _err(f"libxl: error: Domain {domid}:per-VCPU parameter {verb} not supported for this scheduler")
    _err(f"libxl_vcpu_sched_params_{what} failed.")
    return 1


def _rtds_vcpu_rows(xc: XenCtrl, name: str, domid: int, vcpus: list[int] | None) -> list[str] | int:
    """libxl_vcpu_sched_params_get (``vcpus``) or _get_all (None) and xl's rows; an int is
    xl's exit status after its messages."""
    what = "get" if vcpus is not None else "get_all"
    info = xc.call("domctl.scheduler_op.getinfo", domid=domid)
    if info.get("sched") != "rtds":
        return _rtds_sched_error(domid, "getting", what)
    max_id = int(xc.call("domctl.getdomaininfo", domid=domid)["max_vcpus"]) - 1
    if vcpus is None:
        vcpus = list(range(max_id + 1))
    elif any(not 0 <= v <= max_id for v in vcpus):
        _err(f"libxl: error: Domain {domid}:VCPU index is out of range, valid values are within "
             f"range from 0 to {max_id}")
        _err(f"libxl_vcpu_sched_params_{what} failed.")
        return 1
    try:
        got = libxl_sched.rtds_vcpu_get(xc, domid, vcpus)
    except HypercallError as err:
        _err(f"libxl: error: Domain {domid}:Getting vcpu sched rtds: {_strerror(err)}")
        _err(f"libxl_vcpu_sched_params_{what} failed.")
        return 1
    return rs.rtds_vcpu_rows(name, domid, got)


def _rtds_set(xc: XenCtrl, domid: int, vcpus: list[int] | None, periods: list[int],
              budgets: list[int], extras: list[int]) -> int:
    """libxl_vcpu_sched_params_set (``vcpus``: their own values, in order) or _set_all (None:
    the first values for every vCPU), with libxl's checks before the hypercall."""
    what = "set" if vcpus is not None else "set_all"
    info = xc.call("domctl.scheduler_op.getinfo", domid=domid)
    if info.get("sched") != "rtds":
        return _rtds_sched_error(domid, "setting", what)
    max_id = int(xc.call("domctl.getdomaininfo", domid=domid)["max_vcpus"]) - 1
    ids = vcpus if vcpus is not None else [0]
    for i, v in enumerate(ids):
        if vcpus is not None and not 0 <= v <= max_id:
            _err(f"libxl: error: Domain {domid}:Invalid VCPU {v}: valid range is [0, {max_id}]")
            _err(f"libxl_vcpu_sched_params_{what} failed.")
            return 1
        problem = rs.rtds_invalid(periods[i], budgets[i])
        if problem is not None:
            _err(f"libxl: error: {problem}")
            _err(f"libxl_vcpu_sched_params_{what} failed.")
            return 1
    targets = vcpus if vcpus is not None else list(range(max_id + 1))
    change = [{"vcpuid": v, "period": periods[i if vcpus is not None else 0],
               "budget": budgets[i if vcpus is not None else 0],
               "extratime": bool(extras[i if vcpus is not None else 0])} for i, v in enumerate(targets)]
    try:
        libxl_sched.rtds_vcpu_set(xc, domid, change)
    except HypercallError as err:
        _err(f"libxl: error: Domain {domid}:Setting vcpu sched rtds: {_strerror(err)}")
        _err(f"libxl_vcpu_sched_params_{what} failed.")
        return 1
    return 0


def cmd_sched_rtds(argv: list[str]) -> int:
    """main_sched_rtds: list every RTDS pool's domains (their defaults, or -v all: each vCPU),
    show one domain, or set vCPUs' period, budget and extratime (-v N ... or -v all)."""
    p = new_parser("sched-rtds", "Get/set rtds scheduler parameters")
    p.add_argument("-d", "--domain")
    p.add_argument("-p", "--period", action="append", default=[])
    p.add_argument("-b", "--budget", action="append", default=[])
    p.add_argument("-e", "--extratime", action="append", default=[])
    p.add_argument("-v", "--vcpuid", action="append", default=[])
    # xl's getopt string has "c" without ':': -c takes no value and names no pool; only
    # --cpupool=POOL does.
    p.add_argument("-c", dest="c_flag", action="store_true")
    p.add_argument("--cpupool")
    ns, extra = p.parse_known_args(argv)
    for word in extra:  # xl reads no positional argument and ignores them
        if word.startswith("-") and word != "-":
            raise Usage(f"option `{word.lstrip('-')}' not supported.")
    for e in ns.extratime:
        if e not in ("0", "1"):
            _err("Invalid extratime.")
            return 1
    opt_all = "all" in ns.vcpuid
    vcpus = [atoi(v) for v in ns.vcpuid if v != "all"]
    periods = [atoi(v) for v in ns.period]
    budgets = [atoi(v) for v in ns.budget]
    extras = [int(v) for v in ns.extratime]
    opt_p, opt_b, opt_e, opt_v = bool(periods), bool(budgets), bool(extras), bool(vcpus)
    dom = ns.domain
    problem = rs.rtds_options_problem(dom is not None, ns.cpupool is not None, len(vcpus), opt_all,
                                      len(periods), len(budgets), len(extras))
    if problem is not None:
        _err(problem)
        return 1
    with ctrl() as xc:
        if dom is None:
            only = None
            if ns.cpupool is not None:
                only = _pool(xc, ns.cpupool)
                if only is None:
                    return 1
            pools = libxl_sched.list_pools(xc)
            rtds_pools = {pl["poolid"] for pl in pools if pl["sched"] == "rtds"}
            doms = [d for d in libxl.list_domains(xc) if d.get("cpupool", 0) in rtds_pools]
            rows: dict[int, list[str]] = {}
            for d in doms:
                if opt_all:
                    got = _rtds_vcpu_rows(xc, d["name"], d["domid"], None)
                    if isinstance(got, int):
                        return got  # sched_vcpu_get_all exits
                    rows[d["domid"]] = got
                else:
                    info = xc.call("domctl.scheduler_op.getinfo", domid=d["domid"])
                    rows[d["domid"]] = [rs.rtds_domain_row(d["name"], d["domid"], info["period"],
                                                           info["budget"], True)]
            header = rs.RTDS_VCPU_HEADER if opt_all else rs.RTDS_DOMAIN_HEADER
            sys.stdout.write(rs.rtds_by_pool(pools, doms, rows, header, only))
            return 0
        ref = libxl.resolve(xc, dom)
        if not opt_v and not opt_all:
            print(rs.RTDS_DOMAIN_HEADER, flush=True)
            info = xc.call("domctl.scheduler_op.getinfo", domid=ref.domid)
            if info.get("sched") != "rtds":
                _err(f"libxl_domain_sched_params_get returned {info.get('sched')} not rtds.")
                return 1
            # libxl leaves extratime at its "default" (-1), which xl prints as yes.
            print(rs.rtds_domain_row(ref.name, ref.domid, info["period"], info["budget"], True))
            return 0
        if not (opt_p or opt_b or opt_e):
            print(rs.RTDS_VCPU_HEADER, flush=True)
            got = _rtds_vcpu_rows(xc, ref.name, ref.domid, vcpus if opt_v else None)
            if isinstance(got, int):
                return got
            sys.stdout.write("".join(line + "\n" for line in got))
            return 0
        return _rtds_set(xc, ref.domid, vcpus if opt_v else None, periods, budgets, extras)


# ---- CPU pools --------------------------------------------------------------------------
@honours_dryrun
def cmd_cpupool_create(argv: list[str]) -> int:
    """xl_cpupool.c's -n sets the global dryrun_only, so -n and xl -N are one switch: the
    summary is printed and no pool is made."""
    p = new_parser("cpupool-create", "Create a new CPU pool")
    p.add_argument("-f", "--defconfig", dest="defconfig")
    p.add_argument("-n", "--dryrun", action="store_true")
    p.add_argument("args", nargs="*")
    ns = p.parse_args(argv)
    filename = ns.defconfig
    extra: list[str] = []
    for a in ns.args:
        if "=" in a:
            extra.append(a)
        elif filename is None:
            filename = a
        else:
            raise Usage(p.format_help(), 1)
    text = ""
    if filename is not None:
        try:
            text = decode(open(filename, "rb").read(), filename)
        except OSError as err:
            _err(f"Failed to read config file: {filename}: {err.strerror}")
            return 1
    source = filename if filename is not None else "command line"
    if extra:
        text += "\n" + "\n".join(extra) + "\n"
    try:
        settings = parse(text, source)
    except ConfigSyntaxError as err:
        _err(str(err))
        _err("Failed to parse config file: Invalid argument")
        return 1

    def string(key: str) -> str | None:
        s = settings.get(key)
        return s.value if s is not None and isinstance(s.value, str) else None

    name = string("name")
    if name is None:
        if filename is None:
            _err("Missing cpupool name!")
            return 1
        name = os.path.basename(filename)
    with ctrl() as xc:
        if libxl_sched.pool_by_name(xc, name) is not None:
            _err(f'Pool name "{name}" already exists')
            return 1
        sched = string("sched")
        if sched is None:
            sched = str(xc.call("xen_version")["scheduler"])
        elif sched not in ("credit", "credit2", "rtds", "arinc653", "null", "sedf"):
            _err("Unknown scheduler")
            return 1
        pools = libxl_sched.list_pools(xc)
        nr_cpus = _nr_cpus(xc)
        used = {c for pl in pools for c in pl["cpus"]}
        free = [c for c in range(nr_cpus) if c not in used]
        cpus: list[int] = []
        nodes, cpuset = settings.get("nodes"), settings.get("cpus")
        if nodes is not None and isinstance(nodes.value, list):
            cpus = [c for n in nodes.value if parse_uint(str(n)) == 0 for c in free]  # one node, 0
            if not cpus:
                _err("no free cpu found")
                return 1
        elif cpuset is not None and isinstance(cpuset.value, list):
            for item in cpuset.value:
                c = parse_uint(str(item))
                if c is None or c not in free:
                    _err(f"cpu {c if c is not None else str(item)} illegal or not free")
                    return 1
                cpus.append(c)
        elif cpuset is not None and isinstance(cpuset.value, str):
            chosen = _cpurange(cpuset.value, nr_cpus)
            if chosen is None:
                return 1
            for c in sorted(chosen):
                if c not in free:
                    _err(f"cpu {c} illegal or not free")
                    return 1
            cpus = sorted(chosen)
        sys.stdout.write(rs.cpupool_create_summary(source, name, sched, len(cpus)))
        if ns.dryrun or GLOBALS.dryrun:
            return 0
        if sched not in POOL_SCHEDULERS:
            _err(f"libxl: error: Could not create cpupool: Invalid argument (pyxen runs "
                 f"{', '.join(POOL_SCHEDULERS)} pools, not {sched})")
            _err("error on creating cpupool")
            return 1
        try:
            xc.call("sysctl.cpupool_op.create", name=name, sched=sched, cpus=cpus)
        except HypercallError as err:
            _err(f"libxl: error: Could not create cpupool: {err}")
            _err("error on creating cpupool")
            return 1
    return 0


def cmd_cpupool_list(argv: list[str]) -> int:
    p = new_parser("cpupool-list", "List CPU pools on host")
    p.add_argument("-c", "--cpus", action="store_true")
    p.add_argument("pool", nargs="?")
    ns = positionals(p, argv)
    with ctrl() as xc:
        pools = libxl_sched.list_pools(xc)
        if ns.pool is not None:
            poolid = libxl_sched.pool_by_name(xc, ns.pool)
            if poolid is None:
                _err(f"Pool '{ns.pool}' does not exist")
                return 1
            pools = [pl for pl in pools if pl["poolid"] == poolid]
    sys.stdout.write(rs.cpupool_list(pools, ns.cpus))
    return 0


def cmd_cpupool_destroy(argv: list[str]) -> int:
    p = new_parser("cpupool-destroy", "Deactivates a CPU pool")
    p.add_argument("pool")
    ns = positionals(p, argv)
    with ctrl() as xc:
        poolid = _pool(xc, ns.pool)
        if poolid is None:
            return 1
        pool = next(pl for pl in libxl_sched.list_pools(xc) if pl["poolid"] == poolid)
        if pool["n_dom"]:  # libxl_cpupool_destroy: ERROR_INVAL, no message of its own
            _err(f"Can't destroy cpupool '{ns.pool}'")
            return 1
        try:  # as libxl: its CPUs are freed one by one, then the pool goes
            for cpu in pool["cpus"]:
                xc.call("sysctl.cpupool_op.removecpu", poolid=poolid, cpu=cpu)
            xc.call("sysctl.cpupool_op.destroy", poolid=poolid)
        except HypercallError as err:
            _err(f"libxl: error: Could not destroy cpupool: {_strerror(err)}")
            _err(f"Can't destroy cpupool '{ns.pool}'")
            return 1
    return 0


def cmd_cpupool_rename(argv: list[str]) -> int:
    p = new_parser("cpupool-rename", "Renames a CPU pool")
    p.add_argument("pool")
    p.add_argument("newname")
    ns = positionals(p, argv)
    with ctrl() as xc:
        poolid = _pool(xc, ns.pool)
        if poolid is None:
            return 1
        try:
            xc.call("sysctl.cpupool_op.rename", poolid=poolid, name=ns.newname)
        except HypercallError as err:
            _err(f"libxl: error: {err}")
            _err(f"Can't rename cpupool '{ns.pool}'")
            return 1
    return 0


def _cpu_cmd(add: bool) -> Callable[[list[str]], int]:
    name = "cpupool-cpu-add" if add else "cpupool-cpu-remove"

    def run(argv: list[str]) -> int:
        p = new_parser(name, "Adds a CPU to a CPU pool" if add else "Removes a CPU from a CPU pool")
        p.add_argument("pool")
        p.add_argument("cpus")
        ns = positionals(p, argv)
        with ctrl() as xc:
            cpus = _cpurange(ns.cpus, _nr_cpus(xc))
            if cpus is None:
                return 1
            poolid = _pool(xc, ns.pool)
            if poolid is None:
                return 1
            failed = False
            for cpu in sorted(cpus):
                try:
                    xc.call(f"sysctl.cpupool_op.{'addcpu' if add else 'removecpu'}", poolid=poolid, cpu=cpu)
                except HypercallError as err:
                    what = "Error moving cpu %d to cpupool" if add else "Error removing cpu %d from cpupool"
                    _err(f"libxl: error: {what % cpu}: {_strerror(err)}")
                    failed = True
            if failed and add:
                _err(f"some cpus may not have been added to {ns.pool}")
            elif failed:
                _err(f"Some cpus may have not or only partially been removed from '{ns.pool}'.")
                _err(f"If a cpu can't be added to another cpupool, add it to '{ns.pool}' again and retry.")
        return 0  # as Xen's xl: the failure is said, the exit code is 0
    return run


def cmd_cpupool_migrate(argv: list[str]) -> int:
    p = new_parser("cpupool-migrate", "Moves a domain into a CPU pool")
    p.add_argument("domain")
    p.add_argument("pool")
    ns = positionals(p, argv)
    with ctrl() as xc:
        try:
            ref = libxl.resolve(xc, ns.domain)
        except HypercallError:
            ref = None
        if ref is None or not ref.name:
            _err(f"unknown domain '{ns.domain}'")
            return 1
        poolid = _pool(xc, ns.pool)
        if poolid is None:
            return 1
        try:
            xc.call("sysctl.cpupool_op.movedomain", poolid=poolid, domid=ref.domid)
        except HypercallError as err:
            _err(f"libxl: error: Domain {ref.domid}:Error moving domain to cpupool: {_strerror(err)}")
            return 1
    return 0


def cmd_cpupool_numa_split(argv: list[str]) -> int:
    p = new_parser("cpupool-numa-split", "Splits up the machine into one CPU pool per NUMA node")
    positionals(p, argv)
    with ctrl() as xc:
        pools = libxl_sched.list_pools(xc)
        if len(pools) > 1:
            _err("splitting not possible, already cpupools in use")
            return 1
        phys = xc.call("sysctl.physinfo")
        nr_nodes = int(phys.get("nr_nodes", 1)) or 1
        nr_cpus = int(phys["nr_cpus"])
        # pyxen's hosts report their CPUs as NUMA node 0 ... nr_nodes-1 in equal blocks.
        per = max(1, nr_cpus // nr_nodes)
        node_cpus = {n: [c for c in range(nr_cpus) if min(c // per, nr_nodes - 1) == n] for n in range(nr_nodes)}
        try:
            for cpu in node_cpus[0]:
                if cpu not in pools[0]["cpus"]:
                    xc.call("sysctl.cpupool_op.addcpu", poolid=0, cpu=cpu)
            xc.call("sysctl.cpupool_op.rename", poolid=0, name="Pool-node0")
        except HypercallError as err:
            _err(f"libxl: error: {err}")
            _err("error on renaming Pool 0")
            return 1
        for node in range(1, nr_nodes):
            try:
                for cpu in node_cpus[node]:
                    xc.call("sysctl.cpupool_op.removecpu", poolid=0, cpu=cpu)
            except HypercallError:
                _err("error on removing cpu from Pool 0")
                return 1
            try:
                xc.call("sysctl.cpupool_op.create", name=f"Pool-node{node}", sched=pools[0]["sched"],
                        cpus=node_cpus[node])
            except HypercallError:
                _err("error on creating cpupool")
                return 1
    return 0


#: xl's commands that this module implements: name -> (function, one-line description).
COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "vcpu-list": (cmd_vcpu_list, "List the VCPUs for all/some domains"),
    "vcpu-pin": (cmd_vcpu_pin, "Set which CPUs a VCPU can use"),
    "vcpu-set": (cmd_vcpu_set, "Set the number of active VCPUs allowed for the domain"),
    "sched-credit": (_sched_cmd("credit"), "Get/set credit scheduler parameters"),
    "sched-credit2": (_sched_cmd("credit2"), "Get/set credit2 scheduler parameters"),
    "sched-rtds": (cmd_sched_rtds, "Get/set rtds scheduler parameters"),
    "cpupool-create": (cmd_cpupool_create, "Create a new CPU pool"),
    "cpupool-list": (cmd_cpupool_list, "List CPU pools on host"),
    "cpupool-destroy": (cmd_cpupool_destroy, "Deactivates a CPU pool"),
    "cpupool-rename": (cmd_cpupool_rename, "Renames a CPU pool"),
    "cpupool-cpu-add": (_cpu_cmd(True), "Adds a CPU to a CPU pool"),
    "cpupool-cpu-remove": (_cpu_cmd(False), "Removes a CPU from a CPU pool"),
    "cpupool-migrate": (cmd_cpupool_migrate, "Moves a domain into a CPU pool"),
    "cpupool-numa-split": (cmd_cpupool_numa_split, "Splits up the machine into one CPU pool per NUMA node"),
}
