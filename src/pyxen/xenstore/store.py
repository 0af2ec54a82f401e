"""The store: an immutable tree of frozen nodes, plus its path rules.

Spec: docs/misc/xenstore.txt ("Paths", "Nodes"), C xenstored's path checks
(``is_valid_nodename``, path-max) and oxenstored's store.ml design: nodes are never changed in
place, an update copies only the nodes on the path to the change, so a transaction snapshot is
just a reference to the root (O(1)) and readers never see half an update.

Each node carries ``gen``, a stamp from one global counter that changes when the node's *own*
value, permissions or child list change (not when a descendant changes).  Transactions compare
stamps to detect conflicts; DIRECTORY_PART reports it as the child-list generation.
This module never sees a socket, a connection or a permission check.
"""

from __future__ import annotations

import re
from typing import Callable, Iterator, NamedTuple

from .errors import InvalidArgument
from .perms import DEFAULT_PERMS, Perms

#: A path as its components; ``()`` is the root "/".
Parts = tuple[str, ...]

_VALID = re.compile(r"[A-Za-z0-9\-/_@]+")
_DOMAIN_PREFIX = re.compile(r"^/local/domain/(\d+)(/|$)")


class Node(NamedTuple):
    """One node. ``children`` is a dict in creation order that is never mutated once built."""

    value: bytes
    perms: Perms
    children: dict[str, "Node"]
    gen: int


EMPTY_CHILDREN: dict[str, Node] = {}


def domain_path(domid: int) -> str:
    """GET_DOMAIN_PATH: pure formatting, as in C (no check that the domain exists)."""
    return f"/local/domain/{domid}"


def canonicalize(path: str, domid: int, path_max: int) -> str:
    """An absolute, validated path; relative ones resolve under /local/domain/<domid>.

    :raise InvalidArgument: for bad characters, empty components, a trailing slash, a path
        starting with '@' (special names are only for watches) or an over-long path.
    """
    if not path:
        raise InvalidArgument("empty path")
    if path[0] != "/":
        if path[0] == "@":
            raise InvalidArgument(f"special name {path!r} is not a node")
        path = f"/local/domain/{domid}/{path}"
    check_path(path, path_max)
    return path


def check_path(path: str, path_max: int) -> None:
    """:raise InvalidArgument: unless ``path`` is a valid absolute node path."""
    if path == "/":
        return
    if (not _VALID.fullmatch(path) or path.endswith("/") or "//" in path
            or path[0] != "/"):
        raise InvalidArgument(f"invalid path {path!r}")
    m = _DOMAIN_PREFIX.match(path)
    counted = len(path) - m.end() if m else len(path)
    if counted > path_max:
        raise InvalidArgument(f"path longer than {path_max}")


def split(path: str) -> Parts:
    """"/a/b" -> ("a", "b"); "/" -> ()."""
    if path == "/":
        return ()
    return tuple(path[1:].split("/"))


def join(parts: Parts) -> str:
    return "/" + "/".join(parts)


def lookup(root: Node, parts: Parts) -> Node | None:
    node: Node | None = root
    for name in parts:
        node = node.children.get(name)  # type: ignore[union-attr]
        if node is None:
            return None
    return node


def gen_at(root: Node, parts: Parts) -> int | None:
    """The node's stamp, or None if it is absent (absence is a state a tx can depend on)."""
    node = lookup(root, parts)
    return None if node is None else node.gen


def replace(root: Node, parts: Parts, new: Node | None, gen: int) -> Node:
    """A new root where the node at ``parts`` is ``new`` (None removes it).

    Only the ancestors are copied.  The parent must exist; its ``gen`` becomes ``gen`` when
    its child list changes (a child added or removed), and stays otherwise.
    """
    if not parts:
        if new is None:
            raise InvalidArgument("cannot remove /")
        return new
    chain: list[Node] = []
    node = root
    for name in parts[:-1]:
        chain.append(node)
        nxt = node.children.get(name)
        if nxt is None:
            raise KeyError(join(parts))
        node = nxt
    # node is the parent now
    name = parts[-1]
    children = dict(node.children)
    existed = name in children
    if new is None:
        if not existed:
            return root
        del children[name]
        child = node._replace(children=children, gen=gen)
    else:
        children[name] = new
        child = node._replace(children=children, gen=node.gen if existed else gen)
    for i in range(len(parts) - 2, -1, -1):
        parent = chain[i]
        pchildren = dict(parent.children)
        pchildren[parts[i]] = child
        child = parent._replace(children=pchildren)
    return child


def walk(node: Node, parts: Parts = ()) -> Iterator[tuple[Parts, Node]]:
    """Pre-order (parent before children), in child order."""
    stack: list[tuple[Parts, Node]] = [(parts, node)]
    while stack:
        p, n = stack.pop()
        yield p, n
        for name in reversed(list(n.children)):
            stack.append((p + (name,), n.children[name]))


def count(node: Node) -> int:
    return sum(1 for _ in walk(node))


def node_size(node: Node) -> int:
    """C xenstored's record size for the node-size quota: a 24-byte header, 8 bytes per
    permission entry, the value, and each child name with its NUL."""
    return (24 + 8 * len(node.perms) + len(node.value)
            + sum(len(n) + 1 for n in node.children))


def initial_root(gen: int) -> Node:
    """C xenstored's tree (/ -> /tool -> /tool/xenstored, all n0) plus what xen-init-dom0
    writes: /local/domain/0/{domid = "0", name = "Domain-0"}."""
    def leaf(value: bytes = b"") -> Node:
        return Node(value, DEFAULT_PERMS, EMPTY_CHILDREN, gen)

    def dir_(**children: Node) -> Node:
        return Node(b"", DEFAULT_PERMS, dict(children), gen)

    dom0 = Node(b"", DEFAULT_PERMS, {"domid": leaf(b"0"), "name": leaf(b"Domain-0")}, gen)
    return dir_(tool=dir_(xenstored=leaf()),
                local=dir_(domain=Node(b"", DEFAULT_PERMS, {"0": dom0}, gen)))


#: A journal record: ("N", path, value, perms) sets a node's own value and perms (creating it
#: under an existing parent, keeping children if it exists); ("D", path) removes a subtree.
Record = tuple


class Store:
    """The canonical root, the generation counter and per-owner node counts.

    Only ``Transaction.commit`` changes ``root``; ``on_commit`` (persistence) receives the
    records of every commit before anyone can be answered.
    """

    def __init__(self, root: Node | None = None, gen: int = 1) -> None:
        self.gen = gen
        self.root: Node = root if root is not None else initial_root(gen)
        self.owned: dict[int, int] = {}
        for _, node in walk(self.root):
            owner = node.perms[0].domid
            self.owned[owner] = self.owned.get(owner, 0) + 1
        self.on_commit: "Callable[[list[Record]], None] | None" = None

    def next_gen(self) -> int:
        self.gen += 1
        return self.gen

    def apply(self, root: Node, owned_delta: dict[int, int], records: list[Record]) -> None:
        self.root = root
        for domid, delta in owned_delta.items():
            self.owned[domid] = self.owned.get(domid, 0) + delta
        if records and self.on_commit is not None:
            self.on_commit(records)

    def read(self, path: str) -> bytes | None:
        """Convenience for tests and the daemon itself: the value at an absolute path."""
        node = lookup(self.root, split(path))
        return None if node is None else node.value
