"""The HTTP kit a FastAPI host mounts: push key and subscriptions, read pointers, presence, stats, what a
manager missed, and the service worker.

    from notifier.integrations.fastapi import notifier_router
    app.include_router(notifier_router(current_manager_id=get_manager_id), prefix="/api/notifier")

`current_manager_id` is the host's own dependency returning the authenticated manager's user id. The kit
never parses a token: whatever that dependency raises (the host's 401) reaches the browser unchanged, and
a `None` from it is a 401 too. Every endpoint that names a dialog answers 404 unless the caller may see it
(`notifier.decide.may_see`), the same 404 as for a dialog that does not exist.

Database calls run on `notifier.offload`'s bounded thread pool, never on the event loop; Redis calls go
through `notifier.store.AsyncStore` on the loop. Bad input is a 422 whose `detail` names what is wrong; a
database outage is a 503.
"""

from __future__ import annotations

import base64
import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Annotated, Any

from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Body, Depends, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict

from notifier import snapshot
from notifier.config import get_settings
from notifier.db import get_engine
from notifier.errors import ConfigError, InvalidInput, Unavailable
from notifier.integrations.pages import unsubscribe_page as _page
from notifier.offload import run_blocking
from notifier.outages import map_outages
from notifier.pushkeys import load_vapid_private_key
from notifier.unsubscribe import read_token
from notifier.validate import check_id
from worker import client

__all__ = ["notifier_router"]

log = logging.getLogger(__name__)

# Scripts a page loads with <script src> or navigator.serviceWorker.register(): no Authorization header
# travels with those requests, so they are served to anyone (they hold nothing but our code).
SCRIPTS = {
    "sw.js": "notifier-sw.js",
    "notifier-subscribe.js": "notifier-subscribe.js",
    "notifier-missed.js": "notifier-missed.js",
    "notifier-settings.js": "notifier-settings.js",
}
PREFERENCE_FIELDS = ("push", "email", "language", "time_zone", "quiet_hours", "muted_dialogs")
NOT_FOUND = "Not Found"  # FastAPI's own words for an unknown path: a hidden dialog looks like no dialog


class _Body(BaseModel):
    model_config = ConfigDict(strict=True)  # "12" or true is not an id


class ReadBody(_Body):
    message_id: int


class PresenceBody(_Body):
    dialog_id: int | None = None


class EndpointBody(_Body):
    endpoint: str


@contextmanager
def _answers() -> Iterator[None]:
    """Our errors as HTTP answers: bad input 422 (its message says what is wrong), an outage 503."""
    try:
        yield
    except InvalidInput as exc:
        raise HTTPException(422, detail=str(exc)) from None
    except Unavailable as exc:
        log.warning("notifier kit answered 503 service=%s", exc.service)
        raise HTTPException(503, detail=f"{exc.service} unavailable, try again") from None


@functools.lru_cache(maxsize=4)
def _script(name: str) -> bytes:
    return (resources.files("notifier") / "static" / name).read_bytes()


@functools.lru_cache(maxsize=4)
def _public_key(private_key: str) -> str:
    """The browser's applicationServerKey: the 65-byte uncompressed point, URL-safe base64 without padding."""
    point = load_vapid_private_key(private_key).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(point).rstrip(b"=").decode("ascii")


def _mark_read(manager_id: int, dialog_id: int, message_id: int) -> bool:
    """Move the pointer, at most to the dialog's newest message (a pointer past it would silence this
    manager's future notifications for the dialog), and have notifications on screens cleared. False when
    the manager may not see the dialog."""
    engine = get_engine(get_settings().database_url)
    with map_outages():
        with engine.connect() as conn:
            access = snapshot.visible_dialog(conn, manager_id, dialog_id)
        if access is None:
            return False
        pointer = min(message_id, access.last_message_id)
        if pointer > 0:
            client.mark_read(dialog_id, manager_id, pointer)
    return True


def notifier_router(current_manager_id: Callable[..., Any]) -> APIRouter:
    """The kit's endpoints, relative to the prefix the host mounts them under (see the module docstring)."""

    # Dependencies as default values: annotations are strings here (PEP 563), and FastAPI resolves them in
    # the module's globals, where the host's dependency and the closures below do not live.
    async def manager_id(value: Any = Depends(current_manager_id)) -> int:
        if value is None:
            raise HTTPException(401, detail="Not authenticated", headers={"WWW-Authenticate": "Bearer"})
        return check_id("current_manager_id", value)  # anything else is a bug in the host's dependency: 500

    authenticated = Depends(manager_id)
    router = APIRouter(tags=["notifier"])

    async def visible(manager: int, dialog_id: int) -> None:
        with _answers():
            check_id("dialog_id", dialog_id)
            if not await client.amay_see_dialog(manager, dialog_id):
                raise HTTPException(404, detail=NOT_FOUND)

    @router.get("/vapid-public-key")
    async def vapid_public_key(_: int = authenticated) -> dict[str, str]:
        private_key = get_settings().vapid_private_key
        if not private_key:
            raise HTTPException(404, detail="push is off: NOTIFIER_VAPID_PRIVATE_KEY is not set")
        try:
            return {"public_key": _public_key(private_key)}
        except ConfigError as exc:
            log.error("notifier kit: %s", exc)  # the message names the variable, never the key
            raise HTTPException(503, detail="push is misconfigured on the server") from None

    @router.post("/subscriptions", status_code=201)
    async def save_subscription(
        request: Request, body: Annotated[dict[str, Any], Body()], manager: int = authenticated
    ) -> dict[str, int]:
        subscription = {k: v for k, v in body.items() if k != "user_agent"}
        agent = body.get("user_agent", request.headers.get("user-agent"))
        with _answers():
            return {"id": await run_blocking(client.save_subscription, manager, subscription, agent)}

    @router.delete("/subscriptions", status_code=204)
    async def delete_subscription(body: EndpointBody, manager: int = authenticated) -> Response:
        with _answers():
            if not await run_blocking(client.delete_subscription, body.endpoint, manager):
                raise HTTPException(404, detail=NOT_FOUND)  # none, or another manager's: it stays
        return Response(status_code=204)

    @router.post("/dialogs/{dialog_id}/read", status_code=204)
    async def mark_read(dialog_id: int, body: ReadBody, manager: int = authenticated) -> Response:
        with _answers():
            check_id("dialog_id", dialog_id)
            check_id("message_id", body.message_id)
            if not await run_blocking(_mark_read, manager, dialog_id, body.message_id):
                raise HTTPException(404, detail=NOT_FOUND)
        return Response(status_code=204)

    @router.post("/presence", status_code=204)
    async def heartbeat(body: Annotated[PresenceBody | None, Body()] = None, manager: int = authenticated) -> Response:
        dialog_id = body.dialog_id if body else None
        if dialog_id is not None:
            await visible(manager, dialog_id)
        await client.presence.atouch(manager, dialog_id)
        return Response(status_code=204)

    @router.delete("/presence", status_code=204)
    async def leave(body: Annotated[PresenceBody | None, Body()] = None, manager: int = authenticated) -> Response:
        dialog_id = body.dialog_id if body else None
        if dialog_id is not None:
            await visible(manager, dialog_id)
        await client.presence.aleave(manager, dialog_id)
        return Response(status_code=204)

    @router.get("/stats")
    async def stats(_: int = authenticated) -> dict[str, Any]:
        return await client.presence.aconnection_stats()

    @router.get("/missed")
    async def missed(manager: int = authenticated) -> list[dict[str, Any]]:
        with _answers():
            return await client.amissed(manager)

    @router.get("/preferences")
    async def get_preferences(manager: int = authenticated) -> dict[str, Any]:
        with _answers():
            return await run_blocking(client.get_preferences, manager)

    @router.put("/preferences")
    async def put_preferences(body: Annotated[dict[str, Any], Body()], manager: int = authenticated) -> dict[str, Any]:
        """The whole object, as GET returns it; an unknown field, zone or time is a 422 naming it."""
        with _answers():
            missing = [f for f in PREFERENCE_FIELDS if f not in body]
            if missing:
                raise InvalidInput(f"preferences must have every field; missing: {', '.join(missing)}")
            return await run_blocking(lambda: client.set_preferences(manager, **body))

    # One-click unsubscribe (RFC 8058): no login, the signed token is the authority. GET only shows a page
    # with a button (link scanners must not unsubscribe anybody); POST, from that button or from the mail
    # client's List-Unsubscribe-Post, turns the channel off. A bad token is a 400 and changes nothing.
    def language_of(manager: int | None) -> str:
        settings = get_settings()
        chosen = client.get_preferences(manager)["language"] if manager is not None else None
        return str(chosen or settings.default_language)

    def html(kind: str, manager: int | None, status: int = 200, form: bool = False) -> Response:
        page = _page(language_of(manager), kind, get_settings().settings_url, form)
        return Response(page, status_code=status, media_type="text/html", headers={"Cache-Control": "no-store"})

    @router.get("/unsubscribe", include_in_schema=False)
    async def unsubscribe_page(token: str = "") -> Response:
        try:
            manager, _channel = read_token(get_settings().secret_key, token, time.time())
        except (InvalidInput, ConfigError):
            return await run_blocking(html, "bad", None, 400)
        return await run_blocking(html, "ask", manager, 200, True)

    @router.post("/unsubscribe", include_in_schema=False)
    async def unsubscribe(token: str = "") -> Response:
        try:
            with map_outages():
                manager, _channel = await run_blocking(client.unsubscribe, token)
        except (InvalidInput, ConfigError):
            return await run_blocking(html, "bad", None, 400)
        except Unavailable:
            raise HTTPException(503, detail="database unavailable, try again") from None
        return await run_blocking(html, "done", manager)

    def script_route(path: str, filename: str) -> None:
        headers = {"Cache-Control": "no-cache"}
        if filename == "notifier-sw.js":
            headers["Service-Worker-Allowed"] = "/"  # registered from under the prefix with scope "/"

        async def serve() -> Response:
            return Response(_script(filename), media_type="text/javascript", headers=headers)

        router.add_api_route(f"/{path}", serve, methods=["GET"], include_in_schema=False, name=filename)

    for path, filename in SCRIPTS.items():
        script_route(path, filename)
    return router
