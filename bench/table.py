"""The README's benchmark table, written from the committed result files in bench/results/.

Each benchmark writes ``bench/results/<name>.json`` with its run facts (date, revision, machine,
load, every round), a ``"what"`` sentence and ``"figures"`` (pyxen.testing.bench.figure: the
headline numbers with their goals, computed from the rounds). This script renders one row per
result file between the README's ``<!-- bench-table -->`` markers, so no figure there is typed
by hand. A result file written before figures existed is read through its benchmark's own
``figures(result)`` and ``WHAT``.

``python bench/table.py`` rewrites README.md; ``--check`` exits 1 when README.md differs from
what the results say (tests/unit/test_bench_table.py runs it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
BEGIN, END = "<!-- bench-table -->", "<!-- /bench-table -->"
#: Row order: the goals of issue 13 first, then the older benchmarks.
ORDER = ("boot", "idle", "xenstore", "blk", "net", "scale", "migrate", "xapi", "guest")


def number(x: float) -> str:
    """Three significant digits, thousands written out (12,300 rather than 1.23e+04)."""
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def render_figure(f: dict[str, Any]) -> str:
    unit = f" {f['unit']}" if f["unit"] else ""
    if "ratio" in f:
        return f"{f['name']}: {number(f['pyxen'])} / {number(f['reference'])}{unit}, ratio {f['ratio']:.2f}"
    return f"{f['name']}: {number(f['value'])}{unit}"


def render_goal(f: dict[str, Any]) -> str:
    op, bound = f["goal"]
    what = f"{f['name']} ratio {op} {bound:g}" if "ratio" in f else f"{f['name']} {op} {bound:g}{' ' + f['unit'] if f['unit'] else ''}"
    return f"{what}: {'met' if f['met'] else '**not met**'}"


def bench_module(name: str) -> Any:
    """bench/<name>.py imported by path (for WHAT and figures() of older result files)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return module


def row(name: str, result: dict[str, Any]) -> str:
    figures = result.get("figures")
    what = result.get("what")
    if figures is None or what is None:
        module = bench_module(name)
        figures = figures if figures is not None else module.figures(result)
        what = what if what is not None else module.WHAT
    when = f"{result['revision'][:7]}{'+changes' if result.get('dirty') else ''}, {result['date'][:10]}"
    shown = "; ".join(render_figure(f) for f in figures)
    goals = "; ".join(render_goal(f) for f in figures if "goal" in f) or "-"
    return f"| `bench/{name}.py` | {what} ({when}) | {shown} | {goals} |"


def table() -> str:
    names = sorted((p.stem for p in RESULTS.glob("*.json")),
                   key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    lines = ["| script | what (revision, date) | result | goal |", "|---|---|---|---|"]
    lines += [row(n, json.loads((RESULTS / f"{n}.json").read_text())) for n in names]
    return "\n".join(lines)


def readme_with_table(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"table: {README.name} has no {BEGIN} ... {END} section")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md's table is not what the results say")
    ns = ap.parse_args()
    text = README.read_text()
    new = readme_with_table(text)
    if ns.check:
        if new != text:
            print("table: README.md's benchmark table differs from bench/results/ (run python bench/table.py)",
                  file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
