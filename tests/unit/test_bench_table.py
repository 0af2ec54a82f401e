"""bench/table.py: the README's benchmark table is what the committed result files say, and a
result file's figures render as the table shows them (pyxen.testing.bench.figure)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pyxen.testing.bench import figure

ROOT = Path(__file__).resolve().parents[2]


def table_module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_table", ROOT / "bench" / "table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_table_is_the_one_the_results_give() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "table.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_result_renders_its_figures_and_goals() -> None:
    result = {"date": "2026-12-01T10:00:00+00:00", "revision": "0123456789abcdef", "dirty": False,
              "what": "a thing vs its reference",
              "figures": [figure("seq read", "MB/s", pyxen=96.0, reference=100.0, ratio=0.97, goal=(">=", 0.95)),
                          figure("xl list at 50", "ms", value=123.4, goal=("<=", 100)),
                          figure("rate", "reads/s", value=12345.6)]}
    assert table_module().row("blk", result) == (
        "| `bench/blk.py` | a thing vs its reference (0123456, 2026-12-01) | seq read: 96 / 100 MB/s, ratio 0.97; "
        "xl list at 50: 123 ms; rate: 12,346 reads/s | seq read ratio >= 0.95: met; "
        "xl list at 50 <= 100 ms: **not met** |")


def test_a_figure_is_either_compared_or_plain_and_computes_met() -> None:
    assert figure("x", "s", value=2.0, goal=("<", 2.0))["met"] is False
    assert figure("x", "", pyxen=1.0, reference=2.0, ratio=0.5, goal=("<=", 0.5))["met"] is True
    with pytest.raises(ValueError, match="either ratio"):
        figure("x", "s", value=1.0, ratio=1.0, pyxen=1.0, reference=1.0)
    with pytest.raises(ValueError, match="needs pyxen and reference"):
        figure("x", "s", ratio=1.0)
    with pytest.raises(ValueError, match="goal operator '=='"):
        figure("x", "s", value=1.0, goal=("==", 1.0))
