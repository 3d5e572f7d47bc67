"""A real Prometheus (Debian's package) scrapes a real worker (prefork pool, two children) every second
during a short load, with deploy/prometheus/alerts.yml loaded: every dashboard query evaluates and
returns data, every alert rule evaluates without error and none fires, and headless Chromium draws
Prometheus's own graph of the lateness percentiles (p50, p90, p99), which is saved as a PNG.

The load: 36 dialogs in handoff, three every 1.5 s for 18 s, through a mail server that now and then
stalls a few transactions (deliveries queue behind them and lateness rises, then falls again), refuses
one for good (550) and defers one (421, retried); one more dialog is read before its deadline (a skip).
`NOTIFIER_SCREENSHOT_DIR=deploy` writes the picture the README shows (deploy/prometheus-lateness.png).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import signal
import struct
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from notifier import host
from notifier.config import load_settings, set_settings
from notifier.redis_conn import reset_clients
from tests.browser import CHROMIUM, Cdp, _devtools_url
from tests.procs import WorkerProc, wait_until, worker_env
from tests.promql import ALERTS, dashboard_queries, for_prometheus
from tests.smtpserver import SmtpServer
from tests.support import Host, RedisServer, free_port
from worker import client

pytestmark = pytest.mark.slow

PROMETHEUS = "/usr/bin/prometheus"
DIALOGS = range(301, 337)
WAVE, PAUSE = 3, 1.5
READ_DIALOG = 399
HOST_ONLY = ("notifier_schedule_failures_total",)  # exported by the host's API processes, not scraped here
PNG = b"\x89PNG\r\n\x1a\n"
WIDTH, HEIGHT = 1200, 1000


def lateness_percentiles(window: str) -> str:
    parts = [
        f'label_replace(histogram_quantile({q}, sum by (le, channel) (rate(notifier_notification_lateness_seconds_bucket'
        f'[{window}]))), "percentile", "p{int(q * 100)}", "", "")'
        for q in (0.5, 0.9, 0.99)
    ]
    return " or ".join(parts)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


class Prometheus:
    def __init__(self, folder: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        folder.mkdir(parents=True)
        config = folder / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{json.dumps(str(ALERTS))}]\n"
            "scrape_configs:\n"
            f"  - job_name: notifier-worker\n    static_configs: [{{targets: [{json.dumps(target)}]}}]\n",
            encoding="utf-8",
        )
        self.log_path = folder / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log_path.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        reply = _get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert reply["status"] == "success", (expr, reply)
        result: list[dict[str, Any]] = reply["data"]["result"]
        return result

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def scene(tmp_path: Path, db_url: str, engine: Engine) -> Iterator[tuple[Prometheus, SmtpServer, Engine, WorkerProc]]:
    if not os.path.exists(PROMETHEUS):
        pytest.fail(f"{PROMETHEUS} not found: install Debian's prometheus package (.ci/run and `make test` do)")
    with ExitStack() as stack:
        redis_server = RedisServer(tmp_path / "redis").start()
        stack.callback(redis_server.stop, kill=True)
        smtp = SmtpServer().start()
        stack.callback(smtp.stop)
        port = free_port()
        env = worker_env(db_url, redis_server.url, smtp.port, tmp_path, NOTIFIER_METRICS_PORT=str(port),
                         NOTIFIER_METRICS_ADDRESS="127.0.0.1", NOTIFIER_EMAIL_AFTER_SECONDS="600")
        set_settings(load_settings(env))
        reset_clients()
        worker = WorkerProc(tmp_path / "worker", env, beat=True, pool="prefork", concurrency=2)
        stack.callback(worker.stop, timeout=10)
        worker.start(wait_ready=False)
        prometheus = Prometheus(tmp_path / "prometheus", f"127.0.0.1:{port}")
        stack.callback(prometheus.stop)
        worker.wait_ready(60)
        wait_until(prometheus.ready, 30, "prometheus to be ready", interval=0.2)
        yield prometheus, smtp, engine, worker


def _say(engine: Engine, message_id: int, dialog_id: int) -> int:
    with engine.begin() as conn:
        conn.execute(insert(host.dialog_messages).values(
            id=message_id, dialog_id=dialog_id, sender="user", text="Здравствуйте, есть вопрос",
            timestamp=dt.datetime.now(dt.UTC).replace(tzinfo=None), message_kind="text"))
    return message_id


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG) and data[12:16] == b"IHDR", data[:16]
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[tuple[Cdp, str]]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium package; .ci/run does")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    log_path = tmp_path / "chromium.log"
    log = open(log_path, "wb")  # closed below
    proc = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
    )
    cdp: Cdp | None = None
    try:
        cdp = Cdp(_devtools_url(profile / "DevToolsActivePort", proc, log_path))
        target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        cdp.send("Emulation.setDeviceMetricsOverride",
                 {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False}, session)
        cdp.send("Page.enable", session=session)
        yield cdp, session
    finally:
        if cdp is not None:
            cdp.close()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        log.close()


BOX = "(r => [r.x, r.y, r.width, r.height].map(Math.round))(document.querySelector('.graph_wrapper').getBoundingClientRect())"
GRAPH_STATE = """
JSON.stringify({
  paths: Array.from(document.querySelectorAll('.graph_area svg path'))
    .filter(p => (p.getAttribute('d') || '').length > 20).length,
  legend: Array.from(document.querySelectorAll('.legend .line .label')).map(e => e.innerText),
  error: (document.querySelector('.alert-danger:not([style*="none"])') || {innerText: ''}).innerText,
})
"""


def test_prometheus_scrapes_the_worker_and_graphs_lateness(
    scene: tuple[Prometheus, SmtpServer, Engine, WorkerProc], browser: tuple[Cdp, str], tmp_path: Path
) -> None:
    prometheus, smtp, engine, worker = scene
    hostdb = Host(engine)
    with engine.begin() as conn:  # owners and dialogs in bulk
        conn.execute(insert(host.users), [
            {"id": d, "email": f"owner{d}@example.com", "first_name": "Ирина", "role": "user", "status": "active",
             "is_email_confirmed": True} for d in (*DIALOGS, READ_DIALOG)])
    for d in (*DIALOGS, READ_DIALOG):
        hostdb.dialog(d, d)
    smtp.refuse_next(1, "550 5.1.1 mailbox unavailable")
    smtp.refuse_next(1, "421 4.3.2 try again later")
    read = _say(engine, 5000, READ_DIALOG)
    client.mark_read(READ_DIALOG, READ_DIALOG, read)
    client.schedule_fallback(READ_DIALOG, read)
    dialogs = list(DIALOGS)
    for wave in range(0, len(dialogs), WAVE):
        if wave // WAVE % 4 == 1:
            smtp.stall_next(WAVE, 1.2)  # a slow moment of the mail server
        for d in dialogs[wave : wave + WAVE]:
            assert client.schedule_fallback(d, _say(engine, 4000 + d, d))
        time.sleep(PAUSE)

    def counted() -> bool:
        found = prometheus.query('sum(notifier_deliveries_total{status=~"sent|failed"})')
        return bool(found) and float(found[0]["value"][1]) >= len(DIALOGS)

    wait_until(counted, 45, "Prometheus to have scraped every outcome", lambda: worker.describe(40), interval=0.5)

    # Every dashboard query evaluates, on the worker's real figures; those naming worker metrics have data.
    empty = []
    for q in dashboard_queries():
        result = prometheus.query(for_prometheus(q["expr"]))
        if not result and not any(name in q["expr"] for name in HOST_ONLY):
            empty.append(f"{q['panel']}: {q['expr']}")
    assert empty == []
    # The alert rules were loaded and evaluated without error; nothing is wrong, so nothing fires.
    rules = [r for g in _get(f"{prometheus.url}/api/v1/rules")["data"]["groups"] for r in g["rules"]]
    assert sorted(r["name"] for r in rules) == sorted(
        ["NotifierPendingCheckStuck", "NotifierDeliveryFailures", "NotifierNoDispatch", "NotifierWorkersNotScraped",
         "NotifierHostScheduleFailures"])
    assert [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    assert _get(f"{prometheus.url}/api/v1/alerts")["data"]["alerts"] == []

    # Prometheus's own graph of the lateness percentiles, drawn by headless Chromium.
    cdp, session = browser
    graph = f"{prometheus.url}/classic/graph?" + urllib.parse.urlencode(
        {"g0.expr": lateness_percentiles("5s"), "g0.tab": "0", "g0.range_input": "30s", "g0.stacked": "0"})
    cdp.send("Page.navigate", {"url": graph}, session)

    def drawn() -> dict[str, Any] | None:
        value = cdp.send("Runtime.evaluate", {"expression": GRAPH_STATE, "returnByValue": True}, session)["result"]
        state: dict[str, Any] = json.loads(value.get("value") or "{}")
        return state if state.get("paths", 0) >= 3 and len(state.get("legend", [])) >= 3 else None

    state = wait_until(drawn, 20, "the graph to be drawn", interval=0.25)
    assert not state["error"], state["error"]
    assert sorted(label.split("percentile=")[1][1:4] for label in state["legend"]) == ["p50", "p90", "p99"], state
    time.sleep(0.5)  # the graph's fade-in
    box = cdp.send("Runtime.evaluate", {"returnByValue": True, "expression": BOX}, session)["result"]["value"]
    x, y, width, height = box
    shot = cdp.send("Page.captureScreenshot", {"format": "png", "clip": {
        "x": x, "y": y, "width": width, "height": height, "scale": 1}}, session)
    data = base64.b64decode(shot["data"])
    assert _png_size(data) == (width, height) and width > 1000 and height > 600 and len(data) > 20_000, (box, len(data))
    (tmp_path / "prometheus-lateness.png").write_bytes(data)
    if os.environ.get("NOTIFIER_SCREENSHOT_DIR"):
        shutil.copy(tmp_path / "prometheus-lateness.png", Path(os.environ["NOTIFIER_SCREENSHOT_DIR"]))
    sent = prometheus.query('sum(notifier_deliveries_total{status="sent"})')
    assert float(sent[0]["value"][1]) == len(DIALOGS) - 1  # one refused for good; the deferred one was sent
