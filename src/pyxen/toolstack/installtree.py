"""Install trees for ``virt-install --location``: find the installer's kernel and initrd in a
distribution's tree (a local directory or an http(s):// URL) and copy them to Dom0.

Detection follows virt-manager's virtinst/install/urldetect.py for the trees a Xen PV install
uses: a ``.treeinfo`` (Red Hat family) names the PV pair in ``[images-xen]``; a Debian tree is
recognised by a MANIFEST that mentions Debian, and the PV pair ``netboot/xen/{vmlinuz,initrd.gz}``
is tried before the HVM pair ``netboot/debian-installer/<arch>/{linux,initrd.gz}``. The first
pair whose two files exist wins. ``detect`` is pure over a ``Tree`` (two questions: "what is in
this file" and "is this file there"), so it is tested on fake trees; ``open_tree`` gives the
real ones.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

#: Seconds one HTTP request of the tree may take (connect and each read).
HTTP_TIMEOUT = 30.0
#: The arch when the URL names none (urldetect's default is i386; pyxen's guests are x86_64).
DEFAULT_ARCH = "amd64"
#: Files read whole during detection are small (MANIFEST, .treeinfo); more is not a tree file.
MAX_PROBE = 1 << 20


class TreeError(ValueError):
    """The location holds no tree pyxen can install from, or a file of it cannot be fetched;
    the message is virt-install's."""


class Tree(Protocol):
    """An install tree, asked by paths relative to its root."""

    location: str

    def read(self, rel: str) -> bytes | None:
        """The file's bytes (at most MAX_PROBE), or None if it is not there."""

    def exists(self, rel: str) -> bool:
        """Whether the file is there."""

    def fetch(self, rel: str, dest: Path) -> None:
        """Copy the file to ``dest``. :raise TreeError: it cannot be had."""


@dataclass(frozen=True)
class TreeMedia:
    """What was detected: the distribution and the kernel/initrd pair, relative to the root."""

    distro: str
    kernel: str
    initrd: str


def find_arch(location: str, default: str = DEFAULT_ARCH) -> str:
    """The Debian arch named by the location (urldetect's _find_treearch): ``installer-<arch>/``
    or ``daily-images/<arch>/`` at its end, else a known arch word anywhere in it."""
    for pattern in (r"^.*/installer-(\w+)/?$", r"^.*/daily-images/(\w+)/?$"):
        found = re.findall(pattern, location)
        if found:
            return str(found[0])
    for arch in ("i386", "amd64", "arm64", "riscv64", "s390x", "ppc64el"):
        if arch in location:
            return arch
    return default


def _mentions(tree: Tree, rel: str, pattern: str) -> bool:
    data = tree.read(rel)
    return data is not None and re.search(pattern, data.decode("utf-8", "replace")) is not None


def _treeinfo_pairs(tree: Tree) -> tuple[str, list[tuple[str, str]]] | None:
    """(family, pairs) from ``.treeinfo`` (or ``treeinfo``): the ``[images-xen]`` pair, as
    virt-install asks for a Xen guest; None if there is no treeinfo."""
    for name in (".treeinfo", "treeinfo"):
        data = tree.read(name)
        if data is None:
            continue
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(data.decode("utf-8", "replace"))
        except configparser.Error:
            return None
        family = parser.get("general", "family", fallback="") or "unknown"
        pairs = []
        if parser.has_option("images-xen", "kernel") and parser.has_option("images-xen", "initrd"):
            pairs.append((parser.get("images-xen", "kernel"), parser.get("images-xen", "initrd")))
        return family, pairs
    return None


def _debian_pairs(tree: Tree, arch: str) -> list[tuple[str, str]] | None:
    """The pairs of a Debian tree (urldetect's _DebianDistro for a URL or unpacked tree), PV
    first; None if no MANIFEST says Debian."""
    for manifest, prefix in (("current/images/MANIFEST", "current/images"),
                             ("current/legacy-images/MANIFEST", "current/legacy-images"),
                             ("daily/MANIFEST", "daily")):
        if _mentions(tree, manifest, r"[Uu]buntu"):
            return None  # an Ubuntu tree, which is not Debian's class
        if _mentions(tree, manifest, r"[Dd]ebian"):
            break
    else:
        if not _mentions(tree, ".disk/info", r"Debian"):
            return None
        prefix = "install"  # an ISO's files served over a URL or unpacked
    xen = f"{prefix}/netboot/xen/"
    hvm = f"{prefix}/netboot/debian-installer/{arch}/"
    return [(xen + "vmlinuz", xen + "initrd.gz"), (hvm + "linux", hvm + "initrd.gz")]


def detect(tree: Tree, kernel: str | None = None, initrd: str | None = None,
           arch: str | None = None) -> TreeMedia:
    """The kernel and initrd a Xen PV install boots from ``tree``. ``kernel``/``initrd`` (from
    ``--location URL,kernel=,initrd=``) name them outright.

    :raise TreeError: no known tree, or none of its pairs is complete (virt-install's words).
    """
    if kernel and initrd:
        for rel in (kernel, initrd):
            if not tree.exists(rel):
                raise TreeError(f"Couldn't find kernel for install tree. ({rel} is not in "
                                f"{tree.location})")
        return TreeMedia("manual", kernel, initrd)
    arch = arch or find_arch(tree.location)
    found = _treeinfo_pairs(tree)
    distro, pairs = found if found is not None else ("", [])
    if found is None:
        debian = _debian_pairs(tree, arch)
        if debian is not None:
            distro, pairs = "debian", debian
    if not distro:
        raise TreeError(f"Could not find an installable distribution at URL '{tree.location}'"
                        "\n\nThe location must be the root directory of an install tree.\n"
                        "See virt-install man page for various distro examples.")
    for k, i in pairs:
        if tree.exists(k) and tree.exists(i):
            return TreeMedia(distro, k, i)
    raise TreeError("Couldn't find kernel for install tree.")


class LocalTree:
    """A tree in a local directory."""

    def __init__(self, root: str) -> None:
        self.location = root
        self._root = Path(root)

    def _path(self, rel: str) -> Path:
        return self._root / rel.lstrip("/")

    def read(self, rel: str) -> bytes | None:
        try:
            with open(self._path(rel), "rb") as f:
                return f.read(MAX_PROBE)
        except OSError:
            return None

    def exists(self, rel: str) -> bool:
        return self._path(rel).is_file()

    def fetch(self, rel: str, dest: Path) -> None:
        try:
            shutil.copyfile(self._path(rel), dest)
        except OSError as err:
            raise TreeError(f"Couldn't acquire file {self._path(rel)}: {err.strerror}") from err


class URLTree:
    """A tree served over http(s)://; every request has HTTP_TIMEOUT."""

    def __init__(self, url: str, timeout: float = HTTP_TIMEOUT) -> None:
        self.location = url
        self._base = url if url.endswith("/") else url + "/"
        self._timeout = timeout

    def _url(self, rel: str) -> str:
        return urllib.parse.urljoin(self._base, rel.lstrip("/"))

    def read(self, rel: str) -> bytes | None:
        try:
            with urllib.request.urlopen(self._url(rel), timeout=self._timeout) as r:
                return bytes(r.read(MAX_PROBE))
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def exists(self, rel: str) -> bool:
        req = urllib.request.Request(self._url(rel), method="HEAD")
        try:
            with urllib.request.urlopen(req, timeout=self._timeout):
                return True
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def fetch(self, rel: str, dest: Path) -> None:
        url = self._url(rel)
        try:
            with urllib.request.urlopen(url, timeout=self._timeout) as r, open(dest, "wb") as out:
                shutil.copyfileobj(r, out, 1 << 20)
        except (OSError, urllib.error.URLError, ValueError) as err:
            reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or err
            raise TreeError(f"Couldn't acquire file {url}: {reason}") from err


def open_tree(location: str) -> Tree:
    """The tree at ``location``: an http(s):// URL or a local directory.

    :raise TreeError: anything else (virt-install's validation message).
    """
    scheme = urllib.parse.urlparse(location).scheme
    if scheme in ("http", "https"):
        return URLTree(location)
    if scheme in ("ftp", "nfs"):
        raise TreeError(f"Validating install media '{location}' failed: pyxen fetches trees over "
                        "http(s):// or from a local directory")
    if os.path.isdir(location):
        return LocalTree(location)
    if os.path.isfile(location):
        raise TreeError(f"Validating install media '{location}' failed: an ISO as --location is "
                        "not supported by pyxen (unpack it, or use --cdrom with --hvm)")
    raise TreeError(f"Validating install media '{location}' failed: No such file or directory")
