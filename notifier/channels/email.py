"""Email: SMTP over reused aiosmtplib connections (one per sending thread), or a local `.eml` outbox.

aiosmtplib is asyncio-only and Celery tasks are not, so each sender owns a private event loop
(`asyncio.Runner`) and keeps its SMTP connection open across tasks, reconnecting when the server closes it.

Both senders transmit the same bytes, written by `notifier.channels.mailbytes.compose`: headers with
non-ASCII text (a Subject mixing Latin and Cyrillic, a Cyrillic display name) are written as whole UTF-8
encoded-words with every space inside a word, so an RFC 2047 decoder, which drops whitespace between
adjacent encoded-words, gives back exactly the text we meant. The bodies are quoted-printable or base64,
so the message is 7-bit ASCII and needs no SMTP extension. The SMTP sender hands those bytes to
`SMTP.sendmail` itself: `send_message` would flatten a message again with aiosmtplib's own policy.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from typing import TYPE_CHECKING

import aiosmtplib

from notifier.channels.base import DeliveryResult, EmailTarget
from notifier.channels.mailbytes import compose
from notifier.channels.mailheaders import recipient_address
from notifier.config import Settings
from notifier.enums import Channel
from notifier.errors import ConfigError, PermanentError, TransientError

if TYPE_CHECKING:
    from notifier.render import RenderedEmail

log = logging.getLogger(__name__)


def message_id_for(delivery_id: int, dialog_id: int, settings: Settings) -> str:
    """The stable Message-ID of a ledger row: `<notifier.ID.dDIALOG@domain of NOTIFIER_EMAIL_FROM>`."""
    return f"<notifier.{delivery_id}.d{dialog_id}@{settings.message_id_domain}>"


class OutboxSender:
    """No SMTP host configured: each mail becomes a `.eml` file in the outbox folder."""

    channel = Channel.EMAIL

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.folder = settings.outbox_dir.resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        log.info("email goes to the local outbox folder=%s (NOTIFIER_SMTP_HOST is not set)", self.folder)

    def send(self, target: EmailTarget, rendered: RenderedEmail) -> DeliveryResult:
        data = compose(self.settings, target, rendered)
        name = re.sub(r"[^A-Za-z0-9.]+", "_", target.message_id.strip("<>"))
        path = self.folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # a reader never sees half a file
        log.info("email written to outbox file=%s", path.name)
        return DeliveryResult(ref=target.message_id, detail=str(path))

    def close(self) -> None:
        pass


class SmtpSender:
    channel = Channel.EMAIL

    def __init__(self, settings: Settings) -> None:
        if not settings.smtp_host:
            raise ConfigError("NOTIFIER_SMTP_HOST is not set: the SMTP sender needs it (without it, mail goes to the outbox)")
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

    async def _send(self, recipient: str, data: bytes) -> None:
        sender = self.settings.email_from_address.addr_spec
        for attempt in (1, 2):
            if self._smtp is None or not self._smtp.is_connected:
                self._smtp = self._client()
                await self._smtp.connect()
                self.connections_opened += 1
            try:
                # sendmail, not send_message: the latter would re-fold our headers with its own policy.
                await self._smtp.sendmail(sender, [recipient], data, timeout=self.settings.smtp_timeout_seconds)
                return
            except aiosmtplib.SMTPServerDisconnected:
                # An idle connection the server closed: reconnect once, then let the error speak.
                self._smtp = None
                if attempt == 2:
                    raise

    def send(self, target: EmailTarget, rendered: RenderedEmail) -> DeliveryResult:
        data = compose(self.settings, target, rendered)
        try:
            self._runner.run(self._send(recipient_address(target).addr_spec, data))
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
        log.debug("email accepted by smtp host=%s", self.settings.smtp_host)
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


class SmtpPool:
    """SMTP for many threads of one process (`notifier.sending` runs up to NOTIFIER_MAX_IN_FLIGHT_PER_HOST
    deliveries at once): each thread keeps its own `SmtpSender`, with its own event loop and reused
    connection, so the pool holds at most as many connections as the lane has threads."""

    channel = Channel.EMAIL

    def __init__(self, settings: Settings) -> None:
        if not settings.smtp_host:
            raise ConfigError("NOTIFIER_SMTP_HOST is not set: the SMTP sender needs it (without it, mail goes to the outbox)")
        self.settings = settings
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[SmtpSender] = []

    def _mine(self) -> SmtpSender:
        sender: SmtpSender | None = getattr(self._local, "sender", None)
        if sender is None:
            sender = self._local.sender = SmtpSender(self.settings)
            with self._lock:
                self._all.append(sender)
        return sender

    @property
    def connections_opened(self) -> int:
        with self._lock:
            return sum(s.connections_opened for s in self._all)

    def send(self, target: EmailTarget, rendered: RenderedEmail) -> DeliveryResult:
        return self._mine().send(target, rendered)

    def close(self) -> None:
        with self._lock:
            senders, self._all = self._all, []
        self._local = threading.local()
        for sender in senders:
            sender.close()


def build_email_sender(settings: Settings) -> OutboxSender | SmtpPool:
    return SmtpPool(settings) if settings.smtp_host else OutboxSender(settings)

