"""End to end with a real host: examples/replyx_host under `uvicorn --workers 2`, a real Celery worker with
beat, a private redis-server, the suite's database (SQLite file shared by every process, or PostgreSQL),
the loopback SMTP server and the push receiver that verifies and decrypts; and the panel's browser code
in headless Chromium against that host.

The host is reached over HTTP only, as a browser and a widget would. Timings are procs.FAST_TIMINGS with
the email 8 s after the first message, so the manager has time to read between push and email.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import Engine, select

from notifier import models
from notifier.db import normalize_url
from notifier.pushkeys import generate_vapid_keys
from notifier.store import PRESENCE_ADMIN
from tests.browser import Cdp, Tab, chromium
from tests.hostproc import HostProc, SseReader, bearer
from tests.procs import TcpProxy, WorkerProc, wait_until, worker_env
from tests.pushservice import PushService
from tests.smtpserver import SmtpServer
from tests.support import Host, RedisServer

pytestmark = pytest.mark.slow

SECRET = "replyx-test-secret"
EMAIL_AFTER = 8.0
SETTLE = 5.0  # after the last expected notification, how long a duplicate or a stray one would take to show


def token(user_id: int) -> str:
    from examples.replyx_host.auth import issue_token

    return issue_token(user_id, SECRET)


class World:
    def __init__(self, env: dict[str, str], host: HostProc, worker: WorkerProc, push: PushService, smtp: SmtpServer,
                 r: redis.Redis, public_key: str) -> None:
        self.env, self.host, self.worker, self.push, self.smtp, self.r = env, host, worker, push, smtp, r
        self.public_key = public_key

    def diag(self) -> str:
        return f"{self.host.describe(40)}\n{self.worker.describe(40)}\npush rejections: {self.push.rejections}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, db_url: str, engine: Engine, smtp_server: SmtpServer) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("replyx")
    server = RedisServer(folder / "redis").start()
    push = PushService().start()
    private, public = generate_vapid_keys()
    env = worker_env(
        db_url, server.url, smtp_server.port, folder,
        NOTIFIER_EMAIL_AFTER_SECONDS=str(EMAIL_AFTER),
        NOTIFIER_PRESENCE_TTL_SECONDS="30",  # long: a presence that goes away early was left, not expired
        NOTIFIER_VAPID_PRIVATE_KEY=private,
        NOTIFIER_VAPID_SUBJECT="mailto:ops@replyx.test",
        NOTIFIER_PUSH_ALLOWED_HOSTS="127.0.0.1",
        REPLYX_SECRET=SECRET,
        REPLYX_DATABASE_URL=normalize_url(db_url),  # the host's own engine: whichever PostgreSQL driver is here
        REPLYX_SSE_HEARTBEAT_SECONDS="0.5",
        REPLYX_SSE_RETRY_MS="300",
    )  # fmt: skip
    host = HostProc(folder / "host", env, workers=2)
    worker = WorkerProc(folder / "worker", env, beat=True)
    r = redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=5)
    try:
        host.start()
        worker.start()
        yield World(env, host, worker, push, smtp_server, r, public)
    finally:
        r.close()
        worker.stop(timeout=5)
        host.stop()
        push.stop()
        server.stop(kill=True)


def tenants(hostdb: Host) -> None:
    """Owner 1 (assistant 10) with dialogs 100-102 in handoff; owner 2, another tenant (assistant 20)."""
    hostdb.user(1, "owner1@example.com")
    hostdb.user(2, "owner2@example.com")
    hostdb.assistant(10, 1, "Магазин")
    hostdb.assistant(20, 2, "Другой")
    for dialog_id in (100, 101, 102, 300, 301):
        hostdb.dialog(dialog_id, 1, assistant_id=10, first_name=f"Visitor{dialog_id}", last_name=None)


def visitor_writes(http: httpx.Client, dialog_id: int, text: str) -> tuple[int, int]:
    """The widget posts a visitor message; (message id, pid of the uvicorn worker that stored it)."""
    response = http.post(
        f"/api/widget/dialogs/{dialog_id}/messages", params={"assistant_id": 10, "guest_id": f"guest-{dialog_id}"},
        json={"sender": "manager", "text": text},  # a forged sender: the host must store 'user' anyway
    )
    assert response.status_code == 200, response.text
    assert response.json()["sender"] == "user"
    return int(response.json()["id"]), int(response.headers["X-Worker-Pid"])


def decisions(engine: Engine, dialog_id: int) -> list[tuple[Any, ...]]:
    dec = models.decisions
    with engine.connect() as conn:
        query = select(dec.c.manager_id, dec.c.action, dec.c.reason, dec.c.channel).where(dec.c.dialog_id == dialog_id)
        return [tuple(r) for r in conn.execute(query)]


def test_visitor_messages_reach_the_right_manager_through_a_real_host(world: World, hostdb: Host, engine: Engine) -> None:
    """100: nobody connected, push then email. 101: the owner watches its SSE stream on one uvicorn worker
    while the visitor's message lands on the other: nothing is sent. 102: read over HTTP between push and
    email: no email. Owner 2 (another tenant) reading, subscribing to the stream or heartbeating on 100:
    404 each time, and nothing changes."""
    tenants(hostdb)
    t1, t2 = token(1), token(2)
    http = httpx.Client(base_url=world.host.url, timeout=10)
    streams: list[SseReader] = []
    try:
        sub = world.push.new_subscription("owner1-laptop")
        saved = http.post("/api/notifier/subscriptions", json=sub, headers=bearer(t1))
        assert saved.status_code == 201, saved.text

        # The other tenant, on dialog 100: every door answers 404, and leaves no trace.
        for method, path, body in [
            ("POST", "/api/notifier/dialogs/100/read", {"message_id": 1}),
            ("POST", "/api/notifier/presence", {"dialog_id": 100}),
            ("DELETE", "/api/notifier/presence", {"dialog_id": 100}),
        ]:
            refused = http.request(method, path, json=body, headers=bearer(t2))
            assert (refused.status_code, refused.json()) == (404, {"detail": "Not Found"}), (path, refused.text)
        assert http.get("/api/dialogs/100/events", params={"token": t2}).status_code == 404
        assert http.post("/api/notifier/dialogs/100/read", json={"message_id": 1}).status_code == 401  # the host's own

        stream = SseReader(f"{world.host.url}/api/dialogs/101/events?token={t1}")
        stream.start()
        streams.append(stream)
        sse_pid = int(stream.wait_event("hello")["pid"])
        other, other_pid = world.host.client_on_another_worker(sse_pid)
        try:
            wait_until(lambda: http.get("/api/notifier/stats", headers=bearer(t1)).json()["connection_details"]
                       ["admin_connections"] == 1, 10, "the owner's presence on dialog 101")  # fmt: skip
            sent = {d: visitor_writes(other, d, f"message for dialog {d}") for d in (100, 101, 102)}
        finally:
            other.close()
        assert sent[101][1] == other_pid != sse_pid, "the message and the stream must be served by different processes"
        # The stream hears the message the other process stored (the host's own pub/sub).
        wait_until(lambda: any(e == "message" and d["message"]["id"] == sent[101][0] for e, d in stream.events), 10,
                   "the message on the owner's stream")  # fmt: skip

        pushes = world.push.wait_for(2, timeout=40)
        assert sorted(p.payload["dialog_id"] for p in pushes) == [100, 102], world.diag()
        assert world.smtp.messages == [], "push comes first, email later"
        read = http.post("/api/notifier/dialogs/102/read", json={"message_id": sent[102][0]}, headers=bearer(t1))
        assert read.status_code == 204

        def one_mail() -> Any:
            return world.smtp.messages if len(world.smtp.messages) >= 1 else None

        [mail] = wait_until(one_mail, 40, "the escalation email for dialog 100", world.diag)
        assert mail.rcpt_tos == ("owner1@example.com",) and "Visitor100" in mail.part("plain")
        # Nothing more: no email for 102 (read), nothing at all for 101 (online), no duplicate; the read of
        # 102 took its notification back from the owner's browser (a clear push, shown to nobody).
        def split() -> tuple[list[int], list[int]]:
            shown = [p.payload["dialog_id"] for p in world.push.received if p.payload.get("type") != "clear"]
            return shown, [p.payload["dialog_id"] for p in world.push.received if p.payload.get("type") == "clear"]

        wait_until(lambda: split()[1] == [102], 10, "the clear push for dialog 102", world.diag)
        deadline = time.monotonic() + SETTLE
        while time.monotonic() < deadline:
            shown, cleared = split()
            assert (len(world.smtp.messages), sorted(shown), cleared) == (1, [100, 102], [102]), world.diag()
            time.sleep(0.1)
        assert {(m, action, reason) for m, action, reason, _ in decisions(engine, 101)} == {(1, "skip", "online")}
        wait_until(lambda: (1, "skip", "read", None) in decisions(engine, 102), 10, "the read decision for 102", world.diag)

        # Leaving the stream leaves at once, from the process that served it (the TTL is 30 s).
        streams.remove(stream)
        stream.close()
        wait_until(lambda: world.r.zcard(PRESENCE_ADMIN) == 0, 10, "presence to be left on disconnect", world.diag)
        # The other tenant changed nothing: no pointer, no presence, and dialog 100 was notified as usual.
        rp = models.read_pointers
        with engine.connect() as conn:
            assert conn.execute(select(rp.c.manager_id, rp.c.dialog_id)).all() == [(1, 102)]
    finally:
        for leftover in streams:
            leftover.close()
        http.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cdp]:
    with chromium(tmp_path_factory.mktemp("chromium-kit")) as cdp:
        yield cdp


def test_after_a_reconnect_the_panel_shows_what_it_missed(world: World, hostdb: Host, browser: Cdp) -> None:
    """The panel's EventSource goes through a TCP proxy; the proxy cuts it, the visitor writes twice in the
    open dialog and once in another while the stream is down, the proxy comes back: on the reconnect
    notifier-missed.js fetches /missed with the panel's Bearer token and shows (3) in the title and a badge
    on the favicon. Reading brings both back."""
    tenants(hostdb)
    t1 = token(1)
    proxy = TcpProxy("127.0.0.1", world.host.port).start()
    tab = Tab.open(browser, f"http://127.0.0.1:{proxy.port}/admin?token={t1}&dialog=300")
    try:
        tab.wait_for("window.panel.missed.length >= 1", what="the first /missed on connect")
        assert tab.evaluate("document.title") == "ReplyX"
        assert tab.evaluate("window.panel.missed[0]") == {"total": 0, "dialogs": []}

        proxy.cut()
        tab.wait_for("document.getElementById('state').textContent === 'reconnecting'", what="the stream to drop")
        http = httpx.Client(base_url=world.host.url, timeout=10)
        try:
            first, _ = visitor_writes(http, 300, "Вы здесь?")
            visitor_writes(http, 300, "Ау")
            other, _ = visitor_writes(http, 301, "Здравствуйте")
            proxy.restore()
            missed = tab.wait_for("window.panel.missed.length >= 2 && window.panel.missed.at(-1)", timeout=30,
                                  what="/missed after the reconnect")  # fmt: skip
            assert missed["total"] == 3
            assert [(d["dialog_id"], d["unread"], d["first_unread_message_id"]) for d in missed["dialogs"]] == [
                (300, 2, first), (301, 1, other)]  # fmt: skip
            assert tab.evaluate("document.title") == "(3) ReplyX"
            badge = tab.wait_for("document.querySelector('link[rel~=icon]').href.startsWith('data:image/png') &&"
                                 " document.querySelector('link[rel~=icon]').href", what="the favicon badge")  # fmt: skip
            assert len(badge) > 200
            assert tab.evaluate("window.panel.errors") == []

            # The manager reads: the panel asks again (here: refresh(), as a host would after reading).
            for dialog_id, upto in ((300, first + 1), (301, other)):
                answer = http.post(f"/api/notifier/dialogs/{dialog_id}/read", json={"message_id": upto}, headers=bearer(t1))
                assert answer.status_code == 204
            assert tab.evaluate("window.missed.refresh().then(() => window.missed.total)") == 0
            assert tab.evaluate("document.title") == "ReplyX"
            assert tab.evaluate("document.querySelector('link[rel~=icon]').getAttribute('href')") == "/favicon.svg"

            # Any stream with an 'open' event will do, e.g. a panel's own WebSocket wrapper; stop() undoes it all.
            visitor_writes(http, 301, "Ещё вопрос")
            before = tab.evaluate("window.panel.missed.length")
            tab.evaluate("(() => { window.stream2 = new EventTarget(); window.missed.watch(window.stream2);"
                         " window.stream2.dispatchEvent(new Event('open')); return true; })()")
            tab.wait_for(f"window.panel.missed.length > {before} && window.panel.missed.at(-1).total === 1",
                         what="/missed on the second stream's open")  # fmt: skip
            assert tab.evaluate("document.title") == "(1) ReplyX"
            tab.evaluate("window.missed.stop()")
            assert tab.evaluate("document.title") == "ReplyX"
            assert tab.evaluate("document.querySelector('link[rel~=icon]').getAttribute('href')") == "/favicon.svg"
        finally:
            http.close()
    finally:
        tab.close()
        proxy.stop()


SUBSCRIBE = """
(async () => {
  const proto = PushManager.prototype;
  const saved = {subscribe: proto.subscribe, getSubscription: proto.getSubscription};
  const calls = [];
  // headless Chromium has no push service: stand in for the browser's side only, with real keys.
  const fake = (json) => ({
    endpoint: json.endpoint, expirationTime: json.expirationTime, options: {},
    toJSON() { return json; },
    unsubscribe: async () => { calls.push(['unsubscribe', json.endpoint]); current = null; return true; },
  });
  let current = __CURRENT__ && fake(__CURRENT__);
  proto.getSubscription = async function () { return current; };
  proto.subscribe = async function (options) {
    calls.push(['subscribe', options.applicationServerKey.byteLength]);
    current = fake(__NEXT__);
    return current;
  };
  try {
    const result = await window.notifierSubscribe(__OPTIONS__);
    return JSON.stringify({result, calls});
  } catch (error) {
    return JSON.stringify({error: String(error.message), status: error.status, calls});
  } finally {
    Object.assign(proto, saved);
  }
})()
"""


def subscribe(tab: Tab, options: str, current: dict[str, Any] | None, nxt: dict[str, Any] | None) -> dict[str, Any]:
    script = SUBSCRIBE.replace("__OPTIONS__", options).replace("__CURRENT__", json.dumps(current))
    result: dict[str, Any] = json.loads(tab.evaluate(script.replace("__NEXT__", json.dumps(nxt))))
    return result


def endpoints(engine: Engine) -> list[tuple[int, str]]:
    ps = models.push_subscriptions
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(ps.c.manager_id, ps.c.endpoint).order_by(ps.c.id))]  # type: ignore[misc]


def test_the_panel_subscribes_through_the_kit_with_its_own_auth(world: World, hostdb: Host, engine: Engine,
                                                                 browser: Cdp) -> None:
    """notifier-subscribe.js against the kit: the key from /vapid-public-key, the worker registered from
    /api/notifier/sw.js for the whole origin, the subscription saved with the panel's Bearer header or its
    own fetch function; an expired one is replaced (new one saved, old one deleted); a refused one
    rejects with the server's reason; denied, unsupported and push off are answers, not errors."""
    tenants(hostdb)
    origin = world.host.url
    browser.send("Browser.grantPermissions", {"permissions": ["notifications"], "origin": origin})
    tab = Tab.open(browser, f"{origin}/admin?token={token(1)}&dialog=300")
    try:
        first, second = world.push.new_subscription("panel-1"), world.push.new_subscription("panel-2")
        headers = "{baseUrl: '/api/notifier', headers: () => ({Authorization: 'Bearer ' + localStorage.getItem('token')})}"
        done = subscribe(tab, headers, None, first)
        assert done == {"result": "subscribed", "calls": [["subscribe", 65]]}, done
        assert endpoints(engine) == [(1, first["endpoint"])]
        registration = tab.evaluate("navigator.serviceWorker.getRegistration('/')"
                                    ".then(r => [r.scope, (r.active || r.installing || r.waiting).scriptURL])")
        assert registration == [f"{origin}/", f"{origin}/api/notifier/sw.js"]

        # Expired: unsubscribed, subscribed again, the new one saved and the old one deleted.
        expired = {**first, "expirationTime": int(time.time() * 1000) - 1000}
        own_fetch = ("{baseUrl: '/api/notifier', fetch: (url, init) => fetch(url, {...init, headers: {...init.headers,"
                     " Authorization: 'Bearer ' + localStorage.getItem('token')}})}")  # fmt: skip
        done = subscribe(tab, own_fetch, expired, second)
        assert done == {"result": "subscribed", "calls": [["unsubscribe", first["endpoint"]], ["subscribe", 65]]}, done
        wait_until(lambda: endpoints(engine) == [(1, second["endpoint"])], 10, "the old endpoint to be deleted")

        broken = {**world.push.new_subscription("panel-3"), "keys": {"p256dh": "AAAA", "auth": second["keys"]["auth"]}}
        refused = subscribe(tab, headers, None, broken)
        assert refused["status"] == 422 and "p256dh" in refused["error"], refused
        assert subscribe(tab, "{baseUrl: '/api/notifier'}", None, first)["status"] == 401  # no credentials

        push_off = ("{baseUrl: '/api/notifier', fetch: async (url, init) => url.endsWith('/vapid-public-key') ?"
                    " new Response(JSON.stringify({detail: 'push is off: NOTIFIER_VAPID_PRIVATE_KEY is not set'}),"
                    " {status: 404}) : fetch(url, init)}")  # fmt: skip
        assert subscribe_plain(tab, push_off) == "off"
        assert subscribe(tab, "{baseUrl: '/api/notifyer', headers: {}}", None, first)["status"] == 404  # a typo is an error

        tab.evaluate("(() => { window.__push = window.PushManager; delete window.PushManager; return true; })()")
        assert subscribe_plain(tab, headers) == "unsupported"
        tab.evaluate("(() => { window.PushManager = window.__push; return true; })()")
        browser.send("Browser.setPermission", {"permission": {"name": "notifications"}, "setting": "denied", "origin": origin})
        assert subscribe_plain(tab, headers) == "denied"
        assert endpoints(engine) == [(1, second["endpoint"])]
    finally:
        browser.send("Browser.resetPermissions")
        tab.close()


def subscribe_plain(tab: Tab, options: str) -> Any:
    return tab.evaluate(f"window.notifierSubscribe({options})")



SETTINGS_FAKE_PUSH = """
(() => {
  // headless Chromium has no push service: the browser's side of subscribing, with a real subscription's JSON.
  const proto = PushManager.prototype;
  const json = __SUBSCRIPTION__;
  let current = null;
  const fake = () => ({ endpoint: json.endpoint, expirationTime: null, options: {}, toJSON() { return json; },
                        unsubscribe: async () => { current = null; return true; } });
  proto.getSubscription = async function () { return current; };
  proto.subscribe = async function () { current = fake(); return current; };
  return true;
})()
"""


def panel_state(tab: Tab) -> dict[str, Any]:
    state: dict[str, Any] = tab.evaluate("""(() => {
      const q = (sel) => document.querySelector('#notification-settings ' + sel);
      return {
        push: q('[data-ntf=push-state]').textContent,
        pushButton: q('[data-ntf=push-toggle]').textContent,
        email: q('input[name=email]').checked,
        quiet: q('input[name=quiet]').checked,
        start: q('input[name=quiet_start]').value,
        end: q('input[name=quiet_end]').value,
        zone: q('select[name=time_zone]').value,
        muted: Array.from(document.querySelectorAll('[data-ntf=muted-list] li span')).map((s) => s.textContent),
      };
    })()""")
    return state


def test_the_settings_panel_reads_and_saves_a_managers_choices(world: World, hostdb: Host, engine: Engine, browser: Cdp,
                                                               tmp_path: Any) -> None:
    """notifier-settings.js on the example host's settings page, against the kit: it shows what is stored,
    turns push on for this browser (saved through the kit), and saves email off, quiet hours in a zone and a
    muted dialog with PUT /preferences; a reload shows them. The screenshot goes to the README."""
    import base64
    import os
    import shutil
    from pathlib import Path

    tenants(hostdb)
    origin = world.host.url
    browser.send("Browser.grantPermissions", {"permissions": ["notifications"], "origin": origin})
    tab = Tab.open(browser, "about:blank")
    try:
        # A Russian manager's browser (24-hour time inputs), a laptop-sized window.
        browser.send("Emulation.setLocaleOverride", {"locale": "ru-RU"}, tab.session)
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": 640, "height": 1000, "deviceScaleFactor": 1, "mobile": False}, tab.session)
        browser.send("Page.navigate", {"url": f"{origin}/settings/notifications?token={token(1)}"}, tab.session)
        tab.wait_for("window.settingsReady", what="the settings panel")
        assert panel_state(tab) == {"push": "Выключены", "pushButton": "Включить", "email": True, "quiet": False,
                                    "start": "22:00", "end": "08:00", "zone": panel_state(tab)["zone"], "muted": []}
        subscription = world.push.new_subscription("settings-panel")
        tab.evaluate(SETTINGS_FAKE_PUSH.replace("__SUBSCRIPTION__", json.dumps(subscription)))
        tab.evaluate("document.querySelector('[data-ntf=push-toggle]').click(), true")
        tab.wait_for("document.querySelector('[data-ntf=push-state]').textContent === 'Включены'", what="push on")
        assert endpoints(engine) == [(1, subscription["endpoint"])]

        tab.evaluate("""(() => {
          const q = (sel) => document.querySelector('#notification-settings ' + sel);
          const set = (el, value) => { el.value = value; el.dispatchEvent(new Event('change')); };
          const email = q('input[name=email]'); email.checked = false; email.dispatchEvent(new Event('change'));
          const quiet = q('input[name=quiet]'); quiet.checked = true; quiet.dispatchEvent(new Event('change'));
          set(q('input[name=quiet_start]'), '22:30');
          set(q('input[name=quiet_end]'), '07:15');
          set(q('select[name=time_zone]'), 'Asia/Yekaterinburg');
          q('input[name=mute_dialog]').value = '101';
          q('section[data-ntf=muted] button').click();
          q('[data-ntf=save]').click();
          return true;
        })()""")
        tab.wait_for("document.querySelector('#notification-settings [role=status]').textContent === 'Сохранено'",
                     what="the save to succeed")
        assert client_preferences(world, 1) == {
            "push": None, "email": False, "language": None, "time_zone": "Asia/Yekaterinburg",
            "quiet_hours": {"start": "22:30", "end": "07:15"}, "muted_dialogs": [101],
        }
        tab.evaluate("window.settingsPanel.reload().then(() => true)")
        after = panel_state(tab)
        assert (after["push"], after["email"], after["quiet"], after["start"], after["end"], after["zone"], after["muted"]) == (
            "Включены", False, True, "22:30", "07:15", "Asia/Yekaterinburg", ["Диалог №101"])
        height = tab.evaluate("Math.ceil(document.querySelector('#notification-settings').getBoundingClientRect().bottom)")
        clip = {"x": 0, "y": 0, "width": 640, "height": height + 24, "scale": 1}
        shot = browser.send("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True},
                            tab.session)
        data = base64.b64decode(shot["data"])
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        (tmp_path / "settings-panel.png").write_bytes(data)
        if os.environ.get("NOTIFIER_SCREENSHOT_DIR"):
            shutil.copy(tmp_path / "settings-panel.png", Path(os.environ["NOTIFIER_SCREENSHOT_DIR"]))
    finally:
        browser.send("Browser.resetPermissions")
        tab.close()


def client_preferences(world: World, manager_id: int) -> dict[str, Any]:
    answer = httpx.get(f"{world.host.url}/api/notifier/preferences", headers=bearer(token(manager_id)), timeout=10)
    assert answer.status_code == 200, answer.text
    prefs: dict[str, Any] = answer.json()
    return prefs
