"""store.py: immutable tree, path rules, generation stamps."""

import pytest

from pyxen.xenstore.errors import InvalidArgument
from pyxen.xenstore.perms import DEFAULT_PERMS
from pyxen.xenstore.store import (EMPTY_CHILDREN, Node, Store, canonicalize, count, gen_at,
                                  initial_root, lookup, replace, split)


def leaf(v: bytes, gen: int = 1) -> Node:
    return Node(v, DEFAULT_PERMS, EMPTY_CHILDREN, gen)


def test_initial_tree_is_c_xenstored_plus_dom0() -> None:
    root = initial_root(1)
    assert list(root.children) == ["tool", "local"]
    assert lookup(root, ("tool", "xenstored")) is not None
    assert lookup(root, split("/local/domain/0/name")).value == b"Domain-0"
    assert lookup(root, split("/local/domain/0/domid")).value == b"0"
    assert root.perms == DEFAULT_PERMS


@pytest.mark.parametrize("path", ["/a", "/a/b-c_d", "/@x", "/", "/A9"])
def test_valid_paths(path: str) -> None:
    assert canonicalize(path, 0, 2048) == path


@pytest.mark.parametrize("path", ["", "/a/", "//a", "/a//b", "/a b", "/a\n", "/ä", "@foo",
                                  "/a.b"])
def test_invalid_paths(path: str) -> None:
    with pytest.raises(InvalidArgument):
        canonicalize(path, 0, 2048)


def test_relative_paths_resolve_under_the_callers_domain() -> None:
    assert canonicalize("a/b", 0, 2048) == "/local/domain/0/a/b"
    assert canonicalize("x", 7, 2048) == "/local/domain/7/x"


def test_path_max_counts_only_the_part_below_the_domain_path() -> None:
    assert canonicalize("/local/domain/5/" + "a" * 20, 0, 20)
    with pytest.raises(InvalidArgument):
        canonicalize("/local/domain/5/" + "a" * 21, 0, 20)
    with pytest.raises(InvalidArgument):
        canonicalize("/" + "a" * 20, 0, 20)


def test_replace_copies_only_the_path_and_keeps_old_roots() -> None:
    root = initial_root(1)
    new = replace(root, ("tool", "x"), leaf(b"1", 2), 2)
    assert lookup(root, ("tool", "x")) is None  # the old snapshot is unchanged
    assert lookup(new, ("tool", "x")).value == b"1"
    assert new.children["local"] is root.children["local"]  # untouched subtree shared
    assert lookup(new, ("tool",)).gen == 2  # child list changed
    assert new.gen == root.gen  # grandparent: only a descendant changed


def test_value_change_does_not_bump_parent_gen() -> None:
    root = replace(initial_root(1), ("a",), leaf(b"", 2), 2)
    root = replace(root, ("a", "b"), leaf(b"1", 3), 3)
    g = gen_at(root, ("a",))
    root2 = replace(root, ("a", "b"), leaf(b"2", 4), 4)
    assert gen_at(root2, ("a",)) == g
    assert gen_at(root2, ("a", "b")) == 4


def test_remove_subtree() -> None:
    root = replace(initial_root(1), ("a",), leaf(b"", 2), 2)
    root = replace(root, ("a", "b"), leaf(b"", 3), 3)
    gone = replace(root, ("a",), None, 4)
    assert lookup(gone, ("a", "b")) is None
    assert count(gone) == count(initial_root(1))


def test_children_keep_creation_order() -> None:
    root = initial_root(1)
    for i, name in enumerate(["z", "a", "m"]):
        root = replace(root, (name,), leaf(b"", i + 2), i + 2)
    assert list(root.children)[-3:] == ["z", "a", "m"]


def test_store_counts_owned_nodes() -> None:
    s = Store()
    assert s.owned[0] == count(s.root)
