"""The `notifier` command and the zero-configuration defaults, as a newcomer meets them."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from freezegun import freeze_time
from sqlalchemy import inspect

from notifier.cli import main
from notifier.config import load_settings, set_settings
from notifier.runtime import build_runtime, set_runtime
from tests.support import Drive, Host
from worker import client


@pytest.fixture
def env(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in base_env.items():
        monkeypatch.setenv(key, value)
    set_settings(None)
    return base_env


def test_init_db_is_idempotent_and_keeps_its_own_version_table(env: dict[str, str], engine, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["init-db"]) == 0
    assert main(["init-db"]) == 0
    names = set(inspect(engine).get_table_names())
    assert {"notifier_alembic_version", "notifier_deliveries", "notifier_decisions", "notifier_read_pointers"} <= names
    assert "alembic_version" not in names  # the host's own Alembic table, if any, is not ours to touch
    assert "up to date" in capsys.readouterr().out


def test_schedule_and_status(env: dict[str, str], engine, hostdb: Host, smtp_server, capsys) -> None:  # type: ignore[no-untyped-def]
    hostdb.user(1, "owner@example.com")
    hostdb.dialog(100, 1)
    hostdb.dialog(101, 1, handoff_status="none")
    with freeze_time("2026-11-26 12:00:00") as clock:
        for dialog_id in (100, 101):
            mid = hostdb.message(dialog_id, "ау")
            assert main(["schedule", str(dialog_id), str(mid)]) == 0
        assert main(["status"]) == 0
        out = capsys.readouterr().out
        assert "pending checks: 2" in out and "dialog 100 due 2026-11-26 12:01:00Z" in out
        clock.tick(61)
        rt = build_runtime()
        set_runtime(rt)
        Drive(rt)()
        assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "pending checks: 0" in out
    assert "dialog=100 manager=1 notify email reason=unread" in out
    assert "dialog=101 manager=1 skip - reason=ai_handling" in out
    assert "email    sent       1" in out


def test_bad_configuration_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("NOTIFIER_GRACE_SECONDS", "soon")
    set_settings(None)
    assert main(["status"]) == 2
    assert "NOTIFIER_GRACE_SECONDS must be a number of seconds, got 'soon'" in capsys.readouterr().err


def test_without_smtp_host_mail_goes_to_the_outbox(
    base_env: dict[str, str], engine, hostdb: Host, tmp_path: Path, caplog: pytest.LogCaptureFixture  # type: ignore[no-untyped-def]
) -> None:
    env = {k: v for k, v in base_env.items() if not k.startswith("NOTIFIER_SMTP")}
    settings = load_settings(env)
    set_settings(settings)
    rt = build_runtime(settings)
    set_runtime(rt)
    hostdb.user(1, "owner@example.com")
    hostdb.dialog(100, 1)
    with caplog.at_level(logging.INFO), freeze_time("2026-11-26 12:00:00") as clock:
        client.schedule_fallback(100, hostdb.message(100, "Добрый вечер 🌙"))
        clock.tick(61)
        Drive(rt)()
    files = sorted(settings.outbox_dir.glob("*.eml"))
    assert len(files) == 1
    assert "Добрый вечер 🌙" in files[0].read_bytes().decode("utf-8", "replace") or b"=?utf-8?" in files[0].read_bytes()
    assert f"folder={settings.outbox_dir.resolve()}" in caplog.text
    assert "Добрый вечер" not in "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)


@pytest.mark.slow
def test_demo_runs_the_whole_story_with_a_real_worker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env["TMPDIR"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "notifier.cli", "demo"], capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "emails received: 1" in out.stdout
    assert "decision dialog=101 manager=1 notify email reason=unread" in out.stdout
    assert "decision dialog=102 manager=1 skip - reason=ai_handling" in out.stdout
    html = next(tmp_path.glob("notifier-demo-*/mail/01.html"))
    text = html.read_text(encoding="utf-8")
    assert "Хочу заказать букет на завтра 🌷" in text and "Анна Петрова" in text


def test_why_tells_every_decision_and_delivery_oldest_first(  # type: ignore[no-untyped-def]
    env: dict[str, str], engine, hostdb: Host, smtp_server, capsys
) -> None:
    import json

    hostdb.user(1, "owner@example.com")
    hostdb.user(2, "member@example.com")
    hostdb.user(3, "left@example.com")
    hostdb.dialog(100, 1)
    for member in (2, 3):
        client.add_team_member(1, member)
    smtp_server.refuse_next(1, "550 5.1.1 No such user")  # the first email (the owner's) is refused for good
    with freeze_time("2026-11-26 12:00:00") as clock:
        mid = hostdb.message(100, "ау")
        client.schedule_fallback(100, mid)
        clock.tick(61)
        rt = build_runtime()
        set_runtime(rt)
        checks: list[int] = []
        deliveries: list[int] = []
        from notifier.check import dispatch, run_checks
        from notifier.deliver import run_delivery

        dispatch(rt, checks.extend, deliveries.append)
        list(run_checks(rt, checks, deliveries.append))
        assert len(deliveries) == 3
        client.remove_team_member(1, 3)  # before its email goes out: skipped at send time
        for delivery_id in deliveries:
            run_delivery(rt, delivery_id)
    assert main(["why", "100", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dialog_id"] == 100
    assert [(d["manager_id"], d["channel"], d["action"], d["reason"]) for d in report["decisions"]] == [
        (1, "email", "notify", "unread"), (2, "email", "notify", "unread"), (3, "email", "notify", "unread"),
        (3, "email", "skip", "not_recipient"),
    ]
    assert all(set(d) == {"at", "manager_id", "channel", "action", "reason", "first_message_id", "last_message_id"}
               for d in report["decisions"])
    assert report["decisions"][0]["at"] == "2026-11-26T12:01:01.000Z"
    assert (report["decisions"][0]["first_message_id"], report["decisions"][0]["last_message_id"]) == (mid, mid)
    rows = [(d["manager_id"], d["status"], d["attempts"]) for d in report["deliveries"]]
    assert rows == [(1, "failed", 1), (2, "sent", 1), (3, "skipped", 1)]
    keys = {"id", "manager_id", "channel", "status", "attempts", "last_error", "sent_at"}
    assert all(set(d) == keys for d in report["deliveries"])
    assert "550" in report["deliveries"][0]["last_error"] and report["deliveries"][1]["sent_at"] == "2026-11-26T12:01:01.000Z"

    assert main(["why", "100", "--manager", "3"]) == 0
    out = capsys.readouterr().out
    assert "dialog 100 for manager 3" in out
    assert "manager=3 email skip reason=not_recipient" in out and "manager=1" not in out
    assert "skipped attempts=1" in out

    assert main(["why", "555"]) == 0
    assert "no decisions yet" in capsys.readouterr().out
    assert main(["why", "0"]) == 2
    assert "DIALOG_ID must be a positive integer" in capsys.readouterr().err
