"""``python -m pyxen.xapi --root DIR``: the XenAPI server, in the foreground."""

from .server import main

raise SystemExit(main())
