"""A real worker (prefork pool, two children, embedded beat) after a run with known outcomes: its /metrics,
scraped over HTTP, has every figure exactly; its JSON log lines are JSON; the dashboard and the alerts
name only what it (and the host's collector) exports.

The run, with procs.FAST_TIMINGS (grace 2 s): five dialogs in handoff, each owner with an email address;
the mail server refuses the first transaction for good (550, quoting an address), defers the second
(421, retried and sent) and stalls one RCPT for 1.5 s (so the other pool child must take deliveries too);
a sixth dialog read by its owner before the deadline (skipped at check time) with a queued email whose
worker was lost (the sweeper re-queues it; skipped at send time); a seventh dialog pending far in the
future. The prometheus-client directory is given (PROMETHEUS_MULTIPROC_DIR) and holds a previous run's
figures, which the worker must wipe at start.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, insert, select

from notifier import host, ledger, models
from notifier.config import load_settings, set_settings
from notifier.decide import Decision
from notifier.enums import Action, Channel, Reason
from notifier.logs import FIELDS
from notifier.metrics.record import EXPORTED, LATENESS_BUCKETS
from notifier.redis_conn import reset_clients
from notifier.store import Store
from tests.procs import WorkerProc, wait_until, worker_env
from tests.promql import alert_queries, check_expr, dashboard_queries, scraped_labels
from tests.smtpserver import SmtpServer
from tests.support import Host, RedisServer, free_port
from worker import client

pytestmark = pytest.mark.slow

OWNERS = (1, 2, 3, 4, 5)
READ_DIALOG, READ_OWNER = 106, 6
FUTURE_DIALOG = 107
REFUSAL = "550 5.1.1 <refused.owner@example.com>: mailbox unavailable"
TEXT = "Текст посетителя {}: нужна помощь с заказом"
ADDRESS = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
# Celery warns about running as root before logging exists (CI runs as root): not one of our lines.
ROOT_WARNING = "ignore:You're running the worker with superuser privileges"


@dataclass
class Run:
    scrape: str  # /metrics after the run
    scrape_again: str  # a second later: nothing moved
    rows: list[Any]  # notifier_deliveries after the run
    decisions: list[Any]
    log: str  # the worker's whole output (JSON lines)
    multiproc_files: list[str]
    started_at: float
    scraped_at: float


def _tables_empty(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in reversed([*host.host_metadata.sorted_tables, *models.metadata.sorted_tables]):
            conn.execute(table.delete())


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _say(engine: Engine, message_id: int, dialog_id: int) -> int:
    with engine.begin() as conn:
        conn.execute(insert(host.dialog_messages).values(
            id=message_id, dialog_id=dialog_id, sender="user", text=TEXT.format(dialog_id), timestamp=_utcnow(),
            message_kind="text"))
    return message_id


def _stale_figures(folder: Path, env: dict[str, str]) -> None:
    """A previous worker's figures left in the directory: 100 sent emails that never happened here."""
    code = ("from notifier.metrics import record\nfrom notifier.enums import Channel\n"
            "for _ in range(100): record.count_delivery(Channel.EMAIL, 'sent')\n")
    subprocess.run([sys.executable, "-c", code], env={**env, "PROMETHEUS_MULTIPROC_DIR": str(folder)}, check=True,
                   cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert list(folder.glob("counter_*.db")), "the stale figures were not written"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body.decode("utf-8")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, db_url: str, engine: Engine) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("metrics-run")
    _tables_empty(engine)
    with ExitStack() as stack:
        redis_server = RedisServer(tmp / "redis").start()
        stack.callback(redis_server.stop, kill=True)
        smtp = SmtpServer().start()
        stack.callback(smtp.stop)
        port = free_port()
        multiproc = tmp / "prometheus-multiproc"
        multiproc.mkdir()
        env = worker_env(
            db_url, redis_server.url, smtp.port, tmp, NOTIFIER_METRICS_PORT=str(port),
            NOTIFIER_METRICS_ADDRESS="127.0.0.1", NOTIFIER_LOG_FORMAT="json", NOTIFIER_EMAIL_AFTER_SECONDS="600",
        )
        _stale_figures(multiproc, env)
        set_settings(load_settings(env))
        reset_clients()
        stack.callback(reset_clients)
        stack.callback(set_settings, None)

        hostdb = Host(engine)
        for owner in (*OWNERS, READ_OWNER):
            hostdb.user(owner, f"owner{owner}@example.com")
            hostdb.dialog(100 + owner, owner, first_name=f"Visitor{owner}", last_name=None)
        hostdb.dialog(FUTURE_DIALOG, READ_OWNER)

        worker = WorkerProc(tmp / "worker", {**env, "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
                                             "PYTHONWARNINGS": ROOT_WARNING},
                            beat=True, pool="prefork", concurrency=2, quiet=True)
        stack.callback(worker.stop, timeout=10)
        started_at = time.time()
        worker.start(timeout=60)
        wait_until(lambda: "metrics exporter listening" in worker.log_text(), 30, "the exporter", worker.describe)

        # Seventh dialog: a check due in an hour, pending all along.
        r = redis.Redis.from_url(redis_server.url, decode_responses=True)
        stack.callback(r.close)
        Store(r).schedule(FUTURE_DIALOG, 1, time.time() + 3600, 2.0)
        # Sixth dialog: read before its deadline; an email of it whose worker was lost, found by the sweeper.
        read_mid = _say(engine, 2000, READ_DIALOG)
        client.mark_read(READ_DIALOG, READ_OWNER, read_mid)
        assert client.schedule_fallback(READ_DIALOG, read_mid)
        lost = Decision(READ_OWNER, Action.NOTIFY, Reason.UNREAD, Channel.EMAIL, 0, read_mid, read_mid, time.time() - 200)
        with engine.begin() as conn:
            ledger.claim_new(conn, READ_DIALOG, lost, [""], time.time() - 120)  # its enqueue lease long gone
        # The five that notify, through a mail server that refuses, defers and stalls once each.
        smtp.refuse_next(1, REFUSAL)
        smtp.refuse_next(1, "421 4.3.2 Service not available, try later")
        smtp.stall_next(1, 1.5)
        for owner in OWNERS:
            assert client.schedule_fallback(100 + owner, _say(engine, 1000 + owner, 100 + owner))

        def deliveries() -> list[Any]:
            d = models.deliveries
            with engine.connect() as conn:
                return list(conn.execute(select(d).order_by(d.c.id)))

        def settled() -> bool:
            rows = deliveries()
            return len(rows) == 6 and all(row.status in ("sent", "failed", "skipped") for row in rows)

        def diag() -> str:
            return f"deliveries: {[(x.id, x.dialog_id, x.status, x.attempts) for x in deliveries()]}\n{worker.describe(80)}"

        wait_until(settled, 60, "every delivery to finish", diag)
        url = f"http://127.0.0.1:{port}/metrics"
        # The ledger is written just before the figures: wait for the seven outcomes to be counted (more
        # would be a bug, which the exact checks report).
        wait_until(lambda: sum(_samples(_get(url), "notifier_deliveries_total").values()) >= 7, 10, "the figures", diag)
        time.sleep(0.5)
        scrape = _get(url)
        scraped_at = time.time()  # after: a dispatcher run may end while the scrape is on its way
        time.sleep(1.0)
        scrape_again = _get(url)
        dec = models.decisions
        with engine.connect() as conn:
            decisions = list(conn.execute(select(dec).order_by(dec.c.id)))
        files = sorted(p.name for p in multiproc.glob("*.db"))
        log = worker.log_text()
        yield Run(scrape, scrape_again, deliveries(), decisions, log, files, started_at, scraped_at)


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text) for s in family.samples if s.name == name
    }


def _sample(text: str, name: str, **labels: str) -> float | None:
    return _samples(text, name).get(tuple(sorted(labels.items())))


def test_every_figure_is_exact(run: Run) -> None:
    s = run.scrape
    assert _samples(s, "notifier_decisions_total") == {
        (("action", "notify"), ("channel", "email"), ("reason", "unread")): 5.0,
        (("action", "skip"), ("channel", "none"), ("reason", "read")): 1.0,  # the check of the read dialog
        (("action", "skip"), ("channel", "email"), ("reason", "read")): 1.0,  # its lost email, at send time
    }
    assert _samples(s, "notifier_deliveries_total") == {
        (("channel", "email"), ("status", "sent")): 4.0,  # the previous run's 100 were wiped at start
        (("channel", "email"), ("status", "failed")): 1.0,
        (("channel", "email"), ("status", "retry")): 1.0,
        (("channel", "email"), ("status", "skipped")): 1.0,
    }
    # Five first attempts and one retry went to the mail server; the skipped email never did.
    assert _sample(s, "notifier_send_seconds_count", channel="email") == 6.0
    assert _sample(s, "notifier_send_seconds_bucket", channel="email", le="+Inf") == 6.0
    assert 1.5 <= _sample(s, "notifier_send_seconds_sum", channel="email") < 30  # type: ignore[operator]
    assert _sample(s, "notifier_pending_checks") == 1.0
    assert _sample(s, "notifier_oldest_pending_age_seconds") == 0.0  # due in an hour: not overdue
    assert _sample(s, "notifier_inflight_checks") == 0.0
    assert _sample(s, "notifier_parked_checks") == 0.0
    runs = _sample(s, "notifier_dispatch_runs_total")
    assert runs is not None and runs >= 10  # every 0.2 s since the worker started
    last = _sample(s, "notifier_dispatch_last_run_timestamp_seconds")
    assert last is not None and run.started_at < last <= run.scraped_at
    # A second later nothing was counted again (the dispatcher's own figures aside).
    for name in ("notifier_decisions_total", "notifier_deliveries_total", "notifier_send_seconds_count",
                 "notifier_notification_lateness_seconds_count"):
        assert _samples(run.scrape_again, name) == _samples(s, name), name


def test_lateness_is_sent_time_minus_deadline_as_the_ledger_has_them(run: Run) -> None:
    sent = [row for row in run.rows if row.status == "sent"]
    assert len(sent) == 4 and all(row.due_at is not None and row.sent_at is not None for row in sent)
    lateness = [max(0.0, row.sent_at - row.due_at) for row in sent]
    assert all(0 <= x < 30 for x in lateness), lateness
    s = run.scrape
    assert _sample(s, "notifier_notification_lateness_seconds_count", channel="email") == 4.0
    assert math.isclose(_sample(s, "notifier_notification_lateness_seconds_sum", channel="email"),  # type: ignore[arg-type]
                        sum(lateness), rel_tol=1e-9, abs_tol=1e-9)
    buckets = _samples(s, "notifier_notification_lateness_seconds_bucket")
    for le in LATENESS_BUCKETS:
        key = (("channel", "email"), ("le", str(le)))
        assert buckets[key] == sum(1 for x in lateness if x <= le), (le, lateness)
    assert buckets[(("channel", "email"), ("le", "+Inf"))] == 4.0


def test_the_pool_children_wrote_the_figures_the_exporter_summed(run: Run) -> None:
    """Multiprocess mode really ran: counters came from at least two processes (the stalled send made the
    second child work), the exporter added them up, and the previous run's file was wiped."""
    pids = {int(re.search(r"_(\d+)\.db$", name).group(1)) for name in run.multiproc_files  # type: ignore[union-attr]
            if name.startswith("counter_")}
    assert len(pids) >= 2, run.multiproc_files
    assert _sample(run.scrape, "notifier_deliveries_total", channel="email", status="sent") == 4.0


def test_outcomes_match_the_ledger(run: Run) -> None:
    by_dialog = {row.dialog_id: row for row in run.rows}
    assert sorted(by_dialog) == [*(100 + o for o in OWNERS), READ_DIALOG]
    assert sorted(row.status for row in run.rows) == ["failed", "sent", "sent", "sent", "sent", "skipped"]
    assert by_dialog[READ_DIALOG].status == "skipped" and by_dialog[READ_DIALOG].reason == "read"
    assert sorted(row.attempts for row in run.rows if row.status == "sent") == [1, 1, 1, 2]
    assert sorted((d.action, d.channel or "", d.reason) for d in run.decisions if d.dialog_id == READ_DIALOG) == [
        ("skip", "", "read"), ("skip", "email", "read")]
    assert sorted((d.action, d.channel, d.reason) for d in run.decisions if d.dialog_id != READ_DIALOG) == [
        ("notify", "email", "unread")] * len(OWNERS)


def test_json_log_lines(run: Run) -> None:
    lines = [line for line in run.log.splitlines() if line.strip()]
    assert len(lines) > 15  # start-up, decisions and deliveries (the channels log their sends at DEBUG)
    parsed = []
    for line in lines:
        obj = json.loads(line)  # every line of the worker's output is one JSON object
        assert isinstance(obj, dict), line
        assert {"time", "level", "logger", "event", *FIELDS} <= set(obj), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", obj["time"]), line
        parsed.append(obj)
    # Without NOTIFIER_PUBLIC_URL emails carry no List-Unsubscribe, and the worker says so once.
    assert sum("NOTIFIER_PUBLIC_URL is not set" in line for line in lines) == 1
    decisions = [o for o in parsed if o["logger"] == "notifier.check" and o["event"] == "decision"]
    seen = sorted((o["dialog_id"], o["manager_id"], o["channel"] or "-", o["action"], o["reason"], o["at"]) for o in decisions)
    assert seen == [
        *[(100 + o, o, "email", "notify", "unread", "check") for o in OWNERS],
        (READ_DIALOG, READ_OWNER, "-", "skip", "read", "check"),
        (READ_DIALOG, READ_OWNER, "email", "skip", "read", "send"),
    ]
    assert [o["channel"] for o in decisions if o["dialog_id"] == READ_DIALOG and o["at"] == "check"] == [None]
    outcomes = [o for o in parsed if o["logger"] == "notifier.deliver" and o["event"] == "delivery"]
    ids = {row.id: row for row in run.rows}
    assert sorted(o["outcome"] for o in outcomes) == ["failed", "retry", "sent", "sent", "sent", "sent", "skipped"]
    for o in outcomes:
        row = ids[o["delivery_id"]]
        assert (o["dialog_id"], o["manager_id"], o["channel"]) == (row.dialog_id, row.manager_id, "email")
        assert o["reason"] in ("unread", "permanent_error", "transient_error", "read"), o
    [retry] = [o for o in outcomes if o["outcome"] == "retry"]
    assert retry["reason"] == "transient_error" and retry["retry_in"].endswith("s")
    # The refused delivery is one line with its reason; the server's reply (which quotes the address) is not logged.
    [refused] = [o for o in outcomes if o["outcome"] == "failed"]
    assert refused["reason"] == "permanent_error"
    assert not ADDRESS.search(run.log), ADDRESS.search(run.log)
    for owner in (*OWNERS, READ_OWNER):
        assert TEXT.format(100 + owner) not in run.log
    assert "Текст посетителя" not in run.log


def test_dashboard_and_alerts_name_only_what_is_exported(run: Run) -> None:
    """Every query of the dashboard and of the alert rules, against a real scrape of the worker and of a
    host's /metrics with `client.metrics_collector()` registered."""
    registry = CollectorRegistry()
    registry.register(client.metrics_collector())
    server, thread = start_http_server(0, "127.0.0.1", registry=registry)
    try:
        host_scrape = _get(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    exported = scraped_labels(run.scrape)
    for name, labels in scraped_labels(host_scrape).items():
        exported.setdefault(name, set()).update(labels)
    families = {f.name for text in (run.scrape, host_scrape) for f in text_string_to_metric_families(text)}
    declared = {name.removesuffix("_total") for name in EXPORTED}
    assert declared <= families, f"declared but not exported: {declared - families}"
    problems = {
        f"{q['panel']}: {q['expr']}": found
        for q in (*dashboard_queries(), *alert_queries())
        if (found := check_expr(q["expr"], exported, q["legend"]))
    }
    assert problems == {}
    assert len(dashboard_queries()) >= 10
