"""``python -m pyxen.backends --root DIR``: the Dom0 backend daemon (blkback + netback)."""

from .daemon import main

raise SystemExit(main())
