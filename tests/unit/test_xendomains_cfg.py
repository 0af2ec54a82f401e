"""host.cfg's xendomains_* keys (Xen's sysconfig.xendomains) and which files of the save folder
xendomains restores. Pure: files in a temporary folder, no daemon."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyxen.host.xendomains import saved_images
from pyxen.hypervisor.hostcfg import DEFAULT_TEXT, HostConfig, HostConfigError, XendomainsConfig
from pyxen.toolstack.savefile import MAGIC, encode


def load(tmp_path: Path, text: str) -> XendomainsConfig:
    path = tmp_path / "host.cfg"
    path.write_text(text)
    return HostConfig.load(path).xendomains


def test_defaults_are_xens_with_the_folders_in_the_root(tmp_path: Path) -> None:
    x = load(tmp_path, "")
    assert x == XendomainsConfig(save=Path("save"), restore=True, migrate=(), auto=Path("auto"),
                                 auto_only=False, shutdown=("--wait",), shutdown_all=("--all", "--wait"),
                                 create_usleep=5_000_000, stop_maxwait=300)
    assert x.save_dir(tmp_path) == tmp_path / "save" and x.auto_dir(tmp_path) == tmp_path / "auto"


def test_the_written_default_file_says_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "host.cfg"
    assert HostConfig.load(path).xendomains == XendomainsConfig()  # (writes DEFAULT_TEXT)
    assert path.read_text() == DEFAULT_TEXT and "xendomains_save = \"save\"" in DEFAULT_TEXT


def test_every_key_is_read(tmp_path: Path) -> None:
    x = load(tmp_path, '''
xendomains_save = "/srv/saved"
xendomains_restore = "false"
xendomains_migrate = "-s ssh  otherhost"
xendomains_auto = "/etc/xen/auto"
xendomains_auto_only = "false"
xendomains_shutdown = ""
xendomains_shutdown_all = "--all"
xendomains_sysrq = ""
xendomains_usleep = 0
xendomains_create_usleep = 0x10
xendomains_stop_maxwait = "0"
''')
    assert x == XendomainsConfig(save=Path("/srv/saved"), restore=False, migrate=("-s", "ssh", "otherhost"),
                                 auto=Path("/etc/xen/auto"), auto_only=False, shutdown=None,
                                 shutdown_all=("--all",), create_usleep=16, stop_maxwait=0)
    assert x.save_dir(tmp_path) == Path("/srv/saved")  # absolute: not moved into the root


def test_empty_folders_turn_the_step_off(tmp_path: Path) -> None:
    x = load(tmp_path, 'xendomains_save = ""\nxendomains_auto = ""\n')
    assert (x.save, x.auto, x.save_dir(tmp_path), x.auto_dir(tmp_path)) == (None, None, None, None)


@pytest.mark.parametrize("line, message", [
    ('xendomains_restore = "yes"', 'xendomains_restore must be "true" or "false", not \'yes\''),
    ('xendomains_auto_only = 1', 'xendomains_auto_only must be "true" or "false", not \'1\''),
    ('xendomains_stop_maxwait = "5m"', "xendomains_stop_maxwait must be a number, not '5m'"),
    ('xendomains_create_usleep = "-1"', "xendomains_create_usleep must be a number, not '-1'"),
    ('xendomains_usleep = "soon"', "xendomains_usleep must be a number, not 'soon'"),
    ('xendomains_save = ["a"]', "xendomains_save must be a string"),
    ('xendomains_sysrq = "s"', "xendomains_sysrq is not supported"),
    ('xendomains_sav = "x"', "unknown setting xendomains_sav (xendomains' are xendomains_save, "),
])
def test_bad_values_are_one_line_naming_the_key(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(HostConfigError) as exc:
        load(tmp_path, line + "\n")
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert str(exc.value).startswith(str(tmp_path / "host.cfg"))


def test_saved_images_are_the_files_that_start_like_xls(tmp_path: Path) -> None:
    save = tmp_path / "save"
    assert saved_images(save) == []  # no folder: nothing
    save.mkdir()
    (save / "b").write_bytes(encode({"name": "b"}) + b"stream")
    (save / "a").write_bytes(MAGIC[:16])  # Xen compares 16 bytes only: kept for xl to judge
    (save / "short").write_bytes(MAGIC[:15])
    (save / "notes.txt").write_text("the saved domains live here\n")
    (save / "dir").mkdir()
    (save / "dir" / "c").write_bytes(MAGIC)
    (save / "link").symlink_to(save / "b")  # a regular file through a link, as test -f says
    assert saved_images(save) == [save / "a", save / "b", save / "link"]


#: Xen's xendomains.in (HEAD c447b73): the grep and parseln that read ``xl list -l``, verbatim.
XEN_LIST_PARSER = r'''
LIST_GREP='(domain\|(domid\|(name\|^    {$\|"name":\|^        "domid":'
parseln()
{
    if [[ "$1" =~ '(domain' ]] || [[ "$1" = "{" ]]; then
        name=;id=
    elif [[ "$1" =~ '(name' ]]; then
        name=$(echo $1 | sed -e 's/^.*(name \(.*\))$/\1/')
    elif [[ "$1" =~ '(domid' ]]; then
        id=$(echo $1 | sed -e 's/^.*(domid \(.*\))$/\1/')
    elif [[ "$1" =~ '"name":' ]]; then
        name=$(echo $1 | sed -e 's/^.*"name": "\(.*\)",$/\1/')
    elif [[ "$1" =~ '"domid":' ]]; then
        id=$(echo $1 | sed -e 's/^.*"domid": \(.*\),$/\1/')
    fi

    [ -n "$name" -a -n "$id" ] && return 0 || return 1
}
name=;id=
while read LN; do
    parseln "$LN" || continue
    echo "$id $name"
done < <(grep "$LIST_GREP" "$1")
'''


def test_xl_list_long_keeps_the_layout_xens_script_parses(tmp_path: Path) -> None:
    """Xen's own xendomains, run against pyxen's ``xl list -l``, finds each domain's id and
    name: the indentation and trailing commas are an interface."""
    import shutil
    import subprocess

    from pyxen.cli.render import xl_list_long
    from pyxen.toolstack.config import DomainConfig
    from pyxen.toolstack.libxl_json import LiveState, dom0_config, live_config

    if shutil.which("bash") is None:
        pytest.skip("no bash")

    def info(domid: int, name: str) -> dict[str, object]:
        return {"domid": domid, "type": "pv", "name": name, "uuid": f"{domid:08d}-0000-0000-0000-000000000000",
                "max_vcpus": 1, "online_vcpus": 1, "max_memkb": 131072, "memory_kb": 131072,
                "cpu_weight": 256, "cap": 0}

    listing = tmp_path / "list.json"
    web = DomainConfig(name="web-1", kernel="/k", disks=("file:/d.img,xvda,w",), vifs=("bridge=xenbr0",),
                       settings=(("name", "web-1"), ("kernel", "/k"), ("disk", ("file:/d.img,xvda,w",)),
                                 ("vif", ("bridge=xenbr0",))))
    listing.write_text(xl_list_long([(0, dom0_config(LiveState.from_info(info(0, "Domain-0")))),
                                     (7, live_config(web, LiveState.from_info(info(7, "web-1"))))]))
    script = tmp_path / "parse.sh"
    script.write_text(XEN_LIST_PARSER)
    done = subprocess.run(["bash", str(script), str(listing)], capture_output=True, text=True, timeout=30)
    # Domain 0's c_info ends with its name (xen-init-dom0's stub has no uuid when Xen's is nil),
    # so the script's sed, which wants a trailing comma, keeps the whole line, as with Xen's xl.
    assert done.stdout.splitlines() == ['0 "name": "Domain-0"', "7 web-1"], (done.stdout, done.stderr)
