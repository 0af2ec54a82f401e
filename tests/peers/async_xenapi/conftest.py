"""Plumbing for the vendored async-xenapi benchmark (see README.md): upstream's test file needs
a live host in HOST_URL/USERNAME/PASSWORD and asyncio loops of class scope, so it is collected only
by the child pytest that tests/peers/test_xapi_clients.py starts with those settings. The directory
holding this file goes first on sys.path so that ``import async_xenapi`` finds the vendored copy."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if os.environ.get("PYXEN_RUN_ASYNC_XENAPI") == "1":
    sys.path.insert(0, str(HERE))
    collect_ignore_glob: list[str] = []
else:
    collect_ignore_glob = ["test_*.py", "async_xenapi/*"]
