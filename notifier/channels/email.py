"""Email: SMTP over one reused aiosmtplib connection per worker process, or a local `.eml` outbox.

aiosmtplib is asyncio-only and Celery tasks are not, so each sender owns a private event loop
(`asyncio.Runner`) and keeps its SMTP connection open across tasks, reconnecting when the server closes it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from typing import Any

import aiosmtplib

from notifier.channels.base import DeliveryResult, EmailTarget
from notifier.config import Settings
from notifier.enums import Channel
from notifier.errors import InvalidInput, PermanentError, TransientError

log = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def _clean(value: str) -> str:
    return _CONTROL.sub(" ", value).strip()


def build_message(settings: Settings, target: EmailTarget, rendered: Any) -> EmailMessage:
    """A multipart/alternative mail; every header value is stripped of control characters."""
    if "@" not in target.address or _CONTROL.search(target.address):
        raise InvalidInput("recipient address is malformed")
    msg = EmailMessage()
    msg["Subject"] = _clean(rendered.subject)
    msg["From"] = _clean(settings.email_from)
    msg["To"] = formataddr((_clean(target.name or ""), target.address))
    msg["Message-ID"] = target.message_id
    msg["Date"] = formatdate(localtime=False)
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(rendered.text, charset="utf-8")
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8")
    return msg


class OutboxSender:
    """No SMTP host configured: each mail becomes a `.eml` file in the outbox folder."""

    channel = Channel.EMAIL

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.folder = settings.outbox_dir.resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        log.info("email goes to the local outbox folder=%s (NOTIFIER_SMTP_HOST is not set)", self.folder)

    def send(self, target: object, rendered: object) -> DeliveryResult:
        assert isinstance(target, EmailTarget)
        msg = build_message(self.settings, target, rendered)
        name = re.sub(r"[^A-Za-z0-9.]+", "_", target.message_id.strip("<>"))
        path = self.folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(msg.as_bytes())
        tmp.replace(path)  # a reader never sees half a file
        log.info("email written to outbox file=%s", path.name)
        return DeliveryResult(ref=target.message_id, detail=str(path))

    def close(self) -> None:
        pass


class SmtpSender:
    channel = Channel.EMAIL

    def __init__(self, settings: Settings) -> None:
        if not settings.smtp_host:
            raise ValueError("SmtpSender needs NOTIFIER_SMTP_HOST")
        self.settings = settings
        self._runner = asyncio.Runner()
        self._smtp: aiosmtplib.SMTP | None = None
        self.connections_opened = 0

    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username,
            password=s.smtp_password,
            use_tls=s.smtp_tls == "tls",
            start_tls=True if s.smtp_tls == "starttls" else False,
            timeout=s.smtp_timeout_seconds,
        )

    async def _send(self, msg: EmailMessage) -> None:
        for attempt in (1, 2):
            if self._smtp is None or not self._smtp.is_connected:
                self._smtp = self._client()
                await self._smtp.connect()
                self.connections_opened += 1
            try:
                await self._smtp.send_message(msg, timeout=self.settings.smtp_timeout_seconds)
                return
            except aiosmtplib.SMTPServerDisconnected:
                # An idle connection the server closed: reconnect once, then let the error speak.
                self._smtp = None
                if attempt == 2:
                    raise

    def send(self, target: object, rendered: object) -> DeliveryResult:
        assert isinstance(target, EmailTarget)
        msg = build_message(self.settings, target, rendered)
        try:
            self._runner.run(self._send(msg))
        except aiosmtplib.SMTPRecipientsRefused as exc:
            self._reset()
            codes = [r.code for r in exc.recipients]
            if any(400 <= c < 500 for c in codes):
                raise TransientError(f"recipient deferred: {codes}") from None
            raise PermanentError(f"recipient refused: {codes}") from None
        except aiosmtplib.SMTPResponseException as exc:
            self._reset()
            if 400 <= exc.code < 500:
                raise TransientError(f"smtp {exc.code}: {exc.message[:200]}") from None
            raise PermanentError(f"smtp {exc.code}: {exc.message[:200]}") from None
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            self._reset()
            raise TransientError(f"smtp unavailable: {type(exc).__name__}") from None
        log.info("email accepted by smtp host=%s", self.settings.smtp_host)
        return DeliveryResult(ref=target.message_id)

    def _reset(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None and smtp.is_connected:
            try:
                self._runner.run(asyncio.wait_for(smtp.quit(), 2))
            except Exception:  # noqa: BLE001 - best effort on a connection we are dropping
                smtp.close()

    def close(self) -> None:
        self._reset()
        self._runner.close()


def build_email_sender(settings: Settings) -> OutboxSender | SmtpSender:
    return SmtpSender(settings) if settings.smtp_host else OutboxSender(settings)

