"""Email: SMTP over one reused aiosmtplib connection per worker process, or a local `.eml` outbox.

aiosmtplib is asyncio-only and Celery tasks are not, so each sender owns a private event loop
(`asyncio.Runner`) and keeps its SMTP connection open across tasks, reconnecting when the server closes it.

Both senders transmit the same bytes, produced here by `message_bytes` under `HEADER_POLICY`: headers
with non-ASCII text (a Subject mixing Latin and Cyrillic, a Cyrillic display name) are written as whole
UTF-8 encoded-words with every space inside a word, so an RFC 2047 decoder, which drops whitespace
between adjacent encoded-words, gives back exactly the text we meant. The bodies are quoted-printable or
base64, so the message is 7-bit ASCII and needs no SMTP extension. The SMTP sender hands those bytes to
`SMTP.sendmail` itself: `send_message` would flatten the message again with aiosmtplib's own policy.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import string
import time
from email.errors import MessageError
from email.headerregistry import Address, AddressHeader, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import formatdate
from typing import Any, cast

import aiosmtplib

from notifier.channels.base import DeliveryResult, EmailTarget
from notifier.config import Settings
from notifier.enums import Channel
from notifier.errors import InvalidInput, PermanentError, TransientError

log = logging.getLogger(__name__)

# C0 and C1 controls, DEL, Unicode line/paragraph separators and bidi overrides: in a header value they are
# injection (CR, LF) or spoofing (bidi), never content. Each run becomes one space.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")

# RFC 2047 section 2: an encoded-word is at most 75 characters; a header line holding one, at most 76.
ENCODED_WORD_MAX = 75
ENCODED_LINE_MAX = 76
# Room below which an encoded-word is not started on the current line (one 4-byte character in Q
# encoding, "=?utf-8?q?=F0=9F=8C=B7?=", takes 24).
_MIN_WORD_ROOM = 24
# Characters a Q-encoded word may carry as themselves in every position, a phrase included (section 5(3)).
_Q_LITERAL = frozenset(string.ascii_letters + string.digits + "!*+-/")


def _clean(value: str) -> str:
    return _CONTROL.sub(" ", value).strip()


def needs_encoding(text: str) -> bool:
    """Text that must travel as encoded-words: non-ASCII, or ASCII that a decoder would take for one."""
    return not text.isascii() or "=?" in text


def _encoded_word(text: str, encoding: str) -> str:
    data = text.encode("utf-8")
    if encoding == "b":
        payload = base64.b64encode(data).decode("ascii")
    else:
        payload = "".join(
            ch if ch in _Q_LITERAL else "_" if ch == " " else "".join(f"={b:02X}" for b in ch.encode("utf-8"))
            for ch in text
        )
    return f"=?utf-8?{encoding}?{payload}?="


def _split_words(text: str, first_room: int, encoding: str) -> list[str]:
    """Greedy: as many whole characters per word as fit (the first word within first_room), a word
    preferably ending just after a space. Decoders that wrongly keep the whitespace between two words
    (CPython's own display-name parser does) then show a doubled space, not a space inside a word."""
    words: list[str] = []
    current = ""
    room = first_room
    for ch in text:
        if current and len(_encoded_word(current + ch, encoding)) > room:
            cut = current.rstrip(" ").rfind(" ") + 1  # just after the last space that has text after it
            head, current = (current[:cut], current[cut:]) if cut > 0 else (current, "")
            words.append(_encoded_word(head, encoding))
            room = ENCODED_WORD_MAX
            if current and len(_encoded_word(current + ch, encoding)) > room:
                words.append(_encoded_word(current, encoding))
                current = ""
        current += ch
    if current:
        words.append(_encoded_word(current, encoding))
    return words


def encoded_words(text: str, first_room: int = ENCODED_WORD_MAX) -> list[str]:
    """`text` as UTF-8 encoded-words, each at most 75 characters (the first at most first_room), split only
    between characters. Q or B encoding, whichever is shorter overall; spaces travel inside the words."""
    first_room = min(max(first_room, _MIN_WORD_ROOM), ENCODED_WORD_MAX)
    candidates = [_split_words(text, first_room, enc) for enc in ("q", "b")]
    return min(candidates, key=lambda words: (sum(map(len, words)), len(words)))


class _Lines:
    """A header being folded: tokens joined by one space, a new line when the next token does not fit."""

    def __init__(self, name: str) -> None:
        self.lines = [f"{name}:"]

    def room(self) -> int:
        return ENCODED_LINE_MAX - len(self.lines[-1]) - 1

    def add(self, token: str, encoded: bool = False) -> None:
        bare = len(self.lines) == 1 and self.lines[0].endswith(":")
        # A plain token too long for any line still goes right after the name rather than below it.
        if len(token) <= self.room() or (bare and not encoded):
            self.lines[-1] += " " + token
        else:
            self.lines.append(" " + token)

    def add_encoded(self, text: str, keep_whole: bool = False) -> None:
        """keep_whole: text that fits one encoded-word on a line of its own starts a new line rather than
        being split to fill this one (a display name: CPython's parser keeps the space between two words)."""
        room = self.room()
        words = encoded_words(text, room if room >= _MIN_WORD_ROOM else ENCODED_WORD_MAX)
        if keep_whole and len(words) > 1:
            whole = encoded_words(text, ENCODED_WORD_MAX)
            words = whole if len(whole) == 1 else words
        for word in words:
            self.add(word, encoded=True)

    def join(self, linesep: str) -> str:
        return linesep.join(self.lines) + linesep


def _fold_encoded(name: str, value: Any) -> _Lines | None:
    """Our folding for a header with text that needs encoded-words; None: the standard folding is right."""
    if isinstance(value, UnstructuredHeader):
        text = str(value)
        room = 78 - len(name) - 2
        if not needs_encoding(text) and all(len(word) <= room for word in text.split()):
            return None  # ASCII that folds at its spaces: the standard folding keeps it readable
        lines = _Lines(name)
        lines.add_encoded(text)
        return lines
    if isinstance(value, AddressHeader):
        if any(group.display_name is not None for group in value.groups):
            return None  # we never write groups
        addresses = value.addresses
        if not any(needs_encoding(a.display_name) for a in addresses):
            return None
        lines = _Lines(name)
        for i, address in enumerate(addresses):
            comma = "," if i < len(addresses) - 1 else ""
            if not address.display_name:
                lines.add(address.addr_spec + comma)
            elif needs_encoding(address.display_name):
                lines.add_encoded(address.display_name, keep_whole=True)
                lines.add(f"<{address.addr_spec}>{comma}")
            else:
                lines.add(str(address) + comma)  # headerregistry quotes the name when it has to
        return lines
    return None


class _VerbatimText(UnstructuredHeader):
    """Unstructured text kept exactly as given: the standard class would decode any `=?...?=` in it, so a
    visitor named "=?utf-8?b?...?=" would be shown as whatever that decodes to."""

    @classmethod
    def parse(cls, value: str, kwds: dict[str, Any]) -> None:
        super().parse(value, kwds)
        kwds["decoded"] = value


class _VerbatimUniqueText(_VerbatimText):
    max_count = 1


class HeaderPolicy(EmailPolicy):
    """The email package's SMTP-style policy, except for headers holding non-ASCII text (or text that looks
    like an encoded-word): Subject and other unstructured headers become a run of UTF-8 encoded-words
    carrying the whole value, address headers an encoded display name followed by the plain address.
    Decoding per RFC 2047 gives back the exact value; pure ASCII headers fold as usual."""

    def fold(self, name: str, value: str) -> str:
        lines = _fold_encoded(name, value)
        return lines.join(self.linesep) if lines is not None else super().fold(name, value)

    def fold_binary(self, name: str, value: str) -> bytes:
        lines = _fold_encoded(name, value)
        return lines.join(self.linesep).encode("ascii") if lines is not None else super().fold_binary(name, value)


def _header_registry() -> HeaderRegistry:
    registry = HeaderRegistry(default_class=_VerbatimText)
    # HeaderRegistry mixes BaseHeader into the classes it is given; typeshed wants that already done.
    registry.map_to_type("subject", cast("type[BaseHeader]", _VerbatimUniqueText))
    return registry


# CRLF line ends and 7-bit bodies (quoted-printable or base64, whichever is shorter): the bytes are what
# SMTP carries, and what the outbox writes.
HEADER_POLICY = HeaderPolicy(linesep="\r\n", cte_type="7bit", header_factory=_header_registry())


def recipient_address(target: EmailTarget) -> Address:
    """The target's mailbox, parsed; InvalidInput for anything we cannot put in To and RCPT TO as is."""
    if _CONTROL.search(target.address):
        raise InvalidInput("recipient address is malformed")
    try:
        address = Address(display_name=_clean(target.name or ""), addr_spec=target.address.strip())
    except (ValueError, IndexError, MessageError):
        raise InvalidInput("recipient address is malformed") from None
    if not address.username or not address.domain:
        raise InvalidInput("recipient address is malformed")
    if not address.addr_spec.isascii():
        raise InvalidInput("recipient address is not ASCII (SMTPUTF8 is not used)")
    return address


def message_id_for(delivery_id: int, dialog_id: int, settings: Settings) -> str:
    """The stable Message-ID of a ledger row: `<notifier.ID.dDIALOG@domain of NOTIFIER_EMAIL_FROM>`."""
    return f"<notifier.{delivery_id}.d{dialog_id}@{settings.message_id_domain}>"


def build_message(settings: Settings, target: EmailTarget, rendered: Any) -> EmailMessage:
    """A multipart/alternative mail; every header value is stripped of control characters."""
    recipient = recipient_address(target)
    sender = settings.email_from_address
    msg = EmailMessage(policy=HEADER_POLICY)
    msg["Subject"] = _clean(rendered.subject)
    msg["From"] = Address(display_name=_clean(sender.display_name), addr_spec=sender.addr_spec)
    msg["To"] = recipient
    msg["Message-ID"] = _clean(target.message_id)
    msg["Date"] = formatdate(localtime=False)
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(rendered.text, charset="utf-8")
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8")
    return msg


def message_bytes(msg: EmailMessage) -> bytes:
    """The message as it goes on the wire (and into the outbox): CRLF, 7-bit, headers folded by HEADER_POLICY."""
    return msg.as_bytes(policy=HEADER_POLICY)


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
        tmp.write_bytes(message_bytes(msg))
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

    def send(self, target: object, rendered: object) -> DeliveryResult:
        assert isinstance(target, EmailTarget)
        msg = build_message(self.settings, target, rendered)
        data = message_bytes(msg)
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

