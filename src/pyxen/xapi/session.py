"""Sessions and authentication: session.login_with_password against the host's root account.

The password is checked against the one set with ``pyxen host passwd`` (an scrypt hash in
``$PYXEN_ROOT/xapi/passwd``) when it exists, else against PAM's ``login`` service (python-pam)
as xapi's local-superuser check does. Sessions are rows (persisted, so a restarted xapi keeps
its clients logged in); they expire after xapi's 24 h of inactivity and are logged out on
request. Over the Unix socket the credentials are not checked, as xapi does for
``xapi_local()`` (the socket is root-only).
"""

from __future__ import annotations

import calendar
import time

from ..paths import Paths
from .dispatch import Context, message, now
from .errors import ApiError
from .state import passwd_file, password_matches, set_password

#: xapi_globs.inactive_session_timeout
INACTIVE_SESSION_TIMEOUT = 86400.0
ROOT = "root"


def check_password(paths: Paths, uname: str, password: str) -> str | None:
    """None when ``uname``/``password`` is root's; otherwise the reason, for the error."""
    if uname != ROOT:
        return f"user {uname} is not the local superuser (only root may log in)"
    try:
        match = password_matches(paths, password)
    except (OSError, ValueError) as err:
        return f"cannot read {passwd_file(paths)}: {err}"
    if match is not None:
        return None if match else "Authentication failure"
    try:
        import pam
    except ImportError:
        return "no password set: run 'pyxen host passwd'"
    return None if pam.pam().authenticate(uname, password, service="login") else "Authentication failure"


def new_session(ctx: Context, uname: str, originator: str, local: bool = False) -> str:
    return str(ctx.db.create("session", {
        "this_host": ctx.host, "last_active": now(), "pool": False, "is_local_superuser": True,
        "auth_user_name": uname, "originator": originator, "validation_time": now(),
        "other_config": {"local": "true"} if local else {}}))


@message("session.login_with_password")
def login_with_password(ctx: Context, uname: str, pwd: str, version: str, originator: str) -> str:
    if not ctx.extras.get("local"):
        reason = check_password(ctx.server.paths, uname, pwd)
        if reason is not None:
            raise ApiError("SESSION_AUTHENTICATION_FAILED", uname, reason)
    return new_session(ctx, uname, originator)


@message("session.slave_local_login_with_password")
def slave_local_login_with_password(ctx: Context, uname: str, pwd: str) -> str:
    if not ctx.extras.get("local"):
        reason = check_password(ctx.server.paths, uname, pwd)
        if reason is not None:
            raise ApiError("SESSION_AUTHENTICATION_FAILED", uname, reason)
    return new_session(ctx, uname, "", local=True)


@message("session.logout")
def logout(ctx: Context) -> None:
    ctx.server.end_session(ctx.session)


@message("session.local_logout")
def local_logout(ctx: Context) -> None:
    ctx.server.end_session(ctx.session)


@message("session.change_password")
def change_password(ctx: Context, old_pwd: str, new_pwd: str) -> None:
    reason = check_password(ctx.server.paths, ROOT, old_pwd)
    if reason is not None:
        raise ApiError("SESSION_AUTHENTICATION_FAILED", ROOT, reason)
    set_password(ctx.server.paths, new_pwd)


@message("session.get_all_subject_identifiers")
def get_all_subject_identifiers(ctx: Context) -> list[str]:
    return []


@message("session.logout_subject_identifier")
def logout_subject_identifier(ctx: Context, subject_identifier: str) -> None:
    return None


def expired(last_active: str, t: float | None = None) -> bool:
    try:
        then = calendar.timegm(time.strptime(last_active, "%Y%m%dT%H:%M:%SZ"))  # UTC, whatever the zone
    except ValueError:
        return True
    return (t or time.time()) - then > INACTIVE_SESSION_TIMEOUT
