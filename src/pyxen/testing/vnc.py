"""A minimal VNC (RFB 3.8) client for tests: what an HVM guest's display shows, as pixels and as
text, and keys pressed on it.

Enough of RFC 6143 for QEMU's VNC server: the version and security handshake (type 1, None, or
type 2, VNC Authentication with xl.cfg's vncpasswd), ClientInit/ServerInit, SetPixelFormat,
SetEncodings (Raw and the DesktopSize pseudo-encoding, since an installer changes video modes),
FramebufferUpdateRequest and KeyEvent. ``frame()`` reads one whole frame in the server's own
pixel format (tests compare frames before ``xl save`` and after ``xl restore``); a ``Session``
stays connected, reads frames as 24-bit RGB, writes them as PPM and presses keys; ``screen_text``
reads a frame's words with Debian's tesseract. Nothing here is used by pyxen itself.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType


class VncError(RuntimeError):
    """The server said something this client does not handle, or refused the password."""


#: X11 keysyms (RFC 6143 7.5.4) of the keys an installer's menus need, by name.
KEYSYMS = {"Return": 0xFF0D, "Enter": 0xFF0D, "Tab": 0xFF09, "Escape": 0xFF1B, "BackSpace": 0xFF08,
           "Up": 0xFF52, "Down": 0xFF54, "Left": 0xFF51, "Right": 0xFF53, "space": 0x20,
           "Home": 0xFF50, "End": 0xFF57, "F1": 0xFFBE}
#: The pixel format a Session asks for: 32 bits per pixel, little-endian, 8 bits of red at
#: bit 16, green at 8, blue at 0 (so each pixel is the bytes B, G, R, unused).
RGB32 = struct.pack(">BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
RAW, DESKTOP_SIZE = 0, -223
#: How long tesseract may take over one screen.
OCR_TIMEOUT = 60.0
#: tesseract on one thread: Debian's is built with OpenMP, whose threads spin for each other
#: when the cores are busy (a TCG guest booting beside it): one screen then cost 3x the CPU
#: and 3-5x the wall time of a single-threaded read, taken from the guest being watched.
OCR_ENV = dict(os.environ, OMP_THREAD_LIMIT="1")


@dataclass(frozen=True)
class Frame:
    width: int
    height: int
    #: Bytes per pixel, in the server's pixel format.
    bpp: int
    #: Row after row, width * bpp bytes each.
    pixels: bytes
    #: The 16-byte RFB PIXEL_FORMAT the pixels are in (RFC 6143 7.4).
    pixel_format: bytes = RGB32

    def colours(self) -> int:
        """How many distinct pixel values the frame holds (1: a blank screen)."""
        return len({self.pixels[i:i + self.bpp] for i in range(0, len(self.pixels), self.bpp)})

    def rgb(self) -> bytes:
        """The pixels as 8-bit R, G, B triples (what PPM holds)."""
        if self.pixel_format == RGB32:  # the Session's format: a fast path by slicing
            out = bytearray(self.width * self.height * 3)
            out[0::3], out[1::3], out[2::3] = self.pixels[2::4], self.pixels[1::4], self.pixels[0::4]
            return bytes(out)
        bits, _, big, true_colour, rmax, gmax, bmax, rsh, gsh, bsh = struct.unpack(
            ">BBBBHHHBBBxxx", self.pixel_format)
        if not true_colour or bits not in (8, 16, 32):
            raise VncError(f"cannot convert a {bits}-bit{'' if true_colour else ' colour-map'} frame to RGB")
        out = bytearray()
        for i in range(0, len(self.pixels), self.bpp):
            v = int.from_bytes(self.pixels[i:i + self.bpp], "big" if big else "little")
            out += bytes(((v >> sh) & mx) * 255 // (mx or 1) for sh, mx in ((rsh, rmax), (gsh, gmax), (bsh, bmax)))
        return bytes(out)

    def ppm(self, scale: int = 1) -> bytes:
        """The frame as a binary PPM (P6) image, each pixel made ``scale`` x ``scale`` (OCR
        reads an 8x16 console font better at twice its size)."""
        rgb = self.rgb()
        w3 = self.width * 3
        rows = []
        for y in range(self.height):
            row = rgb[y * w3:(y + 1) * w3]
            if scale > 1:
                wide = bytearray(w3 * scale)
                for k in range(scale):
                    for c in range(3):
                        wide[k * 3 + c::3 * scale] = row[c::3]
                row = bytes(wide)
            rows.append(row * scale)
        return f"P6\n{self.width * scale} {self.height * scale}\n255\n".encode() + b"".join(rows)

    def save(self, path: Path, scale: int = 1) -> Path:
        """Write the frame as a PPM file (a screenshot any viewer opens)."""
        path.write_bytes(self.ppm(scale))
        return path


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise VncError(f"the VNC server closed the connection ({len(data)} of {n} bytes read)")
        data += chunk
    return data


def _version(s: socket.socket) -> list[int]:
    """The ProtocolVersion exchange; the security types the server offers (RFC 6143 7.1.2).
    :raise VncError: not RFB 3.x, or the server refuses the connection (its reason)."""
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


def _security(s: socket.socket, password: str | None) -> bool:
    """The security handshake: None without a password, VNC Authentication with one. True when
    the server accepts (SecurityResult OK). :raise VncError: the types offered do not fit."""
    types = _version(s)
    if password is None:
        if 1 not in types:
            raise VncError("the server wants a password (no security type None)")
        s.sendall(b"\x01")
    else:
        if 2 not in types:
            raise VncError("the server offers no VNC Authentication")
        s.sendall(b"\x02")
        s.sendall(_des_response(password, _exactly(s, 16)))
    (result,) = struct.unpack(">I", _exactly(s, 4))
    return result == 0


class Session:
    """One connection to a VNC server: frames and key presses, until ``close``.

    :raise VncError, OSError: (from the constructor) the server refuses the connection or the
        password."""

    def __init__(self, host: str, port: int, password: str | None = None, timeout: float = 10.0,
                 native: bool = False) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        try:
            if not _security(self.sock, password):
                raise VncError("the VNC server refused the password" if password is not None
                               else "security handshake failed")
            self.sock.sendall(b"\x01")  # ClientInit: shared
            self.width, self.height = struct.unpack(">HH", _exactly(self.sock, 4))
            self.pixel_format = _exactly(self.sock, 16)
            (name_len,) = struct.unpack(">I", _exactly(self.sock, 4))
            self.name = _exactly(self.sock, name_len).decode(errors="replace")
            if not native:
                self.sock.sendall(b"\x00\x00\x00\x00" + RGB32)  # SetPixelFormat
                self.pixel_format = RGB32
            encodings = (RAW,) if native else (RAW, DESKTOP_SIZE)
            self.sock.sendall(struct.pack(f">BBH{len(encodings)}i", 2, 0, len(encodings), *encodings))
        except BaseException:
            self.sock.close()
            raise

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def frame(self) -> Frame:
        """The whole screen now (a non-incremental FramebufferUpdateRequest). A mode change the
        server reports (DesktopSize) resizes the frame and asks again."""
        bpp = self.pixel_format[0] // 8
        self.sock.sendall(struct.pack(">BBHHHH", 3, 0, 0, 0, self.width, self.height))
        rows = [bytearray(self.width * bpp) for _ in range(self.height)]
        while True:
            (kind,) = _exactly(self.sock, 1)
            if kind == 2:  # Bell
                continue
            if kind == 3:  # ServerCutText
                _exactly(self.sock, 3)
                (length,) = struct.unpack(">I", _exactly(self.sock, 4))
                _exactly(self.sock, length)
                continue
            if kind != 0:
                raise VncError(f"unexpected server message type {kind}")
            _, rects = struct.unpack(">BH", _exactly(self.sock, 3))
            resized = False
            for _ in range(rects):
                x, y, w, h, enc = struct.unpack(">HHHHi", _exactly(self.sock, 12))
                if enc == DESKTOP_SIZE:
                    self.width, self.height, resized = w, h, True
                    continue
                if enc != RAW:
                    raise VncError(f"unexpected encoding {enc}")
                data = _exactly(self.sock, w * h * bpp)
                if resized:
                    continue
                for r in range(h):
                    rows[y + r][x * bpp:(x + w) * bpp] = data[r * w * bpp:(r + 1) * w * bpp]
            if resized:
                return self.frame()
            return Frame(self.width, self.height, bpp, b"".join(bytes(r) for r in rows), self.pixel_format)

    def key(self, key: str | int) -> None:
        """Press and release one key: a KEYSYMS name, one character, or a keysym number."""
        if isinstance(key, int):
            sym = key
        elif key in KEYSYMS:
            sym = KEYSYMS[key]
        elif len(key) == 1:
            sym = ord(key)
        else:
            raise VncError(f"unknown key {key!r} (known: {', '.join(KEYSYMS)}, or one character)")
        for down in (1, 0):
            self.sock.sendall(struct.pack(">BBxxI", 4, down, sym))
            time.sleep(0.05)  # the guest samples the keyboard; a press needs some length


def frame(host: str, port: int, timeout: float = 10.0) -> Frame:
    """Connect without a password, read one full frame in the server's pixel format, disconnect.
    :raise VncError, OSError:"""
    with Session(host, port, None, timeout, native=True) as s:
        return s.frame()


def security_types(host: str, port: int, timeout: float = 10.0) -> list[int]:
    """The security types an RFB 3.8 server offers (RFC 6143 7.1.2: 1 None, 2 VNC
    Authentication, the password challenge), read without choosing one.

    :raise VncError, OSError:
    """
    with socket.create_connection((host, port), timeout=timeout) as s:
        return _version(s)


def authenticate(host: str, port: int, password: str, timeout: float = 10.0) -> bool:
    """VNC Authentication (security type 2) with ``password``: True when the server accepts it.

    :raise VncError, OSError: the server offers no VNC Authentication, or the handshake breaks.
    """
    with socket.create_connection((host, port), timeout=timeout) as s:
        return _security(s, password)


def ocr(image: Path, timeout: float = OCR_TIMEOUT) -> str:
    """The text tesseract (Debian's tesseract-ocr, English) reads on an image file.
    :raise VncError: tesseract is missing, fails or takes longer than ``timeout``."""
    try:
        done = subprocess.run(["tesseract", str(image), "-", "-l", "eng"], capture_output=True,
                              text=True, timeout=timeout, env=OCR_ENV)
    except FileNotFoundError:
        raise VncError("cannot run tesseract (install Debian's tesseract-ocr)") from None
    except subprocess.TimeoutExpired:
        raise VncError(f"tesseract took more than {timeout:g} s") from None
    if done.returncode != 0:
        raise VncError(f"tesseract: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return done.stdout


def screen_text(shot: Frame, keep: Path | None = None) -> str:
    """The words on a frame (OCR of it at twice its size); ``keep``: also leave the screenshot
    there (a PPM file)."""
    with tempfile.TemporaryDirectory(prefix="pyxen-ocr-") as tmp:
        image = shot.save(keep or Path(tmp) / "screen.ppm", scale=2)
        return ocr(image)


def wait_for_text(session: Session, words: tuple[str, ...], timeout: float,
                  keep: Path | None = None, poll: float = 2.0) -> str:
    """Read the screen until its text holds every one of ``words`` (case and spacing aside);
    that text. :raise VncError: not within ``timeout`` seconds (the message has the last text
    read; ``keep`` holds the last screenshot)."""
    deadline = time.monotonic() + timeout
    want = [" ".join(w.lower().split()) for w in words]
    text, last = "", None
    while True:
        shot = session.frame()
        if last is None or (shot.width, shot.height, shot.pixels) != last:
            # (an unchanged screen holds the same words: it is not read again, each OCR being
            # seconds of CPU taken from the booting guest)
            text, last = screen_text(shot, keep), (shot.width, shot.height, shot.pixels)
        flat = " ".join(text.lower().split())
        if all(w in flat for w in want):
            return text
        if time.monotonic() > deadline:
            raise VncError(f"no {' + '.join(repr(w) for w in words)} on the screen within {timeout:g} s; "
                           f"last read: {flat[-400:]!r}")
        time.sleep(poll)
