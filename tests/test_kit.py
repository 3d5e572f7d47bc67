"""The FastAPI kit in process (httpx over ASGI) against the suite's database and a private Redis: every
endpoint, the host's own 401, the 404 that hides dialogs, 422 that says what is wrong, 503 on an outage."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI, Header, HTTPException
from sqlalchemy import select

from notifier import models
from notifier.config import set_settings
from notifier.errors import InvalidInput
from notifier.integrations.fastapi import notifier_router
from notifier.pushkeys import generate_vapid_keys
from notifier.runtime import Runtime
from tests.support import Host, free_port
from worker import client

pytestmark = pytest.mark.host

STATIC = Path(__file__).resolve().parents[1] / "notifier" / "static"
PREFIX = "/api/notifier"
OWNER, MEMBER, ADMIN, OUTSIDER, OTHER_OWNER = 1, 2, 3, 4, 5


async def from_header(x_manager: str | None = Header(None)) -> int:
    """The host's dependency: its own way of authenticating, its own 401."""
    if x_manager is None:
        raise HTTPException(401, detail="host: log in first", headers={"WWW-Authenticate": "Bearer"})
    return int(x_manager)


def app_with(dependency: Callable[..., Any] = from_header) -> FastAPI:
    app = FastAPI()
    app.include_router(notifier_router(current_manager_id=dependency), prefix=PREFIX)
    return app


def call(*requests: tuple[str, str, int | None, Any], app: FastAPI | None = None) -> list[httpx.Response]:
    """(method, path under the prefix, manager or None, JSON body or None) each, on one event loop."""
    application = app or app_with()

    async def main() -> list[httpx.Response]:
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://panel") as http:
                out = []
                for method, path, manager, body in requests:
                    headers = {} if manager is None else {"X-Manager": str(manager)}
                    kwargs: dict[str, Any] = {} if body is None else {"json": body}
                    out.append(await http.request(method, PREFIX + path, headers=headers, **kwargs))
                return out
        finally:
            await client.aclose()

    return asyncio.run(main())


def one(method: str, path: str, manager: int | None, body: Any = None) -> httpx.Response:
    return call((method, path, manager, body))[0]


@pytest.fixture
def world(host_rt: Runtime, hostdb: Host) -> Host:
    """Owner 1 (member 2) with dialog 100 in an active handoff assigned to manager 4 of tenant 5 (a host
    bug), admin 3, owner 5 with dialog 500."""
    for user_id in (OWNER, MEMBER, OUTSIDER, OTHER_OWNER):
        hostdb.user(user_id)
    hostdb.user(ADMIN, role="admin")
    hostdb.dialog(100, OWNER, handoff_status="active", assigned_manager_id=OUTSIDER)
    hostdb.dialog(500, OTHER_OWNER)
    client.add_team_member(OWNER, MEMBER)
    client.add_team_member(OTHER_OWNER, OUTSIDER)
    return hostdb


def subscription(endpoint: str = "https://fcm.googleapis.com/fcm/send/abc-123") -> dict[str, Any]:
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)  # fmt: skip
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731
    return {"endpoint": endpoint, "expirationTime": None, "keys": {"p256dh": b64(point), "auth": b64(os.urandom(16))}}


def test_the_kit_imports_without_the_workers_dependencies() -> None:
    code = (
        "import sys, notifier.integrations.fastapi\n"
        "bad = [m for m in ('aiosmtplib', 'pywebpush', 'jinja2', 'celery', 'worker.tasks', 'notifier.render',"
        " 'notifier.channels', 'http_ece') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


AUTHENTICATED = [
    ("GET", "/vapid-public-key", None),
    ("POST", "/subscriptions", {"endpoint": "x"}),
    ("DELETE", "/subscriptions", {"endpoint": "x"}),
    ("POST", "/dialogs/100/read", {"message_id": 1}),
    ("POST", "/presence", {"dialog_id": None}),
    ("DELETE", "/presence", {"dialog_id": None}),
    ("GET", "/stats", None),
    ("GET", "/missed", None),
    ("GET", "/preferences", None),
    ("PUT", "/preferences", {}),
]


def test_without_credentials_the_host_answers(world: Host) -> None:
    answers = call(*[(m, p, None, b) for m, p, b in AUTHENTICATED])
    assert [(a.status_code, a.json()["detail"]) for a in answers] == [(401, "host: log in first")] * len(AUTHENTICATED)
    assert all(a.headers["WWW-Authenticate"] == "Bearer" for a in answers)
    # A dependency that answers None (optional auth in the host) is a 401 as well.
    nobody = call(("GET", "/missed", None, None), app=app_with(lambda: None))[0]
    assert (nobody.status_code, nobody.json()) == (401, {"detail": "Not authenticated"})


def test_a_dependency_returning_no_id_is_a_host_bug() -> None:
    with pytest.raises(InvalidInput, match="current_manager_id"):
        call(("GET", "/missed", None, None), app=app_with(lambda: "1"))


def test_scripts_are_served_to_anyone(world: Host) -> None:
    for path, name in (("/sw.js", "notifier-sw.js"), ("/notifier-missed.js", "notifier-missed.js"),
                       ("/notifier-subscribe.js", "notifier-subscribe.js"),
                       ("/notifier-settings.js", "notifier-settings.js")):  # fmt: skip
        answer = one("GET", path, None)
        assert answer.status_code == 200 and answer.content == (STATIC / name).read_bytes()
        assert answer.headers["content-type"].startswith("text/javascript")
        assert answer.headers["cache-control"] == "no-cache"
    assert one("GET", "/sw.js", None).headers["service-worker-allowed"] == "/"


def test_the_vapid_public_key(world: Host, host_rt: Runtime) -> None:
    off = one("GET", "/vapid-public-key", OWNER)
    assert off.status_code == 404 and "push is off" in off.json()["detail"]
    private, public = generate_vapid_keys()
    set_settings(dataclasses.replace(host_rt.settings, vapid_private_key=private))
    assert one("GET", "/vapid-public-key", OWNER).json() == {"public_key": public}
    set_settings(dataclasses.replace(host_rt.settings, vapid_private_key="not a key"))
    broken = one("GET", "/vapid-public-key", OWNER)
    assert broken.status_code == 503 and "not a key" not in broken.text


def stored(host_rt: Runtime) -> list[tuple[int, str, str | None]]:
    ps = models.push_subscriptions
    with host_rt.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(ps.c.manager_id, ps.c.endpoint, ps.c.user_agent).order_by(ps.c.id))]  # type: ignore[misc]


def test_subscriptions_are_saved_refused_and_deleted_only_by_their_owner(world: Host, host_rt: Runtime) -> None:
    mine, theirs = subscription(), subscription("https://fcm.googleapis.com/fcm/send/other-456")
    saved, again, other = call(
        ("POST", "/subscriptions", OWNER, {**mine, "user_agent": "Firefox/131"}),
        ("POST", "/subscriptions", OWNER, mine),
        ("POST", "/subscriptions", OTHER_OWNER, theirs),
    )
    assert saved.status_code == again.status_code == other.status_code == 201
    assert saved.json() == again.json() and set(saved.json()) == {"id"}  # the same endpoint is updated
    assert [row[:2] for row in stored(host_rt)] == [(OWNER, mine["endpoint"]), (OTHER_OWNER, theirs["endpoint"])]

    refusals = call(
        ("POST", "/subscriptions", OWNER, {**mine, "keys": {"p256dh": "AAAA", "auth": mine["keys"]["auth"]}}),
        ("POST", "/subscriptions", OWNER, {**mine, "endpoint": "http://169.254.169.254/latest/meta-data"}),
        ("POST", "/subscriptions", OWNER, {**mine, "endpoint": "https://push.example.com/x"}),
        ("POST", "/subscriptions", OWNER, {"endpoint": mine["endpoint"]}),
        ("POST", "/subscriptions", OWNER, [mine]),
    )
    assert [r.status_code for r in refusals] == [422] * 5
    assert "p256dh" in refusals[0].json()["detail"]
    assert "not an allowed push service" in refusals[1].json()["detail"]
    assert "not an allowed push service" in refusals[2].json()["detail"]
    assert "keys" in refusals[3].json()["detail"]

    foreign, gone, twice = call(
        ("DELETE", "/subscriptions", OWNER, {"endpoint": theirs["endpoint"]}),
        ("DELETE", "/subscriptions", OWNER, {"endpoint": mine["endpoint"]}),
        ("DELETE", "/subscriptions", OWNER, {"endpoint": mine["endpoint"]}),
    )
    assert (foreign.status_code, gone.status_code, twice.status_code) == (404, 204, 404)
    assert [row[:2] for row in stored(host_rt)] == [(OTHER_OWNER, theirs["endpoint"])]  # someone else's stays


def test_the_user_agent_comes_from_the_body_or_the_browser(world: Host, host_rt: Runtime) -> None:
    call(("POST", "/subscriptions", OWNER, {**subscription(), "user_agent": "Firefox/131"}),
         ("POST", "/subscriptions", OWNER, subscription("https://fcm.googleapis.com/fcm/send/second")))  # fmt: skip
    assert [row[2] for row in stored(host_rt)] == ["Firefox/131", f"python-httpx/{httpx.__version__}"]


def pointers(host_rt: Runtime) -> list[tuple[int, int, int]]:
    rp = models.read_pointers
    with host_rt.engine.connect() as conn:
        query = select(rp.c.dialog_id, rp.c.manager_id, rp.c.message_id).order_by(rp.c.dialog_id, rp.c.manager_id)
        return [tuple(r) for r in conn.execute(query)]  # type: ignore[misc]


def test_read_pointers_for_those_who_may_see_the_dialog(world: Host, host_rt: Runtime) -> None:
    first = world.message(100, "a")
    last = world.message(100, "b")
    answers = call(
        ("POST", "/dialogs/100/read", OWNER, {"message_id": first}),
        ("POST", "/dialogs/100/read", MEMBER, {"message_id": last + 1000}),  # past the newest: clamped
        ("POST", "/dialogs/100/read", ADMIN, {"message_id": last}),
        ("POST", "/dialogs/100/read", OUTSIDER, {"message_id": last}),  # assigned, but another tenant's
        ("POST", "/dialogs/100/read", OTHER_OWNER, {"message_id": last}),
        ("POST", "/dialogs/999/read", OWNER, {"message_id": last}),  # no such dialog: the same 404
        ("POST", "/dialogs/100/read", OWNER, {"message_id": first - 1}),  # backwards: no effect
    )
    assert [a.status_code for a in answers] == [204, 204, 204, 404, 404, 404, 204]
    assert answers[3].json() == answers[4].json() == answers[5].json() == {"detail": "Not Found"}
    assert pointers(host_rt) == [(100, OWNER, first), (100, MEMBER, last), (100, ADMIN, last)]


@pytest.mark.parametrize(
    ("body", "named"), [({"message_id": "5"}, None), ({"message_id": True}, None), ({}, None), ({"message_id": 0}, "message_id"),
                        ({"message_id": 2**63}, "message_id")])  # fmt: skip
def test_a_bad_read_is_refused_clearly(world: Host, body: dict[str, Any], named: str | None) -> None:
    answer = one("POST", "/dialogs/100/read", OWNER, body)
    assert answer.status_code == 422
    if named:
        assert named in answer.json()["detail"]
    assert one("POST", "/dialogs/0/read", OWNER, {"message_id": 1}).status_code == 422


def test_presence_heartbeats_and_leaves(world: Host, host_rt: Runtime) -> None:
    store = host_rt.store
    answers = call(
        ("POST", "/presence", OWNER, {"dialog_id": 100}),
        ("POST", "/presence", MEMBER, {"dialog_id": None}),
        ("POST", "/presence", OUTSIDER, {"dialog_id": 100}),
        ("POST", "/presence", OTHER_OWNER, {"dialog_id": 100}),
        ("DELETE", "/presence", OTHER_OWNER, {"dialog_id": 100}),
        ("GET", "/stats", OWNER, None),
    )
    assert [a.status_code for a in answers] == [204, 204, 404, 404, 404, 200]
    counts = {"admin_connections": 2, "site_connections": 0}
    assert answers[-1].json() == {"connection_details": counts, "presence_available": True}
    assert store.online_on_dialog([OWNER, OUTSIDER, OTHER_OWNER], 100, time.time()) == {OWNER}
    left, panel_left, stats = call(("DELETE", "/presence", OWNER, {"dialog_id": 100}), ("DELETE", "/presence", MEMBER, None),
                                   ("GET", "/stats", MEMBER, None))  # fmt: skip
    assert (left.status_code, panel_left.status_code) == (204, 204)
    assert stats.json()["connection_details"] == {"admin_connections": 0, "site_connections": 0}


def test_missed_is_the_clients(world: Host) -> None:
    first = world.message(100, "a")
    world.message(500, "b")
    assert one("GET", "/missed", OWNER).json() == client.missed(OWNER) == [
        {"dialog_id": 100, "unread": 1, "first_unread_message_id": first, "last_message_id": first,
         "waiting_since": "2026-11-26T12:00:00Z"}]  # fmt: skip
    assert [d["dialog_id"] for d in one("GET", "/missed", ADMIN).json()] == [100, 500]


def test_outages_answer_503_or_degrade(world: Host, host_rt: Runtime) -> None:
    dead = f"127.0.0.1:{free_port()}"
    set_settings(dataclasses.replace(host_rt.settings, database_url=f"postgresql://nobody@{dead}/none", redis_url=f"redis://{dead}/0"))
    missed, read, presence, stats = call(("GET", "/missed", OWNER, None), ("POST", "/dialogs/100/read", OWNER, {"message_id": 1}),
                                         ("POST", "/presence", OWNER, None), ("GET", "/stats", OWNER, None))  # fmt: skip
    assert (missed.status_code, missed.json()) == (503, {"detail": "database unavailable, try again"})
    assert read.status_code == 503
    assert presence.status_code == 204  # presence never fails a panel
    assert stats.json()["presence_available"] is False


def test_the_openapi_schema_builds() -> None:
    paths = app_with().openapi()["paths"]
    assert set(paths) == {f"{PREFIX}{p}" for p in ("/vapid-public-key", "/subscriptions", "/dialogs/{dialog_id}/read",
                                                    "/presence", "/stats", "/missed", "/preferences")}  # fmt: skip



def test_the_kit_states_its_public_api() -> None:
    import notifier.integrations.fastapi as kit

    assert kit.__all__ == ["notifier_router"]


PREFERENCES = {"push": True, "email": False, "language": "en", "time_zone": "Asia/Yekaterinburg",
               "quiet_hours": {"start": "22:30", "end": "07:15"}, "muted_dialogs": [500, 100]}  # fmt: skip


def test_preferences_are_the_callers_own(world: Host, host_rt: Runtime) -> None:
    answers = call(
        ("GET", "/preferences", OWNER, None),
        ("PUT", "/preferences", OWNER, PREFERENCES),
        ("GET", "/preferences", OWNER, None),
        ("GET", "/preferences", MEMBER, None),
    )
    assert [a.status_code for a in answers] == [200, 200, 200, 200]
    empty = {"push": None, "email": None, "language": None, "time_zone": None, "quiet_hours": None, "muted_dialogs": []}
    assert answers[0].json() == empty and answers[3].json() == empty  # the member's are untouched
    assert answers[1].json() == answers[2].json() == {**PREFERENCES, "muted_dialogs": [100, 500]}
    assert client.get_preferences(OWNER)["time_zone"] == "Asia/Yekaterinburg"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"time_zone": "Mars/Olympus_Mons"}, "time_zone"),
        ({"quiet_hours": {"start": "24:00", "end": "07:00"}}, "quiet_hours.start"),
        ({"quiet_hours": {"start": "22:00", "end": "7am"}}, "quiet_hours.end"),
        ({"sms": True}, "sms"),
        ({"push": "yes"}, "push"),
        ({"language": "de"}, "language"),
        ({"muted_dialogs": [0]}, "muted_dialogs"),
    ],
)
def test_bad_preferences_are_a_422_naming_the_field(world: Host, host_rt: Runtime, change: dict[str, Any], named: str) -> None:
    before = client.get_preferences(OWNER)
    answer = one("PUT", "/preferences", OWNER, {**PREFERENCES, **change})
    assert answer.status_code == 422 and named in answer.json()["detail"]
    assert client.get_preferences(OWNER) == before  # nothing changed


def test_put_takes_the_whole_object(world: Host, host_rt: Runtime) -> None:
    partial = {k: v for k, v in PREFERENCES.items() if k != "muted_dialogs"}
    answer = one("PUT", "/preferences", OWNER, partial)
    assert answer.status_code == 422 and "muted_dialogs" in answer.json()["detail"]


SECRET = "k" * 40


@pytest.fixture
def signing(host_rt: Runtime) -> str:
    set_settings(dataclasses.replace(host_rt.settings, public_url="https://panel/api/notifier", secret_key=SECRET,
                                     settings_url="https://panel/settings/notifications"))
    return SECRET


def form_post(path: str) -> httpx.Response:
    """What a mail client does for List-Unsubscribe-Post (RFC 8058): no cookie, no Authorization."""
    async def main() -> httpx.Response:
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_with()), base_url="http://panel") as http:
                return await http.post(PREFIX + path, content=b"List-Unsubscribe=One-Click",
                                       headers={"Content-Type": "application/x-www-form-urlencoded"})
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_one_click_unsubscribe_turns_email_off_without_a_login(world: Host, signing: str) -> None:
    from notifier.enums import Channel
    from notifier.unsubscribe import make_token

    client.set_preferences(OWNER, language="en")
    token = make_token(signing, OWNER, Channel.EMAIL, time.time())
    page = one("GET", f"/unsubscribe?token={token}", None)  # a link scanner, or a person before clicking
    assert page.status_code == 200 and "<form method=\"post\">" in page.text and "Unsubscribe" in page.text
    assert client.get_preferences(OWNER)["email"] is None  # looking changes nothing
    done = form_post(f"/unsubscribe?token={token}")
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    assert "https://panel/settings/notifications" in done.text
    assert client.get_preferences(OWNER)["email"] is False
    assert client.get_preferences(MEMBER)["email"] is None


@pytest.mark.parametrize("how", ["forged", "altered", "expired", "missing"])
def test_a_bad_unsubscribe_token_is_a_4xx_and_changes_nothing(world: Host, signing: str, how: str) -> None:
    from notifier.enums import Channel
    from notifier.unsubscribe import LIFETIME_SECONDS, make_token

    good = make_token(signing, OWNER, Channel.EMAIL, time.time())
    token = {
        "forged": make_token("f" * 40, OWNER, Channel.EMAIL, time.time()),
        "altered": make_token(signing, MEMBER, Channel.EMAIL, time.time()).split(".")[0] + "." + good.split(".")[1],
        "expired": make_token(signing, OWNER, Channel.EMAIL, time.time() - LIFETIME_SECONDS - 1),
        "missing": "",
    }[how]
    for answer in (form_post(f"/unsubscribe?token={token}"), one("GET", f"/unsubscribe?token={token}", None)):
        assert answer.status_code == 400 and "Ссылка недействительна" in answer.text
    assert client.get_preferences(OWNER)["email"] is None and client.get_preferences(MEMBER)["email"] is None


def test_reading_over_http_asks_for_shown_notifications_to_be_cleared(world: Host, host_rt: Runtime) -> None:
    last = world.message(100, "a")
    assert one("POST", "/dialogs/100/read", OUTSIDER, {"message_id": last}).status_code == 404
    assert host_rt.store.pop_clears(10) == []  # refused: nothing asked
    assert one("POST", "/dialogs/100/read", OWNER, {"message_id": last}).status_code == 204
    assert host_rt.store.pop_clears(10) == [100]  # the worker's dispatcher takes it from here
