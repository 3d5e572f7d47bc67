"""Email: SMTP over reused aiosmtplib connections, or a local `.eml` outbox.

aiosmtplib is asyncio-only and Celery tasks are not, so the SMTP sender runs every conversation on an event
loop of its own (one thread per process) and keeps its connections open across tasks, reconnecting when
the server closes one.

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


class SmtpPool:
    """SMTP for the threads of one process (`notifier.sending` runs up to NOTIFIER_MAX_IN_FLIGHT_PER_HOST
    deliveries at once). aiosmtplib is asyncio-only and the callers are threads, so every conversation runs
    on one event loop of the pool's own (a thread started on first use), and a caller waits for its own.
    Connections are kept open between sends and reused, at most one per send in flight, so the pool holds
    at most as many as the lane has threads; one that fails is dropped. (One loop for all of them, rather
    than one per thread: a mail's four replies wake that loop, not four different threads, which costs
    about a sixth less CPU per mail with 32 in flight: `python -m bench.smtp`.)"""

    channel = Channel.EMAIL

    def __init__(self, settings: Settings) -> None:
        if not settings.smtp_host:
            raise ConfigError("NOTIFIER_SMTP_HOST is not set: the SMTP sender needs it (without it, mail goes to the outbox)")
        self.settings = settings
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._idle: list[aiosmtplib.SMTP] = []  # only the loop's thread touches it
        self.connections_opened = 0  # counted on the loop's thread

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

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="notifier-smtp", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    async def _send(self, recipient: str, data: bytes) -> None:
        sender = self.settings.email_from_address.addr_spec
        for attempt in (1, 2):
            smtp = self._idle.pop() if self._idle and attempt == 1 else None
            if smtp is None or not smtp.is_connected:
                smtp = self._client()
                await smtp.connect()
                self.connections_opened += 1
            try:
                # sendmail, not send_message: the latter would re-fold our headers with its own policy.
                await smtp.sendmail(sender, [recipient], data, timeout=self.settings.smtp_timeout_seconds)
            except aiosmtplib.SMTPServerDisconnected:
                # An idle connection the server closed: once more on a new one, then let the error speak.
                if attempt == 2:
                    raise
                continue
            except BaseException:
                await _drop(smtp)  # a refusal, a timeout, a cancelled send: its state is unknown
                raise
            self._idle.append(smtp)
            return

    def send(self, target: EmailTarget, rendered: RenderedEmail) -> DeliveryResult:
        data = compose(self.settings, target, rendered)
        future = asyncio.run_coroutine_threadsafe(self._send(recipient_address(target).addr_spec, data),
                                                  self._running_loop())
        try:
            # Every command has its own timeout; this only bounds a conversation that ignores them.
            future.result(timeout=self.settings.smtp_timeout_seconds * 6 + 5)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            if any(400 <= c < 500 for c in codes):
                raise TransientError(f"recipient deferred: {codes}") from None
            raise PermanentError(f"recipient refused: {codes}") from None
        except aiosmtplib.SMTPResponseException as exc:
            if 400 <= exc.code < 500:
                raise TransientError(f"smtp {exc.code}: {exc.message[:200]}") from None
            raise PermanentError(f"smtp {exc.code}: {exc.message[:200]}") from None
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            future.cancel()  # if the bound above ran out, stop the conversation: its connection is dropped
            raise TransientError(f"smtp unavailable: {type(exc).__name__}") from None
        log.debug("email accepted by smtp host=%s", self.settings.smtp_host)
        return DeliveryResult(ref=target.message_id)

    async def _close_all(self) -> None:
        idle, self._idle = self._idle, []
        for smtp in idle:
            await _drop(smtp)

    def close(self) -> None:
        """Say QUIT on every kept connection and stop the loop (sends still running are the caller's to
        wait for: `Runtime.close` closes the lanes first)."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close_all(), loop).result(timeout=10)
        except Exception:  # noqa: BLE001 - best effort: the connections go with the loop anyway
            log.debug("smtp connections not closed cleanly", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()


async def _drop(smtp: aiosmtplib.SMTP) -> None:
    """Close a connection we are giving up on: QUIT if it still answers within two seconds."""
    if not smtp.is_connected:
        return
    try:
        await asyncio.wait_for(smtp.quit(), 2)
    except Exception:  # noqa: BLE001 - best effort on a connection we are dropping
        smtp.close()


def build_email_sender(settings: Settings) -> OutboxSender | SmtpPool:
    return SmtpPool(settings) if settings.smtp_host else OutboxSender(settings)

