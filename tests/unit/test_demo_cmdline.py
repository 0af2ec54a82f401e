"""The demo guest's kernel command line is one constant (pyxen.paths.DEMO_CMDLINE); the
example config make run boots, which cannot import it, must say the same."""

from __future__ import annotations

from pathlib import Path

from pyxen.paths import DEMO_CMDLINE
from pyxen.toolstack import config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "demo.cfg"


def test_make_runs_demo_cfg_boots_the_demo_command_line() -> None:
    assert config.load(EXAMPLE).cmdline == DEMO_CMDLINE


def test_the_demo_command_line_skips_the_timer_check_and_keeps_acpi_irq_routing() -> None:
    """acpi=noirq made boots cheaper but the guest then ignores a hot-added vCPU."""
    words = set(DEMO_CMDLINE.split())
    assert {"no_timer_check", "console=ttyS0"} <= words and "acpi=noirq" not in words
