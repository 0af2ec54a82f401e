"""xl's global configuration, /etc/xen/xl.conf, kept at ``$PYXEN_ROOT/xl.conf`` (Paths.xl_conf).

xl.c's parse_global_config reads the file once per xl run, before the command's lookup, with
libxlu's parser; each key falls back to xl's default, and a bad value prints xl's warning and
keeps the default. pyxen parses it with the same parser as domain configs (libxlu/cfg.py) into
one frozen ``XlConf``, loaded once in ``main`` (``load_global``) and read by commands through
``current()``.

Keys (xl.conf(5)): autoballoon, vif.default.bridge, vif.default.script (and the deprecated
defaultbridge / vifscript), output_format, lockfile, blkdev_start, claim_mode,
run_hotplug_scripts. Other keys of Xen's xl.conf (vm.cpumask, max_grant_frames, ...) are
ignored: nothing in pyxen reads them yet.

A missing file gives the defaults silently (pyxen does not install an xl.conf, while Xen's
``make install`` does, so Xen's "Failed to read config file" line would fire on every command).
"""

from __future__ import annotations

import re
import sys

from ...records import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # the parser is imported where there is a file to parse: most hosts have none
    from typing import Iterable, TextIO

    from ...libxlu.cfg import Setting
    from ...paths import Paths

#: libxl's default bridge for a vif with no ``bridge=`` and no vif.default.bridge.
LIBXL_DEFAULT_BRIDGE = "xenbr0"
#: libxl's default vif hotplug script.
LIBXL_DEFAULT_VIFSCRIPT = "vif-bridge"

#: xl.c auto_autoballoon: a ``dom0_mem=`` on Xen's command line turns autoballoon off.
_SIZE = r"-?[0-9]+[bBkKmMgGtT]?"
_DOM0_MEM = re.compile(r"(^| )dom0_mem=((|min:|max:)(" + _SIZE + r"|(" + _SIZE + r"\+)?[0-9]{1,2}%),?)+($| )")


class XlConf(NamedTuple):
    """The settings of xl.conf that pyxen's xl uses, with xl's defaults."""

    #: "on", "off" or "auto" (xl's default): auto means on unless Xen's command line sets
    #: dom0_mem (``autoballoon_enabled``).
    autoballoon: str = "auto"
    #: vif.default.bridge: the bridge of a vif with no ``bridge=`` (None: libxl's xenbr0).
    vif_default_bridge: str | None = None
    #: vif.default.script: the hotplug script of a vif with no ``script=`` (None: vif-bridge).
    vif_default_script: str | None = None
    #: "json" (xl's default) or "sxp": the format of ``list -l`` and ``create -n``.
    output_format: str = "json"
    #: The lock ``xl create`` holds while it builds a domain (None: Paths.xl_lock).
    lockfile: str | None = None
    #: blkdev_start: the first vdev a driver domain's local attach uses (None: xvda).
    blkdev_start: str | None = None
    #: claim_mode: claim a domain's memory before populating it (xl's default 1).
    claim_mode: int = 1
    #: run_hotplug_scripts: xl (1, the default) or udev in the driver domain (0) runs them.
    run_hotplug_scripts: int = 1

    def autoballoon_enabled(self, xen_commandline: str) -> bool:
        """xl's autoballoon after auto_autoballoon: "auto" is on unless ``dom0_mem=`` is on
        Xen's command line (``xl info``'s xen_commandline)."""
        if self.autoballoon != "auto":
            return self.autoballoon == "on"
        return _DOM0_MEM.search(xen_commandline) is None

    @property
    def runs_hotplug_scripts(self) -> bool:
        """run_hotplug_scripts: xl (libxl) runs a device's ``script=`` unless the key is 0."""
        return self.run_hotplug_scripts != 0

    def skipped_scripts_notice(self, scripts: Iterable[str | None]) -> str | None:
        """The one line xl prints (once per command) when run_hotplug_scripts=0 leaves these
        devices' ``script=`` to udev; None when scripts run or no device names one."""
        named = list(dict.fromkeys(s for s in scripts if s))
        if self.runs_hotplug_scripts or not named:
            return None
        return (f"xl: hotplug script{'s' if len(named) > 1 else ''} {', '.join(named)} not run: "
                "run_hotplug_scripts=0 in xl.conf leaves it to udev, which pyxen does not have")

    def autoballoon_notice(self) -> str | None:
        """The line ``xl create`` prints when xl.conf asks for autoballoon="on": pyxen's
        Domain-0 is the Linux host itself, whose memory_op.set_target the hypervisor refuses, so
        xl never frees memory from it (a guest that does not fit fails as with autoballoon
        off). None for "off" and "auto"."""
        if self.autoballoon != "on":
            return None
        return ('xl: autoballoon="on" in xl.conf: pyxen does not balloon Domain-0; '
                "a domain that does not fit in free memory is not created")

    def lock_path(self, paths: Paths) -> str:
        """The file ``xl create`` locks: xl.conf's lockfile, else the host's."""
        return self.lockfile or str(paths.xl_lock)

    def vif_defaults(self, spec: str) -> str:
        """A vif spec with xl.conf's defaults applied as xl_parse.c's set_default_nic_values
        does before parsing the spec: a vif that names no bridge (script) gets
        vif.default.bridge (script). Specs that name one, and every spec when xl.conf sets
        neither, are returned unchanged."""
        keys = {item.strip().partition("=")[0].strip() for item in spec.split(",")}
        extra = []
        if self.vif_default_bridge is not None and "bridge" not in keys:
            extra.append(f"bridge={self.vif_default_bridge}")
        if self.vif_default_script is not None and "script" not in keys:
            extra.append(f"script={self.vif_default_script}")
        if not extra:
            return spec
        return ",".join([spec, *extra]) if spec.strip() else ",".join(extra)


class XlConfError(Exception):
    """xl.conf does not parse: xl prints the parser's line, then "Failed to parse config file:
    Invalid argument", and exits 1 before any command runs."""


def _string(settings: dict[str, Setting], key: str, source: str, warn: TextIO) -> str | None:
    """xlu_cfg_get_string: the key's text; a list warns as libxlu does and counts as absent."""
    setting = settings.get(key)
    if setting is None:
        return None
    if not isinstance(setting.value, str):
        warn.write(f"{source}:{setting.line}: warning: parameter `{key}' is a list but should be "
                   "a single value\n")
        return None
    return setting.value


def _long(settings: dict[str, Setting], key: str, source: str, warn: TextIO) -> int | None:
    """xlu_cfg_get_long: strtol(base 0) of the whole text, else libxlu's warning and absent."""
    text = _string(settings, key, source, warn)
    if text is None:
        return None
    m = re.fullmatch(r"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", text)
    if m is None:
        warn.write(f"{source}:{settings[key].line}: warning: parameter `{key}' is not a valid number\n")
        return None
    digits = m.group(2)
    base = 16 if digits[:2].lower() == "0x" else 8 if digits.startswith("0") and len(digits) > 1 else 10
    value = int(digits, base)
    return -value if m.group(1) == "-" else value


def parse_text(text: str, source: str, warn: TextIO) -> XlConf:
    """parse_global_config on the file's text; warnings go to ``warn`` (xl: stderr).

    :raise XlConfError: the text does not parse (its message is the parser's line).
    """
    from ...libxlu.cfg import ConfigSyntaxError, parse
    try:
        settings = parse(text, source)
    except ConfigSyntaxError as err:
        raise XlConfError(str(err)) from err
    conf = XlConf()
    auto = _string(settings, "autoballoon", source, warn)
    if auto is not None:
        if auto in ("on", "1"):
            conf = conf._replace(autoballoon="on")
        elif auto in ("off", "0"):
            conf = conf._replace(autoballoon="off")
        elif auto == "auto":
            conf = conf._replace(autoballoon="auto")
        else:
            # xl.c: fprintf(stderr, "invalid autoballoon option") (no newline: pyxen ends the line)
            warn.write("invalid autoballoon option\n")
    hotplug = _long(settings, "run_hotplug_scripts", source, warn)
    if hotplug is not None:
        conf = conf._replace(run_hotplug_scripts=hotplug)
    lockfile = _string(settings, "lockfile", source, warn)
    if lockfile is not None:
        conf = conf._replace(lockfile=lockfile)
    script = _string(settings, "vifscript", source, warn)
    if script is not None:
        warn.write("the global config option vifscript is deprecated, please switch to "
                   "vif.default.script\n")
    script = _string(settings, "vif.default.script", source, warn) or script
    bridge = _string(settings, "defaultbridge", source, warn)
    if bridge is not None:
        warn.write("the global config option defaultbridge is deprecated, please switch to "
                   "vif.default.bridge\n")
    bridge = _string(settings, "vif.default.bridge", source, warn) or bridge
    conf = conf._replace(vif_default_script=script, vif_default_bridge=bridge)
    fmt = _string(settings, "output_format", source, warn)
    if fmt is not None:
        if fmt in ("json", "sxp"):
            conf = conf._replace(output_format=fmt)
        else:
            warn.write(f'invalid default output format "{fmt}"\n')
    blkdev = _string(settings, "blkdev_start", source, warn)
    if blkdev is not None:
        conf = conf._replace(blkdev_start=blkdev)
    claim = _long(settings, "claim_mode", source, warn)
    if claim is not None:
        conf = conf._replace(claim_mode=claim)
    return conf


_CURRENT: XlConf | None = None


def load_global(path: str, warn: TextIO | None = None) -> XlConf:
    """Read xl.conf at ``path`` (a host's Paths.xl_conf) once for this xl run (xl.c main before
    the command runs) and keep it for ``current()``.

    :raise XlConfError: the file does not parse.
    """
    global _CURRENT
    warn = warn or sys.stderr  # (at call time: tests capture stderr)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        conf = XlConf()
    except OSError as err:  # xl.c main: the line, then the defaults
        warn.write(f"Failed to read config file: {path}: {err.strerror}\n")
        conf = XlConf()
    else:
        from ...libxlu.cfg import ConfigSyntaxError, decode
        try:
            conf = parse_text(decode(data, path), path, warn)
        except ConfigSyntaxError as err:  # binary or not UTF-8
            raise XlConfError(str(err)) from err
    _CURRENT = conf
    return conf


def current() -> XlConf:
    """The xl.conf of this xl run: what ``load_global`` read, else (xl's functions called
    outside ``main``, as in tests) the defaults."""
    return _CURRENT if _CURRENT is not None else XlConf()
