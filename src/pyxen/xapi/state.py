"""xapi's files under ``$PYXEN_ROOT/xapi``: the database, the addresses the server got, and
root's password. Plain file code, shared by the daemon and ``pyxen host status|passwd`` (which
must not load the server)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from ..paths import Paths

#: scrypt's cost: about 5 ms a login here, like PAM's sha512crypt.
SCRYPT = {"n": 2**11, "r": 8, "p": 1}


def state_dir(paths: Paths) -> Path:
    return paths.root / "xapi"


def database_file(paths: Paths) -> Path:
    return state_dir(paths) / "state.db"


def address_file(paths: Paths) -> Path:
    return state_dir(paths) / "address"


def passwd_file(paths: Paths) -> Path:
    return state_dir(paths) / "passwd"


def _atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_addresses(paths: Paths, addresses: list[tuple[str, str]]) -> None:
    _atomic_write(address_file(paths), "".join(f"{kind}://{addr}/\n" for kind, addr in addresses))


def read_addresses(paths: Paths) -> list[str]:
    """The URLs xapi serves (``http://127.0.0.1:80/``...), as ``pyxen host status`` prints them."""
    try:
        return address_file(paths).read_text().split()
    except OSError:
        return []


def set_password(paths: Paths, password: str) -> None:
    """``pyxen host passwd``: root's XenAPI password, as an scrypt hash (mode 0600)."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **SCRYPT)
    _atomic_write(passwd_file(paths), "scrypt$" + base64.b64encode(salt).decode() + "$"
                  + base64.b64encode(digest).decode() + "\n", 0o600)


def password_matches(paths: Paths, password: str) -> bool | None:
    """True/False against the stored hash; None when no password was set."""
    path = passwd_file(paths)
    if not path.exists():
        return None
    _, salt, digest = path.read_text().strip().split("$")
    got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), **SCRYPT)
    return hmac.compare_digest(got, base64.b64decode(digest))
