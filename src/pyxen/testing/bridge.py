"""Throw-away Linux bridges for network tests and benchmarks (needs root).

Rules the callers follow: guests get link-local addresses only (169.254.0.0/16), and Dom0's end
of a test bridge, when there is one, is a veth inside a network namespace created here, so no
traffic can reach any other network. Everything created is removed on exit, also on failure.
"""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from typing import Iterator


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True)


@contextmanager
def link_local_bridge(dom0_ip: str | None = None, tag: str | None = None) -> Iterator[tuple[str, str | None]]:
    """A bridge ``pxbr<tag>``; with ``dom0_ip`` (e.g. "169.254.77.100") also Dom0's end: a veth
    on the bridge whose peer sits in a fresh namespace ``pxns<tag>`` at ``dom0_ip``/16.
    Yields (bridge, namespace or None)."""
    tag = tag or f"{os.getpid() % 100000}"
    br, ns, veth = f"pxbr{tag}", f"pxns{tag}", f"pxv{tag}"
    try:
        made = sh("ip", "link", "add", br, "type", "bridge")
        if made.returncode != 0:
            raise RuntimeError(f"cannot create bridge {br}: {made.stderr.strip()}")
        sh("ip", "link", "set", br, "up")
        if dom0_ip is None:
            yield br, None
            return
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", veth + "p")
        sh("ip", "link", "set", veth + "p", "netns", ns)
        sh("ip", "link", "set", veth, "master", br)
        sh("ip", "link", "set", veth, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{dom0_ip}/16", "dev", veth + "p")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", veth + "p", "up")
        yield br, ns
    finally:
        if dom0_ip is not None:
            sh("ip", "link", "del", veth)
            sh("ip", "netns", "del", ns)
        sh("ip", "link", "del", br)
