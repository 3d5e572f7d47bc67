"""Log lines: JSON fields read from our own format strings, the readable default, addresses redacted
everywhere, and the `notifier` command's output in both formats."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from notifier.config import load_settings, log_format
from notifier.errors import ConfigError
from notifier.logs import FIELDS, JsonFormatter, RedactingFormatter, configure_cli, redact, split_line

ROOT = Path(__file__).resolve().parents[1]


def record(name: str, msg: str, *args: object, level: int = logging.INFO, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def as_json(rec: logging.LogRecord) -> dict[str, Any]:
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    out: dict[str, Any] = json.loads(line)
    return out


def test_a_decision_line_becomes_its_fields() -> None:
    rec = record("notifier.check", "decision at=%s dialog=%s manager=%s channel=%s action=%s reason=%s messages=%s..%s",
                 "check", 100, 7, "email", "notify", "unread", 1001, 1003)
    rec.created = 1795996800.25
    assert as_json(rec) == {
        "time": "2026-11-30T00:00:00.250Z", "level": "INFO", "logger": "notifier.check", "event": "decision",
        "dialog_id": 100, "manager_id": 7, "channel": "email", "reason": "unread", "delivery_id": None,
        "at": "check", "action": "notify", "messages": "1001..1003",
    }


def test_a_delivery_line_names_its_delivery_and_splits_a_compound_reason() -> None:
    rec = record("notifier.deliver", "delivery id=%s dialog=%s manager=%s channel=%s outcome=%s reason=%s attempt=%s",
                 42, 100, 7, "webpush", "retry", "transient_error retry_in=2.5s", 3)
    out = as_json(rec)
    assert {k: out[k] for k in (*FIELDS, "event", "outcome", "retry_in", "attempt")} == {
        "dialog_id": 100, "manager_id": 7, "channel": "webpush", "reason": "transient_error", "delivery_id": 42,
        "event": "delivery", "outcome": "retry", "retry_in": "2.5s", "attempt": 3,
    }


def test_a_value_with_spaces_stays_whole_and_a_placeholder_may_carry_pairs() -> None:
    rec = record("worker.tasks", "%s reason=%s_unavailable retry_in=%.1fs", "delivery id=9", "database", 12.345)
    out = as_json(rec)
    assert (out["event"], out["delivery_id"], out["reason"], out["retry_in"]) == ("delivery", 9, "database_unavailable",
                                                                                  "12.3s")
    rec = record("notifier.check", "check dialog=%s outcome=retry attempts=%s error=%s", 5, 2, "DataError: bad value x")
    out = as_json(rec)
    assert (out["event"], out["dialog_id"], out["error"]) == ("check", 5, "DataError: bad value x")


def test_a_dash_or_none_is_null_and_extra_fields_win() -> None:
    out = as_json(record("notifier.check", "decision dialog=%s manager=%s channel=%s reason=%s", 5, None, "-", "no_dialog"))
    assert (out["manager_id"], out["channel"]) == (None, None)
    out = as_json(record("notifier.deliver", "sent it", dialog_id=8, delivery_id=3, event="delivery"))
    assert (out["event"], out["dialog_id"], out["delivery_id"]) == ("delivery", 8, 3)


def test_a_line_it_cannot_read_by_placeholder_is_read_as_text() -> None:
    out = as_json(record("notifier.x", "moved %(n)s checks dialog=%(d)s", {"n": 3, "d": 4}))
    assert (out["event"], out["dialog_id"]) == ("moved 3 checks", 4)
    assert split_line(record("notifier.x", ValueError("no such dialog=12"))) == ("no such", {"dialog": "12"})


def test_other_libraries_keep_their_text_as_the_event_with_the_same_keys() -> None:
    out = as_json(record("celery.worker.consumer", "Connected to %s", "redis://127.0.0.1:6379/0"))
    assert out["event"] == "Connected to redis://127.0.0.1:6379/0"
    assert {k: out[k] for k in FIELDS} == dict.fromkeys(FIELDS)


def test_addresses_are_redacted_in_every_field_and_in_tracebacks() -> None:
    try:
        raise RuntimeError("smtp 550: 5.1.1 <anna.petrova@example.com> unknown")
    except RuntimeError:
        rec = logging.LogRecord("celery.app.trace", logging.ERROR, __file__, 1, "Task raised: %s", ("a@b.example.org",),
                                sys.exc_info())
    line = JsonFormatter().format(rec)
    assert "@example" not in line and "[address]" in json.loads(line)["exception"]
    assert json.loads(line)["event"] == "Task raised: [address]"
    ours = as_json(record("notifier.check", "check dialog=%s error=%s", 5, "refused: {'x.y@mail.example.ru': 550}"))
    assert ours["error"] == "refused: {'[address]': 550}"
    # Celery's node name on this host is not an address.
    import socket

    node = f"w1@{socket.gethostname()}"
    assert redact(f"{node} ready.") == f"{node} ready."
    assert redact("celery@worker.example.com ready.") == "[address] ready."


def test_the_readable_line_stays_and_is_redacted_too() -> None:
    text = RedactingFormatter().format(record("notifier.deliver", "delivery id=%s to=%s", 3, "owner@example.com"))
    assert text.endswith("INFO notifier.deliver: delivery id=3 to=[address]")
    inner = logging.Formatter("[%(levelname)s/%(processName)s] %(message)s")
    assert RedactingFormatter(inner).format(record("x", "hi bob@example.com")) == "[INFO/MainProcess] hi [address]"


def test_the_setting_is_validated() -> None:
    assert log_format({}) == "text" and load_settings({"NOTIFIER_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError, match="NOTIFIER_LOG_FORMAT must be one of text, json, got 'yaml'"):
        load_settings({"NOTIFIER_LOG_FORMAT": "yaml"})


def test_configure_cli_leaves_configured_logging_alone() -> None:
    root = logging.getLogger()
    handlers = list(root.handlers)
    configure_cli("json")  # pytest's capture handlers are set: nothing changes
    assert root.handlers == handlers and not any(isinstance(h.formatter, JsonFormatter) for h in handlers)


@pytest.mark.parametrize("kind", ["json", "text"])
def test_the_command_logs_in_the_chosen_format(kind: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env.update({"NOTIFIER_LOG_FORMAT": kind, "NOTIFIER_REDIS_URL": "redis://127.0.0.1:1/0",
                "NOTIFIER_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"})
    out = subprocess.run([sys.executable, "-m", "notifier.cli", "schedule", "100", "11"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 1, out.stderr
    [line] = [x for x in out.stderr.splitlines() if "schedule failed" in x]
    if kind == "json":
        obj = json.loads(line)
        assert (obj["level"], obj["logger"], obj["event"], obj["dialog_id"], obj["message_id"], obj["reason"]) == (
            "WARNING", "worker.client", "schedule failed", 100, 11, "redis_unavailable")
    else:
        assert " WARNING worker.client: schedule failed dialog=100 message=11 reason=redis_unavailable" in line


def test_a_bad_format_stops_the_command_naming_the_variable() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env["NOTIFIER_LOG_FORMAT"] = "xml"
    out = subprocess.run([sys.executable, "-m", "notifier.cli", "vapid"], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=60)
    assert out.returncode == 2 and "NOTIFIER_LOG_FORMAT must be one of text, json, got 'xml'" in out.stderr
