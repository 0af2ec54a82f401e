"""pyxen.records.NamedTuple makes the class typing.NamedTuple makes, without importing typing;
paths.root_from_env makes the root Paths.from_env does, without pathlib."""

from __future__ import annotations

import os
import typing
from pathlib import Path

import pytest

from pyxen import paths, records


def _declare(base: typing.Any) -> type:
    class Spec(base):
        """A record with a default, a property and a classmethod."""

        name: str
        weight: int = 256

        @property
        def heavy(self) -> bool:
            return self.weight > 256

        @classmethod
        def named(cls, name: str) -> typing.Any:
            return cls(name)

    return Spec


def test_a_record_behaves_as_typings_namedtuple() -> None:
    ours, theirs = _declare(records.NamedTuple), _declare(typing.NamedTuple)
    for cls in (ours, theirs):
        spec = cls.named("dom1")
        assert isinstance(spec, tuple) and tuple(spec) == ("dom1", 256)
        assert repr(spec) == "Spec(name='dom1', weight=256)"
        assert spec._replace(weight=512).heavy and not spec.heavy
        assert cls._fields == ("name", "weight") and cls._field_defaults == {"weight": 256}
        assert cls.__doc__ == "A record with a default, a property and a classmethod."
        assert cls.__module__ == __name__ and cls.__qualname__.endswith("Spec")
        assert list(cls.__annotations__) == ["name", "weight"]


def test_a_record_refuses_what_typing_refuses() -> None:
    with pytest.raises(TypeError, match="without a default follows"):
        class Bad(records.NamedTuple):
            a: int = 1
            b: int
    with pytest.raises(AttributeError, match="Cannot overwrite NamedTuple attribute _replace"):
        class Clash(records.NamedTuple):
            a: int

            def _replace(self) -> None: ...
    with pytest.raises(TypeError, match="class form"):
        records.NamedTuple("Functional", [("a", int)])  # type: ignore[call-overload]


@pytest.mark.parametrize("root", ["/srv/pyxen", "/srv//pyxen/", "rel/dir", "."])
def test_root_from_env_names_the_folder_paths_from_env_does(root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Path(paths.root_from_env(root)) == paths.Paths.from_env(root).root == Path(root).absolute()
    monkeypatch.setenv("PYXEN_ROOT", root)
    assert Path(paths.root_from_env()) == Path(root).absolute()
    monkeypatch.delenv("PYXEN_ROOT")
    assert paths.root_from_env() == paths.DEFAULT_ROOT


def test_the_files_xl_joins_as_strings_are_paths_properties(tmp_path: Path) -> None:
    p = paths.Paths.from_env(tmp_path)
    root = paths.root_from_env(tmp_path)
    assert Path(os.path.join(root, paths.HYPERVISOR_SOCKET)) == p.hypervisor_socket == p.run / "hypervisor.sock"
    assert Path(os.path.join(root, paths.XENSTORED_SOCKET)) == p.xenstored_socket == p.xenstored_dir / "socket"
    assert Path(os.path.join(root, paths.XL_CONF)) == p.xl_conf
