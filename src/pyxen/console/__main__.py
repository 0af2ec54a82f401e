"""``python -m pyxen.console --root DIR``: xenconsoled, in the foreground."""

from .xenconsoled import main

raise SystemExit(main())
