"""The example host under `uvicorn --workers 2` without any worker: what the API processes do on their
own, over HTTP, with whatever FastAPI, Starlette and uvicorn are installed (the host's pins under `-m host`).

The stream's presence is seen from the other process and left the moment the browser hangs up; a
visitor's message opens a pending check after its commit; another tenant's manager meets 404s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from sqlalchemy import Engine

from notifier.db import normalize_url
from notifier.store import PENDING, PRESENCE_ADMIN, Store, admin_member
from tests.hostproc import HostProc, SseReader, bearer
from tests.procs import FAST_TIMINGS, wait_until
from tests.support import Host, RedisServer

pytestmark = pytest.mark.host

SECRET = "host-process-secret"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, db_url: str, engine: Engine) -> Iterator[tuple[HostProc, redis.Redis]]:
    folder = tmp_path_factory.mktemp("host-only")
    server = RedisServer(folder / "redis").start()
    env = {
        **FAST_TIMINGS,
        "NOTIFIER_DATABASE_URL": db_url,
        "NOTIFIER_REDIS_URL": server.url,
        "NOTIFIER_PRESENCE_TTL_SECONDS": "60",
        "REPLYX_SECRET": SECRET,
        "REPLYX_DATABASE_URL": normalize_url(db_url),
        "REPLYX_SSE_HEARTBEAT_SECONDS": "0.5",
    }
    host = HostProc(folder / "host", env, workers=2)
    r = redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=5)
    try:
        yield host.start(), r
    finally:
        r.close()
        host.stop()
        server.stop(kill=True)


def token(user_id: int) -> str:
    from examples.replyx_host.auth import issue_token

    return issue_token(user_id, SECRET)


def test_presence_follows_the_stream_across_processes(api: tuple[HostProc, redis.Redis], hostdb: Host) -> None:
    host, r = api
    hostdb.user(1)
    hostdb.user(2)
    hostdb.assistant(10, 1, "Магазин")
    hostdb.dialog(100, 1, assistant_id=10)
    stream = SseReader(f"{host.url}/api/dialogs/100/events?token={token(1)}")
    stream.start()
    try:
        sse_pid = int(stream.wait_event("hello")["pid"])
        other, other_pid = host.client_on_another_worker(sse_pid)
        try:
            stats = other.get("/api/notifier/stats", headers=bearer(token(1))).json()
            assert stats == {"connection_details": {"admin_connections": 1, "site_connections": 0}, "presence_available": True}
            before = time.time()
            sent = other.post("/api/widget/dialogs/100/messages", params={"assistant_id": 10, "guest_id": "guest-100"},
                              json={"text": "Есть кто?"})  # fmt: skip
            assert sent.status_code == 200 and int(sent.headers["X-Worker-Pid"]) == other_pid != sse_pid
        finally:
            other.close()
        # After the commit, the pending check: due one grace period after the message.
        assert Store(r).latest(100) == sent.json()["id"]
        due = r.zscore(PENDING, "100")
        assert due is not None and before + 2 <= due <= time.time() + 2
        # The stream, in the other process, heard it (the host's pub/sub), as the panel would.
        wait_until(lambda: any(e == "message" and d["message"]["id"] == sent.json()["id"] for e, d in stream.events), 10,
                   "the message on the stream")  # fmt: skip

        with httpx.Client(base_url=host.url, timeout=10) as http:
            assert http.get("/api/dialogs/100/events", params={"token": token(2)}).status_code == 404
            assert http.get("/api/dialogs/100/events", params={"token": "1.forged"}).status_code == 401
            stranger = bearer(token(2))
            assert http.post("/api/notifier/presence", json={"dialog_id": 100}, headers=stranger).status_code == 404
            assert http.post("/api/notifier/dialogs/100/read", json={"message_id": 1}, headers=stranger).status_code == 404
        assert r.zscore(PRESENCE_ADMIN, admin_member(2, 100)) is None
        assert r.zscore(PRESENCE_ADMIN, admin_member(1, 100)) is not None
    finally:
        stream.close()
    # The TTL is 60 s: gone within seconds means the stream's process left when the browser hung up.
    wait_until(lambda: r.zcard(PRESENCE_ADMIN) == 0, 10, "the presence to be left on disconnect", host.describe)
