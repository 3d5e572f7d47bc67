"""`notifier demo`: the whole story on a fresh machine, no configuration.

A SQLite database with a small ReplyX-shaped dataset, the embedded Redis, a real Celery worker with beat,
a local SMTP server. A visitor writes three messages in a dialog in handoff, nobody is connected, the
(short) grace passes, and one email arrives listing the three messages.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from notifier import embedded_redis, host, models
from notifier.config import load_settings, set_settings
from notifier.db import get_engine
from notifier.migrate import upgrade

OWNER, OTHER_OWNER = 1, 2
HANDOFF_DIALOG, AI_DIALOG = 101, 102
VISITOR_TEXTS = (
    "Здравствуйте! Хочу заказать букет на завтра 🌷",
    "Можно доставку к 9 утра на Тверскую?",
    "Оператор, ответьте, пожалуйста, очень срочно!",
)


class _Mailbox:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.count += 1
        (self.folder / f"{self.count:02d}.eml").write_bytes(envelope.original_content)
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _seed(engine: Any) -> None:
    host.host_metadata.create_all(engine)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(insert(host.users), [
            {"id": OWNER, "email": "irina@flowers.example", "first_name": "Ирина", "role": "user", "status": "active",
             "is_email_confirmed": True},
            {"id": OTHER_OWNER, "email": "boss@other.example", "first_name": "Павел", "role": "user", "status": "active",
             "is_email_confirmed": True},
        ])
        conn.execute(insert(host.assistants).values(id=1, user_id=OWNER, name="Магазин Цветов"))
        conn.execute(insert(host.dialogs), [
            {"id": HANDOFF_DIALOG, "user_id": OWNER, "assistant_id": 1, "guest_id": "g-101", "first_name": "Анна",
             "last_name": "Петрова", "started_at": now, "is_taken_over": 0, "handoff_status": "requested",
             "handoff_requested_at": now},
            {"id": AI_DIALOG, "user_id": OWNER, "assistant_id": 1, "guest_id": "g-102", "first_name": "Борис",
             "last_name": None, "started_at": now, "is_taken_over": 0, "handoff_status": "none",
             "handoff_requested_at": None},
        ])
        conn.execute(insert(host.dialog_messages), [
            {"id": 1, "dialog_id": HANDOFF_DIALOG, "sender": "assistant", "text": "Здравствуйте! Я помощник магазина.",
             "timestamp": now},
            {"id": 2, "dialog_id": AI_DIALOG, "sender": "user", "text": "Сколько стоят розы?", "timestamp": now},
        ])


def _visitor_writes(engine: Any, message_id: int, text: str) -> None:
    with engine.begin() as conn:
        conn.execute(insert(host.dialog_messages).values(
            id=message_id, dialog_id=HANDOFF_DIALOG, sender="user", text=text,
            timestamp=dt.datetime.now(dt.UTC).replace(tzinfo=None),
        ))


def run_demo(keep: bool = False) -> int:
    from aiosmtpd.controller import Controller

    for noisy in ("alembic", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    folder = Path(tempfile.mkdtemp(prefix="notifier-demo-"))
    mail_dir = folder / "mail"
    mail_dir.mkdir()
    mailbox = _Mailbox(mail_dir)
    smtp = Controller(mailbox, hostname="127.0.0.1", port=_free_port())
    smtp.start()
    redis_url = embedded_redis.ensure_running(folder / "redis")
    env = {
        "NOTIFIER_DATABASE_URL": f"sqlite:///{folder / 'demo.sqlite3'}",
        "NOTIFIER_REDIS_URL": redis_url,
        "NOTIFIER_REDIS_EMBEDDED_DIR": str(folder / "redis"),
        "NOTIFIER_GRACE_SECONDS": "3",
        "NOTIFIER_EMAIL_AFTER_SECONDS": "10",
        "NOTIFIER_DISPATCH_INTERVAL_SECONDS": "0.5",
        "NOTIFIER_SMTP_HOST": "127.0.0.1",
        "NOTIFIER_SMTP_PORT": str(smtp.port),
        "NOTIFIER_SMTP_TLS": "none",
        "NOTIFIER_EMAIL_FROM": "ReplyX <noreply@replyx.example>",
    }
    settings = load_settings(env)
    set_settings(settings)
    engine = get_engine(settings.database_url)
    _seed(engine)
    upgrade(engine)
    print(f"demo folder: {folder}")
    print(f"embedded redis: {redis_url}\nsmtp server: 127.0.0.1:{smtp.port}\ndatabase: {settings.database_url}")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "-B", "-E", "-P", "solo", "-Q", "notifier,notifier.send",
         "-l", "warning", "--without-mingle", "--without-gossip", "-s", str(folder / "celerybeat-schedule")],
        env={**os.environ, **env},
        stdout=open(folder / "worker.log", "w"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
    )
    try:
        from worker import client

        for i, text in enumerate(VISITOR_TEXTS, start=10):
            _visitor_writes(engine, i, text)
            client.schedule_fallback(HANDOFF_DIALOG, i)
            print(f"visitor wrote message {i} in dialog {HANDOFF_DIALOG} (handoff requested, nobody connected)")
            time.sleep(0.5)
        client.schedule_fallback(AI_DIALOG, 2)
        print(f"visitor wrote in dialog {AI_DIALOG}, which the AI is handling")
        deadline = time.monotonic() + 90
        while mailbox.count < 1 and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.2)
        time.sleep(settings.grace_seconds + 1)  # long enough for a duplicate to show up, if there were one
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
        smtp.stop()
        embedded_redis.stop(folder / "redis")
    return _report(folder, mail_dir, engine, keep)


def _report(folder: Path, mail_dir: Path, engine: Any, keep: bool) -> int:
    mails = sorted(mail_dir.glob("*.eml"))
    print(f"\nemails received: {len(mails)}")
    d = models.decisions
    with engine.connect() as conn:
        for r in conn.execute(select(d).order_by(d.c.id)):
            print(f"  decision dialog={r.dialog_id} manager={r.manager_id} {r.action} {r.channel or '-'} reason={r.reason}")
    ok = len(mails) == 1
    if mails:
        msg = email.message_from_bytes(mails[0].read_bytes(), policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        ok = ok and all(t in text for t in VISITOR_TEXTS)
        html_part = msg.get_body(preferencelist=("html",))
        html_path = mails[0].with_suffix(".html")
        if html_part is not None:
            html_path.write_text(html_part.get_content(), encoding="utf-8")
        print(f"  to: {msg['To']}\n  subject: {msg['Subject']}\n  file: {mails[0]}\n  open in a browser: {html_path}")
    if not ok:
        print(f"demo FAILED: expected one email listing the three messages; worker log: {folder / 'worker.log'}")
        return 1
    print("demo OK: one email for the burst of three messages, none for the dialog the AI is handling")
    if not keep:
        shutil.rmtree(folder / "redis", ignore_errors=True)
    return 0
