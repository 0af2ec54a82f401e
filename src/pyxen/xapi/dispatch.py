"""One handler table for every XenAPI message, and the dispatcher in front of it.

The dispatcher does what xapi's generated server does before a handler runs: resolves the
wire name (``VM.start``, ``VM_start``, ``Async.VM.start``), checks the parameter count against
the datamodel (MESSAGE_PARAMETER_COUNT_MISMATCH), checks the session (SESSION_INVALID), coerces
each parameter to its declared type (64-bit ints arrive as strings over XML-RPC), runs the
handler, and marks the result's datetimes for the codec. Messages nobody registered get the
datamodel's implicit behaviour (get_/set_/add_to_/remove_from_ a field, get_record, get_all,
get_all_records, get_by_uuid, get_by_name_label, create, destroy); a declared message with
neither gets NOT_IMPLEMENTED, never a silent success.

Handlers are plain functions ``fn(ctx, *params)``. A coroutine function runs in the event loop
(event.from waits there); any other custom handler runs in a worker thread so it may block on
the toolstack; the implicit ones run inline (they only touch memory).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from . import dbfilter
from .datamodel import NULL_REF, Datamodel, Message, Type
from .errors import ApiError
from .wire import DateTime

if TYPE_CHECKING:
    from .server import Xapi

Handler = Callable[..., Any]

#: "Class.message" -> handler; filled by @message in the behaviour modules.
HANDLERS: dict[str, Handler] = {}

#: Trailing parameters a client may leave out, with xapi's defaults (datamodel.ml's
#: param_default; xenapi.json does not carry them).
PARAM_DEFAULTS: dict[str, dict[str, Any]] = {
    "session.login_with_password": {"version": "1.1", "originator": ""},
    "VM.snapshot": {"ignore_vdis": []},
    "VM.migrate_send": {"vgpu_map": {}, "vdi_format_map": {}},
    "VM.assert_can_migrate": {"vgpu_map": {}},
    "host.evacuate": {"network": NULL_REF, "evacuate_batch_size": 0},
    "VDI.snapshot": {"driver_params": {}},
    "VDI.clone": {"driver_params": {}},
    "VDI.copy": {"base_vdi": NULL_REF, "into_vdi": NULL_REF},
    "VIF.configure_ipv4": {"address": "", "gateway": ""},
    "VIF.configure_ipv6": {"address": "", "gateway": ""},
}

#: xapi's hidden messages: served, not listed by system.listMethods.
HIDDEN = ("get_all_records_where", "get_all_where")

#: Messages that take no session although the datamodel lists other parameters first.
NO_SESSION = {"session.login_with_password", "session.slave_local_login_with_password"}

#: How often a session's last_active is written (xapi: at most every 10 minutes).
LAST_ACTIVE_EVERY = 600.0


def message(name: str) -> Callable[[Handler], Handler]:
    """Register ``fn`` as the behaviour of ``name`` ("VM.start")."""
    def register(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn
    return register


def now() -> str:
    return time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Context:
    """What a handler sees of the server and of the call."""

    server: "Xapi"
    session: str
    task: str | None = None
    method: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def db(self) -> Any:
        return self.server.db

    @property
    def paths(self) -> Any:
        return self.server.paths

    @property
    def host(self) -> str:
        return self.server.host_ref

    def progress(self, fraction: float) -> None:
        """Move this call's task (if it runs as one) on, as xapi's TaskHelper does."""
        if self.task and self.db.exists("task", self.task):
            self.db.set("task", self.task, progress=max(0.0, min(1.0, fraction)))


def coerce(value: Any, t: Type, what: str) -> Any:
    """A wire value as the datamodel's type: ints from strings, floats from ints, bools from
    "true"/"false", maps with string keys. FIELD_TYPE_ERROR names the parameter otherwise."""
    try:
        k = t.kind
        if k == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if k == "float":
            return float(value)
        if k == "bool":
            if isinstance(value, str):
                if value.lower() not in ("true", "false"):
                    raise ValueError
                return value.lower() == "true"
            if not isinstance(value, (bool, int)):
                raise ValueError
            return bool(value)
        if k == "set":
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return [coerce(v, t.args[0], what) for v in value]
        if k == "map":
            if not isinstance(value, dict):
                raise ValueError
            return {str(key): coerce(v, t.args[1], what) for key, v in value.items()}
        if k == "record":
            if not isinstance(value, dict):
                raise ValueError
            return value
        if k == "option":
            return value
        if k == "datetime":
            return DateTime(value) if isinstance(value, str) else value
        if not isinstance(value, str):
            raise ValueError
        return value
    except (ValueError, TypeError):
        raise ApiError("FIELD_TYPE_ERROR", what) from None


class Marker:
    """Marks the datetimes in a result so the XML-RPC codec sends ``<dateTime.iso8601>``."""

    def __init__(self, dm: Datamodel) -> None:
        self.dm = dm

    def mark(self, value: Any, t: Type) -> Any:
        k = t.kind
        if k == "datetime":
            return DateTime(value) if isinstance(value, str) else value
        if k == "record":
            fields = self.dm.datetime_fields(t.name) if t.name in self.dm.classes else ()
            if fields and isinstance(value, dict):
                value = dict(value)
                for f in fields:
                    if isinstance(value.get(f), str):
                        value[f] = DateTime(value[f])
            return value
        if k == "map" and isinstance(value, dict) and t.args[1].kind in ("record", "datetime", "map", "set"):
            return {key: self.mark(v, t.args[1]) for key, v in value.items()}
        if k == "set" and isinstance(value, list) and t.args[0].kind in ("record", "datetime"):
            return [self.mark(v, t.args[0]) for v in value]
        return value


@dataclass(frozen=True)
class Resolved:
    message: Message
    is_async: bool
    wire: str


class Dispatcher:
    """Resolves, checks and runs calls; turns handler failures into ApiError."""

    def __init__(self, server: "Xapi") -> None:
        self.server = server
        self.dm: Datamodel = server.db.dm
        self.marker = Marker(self.dm)
        self._last_active: dict[str, float] = {}

    @staticmethod
    def unprefixed(method: str) -> tuple[bool, str]:
        """(async?, the name without ``Async.``/``InternalAsync.``): xapi strips the prefix
        first (sync_ty_and_maybe_remove_prefix), and its errors name what is left."""
        for prefix in ("Async.", "InternalAsync."):
            if method.startswith(prefix):
                return True, method[len(prefix):]
        return False, method

    def resolve(self, method: str) -> Resolved:
        is_async, name = self.unprefixed(method)
        msg: Message | None = None
        if "." in name:
            cls, _, m = name.partition(".")
            msg = self.dm.message(cls, m)
        else:  # Class_message, xapi's alternative wire name (so Async.VM_start works too)
            for i, ch in enumerate(name):
                if ch == "_" and name[:i] in self.dm.classes:
                    msg = self.dm.message(name[:i], name[i + 1:])
                    if msg is not None:
                        break
        if msg is None:
            raise ApiError("MESSAGE_METHOD_UNKNOWN", name)
        if is_async and not self.has_async(msg):
            raise ApiError("Fault", f"No async mode for this operation (rpc: {name})")
        return Resolved(msg, is_async, msg.wire_name)

    def has_async(self, msg: Message) -> bool:
        """xapi gives an Async form to create, destroy and every custom message, except
        session.*, event.*, the field accessors and the messages its IDL declares sync-only
        (``~flags:[`Session]``: VM.get_allowed_VBD_devices, host.get_servertime, ...)."""
        if msg.cls in ("session", "event"):
            return False
        if msg.implicit:
            return msg.name in ("create", "destroy")
        return msg.name not in self.dm.sync_only

    def list_methods(self) -> list[str]:
        return sorted(m.wire_name for c in self.dm.classes.values() for m in c.messages.values()
                      if m.name not in HIDDEN)

    async def call(self, method: str, params: tuple[Any, ...], extras: dict[str, Any] | None = None) -> Any:
        """Run one call; the value is ready for the codec. Raises ApiError."""
        for p in params:
            bad = invalid_utf8(p)
            if bad is not None:  # gen_server.ml's first check, before the name is even looked up
                raise ApiError("INVALID_VALUE", "Invalid UTF-8 string in parameter", bad)
        if method == "system.listMethods":
            return self.list_methods()
        r = self.resolve(method)
        msg = r.message
        takes_session = msg.takes_session and r.wire not in NO_SESSION
        given = list(params[1:] if takes_session else params)
        defaults = PARAM_DEFAULTS.get(r.wire, {})
        names = [n for _, n in msg.params]
        required = len(names) - sum(1 for n in names if n in defaults)
        # xapi's generated match: exactly the parameters, or (a message with defaults) at least
        # the required ones, anything after them ignored; received counts all but the session
        # (so -1 for a call that sent nothing), and the name is the one called, prefix removed.
        most = len(names) if not defaults else len(params)
        if not required <= len(given) <= most or (takes_session and not params):
            raise ApiError("MESSAGE_PARAMETER_COUNT_MISMATCH", self.unprefixed(method)[1], required,
                           len(params) - takes_session)
        given = given[:len(names)]
        args = [coerce(v, t, n) for v, (t, n) in zip(given, msg.params)]
        args += [defaults[n] for n in names[len(given):]]
        session = ""
        if takes_session:
            session = params[0]
            self.check_session(session)
        ctx = Context(self.server, session, method=r.wire, extras=dict(extras or {}))
        if r.is_async:
            return self.server.tasks.spawn(ctx, "Async." + r.wire, lambda c: self._run(c, msg, args))
        value = await self._run(ctx, msg, args)
        return self.marker.mark(value, msg.result)

    def check_session(self, session: Any) -> None:
        db = self.server.db
        if not isinstance(session, str) or not db.exists("session", session):
            raise ApiError("SESSION_INVALID", session)
        t = time.monotonic()
        if t - self._last_active.get(session, 0.0) > LAST_ACTIVE_EVERY:
            self._last_active[session] = t
            try:
                db.set("session", session, last_active=now())
            except ApiError:
                raise ApiError("SESSION_INVALID", session) from None

    async def _run(self, ctx: Context, msg: Message, args: list[Any]) -> Any:
        fn = HANDLERS.get(msg.wire_name)
        if fn is None:
            implicit = self.implicit(msg)
            if implicit is None:
                raise ApiError("NOT_IMPLEMENTED", msg.wire_name)
            return implicit(ctx, *args)
        if inspect.iscoroutinefunction(fn):
            result: Any = await fn(ctx, *args)
            return result
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.server.executor, lambda: fn(ctx, *args))

    def run_sync(self, ctx: Context, name: str, *args: Any) -> Awaitable[Any]:
        """Run message ``name`` from inside another handler's task (Async wrappers)."""
        r = self.resolve(name)
        return self._run(ctx, r.message, list(args))

    # -- the datamodel's implicit messages ---------------------------------------------------

    def implicit(self, msg: Message) -> Handler | None:
        cls, name = msg.cls, msg.name
        c = self.dm.classes[cls]
        db = self.server.db
        if name == "get_record":
            return lambda ctx, ref: db.get(cls, ref)
        if name == "get_all":
            return lambda ctx: db.refs(cls)
        if name == "get_all_records":
            return lambda ctx: db.records(cls)
        if name in HIDDEN:
            def where(ctx: Context, expr: str) -> Any:
                try:
                    match = dbfilter.parse(expr)
                except dbfilter.FilterError as err:
                    raise ApiError("INTERNAL_ERROR", f"Db_filter.Expression_error: {err}") from None
                found = {ref: rec for ref, rec in db.records(cls).items() if match(rec)}
                return found if name == "get_all_records_where" else list(found)
            return where
        if name == "get_by_uuid":
            return lambda ctx, uuid: db.by_uuid(cls, uuid)
        if name == "get_by_name_label":
            return lambda ctx, label: db.find(cls, name_label=label)
        if name == "create":
            return lambda ctx, record: create_from_record(db, cls, record)
        if name == "destroy":
            return lambda ctx, ref: db.destroy(cls, ref)
        for prefix, kind in (("get_", "get"), ("set_", "set"), ("add_to_", "add_to"),
                             ("remove_from_", "remove_from"), ("add_", "add"), ("remove_", "remove")):
            if name.startswith(prefix) and name[len(prefix):] in c.fields:
                return self._accessor(cls, name[len(prefix):], kind)
        return None

    def _accessor(self, cls: str, fname: str, kind: str) -> Handler:
        db = self.server.db

        def get(ctx: Context, ref: str) -> Any:
            return db.field(cls, ref, fname)

        def set_(ctx: Context, ref: str, value: Any) -> None:
            check_enum(self.dm, cls, fname, value)
            db.set(cls, ref, **{fname: value})

        def add(ctx: Context, ref: str, value: Any) -> None:
            with db.transaction():
                cur = list(db.field(cls, ref, fname))
                if value not in cur:
                    db.set(cls, ref, **{fname: cur + [value]})

        def remove(ctx: Context, ref: str, value: Any) -> None:
            with db.transaction():
                db.set(cls, ref, **{fname: [v for v in db.field(cls, ref, fname) if v != value]})

        def add_to(ctx: Context, ref: str, key: str, value: Any) -> None:
            with db.transaction():
                cur = dict(db.field(cls, ref, fname))
                if key in cur:
                    raise ApiError("MAP_DUPLICATE_KEY", cls, fname, db.get(cls, ref).get("uuid", ref), key)
                cur[key] = value
                db.set(cls, ref, **{fname: cur})

        def remove_from(ctx: Context, ref: str, key: str) -> None:
            with db.transaction():
                cur = dict(db.field(cls, ref, fname))
                cur.pop(key, None)
                db.set(cls, ref, **{fname: cur})

        table: dict[str, Handler] = {"get": get, "set": set_, "add": add, "remove": remove,
                                     "add_to": add_to, "remove_from": remove_from}
        return table[kind]


def invalid_utf8(value: Any) -> str | None:
    """A string in ``value`` that is not Unicode text (a lone surrogate, which JSON's "\\ud800"
    escapes can carry; xapi checks each parameter's UTF-8), with the bad code points dropped."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return value.encode("utf-8", "ignore").decode()
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        bad = invalid_utf8(k) if isinstance(k, str) else None
        bad = bad if bad is not None else invalid_utf8(v)
        if bad is not None:
            return bad
    return None


def check_enum(dm: Datamodel, cls: str, fname: str, value: Any) -> None:
    """An enum value (or each of a set/map of them) must be one the datamodel declares."""
    t = dm.classes[cls].fields[fname].type
    inner = t.args[0] if t.kind == "set" else t.args[1] if t.kind == "map" else t
    if inner.kind != "enum":
        return
    allowed = dm.enums.get(inner.name, [])
    values = value if t.kind == "set" else list(value.values()) if t.kind == "map" else [value]
    for v in values:
        if v not in allowed:
            raise ApiError("INVALID_VALUE", fname, v)


def create_from_record(db: Any, cls: str, record: dict[str, Any], **extra: Any) -> str:
    """xapi's generated constructor: every required field must be there (unknown keys are
    ignored, as exportimport.py relies on); values coerced to their types; refs checked."""
    dm: Datamodel = db.dm
    c = dm.classes[cls]
    for name in dm.required_for_create(cls):
        if name not in record and name not in extra:
            raise ApiError("INTERNAL_ERROR", f"Dispatcher_FieldNotFound(\"{name}\")")
    fields: dict[str, Any] = {}
    for name, value in record.items():
        f = c.fields.get(name)
        if f is None or f.qualifier == "RO/runtime" or name in c.links or name == "uuid":
            continue
        v = coerce(value, f.type, name)
        check_enum(dm, cls, name, v)
        if f.type.kind == "ref" and v != NULL_REF and not db.exists(f.type.name, v):
            raise ApiError("HANDLE_INVALID", f.type.name, v)
        fields[name] = v
    fields.update(extra)
    return str(db.create(cls, fields))
