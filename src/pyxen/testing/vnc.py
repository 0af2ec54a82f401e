"""A minimal VNC (RFB 3.8) client for tests: what an HVM guest's display shows, as pixels.

Enough of RFC 6143 to read one whole frame from QEMU's VNC server without a password: the
version and security handshake (type 1, None), ClientInit/ServerInit, SetEncodings (Raw only)
and one non-incremental FramebufferUpdateRequest. Tests compare frames (an HVM guest's screen
before ``xl save`` and after ``xl restore``). Also: the security types a server offers, and VNC
Authentication (type 2) with a password (xl.cfg's vncpasswd). Nothing here is used by pyxen.
"""

from __future__ import annotations

import socket
import struct
import subprocess
from dataclasses import dataclass


class VncError(RuntimeError):
    """The server said something this client does not handle."""


@dataclass(frozen=True)
class Frame:
    width: int
    height: int
    #: Bytes per pixel, in the server's pixel format.
    bpp: int
    #: Row after row, width * bpp bytes each.
    pixels: bytes

    def colours(self) -> int:
        """How many distinct pixel values the frame holds (1: a blank screen)."""
        return len({self.pixels[i:i + self.bpp] for i in range(0, len(self.pixels), self.bpp)})


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise VncError(f"the VNC server closed the connection ({len(data)} of {n} bytes read)")
        data += chunk
    return data


def frame(host: str, port: int, timeout: float = 10.0) -> Frame:
    """Connect, read one full frame, disconnect. :raise VncError, OSError:"""
    with socket.create_connection((host, port), timeout=timeout) as s:
        version = _exactly(s, 12)
        if not version.startswith(b"RFB 003."):
            raise VncError(f"not an RFB server: {version!r}")
        s.sendall(b"RFB 003.008\n")
        (count,) = _exactly(s, 1)
        if count == 0:
            (length,) = struct.unpack(">I", _exactly(s, 4))
            raise VncError(f"refused: {_exactly(s, length).decode(errors='replace')}")
        if 1 not in _exactly(s, count):
            raise VncError("the server wants a password (no security type None)")
        s.sendall(b"\x01")
        (result,) = struct.unpack(">I", _exactly(s, 4))
        if result != 0:
            raise VncError("security handshake failed")
        s.sendall(b"\x01")  # ClientInit: shared
        width, height = struct.unpack(">HH", _exactly(s, 4))
        pixel_format = _exactly(s, 16)
        (name_len,) = struct.unpack(">I", _exactly(s, 4))
        _exactly(s, name_len)
        bpp = pixel_format[0] // 8
        s.sendall(struct.pack(">BBHi", 2, 0, 1, 0))  # SetEncodings: Raw
        s.sendall(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))  # whole frame, not incremental
        rows = [bytearray(width * bpp) for _ in range(height)]
        while True:
            (kind,) = _exactly(s, 1)
            if kind == 2:  # Bell
                continue
            if kind != 0:
                raise VncError(f"unexpected server message type {kind}")
            _, rects = struct.unpack(">BH", _exactly(s, 3))
            for _ in range(rects):
                x, y, w, h, enc = struct.unpack(">HHHHi", _exactly(s, 12))
                if enc != 0:
                    raise VncError(f"unexpected encoding {enc}")
                data = _exactly(s, w * h * bpp)
                for r in range(h):
                    rows[y + r][x * bpp:(x + w) * bpp] = data[r * w * bpp:(r + 1) * w * bpp]
            return Frame(width, height, bpp, b"".join(bytes(r) for r in rows))


def security_types(host: str, port: int, timeout: float = 10.0) -> list[int]:
    """The security types an RFB 3.8 server offers (RFC 6143 7.1.2: 1 None, 2 VNC
    Authentication, the password challenge), read without choosing one.

    :raise VncError, OSError:
    """
    with socket.create_connection((host, port), timeout=timeout) as s:
        version = _exactly(s, 12)
        if not version.startswith(b"RFB 003."):
            raise VncError(f"not an RFB server: {version!r}")
        s.sendall(b"RFB 003.008\n")
        (count,) = _exactly(s, 1)
        if count == 0:
            (length,) = struct.unpack(">I", _exactly(s, 4))
            raise VncError(f"refused: {_exactly(s, length).decode(errors='replace')}")
        return list(_exactly(s, count))


def _des_response(password: str, challenge: bytes) -> bytes:
    """RFC 6143 7.2.2: the 16-byte challenge DES-encrypted with the password (8 bytes, zero
    padded) as key, each key byte's bits reversed, as VNC's d3des does. DES through the
    openssl command (its legacy provider): the standard library has no DES."""
    key = password.encode()[:8].ljust(8, b"\0")
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in key)
    done = subprocess.run(["openssl", "enc", "-des-ecb", "-nopad", "-K", key.hex(),
                           "-provider", "legacy", "-provider", "default"],
                          input=challenge, capture_output=True, timeout=10, check=True)
    return done.stdout


def authenticate(host: str, port: int, password: str, timeout: float = 10.0) -> bool:
    """VNC Authentication (security type 2) with ``password``: True when the server accepts it.

    :raise VncError, OSError: the server offers no VNC Authentication, or the handshake breaks.
    """
    with socket.create_connection((host, port), timeout=timeout) as s:
        version = _exactly(s, 12)
        if not version.startswith(b"RFB 003."):
            raise VncError(f"not an RFB server: {version!r}")
        s.sendall(b"RFB 003.008\n")
        (count,) = _exactly(s, 1)
        if count == 0 or 2 not in _exactly(s, count):
            raise VncError("the server offers no VNC Authentication")
        s.sendall(b"\x02")
        s.sendall(_des_response(password, _exactly(s, 16)))
        (result,) = struct.unpack(">I", _exactly(s, 4))
        return result == 0
