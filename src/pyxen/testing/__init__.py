"""Helpers shared by the integration tests and the benchmarks: a started pyxen host driven
through its commands (host.py) throw-away bridges with link-local addressing (bridge.py) and a second host that looks like a
second machine: its own network namespace, xenbr0 and sshd (twohosts.py)."""
