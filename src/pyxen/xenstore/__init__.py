"""pyxen's xenstored: Xen's store daemon and client, speaking xs_wire.h on Unix sockets.

Spec: xen/include/public/io/xs_wire.h and docs/misc/xenstore.txt.  Modules, one noun each:
wire (codec), errors, perms, store (immutable tree), quota, transaction, connection,
connections (registry + watch index), domains, persistence (journal), process (handler
table), xenstored (daemon state), server (asyncio transports, flow control), config,
ops (every client request, defined once, sans-I/O), client (its blocking and asyncio
drivers), access_log.
Run the daemon with ``python -m pyxen.xenstore``. Its loggers are ``pyxen.xenstore.*``:
pyxen's NullHandler (pyxen/__init__.py) covers them, and importing the client costs no logging.
"""
