"""The example host's FastAPI app; see the package docstring. `uvicorn examples.replyx_host.app:app`."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, StreamingResponse
from sqlalchemy import insert, select

from examples.replyx_host.auth import current_manager_id, stream_manager_id
from examples.replyx_host.config import config, engine
from examples.replyx_host.events import Events
from examples.replyx_host.schema import assistants, dialog_messages, dialogs
from notifier.integrations.fastapi import notifier_router
from worker import client

PAGE = Path(__file__).with_name("admin.html")
SETTINGS_PAGE = Path(__file__).with_name("settings.html")
FAVICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">'
    b'<rect width="64" height="64" rx="12" fill="#3b5bdb"/></svg>'
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.events = Events(config().redis_url)
    yield
    await app.state.events.close()
    await client.aclose()  # this event loop's notifier Redis client


app = FastAPI(lifespan=lifespan)
app.include_router(notifier_router(current_manager_id=current_manager_id), prefix="/api/notifier")


@app.middleware("http")
async def worker_pid(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    response = await call_next(request)
    response.headers["X-Worker-Pid"] = str(os.getpid())
    return response


def _store_visitor_message(dialog_id: int, assistant_id: int, guest_id: str, text: str) -> dict[str, Any] | None:
    """ReplyX's widget route: the dialog must belong to the assistant's owner and this guest."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)  # ReplyX writes naive UTC (datetime.utcnow)
    with engine().begin() as conn:
        owner = conn.execute(select(assistants.c.user_id).where(assistants.c.id == assistant_id)).scalar_one_or_none()
        found = conn.execute(
            select(dialogs.c.id).where(dialogs.c.id == dialog_id, dialogs.c.user_id == owner, dialogs.c.guest_id == guest_id)
        ).scalar_one_or_none()
        if owner is None or found is None:
            return None
        # sender is forced: ReplyX takes it from the unauthenticated body, where a visitor could pass "manager".
        message_id = conn.execute(
            insert(dialog_messages)
            .values(dialog_id=dialog_id, sender="user", text=text, timestamp=now, message_kind="user")
            .returning(dialog_messages.c.id)
        ).scalar_one()
    return {"id": message_id, "sender": "user", "text": text, "timestamp": now.isoformat() + "Z"}


@app.post("/api/widget/dialogs/{dialog_id}/messages")
async def widget_message(
    dialog_id: int, data: dict[str, Any], request: Request, assistant_id: int = Query(...), guest_id: str = Query(...)
) -> dict[str, Any]:
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise HTTPException(400, detail="Text required")
    message = await run_in_threadpool(_store_visitor_message, dialog_id, assistant_id, guest_id, text)
    if message is None:
        raise HTTPException(404, detail="Dialog not found")
    # After the commit, on every path that stores a visitor message: one Redis round trip, never raises.
    await client.aschedule_fallback(dialog_id, message["id"])
    await request.app.state.events.publish(dialog_id, {"type": "message:new", "message": message})
    return message


def _sse(event: str | None, data: Any) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


@app.get("/api/dialogs/{dialog_id}/events")
async def dialog_events(dialog_id: int, request: Request, manager_id: int = Depends(stream_manager_id)) -> StreamingResponse:
    if dialog_id <= 0 or not await client.amay_see_dialog(manager_id, dialog_id):
        raise HTTPException(404, detail="Dialog not found")
    cfg, events = config(), request.app.state.events

    async def stream() -> AsyncIterator[str]:
        # Present on this dialog for exactly as long as the stream lives, in whichever process serves it.
        async with client.presence.connected(manager_id, dialog_id), events.subscribe(dialog_id) as subscription:
            yield f"retry: {cfg.sse_retry_ms}\n\n"
            yield _sse("hello", {"pid": os.getpid(), "dialog_id": dialog_id})
            while True:
                event = await subscription.next(timeout=cfg.sse_heartbeat_seconds)
                if event is not None:
                    yield f"data: {event}\n\n"
                elif await request.is_disconnected():
                    return
                else:
                    yield ": heartbeat\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


@app.get("/healthz")
async def healthz() -> dict[str, int]:
    return {"pid": os.getpid()}


@app.get("/admin", response_class=HTMLResponse)
async def admin_page() -> str:
    return PAGE.read_text(encoding="utf-8")


@app.get("/settings/notifications", response_class=HTMLResponse)
async def settings_page() -> str:
    return SETTINGS_PAGE.read_text(encoding="utf-8")


@app.get("/favicon.svg")
async def favicon() -> Response:
    return Response(FAVICON, media_type="image/svg+xml")
