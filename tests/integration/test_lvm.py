"""pyxen.storage.lvm on a real volume group built on a loop device (lvm2's own tools)."""

from __future__ import annotations

import os
import subprocess

import pytest

from pyxen.storage import lvm
from pyxen.testing.lvm import loop_volume_group


@pytest.fixture
def vg():
    with loop_volume_group() as name:
        yield name


def test_lvcreate_makes_a_block_device_over_the_volumes_extents(vg):
    path = lvm.lvcreate(vg, "f13", 40 << 30)  # the seed's lvcreate -L40G -n f13
    assert path == lvm.find(vg, "f13").path
    assert os.path.realpath(path).startswith("/dev/loop")
    size = int(subprocess.run(["blockdev", "--getsize64", str(path)], capture_output=True, text=True,
                              check=True).stdout)
    assert size == 40 << 30
    out = subprocess.run(["lvs", "--noheadings", "-o", "lv_name,lv_size", "--units", "g", vg],
                         capture_output=True, text=True, env=dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1"))
    assert out.stdout.split() == ["f13", "40.00g"]


def test_two_volumes_do_not_overlap_and_data_stays_put(vg):
    a = lvm.lvcreate(vg, "a", 8 << 20)
    b = lvm.lvcreate(vg, "b", 8 << 20)
    with open(a, "r+b") as f:
        f.write(b"A" * 4096)
    with open(b, "r+b") as f:
        f.write(b"B" * 4096)
        f.seek((8 << 20) - 4096)
        f.write(b"b" * 4096)
    with open(a, "rb") as f:
        assert f.read(4096) == b"A" * 4096
    lvm.deactivate(vg, "a")
    assert not a.exists()
    assert lvm.activate(vg, "a") == a
    with open(a, "rb") as f:
        assert f.read(4096) == b"A" * 4096


def test_resize_keeps_the_data_and_remove_frees_the_name(vg):
    path = lvm.lvcreate(vg, "disk", 4 << 20)
    with open(path, "r+b") as f:
        f.write(b"kept")
    path = lvm.lvresize(vg, "disk", 12 << 20)
    assert lvm.find(vg, "disk").size == 12 << 20
    with open(path, "rb") as f:
        assert f.read(4) == b"kept"
    lvm.lvremove(vg, "disk")
    assert not path.exists()
    with pytest.raises(lvm.LvmError, match=f"logical volume {vg}/disk not found"):
        lvm.find(vg, "disk")


def test_bad_names_and_sizes_are_refused_before_lvm_runs(vg):
    with pytest.raises(lvm.LvmError, match="invalid logical volume name 'a/b'"):
        lvm.lvcreate(vg, "a/b", 1 << 20)
    with pytest.raises(lvm.LvmError, match="size must be positive"):
        lvm.lvcreate(vg, "zero", 0)
    with pytest.raises(lvm.LvmError, match="Volume group \"nosuchvg\" not found|nosuchvg"):
        lvm.lvcreate("nosuchvg", "x", 1 << 20)
    assert [lv.name for lv in lvm.lvs(vg)] == []


def test_parse_lv_path():
    assert lvm.parse_lv_path("/dev/vg0/web-disk") == ("vg0", "web-disk")
    assert lvm.parse_lv_path("/dev/loop0") is None
    assert lvm.parse_lv_path("/srv/vg0/disk") is None


def test_growing_a_volume_with_no_room_after_it_moves_it(vg):
    a = lvm.lvcreate(vg, "a", 8 << 20)
    lvm.lvcreate(vg, "b", 4 << 20)  # right after a: a cannot grow in place
    data = os.urandom(8 << 20)
    with open(a, "r+b") as f:
        f.write(data)
    seen = []
    path = lvm.lvresize(vg, "a", 24 << 20, progress=lambda done, total: seen.append((done, total)))
    assert path == a and lvm.find(vg, "a").size == 24 << 20 and len(lvm.find(vg, "a").segments) == 1
    with open(a, "rb") as f:
        assert f.read(8 << 20) == data
    assert seen[-1] == (8 << 20, 8 << 20)
    assert sorted(lv.name for lv in lvm.lvs(vg)) == ["a", "b"]
