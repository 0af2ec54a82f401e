"""Tasks: what ``Async.*`` calls return, and the task class's own messages.

A task is a row like any other (so clients watch it through events, as Xen Orchestra does).
The call runs in the server's event loop (its blocking part in a worker thread); the task
ends as success with ``result`` holding the XML-RPC ``<value>`` text xapi stores, or as
failure with ``error_info``. A task still pending when xapi restarts is marked failed on start:
its worker is gone, and saying so beats a task that never ends.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from .dispatch import Context, message, now
from .errors import ApiError
from .wire import encode_xmlrpc_value

if TYPE_CHECKING:
    from .server import Xapi


class Tasks:
    def __init__(self, server: "Xapi") -> None:
        self.server = server
        self._running: dict[str, asyncio.Task[Any]] = {}

    def spawn(self, ctx: Context, label: str, run: Callable[[Context], Awaitable[Any]]) -> str:
        db = self.server.db
        ref = db.create("task", {"name_label": label, "name_description": "", "status": "pending",
                                 "created": now(), "resident_on": self.server.host_ref,
                                 "session": ctx.session, "allowed_operations": ["cancel"]})
        ctx.task = ref

        async def body() -> None:
            try:
                value = await run(ctx)
            except ApiError as err:
                self._finish(ref, "failure", error_info=err.description)
            except Exception as err:  # a bug: still end the task, with xapi's INTERNAL_ERROR
                self._finish(ref, "failure", error_info=["INTERNAL_ERROR", f"{type(err).__name__}: {err}"])
            else:
                r = self.server.dispatcher.resolve(label.removeprefix("Async."))
                marked = self.server.dispatcher.marker.mark(value, r.message.result)
                self._finish(ref, "success", result="" if value is None else encode_xmlrpc_value(marked))
            finally:
                self._running.pop(ref, None)

        self._running[ref] = asyncio.get_running_loop().create_task(body())
        return ref

    def _finish(self, ref: str, status: str, result: str = "", error_info: list[str] | None = None) -> None:
        db = self.server.db
        with db.transaction():  # one step, so a task.cancel cannot land between the read and the write
            if not db.exists("task", ref):
                return
            if db.field("task", ref, "status") == "cancelling":
                status, error_info, result = "cancelled", ["TASK_CANCELLED", ref], ""
            db.set("task", ref, status=status, progress=1.0, finished=now(), result=result,
                   error_info=error_info or [], allowed_operations=[])

    def fail_orphans(self) -> None:
        """At start: tasks left pending by a previous xapi end as failures."""
        db = self.server.db
        for ref in db.find("task", status="pending") + db.find("task", status="cancelling"):
            db.set("task", ref, status="failure", finished=now(), allowed_operations=[],
                   error_info=["INTERNAL_ERROR", "xapi restarted while the task was running"])


@message("task.cancel")
def cancel(ctx: Context, task: str) -> None:
    """Ask a pending task to stop; it ends as cancelled (TASK_CANCELLED) rather than success."""
    db = ctx.db
    with db.transaction():  # against the task finishing between the check and the write
        status = db.field("task", task, "status")
        if status != "pending":
            raise ApiError("OPERATION_NOT_ALLOWED", f"task {task} is {status}, not pending")
        db.set("task", task, status="cancelling", allowed_operations=[])


@message("task.create")
def create(ctx: Context, label: str, description: str) -> str:
    return str(ctx.db.create("task", {"name_label": label, "name_description": description,
                                      "status": "pending", "created": now(),
                                      "resident_on": ctx.host, "session": ctx.session,
                                      "allowed_operations": ["cancel"]}))


@message("task.destroy")
def destroy(ctx: Context, task: str) -> None:
    ctx.db.destroy("task", task)


@message("task.set_status")
def set_status(ctx: Context, task: str, value: str) -> None:
    ctx.db.set("task", task, status=value)


@message("task.set_progress")
def set_progress(ctx: Context, task: str, value: float) -> None:
    ctx.db.set("task", task, progress=value)


@message("task.set_result")
def set_result(ctx: Context, task: str, value: str) -> None:
    ctx.db.set("task", task, result=value)


@message("task.set_error_info")
def set_error_info(ctx: Context, task: str, value: list[str]) -> None:
    ctx.db.set("task", task, error_info=value)
