"""Reading /proc, which the hypervisor does for every domain on every listing.

``Path.read_text`` costs ~200 us per /proc file here (a TextIOWrapper, an encoding lookup, the
path parsed); os.open/os.read costs ~30 us. With 50 guests ``getdomaininfolist`` reads two files
per vCPU thread, and those reads were most of its time (bench/scale.py's ``xl list``).
"""

from __future__ import annotations

import os


def read(path: str) -> str:
    """The whole file (procfs generates it per read; it may exceed one read's size).

    :raise OSError: the file is gone (the process exited) or unreadable."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def stat_fields(pid: int, tid: int | None = None) -> list[str]:
    """The fields of /proc/<pid>[/task/<tid>]/stat after the command name, so index 0 is the
    state letter (field 3 in proc(5)) whatever the name holds (spaces, parentheses).

    :raise OSError: the process or thread is gone."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    return read(path).rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not; one we may not signal is)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        return stat_fields(pid)[0] != "Z"
    except (OSError, IndexError):
        return False
