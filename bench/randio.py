"""The guest's random 4 KiB I/O tool: bench/randio.S assembled (696 bytes, static, no libc), kept as
bytes so the benchmark needs no assembler. Regenerate after editing randio.S with
``as randio.S -o randio.o && ld -static -n -s randio.o -o randio`` and base64 the result.

``randio PATH COUNT r|w``: COUNT 4 KiB O_DIRECT preads or pwrites at xorshift64-random aligned
offsets of PATH, one at a time (QD1); exit status 1 on any error or short transfer.
"""

from __future__ import annotations

import base64
import io

from pyxen.images import cpio

ELF_B64 = (
    "f0VMRgIBAQAAAAAAAAAAAAIAPgABAAAAsABAAAAAAABAAAAAAAAAALgBAAAAAAAAAAAAAEAAOAACAEAABAADAAEAAAAFAAAA"
    "sAAAAAAAAACwAEAAAAAAALAAQAAAAAAA8AAAAAAAAADwAAAAAAAAAAEAAAAAAAAAAQAAAAYAAAAAAAAAAAAAAAAgQAAAAAAA"
    "ACBAAAAAAAAAAAAAAAAAAAAQAAAAAAAAABAAAAAAAABIi3wkEEyLZCQYTItsJCBNMfZBD7YEJITAdA+D6DBNa/YKSQHGSf/E"
    "6+hFD7Z9AL4AQAAAQYD/d3UFvgJAAAAx0rgCAAAADwVIhcAPiJMAAABIicNIid8x9roCAAAAuAgAAAAPBUjB6AxIicVIhe10"
    "c0m8FXxKf7l5N55NhfZ0W0yJ4EjB4A1JMcRMieBIwegHSTHETIngSMHgEUkxxEyJ4DHSSPf1SMHiDEmJ0kiJ30iNNZkeAAC6"
    "ABAAALgRAAAAQYD/d3UFuBIAAAAPBUg9ABAAAHUOSf/O66Ax/7g8AAAADwW/AQAAALg8AAAADwUALnNoc3RydGFiAC50ZXh0"
    "AC5ic3MAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "CwAAAAEAAAAGAAAAAAAAALAAQAAAAAAAsAAAAAAAAADwAAAAAAAAAAAAAAAAAAAAAQAAAAAAAAAAAAAAAAAAABEAAAAIAAAA"
    "AwAAAAAAAAAAIEAAAAAAAAAQAAAAAAAAABAAAAAAAAAAAAAAAAAAAAAQAAAAAAAAAAAAAAAAAAABAAAAAwAAAAAAAAAAAAAA"
    "AAAAAAAAAACgAQAAAAAAABYAAAAAAAAAAAAAAAAAAAABAAAAAAAAAAAAAAAAAAAA"
)


def cpio_archive(script: bytes | None = None) -> bytes:
    """An uncompressed newc archive holding /bin/randio (and the script the demo init runs,
    /tmp/run.sh), to append to the demo initrd: the kernel unpacks concatenated archives in
    order."""
    out = io.BytesIO()
    members = [cpio.regular("bin/randio", base64.b64decode(ELF_B64), 0o755)]
    if script is not None:
        members.append(cpio.regular("tmp/run.sh", script, 0o755))
    cpio.write(out, members)
    return out.getvalue()
