"""Dom0's split-driver backends: blkback and netback, served to the guests' virtio frontends
over vhost-user, driven by the xenstore backend directories (ARCHITECTURE.md).

Imports run one way: ``daemon`` -> ``{block,net}.xenbus`` (each device type's xenbus side) ->
``common.xenbus`` (XenbusState, the transition table); nothing here imports the toolstack.
"""

from __future__ import annotations
