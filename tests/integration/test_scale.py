"""bench/scale.py's logic with three guests: every create, up line and ``xl list`` sample is
recorded and right, the memory samples cover the daemons and QEMU apart, and destroying the
guests leaves nothing (the same leftover check sees the guests while they run). No timing is
asserted: the figures are the benchmark's business."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from ..conftest import Host

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench" / "scale.py"


def load_scale() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_scale", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_three_guests_come_up_list_right_and_leave_nothing(host: Host) -> None:
    scale = load_scale()
    res = scale.run(host, 3, memory=96, checkpoints=(), cpu_window=0.2, list_repeats=1,
                   say=lambda _: None)
    assert [g["rc"] for g in res["guests"]] == [0, 0, 0], res["guests"]
    assert res["lost"] == 0 and not res["not_up"]
    assert all("up_s" in g and g["up_s"] > 0 for g in res["guests"])
    assert [row["domains"] for row in res["lists"] if not row.get("idle")] == [1, 2, 3]
    assert not [row for row in res["lists"] if row["problems"]], res["lists"]
    assert [s["domains"] for s in res["samples"]] == [0, 3]
    last = res["samples"][-1]
    assert last["qemu"]["count"] == 3
    names = {p["name"] for p in last["processes"].values()}
    assert {"hypervisor", "xenstore", "console", "backends", "toolstack.monitor"} <= names
    assert last["daemons"]["pss"] > 0 and last["daemons"]["rss"] >= last["daemons"]["pss"]
    seen = res["seen_while_running"]
    assert len(seen["qemu"]) == 3 and len(seen["xenstore_local_domain"]) == 3
    assert seen["domains"] == ["scale1", "scale2", "scale3"] and seen["memory_kib_not_returned"] > 0
    assert res["clean"], {k: v for k, v in res["leftovers"].items() if v}
    assert scale.summarize(res)["figures"]


def test_check_list_names_every_kind_of_wrong_row() -> None:
    scale = load_scale()
    head = "Name                                        ID   Mem VCPUs\tState\tTime(s)\n"
    out = head + ("Domain-0 0 1024 2 r----- 5.0\na 1 128 1 -b---- 0.1\nb 7 128 1 --p--- 0.1\n"
                  "c 3 128 1 ---s-- 0.1\nx 9 128 1 -b---- 0.1\n")
    assert scale.check_list(out, {"a": 1, "b": 2, "c": 3, "d": 4}) == [
        "b has id 7, not 2", "c is in state ---s--", "d missing", "unexpected domain x"]
    assert scale.check_list(head + "Domain-0 0 1024 2 r----- 5.0\na 1 128 1 r----- 0.1\n", {"a": 1}) == []
    assert scale.restarts(out, {"a": 1, "b": 2, "d": 4}) == {"b": 7}
