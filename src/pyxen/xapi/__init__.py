"""pyxen's xapi: the Xen Cloud Platform's management API (XenAPI) over XML-RPC and JSON-RPC,
its database, and the behaviour of its classes on real pyxen domains."""
