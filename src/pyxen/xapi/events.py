"""Events: event.from (tokens over the database's generation stamps), the legacy
event.register/next, event.inject and event.get_current_id.

No per-client queue: as in xapi, a token is the generation the client has seen, and a call
reports every object of the subscribed classes created, modified or deleted since, each once
with its latest snapshot. The token is ``"%020d,%020d"`` (database generation, message
generation) so tokens sort as strings; ``""`` is (0, 0), which makes the first call an
``add`` for every live object. After a wake-up the call waits 50 ms to batch what follows
(0 ms when only tasks are watched), as xapi_event.ml does.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .dispatch import Context, message
from .errors import ApiError
from .wire import Int32

#: Classes that produce no events (not DB rows clients may watch).
NO_EVENTS = {"session", "secret", "user", "auth", "event", "data_source"}
BATCH_DELAY = 0.05
DEFAULT_TIMEOUT = 86400.0


def token(gen: int) -> str:
    return f"{gen:020d},{0:020d}"


def parse_token(text: str) -> int:
    """xapi's Token.of_string: ``""`` or exactly two comma-separated integers."""
    if text == "":
        return 0
    parts = text.split(",")
    try:
        if len(parts) == 2:
            int(parts[1])
            return int(parts[0])
    except ValueError:
        pass
    raise ApiError("EVENT_FROM_TOKEN_PARSE_FAILURE", text)


def subscription(ctx: Context, classes: list[str]) -> tuple[set[str], set[tuple[str, str]]]:
    """(classes, (lowercase class, ref) pairs) the subscription covers; "*" is every class
    that has events. As xapi's Subscription.of_string, no string is refused: a class that
    does not exist (or has no events) selects nothing, "vm/<ref>" one object of that class."""
    dm = ctx.db.dm
    names: set[str] = set()
    refs: set[tuple[str, str]] = set()
    for sub in classes:
        if sub == "*":
            names.update(c for c in dm.classes if c not in NO_EVENTS)
            continue
        cls, slash, ref = sub.partition("/")
        c = dm.cls(cls)
        if slash:
            refs.add((cls.lower(), ref))
        elif c is not None and c.name not in NO_EVENTS:
            names.add(c.name)
    return names, refs


def records_since(ctx: Context, gen: int, names: set[str], refs: set[tuple[str, str]],
                  stamp: bool = False) -> list[dict[str, Any]]:
    db = ctx.db
    rows, dels = db.changes_since(gen)
    out = []
    for ref, cls, row in sorted(rows, key=lambda r: r[2].modified):
        if (cls in names or (cls.lower(), ref) in refs) and cls not in NO_EVENTS:
            added = row.created > gen  # xapi's id is the generation of what it reports
            out.append({"id": str(row.created if added else row.modified),
                        "timestamp": f"{time.time():.6f}" if stamp else "0.0",
                        "class": cls.lower(), "operation": "add" if added else "mod",
                        "ref": ref, "snapshot": ctx.server.dispatcher.marker.mark(
                            row.record, db.dm.message(cls, "get_record").result
                            if db.dm.message(cls, "get_record") else row.record)})
    for d in dels:
        if (d.cls in names or (d.cls.lower(), d.ref) in refs) and d.cls not in NO_EVENTS:
            out.append({"id": str(d.deleted), "timestamp": f"{time.time():.6f}" if stamp else "0.0",
                        "class": d.cls.lower(), "operation": "del", "ref": d.ref})
    return out


async def wait_for(ctx: Context, gen: int, names: set[str], refs: set[tuple[str, str]], timeout: float,
                   stamp: bool = False) -> tuple[list[dict[str, Any]], int]:
    server = ctx.server
    deadline = time.monotonic() + timeout
    task_only = bool(names or refs) and names <= {"task"} and all(c == "task" for c, _ in refs)
    delay = 0.0 if task_only else BATCH_DELAY
    while True:
        current = ctx.db.committed
        if current > gen:
            events = records_since(ctx, gen, names, refs, stamp)
            if events:
                if delay:
                    await asyncio.sleep(delay)
                    current = ctx.db.committed
                    events = records_since(ctx, gen, names, refs, stamp)
                return events, current
            gen = current
        left = deadline - time.monotonic()
        if left <= 0:
            return [], current
        if not ctx.db.exists("session", ctx.session):
            raise ApiError("SESSION_INVALID", ctx.session)
        await server.wait_change(current, left)


@message("event.from")
async def from_(ctx: Context, classes: list[str], token_text: str, timeout: float) -> dict[str, Any]:
    names, refs = subscription(ctx, classes)
    gen = parse_token(token_text)
    events, current = await wait_for(ctx, gen, names, refs, timeout if timeout > 0 else 0.0)
    counts = {c.lower(): Int32(ctx.db.count(c)) for c in ctx.db.dm.classes if c not in NO_EVENTS}
    return {"events": events, "valid_ref_counts": counts, "token": token(current)}


@message("event.register")
def register(ctx: Context, classes: list[str]) -> None:
    names, refs = subscription(ctx, classes)
    reg = ctx.server.registrations.setdefault(ctx.session, {"names": set(), "refs": set(),
                                                          "gen": ctx.db.committed})
    reg["names"] |= names
    reg["refs"] |= refs


@message("event.unregister")
def unregister(ctx: Context, classes: list[str]) -> None:
    names, refs = subscription(ctx, classes)
    reg = ctx.server.registrations.get(ctx.session)
    if reg:
        reg["names"] -= names
        reg["refs"] -= refs


@message("event.next")
async def next_(ctx: Context) -> list[dict[str, Any]]:
    reg = ctx.server.registrations.get(ctx.session)
    if reg is None:
        raise ApiError("SESSION_NOT_REGISTERED", ctx.session)
    await asyncio.sleep(0.2)
    while True:
        events, current = await wait_for(ctx, reg["gen"], reg["names"], reg["refs"], 30.0, stamp=True)
        reg["gen"] = current
        if events:
            return events


@message("event.get_current_id")
def get_current_id(ctx: Context) -> int:
    return int(ctx.db.committed)


@message("event.inject")
def inject(ctx: Context, cls: str, ref: str) -> str:
    c = ctx.db.dm.cls(cls)
    if c is None or not ctx.db.exists(c.name, ref):
        raise ApiError("HANDLE_INVALID", cls, ref)
    with ctx.db.transaction():  # the touch's own generation, whatever other threads commit
        ctx.db.touch(c.name, ref)
        gen = ctx.db.generation
    return token(gen - 1)
