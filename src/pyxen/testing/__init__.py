"""Helpers shared by the integration tests and the benchmarks: a started pyxen host driven
through its commands (host.py) and throw-away bridges with link-local addressing (bridge.py)."""
