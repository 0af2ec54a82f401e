"""xenconsoled, a daemon of its own: keeps each guest's console log and serves ``xl console``.

``domain.py`` is one guest's console (FIFOs, log, client socket); ``xenconsoled.py`` finds the
domains in xenstore and runs the daemon. The ``xl console`` client is ``pyxen.cli.console``.
"""
