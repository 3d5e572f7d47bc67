"""notifier-sw.js in a real headless Chromium: push payloads from RenderedPush become notifications.
Plus notifier-subscribe.js: what it hands to pushManager.subscribe() and POSTs to the panel's backend.

The page is served from http://127.0.0.1 (a secure context, so service workers run without TLS);
pushes go in through the DevTools protocol's ServiceWorker.deliverPushMessage, the same path as the
"Push" button in DevTools, and the shown notifications are read back with registration.getNotifications().
Chromium's getNotifications() drops a notification whose showNotification() is still in flight (it syncs
with the display service), so each push waits until the worker's showNotification() settled; the test
observes that by wrapping ServiceWorkerRegistration.prototype.showNotification from DevTools, without
changing the file under test. An attached DevTools session also keeps the worker from idling out.
Chromium is required: an absent browser fails the run (`.ci/run` installs Debian's chromium); nothing is skipped.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from notifier.render import RenderedPush
from tests.browser import TIMEOUT, Cdp, CdpError, chromium

STATIC = Path(__file__).resolve().parents[1] / "notifier" / "static"

INDEX_HTML = """<!doctype html>
<meta charset="utf-8">
<title>notifier sw test</title>
<script src="/notifier-subscribe.js"></script>
<script>
  window.swReady = navigator.serviceWorker.register('/notifier-sw.js')
    .then(() => navigator.serviceWorker.ready)
    .then(() => { document.title = 'ready'; return true; });
</script>
"""

LIST_NOTIFICATIONS = """
navigator.serviceWorker.ready
  .then(r => r.getNotifications())
  .then(ns => JSON.stringify(ns.map(n => ({title: n.title, body: n.body, tag: n.tag, data: n.data}))))
"""

# Evaluated in the service worker: counts showNotification() calls that settled, keeps their errors.
INSTRUMENT_SW = """
(() => {
  if (self.__swTest) return true;
  const probe = self.__swTest = {settled: 0, errors: []};
  const show = ServiceWorkerRegistration.prototype.showNotification;
  ServiceWorkerRegistration.prototype.showNotification = function (...args) {
    return show.apply(this, args).then(
      (value) => { probe.settled++; return value; },
      (error) => { probe.settled++; probe.errors.push(String(error)); throw error; });
  };
  return true;
})()
"""

CLOSE_NOTIFICATIONS = """
navigator.serviceWorker.ready
  .then(r => r.getNotifications())
  .then(ns => { ns.forEach(n => n.close()); return ns.length; })
"""


class Page:
    """The test tab and the service worker (one DevTools session each) plus where pushes go."""

    def __init__(self, cdp: Cdp, session: str, sw_session: str, origin: str, registration_id: str) -> None:
        self.cdp, self.session, self.sw_session = cdp, session, sw_session
        self.origin, self.registration_id = origin, registration_id

    def evaluate(self, expression: str, session: str | None = None) -> Any:
        result = self.cdp.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session or self.session,
        )
        if "exceptionDetails" in result:
            raise CdpError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def probe(self) -> dict[str, Any]:
        value: dict[str, Any] = self.evaluate("self.__swTest", self.sw_session)
        return value

    def push(self, data: str | bytes) -> None:
        """Deliver one push and wait until the worker's showNotification() for it has settled."""
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        settled = self.probe()["settled"]
        self.cdp.send(
            "ServiceWorker.deliverPushMessage",
            {"origin": self.origin, "registrationId": self.registration_id, "data": text},
            self.session,
        )
        deadline = time.monotonic() + TIMEOUT
        while (probe := self.probe())["settled"] <= settled:
            if time.monotonic() > deadline:
                raise AssertionError(f"the worker never called showNotification() for push {text!r}")
            time.sleep(0.02)
        assert probe["errors"] == [], "showNotification() rejected"

    def push_silent(self, data: str | bytes) -> int:
        """Deliver a push that must show nothing; returns the count of notifications shown before it."""
        settled = int(self.probe()["settled"])
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        self.cdp.send(
            "ServiceWorker.deliverPushMessage",
            {"origin": self.origin, "registrationId": self.registration_id, "data": text},
            self.session,
        )
        return settled

    def exceptions(self) -> list[str]:
        """Uncaught exceptions the service worker reported so far."""
        self.probe()  # a round trip first, so events sent before now have been read
        return [
            e["params"]["exceptionDetails"].get("exception", {}).get("description", e["params"]["exceptionDetails"]["text"])
            for e in self.cdp.events
            if e["method"] == "Runtime.exceptionThrown" and e.get("sessionId") == self.sw_session
        ]

    def notifications(self) -> list[dict[str, Any]]:
        value: list[dict[str, Any]] = json.loads(self.evaluate(LIST_NOTIFICATIONS))
        return value

    def wait_notifications(self, ready: Callable[[list[dict[str, Any]]], bool], timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            shown = self.notifications()
            if ready(shown):
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"notifications never reached the expected state; last seen: {shown}")
            time.sleep(0.05)


@dataclass
class Site:
    url: str
    posts: list[tuple[str, str, Any]] = field(default_factory=list)  # (path, content type, JSON body)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """http://127.0.0.1:<port> serving index.html and the real notifier-sw.js / notifier-subscribe.js.

    Any POST is recorded and answered 204, standing in for the panel backend's save/delete endpoints.
    """
    root = tmp_path_factory.mktemp("site")
    for name in ("notifier-sw.js", "notifier-subscribe.js"):
        shutil.copy(STATIC / name, root / name)
    (root / "index.html").write_text(INDEX_HTML, encoding="utf-8")
    posts: list[tuple[str, str, Any]] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            posts.append((self.path, self.headers.get("Content-Type", ""), json.loads(body)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # stdlib signature; keeps the output quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, name="sw-test-http", daemon=True)
    thread.start()
    try:
        yield Site(f"http://127.0.0.1:{server.server_address[1]}", posts)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cdp]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as cdp:
        yield cdp


@pytest.fixture(scope="module")
def page(browser: Cdp, site: Site) -> Page:
    """A tab on the site with notifier-sw.js activated and notification permission granted."""
    origin = site.url
    browser.send("Browser.grantPermissions", {"permissions": ["notifications"], "origin": origin})
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    browser.send("ServiceWorker.enable", session=session)
    browser.send("Page.navigate", {"url": f"{origin}/index.html"}, session)
    version = browser.wait_event(
        "ServiceWorker.workerVersionUpdated",
        lambda p: any(v["scriptURL"] == f"{origin}/notifier-sw.js" and v["status"] == "activated" for v in p["versions"]),
    )
    registration_id = next(v["registrationId"] for v in version["versions"] if v["status"] == "activated")
    targets = browser.send("Target.getTargets")["targetInfos"]
    worker = next(t["targetId"] for t in targets if t["type"] == "service_worker" and t["url"] == f"{origin}/notifier-sw.js")
    sw_session = browser.send("Target.attachToTarget", {"targetId": worker, "flatten": True})["sessionId"]
    browser.send("Runtime.enable", session=sw_session)  # uncaught exceptions arrive as Runtime.exceptionThrown
    p = Page(browser, session, sw_session, origin, registration_id)
    assert p.evaluate(INSTRUMENT_SW, sw_session) is True
    assert p.evaluate("window.swReady") is True  # navigator.serviceWorker.ready resolved in the page too
    return p


@pytest.fixture
def clean(page: Page) -> Iterator[Page]:
    """The page with no notification left over from an earlier test; the worker must not throw meanwhile."""
    page.evaluate(CLOSE_NOTIFICATIONS)
    page.wait_notifications(lambda shown: shown == [])
    before = len(page.exceptions())
    yield page
    assert page.exceptions()[before:] == []


def _payload(origin: str, dialog_id: int, title: str, body: str) -> bytes:
    """Exactly what the worker sends (before encryption)."""
    url = f"{origin}/dialogs?dialog_id={dialog_id}"
    return RenderedPush(title=title, body=body, url=url, dialog_id=dialog_id, tag=f"dialog-{dialog_id}").payload()


def _by_tag(shown: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n["tag"]: n for n in shown}


def test_push_shows_one_notification_per_dialog(clean: Page) -> None:
    page, origin = clean, clean.origin
    title, body = "Новое сообщение от Анны 💬", "Здравствуйте! Есть ли доставка в Казань? 🚚 «срочно»"
    page.push(_payload(origin, 42, title, body))
    (first,) = page.notifications()
    assert first == {
        "title": title,
        "body": body,
        "tag": "dialog-42",
        "data": {"url": f"{origin}/dialogs?dialog_id=42", "dialog_id": 42},
    }

    # A newer push for the same dialog replaces the notification instead of stacking a second one.
    page.push(_payload(origin, 42, title, "И ещё вопрос: оплата картой? 👍"))
    (second,) = page.notifications()
    assert second["tag"] == "dialog-42" and second["body"] == "И ещё вопрос: оплата картой? 👍"
    assert second["title"] == title

    # Another dialog gets its own notification.
    page.push(_payload(origin, 43, "Сообщение от Олега", "Добрый день"))
    shown = _by_tag(page.notifications())
    assert len(shown) == 2 and set(shown) == {"dialog-42", "dialog-43"}
    assert shown["dialog-43"]["data"] == {"url": f"{origin}/dialogs?dialog_id=43", "dialog_id": 43}
    assert shown["dialog-42"]["body"] == "И ещё вопрос: оплата картой? 👍"


@pytest.mark.parametrize("data", ["not json", "", "[1, 2]", '"just a string"', "null"])
def test_unreadable_payload_still_shows_the_generic_notification(clean: Page, data: str) -> None:
    clean.push(data)
    (shown,) = clean.notifications()
    assert shown["title"] == "Новое сообщение"
    assert shown["body"] and shown["tag"] == "notifier"
    assert shown["data"] == {"url": None, "dialog_id": None}

    # The worker survived: a good push right after is shown normally.
    clean.push(_payload(clean.origin, 7, "Заголовок", "Текст"))
    shown_now = clean.notifications()
    assert len(shown_now) == 2 and _by_tag(shown_now)["dialog-7"]["title"] == "Заголовок"


def test_only_http_urls_are_kept_and_missing_tag_comes_from_dialog_id(clean: Page) -> None:
    bad = {"title": "Т", "body": "Б", "url": "javascript:alert(1)", "dialog_id": 5}
    clean.push(json.dumps(bad, ensure_ascii=False))
    (shown,) = clean.notifications()
    assert shown["tag"] == "dialog-5"
    assert shown["data"] == {"url": None, "dialog_id": 5}


VAPID_KEY = bytes([4]) + bytes(range(192, 256))  # 65 bytes like a P-256 point; its base64url has "-" and "_"

SUBSCRIBE = """
(async () => {
  const proto = PushManager.prototype;
  const saved = {subscribe: proto.subscribe, getSubscription: proto.getSubscription};
  const calls = [];
  // headless Chromium has no push service to subscribe with: stand in for the browser's side only.
  const fake = {
    endpoint: 'https://fcm.googleapis.com/fcm/send/test-endpoint',
    options: {},
    toJSON() { return {endpoint: this.endpoint, expirationTime: null, keys: {p256dh: 'BPk', auth: 'au'}}; },
    unsubscribe: async () => { calls.push('unsubscribe'); current = null; return true; },
  };
  let current = null;
  proto.getSubscription = async function () { return current; };
  proto.subscribe = async function (options) {
    calls.push({userVisibleOnly: options.userVisibleOnly, key: Array.from(new Uint8Array(options.applicationServerKey))});
    current = fake;
    return fake;
  };
  try {
    const subscribed = await window.notifierSubscribe({vapidPublicKey: __KEY__, saveUrl: '/api/notifier/subscription'});
    const again = await window.notifierSubscribe({vapidPublicKey: __KEY__, saveUrl: '/api/notifier/subscription'});
    const unsubscribed = await window.notifierUnsubscribe({deleteUrl: '/api/notifier/unsubscribe'});
    const nothingLeft = await window.notifierUnsubscribe({deleteUrl: '/api/notifier/unsubscribe'});
    return JSON.stringify({subscribed, again, unsubscribed, nothingLeft, calls});
  } finally {
    Object.assign(proto, saved);
  }
})()
"""


def test_subscribe_snippet_subscribes_with_the_vapid_key_and_posts_to_json(page: Page, site: Site) -> None:
    key = base64.urlsafe_b64encode(VAPID_KEY).decode().rstrip("=")
    assert "-" in key and "_" in key
    site.posts.clear()
    result = json.loads(page.evaluate(SUBSCRIBE.replace("__KEY__", json.dumps(key))))
    assert result["subscribed"] == result["again"] == "subscribed"
    assert result["unsubscribed"] is True and result["nothingLeft"] is False
    # Subscribed once (the second call reuses the subscription), with the decoded key and userVisibleOnly.
    assert result["calls"] == [{"userVisibleOnly": True, "key": list(VAPID_KEY)}, "unsubscribe"]
    saved = {"endpoint": "https://fcm.googleapis.com/fcm/send/test-endpoint", "expirationTime": None,
             "keys": {"p256dh": "BPk", "auth": "au"}}  # fmt: skip
    assert site.posts == [
        ("/api/notifier/subscription", "application/json", saved),
        ("/api/notifier/subscription", "application/json", saved),
        ("/api/notifier/unsubscribe", "application/json", {"endpoint": saved["endpoint"]}),
    ]


def test_a_clear_push_closes_the_dialogs_notification_and_shows_nothing(clean: Page) -> None:
    from notifier.render import RenderedClear

    page, origin = clean, clean.origin
    page.push(_payload(origin, 42, "Новое сообщение", "Здравствуйте"))
    page.push(_payload(origin, 43, "Сообщение от Олега", "Добрый день"))
    assert set(_by_tag(page.notifications())) == {"dialog-42", "dialog-43"}
    shown_before = page.push_silent(RenderedClear(42).payload())  # the manager read dialog 42 elsewhere
    page.wait_notifications(lambda shown: [n["tag"] for n in shown] == ["dialog-43"])
    (left,) = page.notifications()
    assert left["tag"] == "dialog-43" and left["body"] == "Добрый день"
    assert page.probe()["settled"] == shown_before  # the clear itself showed nothing
