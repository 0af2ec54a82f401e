"""``make run``'s last step: start the host, boot the demo domain, show ``xl list`` and its console.

Idempotent: a running host and a running demo domain are left as they are and shown again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from .cli.pyxen import host_start
from .hypervisor.client import XenCtrl
from .images.demo import ImageBuildError, build
from .paths import Paths
from .xapi.state import read_addresses

UP_LINE = "pyxen demo guest up"
#: How long the demo guest may take to print its up line (TCG on a loaded 2-core host).
BOOT_TIMEOUT = 120.0


def wait_for_line(log: Path, line: str, timeout: float, start: int = 0) -> str | None:
    """The console log's text from offset ``start`` up to and including ``line``, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = log.read_bytes()[start:].decode(errors="replace")
        except FileNotFoundError:
            text = ""
        if line in text:
            return text[: text.index(line) + len(line)]
        time.sleep(0.1)
    return None


def main() -> int:
    paths = Paths.from_env()
    try:
        build()
    except ImageBuildError as err:
        print(f"pyxen: demo guest: {err}", file=sys.stderr)
        return 1
    if host_start(paths) != 0:
        return 1
    cfg = Path(__file__).resolve().parents[2] / "examples" / "demo.cfg"
    with XenCtrl(paths.hypervisor_socket) as xc:
        running = any(d["name"] == "demo" for d in xc.call("sysctl.getdomaininfolist"))
    log = paths.console_log("demo")
    if not running:
        # A fresh boot writes a fresh log section: remember where it starts.
        start = log.stat().st_size if log.exists() else 0
        rc = subprocess.call(["xl", "create", str(cfg)], env=os.environ)
        if rc != 0:
            return rc
    else:
        start = 0
    text = wait_for_line(log, UP_LINE, BOOT_TIMEOUT, start)
    subprocess.call(["xl", "list"])
    print(f"\n--- console of demo ({log}) ---")
    if text is None:
        print(f"pyxen: the demo guest did not print '{UP_LINE}' within {BOOT_TIMEOUT:.0f} s", file=sys.stderr)
        return 1
    # The most recent boot only, without the terminal escape noise of the shell prompt.
    boot = text.rfind("pyxen demo guest:")
    print(text[max(boot, 0):].strip())
    print("---\nThe demo domain keeps running: `xl console demo` attaches (Ctrl-] detaches), "
          "`make stop` stops everything.")
    urls = read_addresses(paths)
    if urls:
        print(f"XenAPI (xapi): {' '.join(urls)} (user root; set the password with "
              "`echo PASSWORD | pyxen host passwd`; docs/xenapi.md has a tutorial).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
