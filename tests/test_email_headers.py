"""Email headers as a mail client decodes them: every space of a mixed Latin/Cyrillic subject survives.

Each mail goes through a real sender: SMTP to the aiosmtpd server (we read the bytes it received) and the
outbox (we read the `.eml` file). The raw header is decoded by a strict RFC 2047 decoder written here, not
by Python's email package: unfold, drop whitespace only between two adjacent encoded-words, keep every
other space, decode B and Q words one by one (so a word holding part of a character fails). Python's own
parser (policy default) must read back the same subject too.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from notifier.channels.base import EmailTarget
from notifier.channels.email import OutboxSender, SmtpPool, build_email_sender, message_id_for
from notifier.channels.mailheaders import ENCODED_LINE_MAX, ENCODED_WORD_MAX, encoded_words
from notifier.config import Settings, load_settings
from notifier.errors import InvalidInput
from notifier.render import MessageView, RenderContext, RenderedEmail, Renderer
from tests.smtpserver import SmtpServer

# --- a strict RFC 2047 decoder ------------------------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=")
_Q_ESCAPE = re.compile(rb"=([0-9A-F]{2})")
_Q_PLAIN = re.compile(r"[!-~]*")  # printable ASCII, no space


def unfold(value: str) -> str:
    """RFC 5322 2.2.3: a CRLF followed by whitespace is removed, the whitespace stays."""
    assert re.search(r"\r\n(?![ \t])|(?<!\r)\n|\r(?!\n)", value) is None, f"a bare line break in {value!r}"
    return value.replace("\r\n", "")


def decode_word(charset: str, encoding: str, payload: str) -> str:
    assert charset.lower() == "utf-8", f"unexpected charset {charset!r}"
    if encoding in "Bb":
        try:
            data = base64.b64decode(payload, validate=True)
        except binascii.Error as exc:
            raise AssertionError(f"bad B payload {payload!r}: {exc}") from None
    else:
        assert _Q_PLAIN.fullmatch(payload) and "?" not in payload, f"bad Q payload {payload!r}"
        unescaped = _Q_ESCAPE.sub(lambda m: b"%c" % int(m.group(1), 16), payload.replace("_", " ").encode("ascii"))
        assert b"=" not in _Q_ESCAPE.sub(b"", payload.encode("ascii")), f"stray '=' in Q payload {payload!r}"
        data = unescaped
    return data.decode("utf-8")  # strict: each word holds whole characters


def rfc2047_decode(value: str) -> str:
    """Decode a header value (after "Name:") the way RFC 2047 section 6.2 says a client displays it."""
    out: list[str] = []
    whitespace = ""
    previous_was_word = False
    for token in re.findall(r"[ \t]+|[^ \t]+", unfold(value)):
        if token.isspace():
            whitespace += token
            continue
        match = _ENCODED_WORD.fullmatch(token)
        if not (match and previous_was_word):
            out.append(whitespace)  # whitespace next to ordinary text is displayed
        out.append(decode_word(*match.groups()) if match else token)
        whitespace, previous_was_word = "", match is not None
    out.append(whitespace)
    return "".join(out)


def test_the_decoder_itself() -> None:
    # The failure this file guards against: Python's default folding of the issue's subject.
    assert rfc2047_decode(" 3 new from =?utf-8?b?0JDQvdC90LAg4oCU?=\r\n  =?utf-8?b?0JzQsNCz0LDQt9C40L0=?=") == (
        " 3 new from Анна —Магазин"
    )
    assert rfc2047_decode(" =?UTF-8?Q?caf=C3=A9_au?= lait =?utf-8?q?!?=") == " café au lait !"
    assert rfc2047_decode(" a \t b ") == " a \t b "
    with pytest.raises(UnicodeDecodeError):
        rfc2047_decode(" =?utf-8?b?0A==?= =?utf-8?b?kA==?=")  # "А" split across two words


# --- the raw header, as sent ----------------------------------------------------------------------


def header_block(raw: bytes) -> str:
    head, sep, _ = raw.partition(b"\r\n\r\n")
    assert sep, "no CRLF CRLF between header and body"
    return head.decode("ascii")  # 7-bit: no raw UTF-8 in any header


def raw_header(raw: bytes, name: str) -> str:
    """The value of header `name` as written on the wire (folded), without the name and colon."""
    found = [m for m in re.finditer(r"^([^\s:]+):([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", header_block(raw), re.M)
             if m.group(1).lower() == name.lower()]
    assert len(found) == 1, f"{name} appears {len(found)} times"
    return found[0].group(2)


def check_shape(raw: bytes) -> None:
    """The whole message is ASCII; every encoded-word and every line holding one within RFC 2047's limits."""
    raw.decode("ascii")
    for line in header_block(raw).split("\r\n"):
        words = _ENCODED_WORD.findall(line)
        assert all(len(f"=?{c}?{e}?{p}?=") <= ENCODED_WORD_MAX for c, e, p in words), line
        assert len(line) <= (ENCODED_LINE_MAX if words else 998), f"line too long ({len(line)}): {line!r}"
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def decoded(raw: bytes, name: str) -> str:
    value = raw_header(raw, name)
    assert value.startswith(" "), f"{name}: expected one space after the colon, got {value[:10]!r}"
    return rfc2047_decode(value[1:])


def parsed(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


# --- the senders -----------------------------------------------------------------------------------

FROM = "ReplyX <noreply@replyx.test>"


class Channel:
    """One email sender and a way to read back, as bytes, what its counterpart received."""

    def __init__(self, settings: Settings, smtp: SmtpServer | None, outbox: Path | None) -> None:
        self.settings = settings
        self.sender = build_email_sender(settings)
        assert isinstance(self.sender, SmtpPool if smtp is not None else OutboxSender)
        self.smtp, self.outbox = smtp, outbox
        self.count = 0

    def send(self, subject: str, name: str | None = "Ирина", address: str = "owner@example.com") -> bytes:
        """Send one mail with this subject and recipient; the bytes the SMTP server or the outbox got."""
        self.count += 1
        target = EmailTarget(address, name, f"<headers.{self.count}@replyx.test>")
        self.sender.send(target, RenderedEmail(subject=subject, text="Текст письма 🌷\n", html="<p>Текст письма 🌷</p>"))
        if self.smtp is not None:
            got = self.smtp.wait_for(self.count, timeout=5)
            assert len(got) == self.count, f"the SMTP server received {len(got)} mails, expected {self.count}"
            return got[-1].raw
        assert self.outbox is not None
        [eml] = self.outbox.glob(f"*-headers.{self.count}_replyx.test.eml")
        return eml.read_bytes()


@pytest.fixture(params=["smtp", "outbox"])
def channel(request: pytest.FixtureRequest, smtp_server: SmtpServer, tmp_path: Path) -> Iterator[Channel]:
    if request.param == "smtp":
        env = {"NOTIFIER_SMTP_HOST": "127.0.0.1", "NOTIFIER_SMTP_PORT": str(smtp_server.port), "NOTIFIER_SMTP_TLS": "none",
               "NOTIFIER_EMAIL_FROM": FROM}
        made = Channel(load_settings(env), smtp_server, None)
    else:
        env = {"NOTIFIER_OUTBOX_DIR": str(tmp_path / "outbox"), "NOTIFIER_EMAIL_FROM": FROM}
        made = Channel(load_settings(env), None, tmp_path / "outbox")
    yield made
    made.sender.close()


def rendered_subject(language: str, visitor: str, site: str, count: int) -> str:
    ctx = RenderContext(
        dialog_id=7, language=language, recipient_name="Ирина", visitor_name=visitor, site_name=site,
        messages=tuple(MessageView(i, f"сообщение {i}") for i in range(1, count + 1)),
        dialog_url="https://app.replyx.test/dialogs?dialog_id=7",
    )
    return Renderer().email(ctx).subject


LONG_VISITOR = "Александра Константиновна Преображенская"
LONG_SITE = "Цветочный магазин «Весенний сад» на Тверской"
SUBJECTS = {
    # The issue's subject: English words around Cyrillic names.
    "en-short": ("en", "Анна Петрова", "Магазин Цветов", 3, "3 new messages from Анна Петрова — Магазин Цветов"),
    "en-long": ("en", LONG_VISITOR, LONG_SITE, 12, f"12 new messages from {LONG_VISITOR} — {LONG_SITE}"),
    "ru-short": ("ru", "Анна", "Цветы", 1, "Новое сообщение от Анна — Цветы"),
    "ru-long": ("ru", LONG_VISITOR, LONG_SITE, 5, f"5 новых сообщений от {LONG_VISITOR} — {LONG_SITE}"),
    "emoji": ("ru", "Анна 🌷", "Цветы 💐 и подарки 🎁", 2, "2 новых сообщения от Анна 🌷 — Цветы 💐 и подарки 🎁"),
}


@pytest.mark.parametrize("case", sorted(SUBJECTS))
def test_subject_decodes_to_exactly_what_was_rendered(channel: Channel, case: str) -> None:
    language, visitor, site, count, expected = SUBJECTS[case]
    subject = rendered_subject(language, visitor, site, count)
    assert subject == expected
    if case.endswith("long"):
        assert len(subject) > 78  # several encoded-words, several lines

    raw = channel.send(subject)
    check_shape(raw)
    assert decoded(raw, "Subject") == expected
    assert parsed(raw)["Subject"] == expected
    words = _ENCODED_WORD.findall(raw_header(raw, "Subject"))
    assert len(words) >= (2 if case.endswith("long") else 1)
    assert decoded(raw, "To") == "Ирина <owner@example.com>"
    assert str(parsed(raw)["To"]) == "Ирина <owner@example.com>"


def test_the_issue_subject_keeps_the_space_before_the_site_name(channel: Channel) -> None:
    raw = channel.send("3 new messages from Анна Петрова — Магазин Цветов")
    assert "Петрова — Магазин" in decoded(raw, "Subject")
    assert "—Магазин" not in decoded(raw, "Subject")


@pytest.mark.parametrize(
    "subject",
    ["New message from a visitor", "12 new messages from Alexandra Konstantinovna Preobrazhenskaya at Spring Garden Flowers"],
)
def test_ascii_subject_is_folded_plainly(channel: Channel, subject: str) -> None:
    raw = channel.send(subject)
    check_shape(raw)
    value = raw_header(raw, "Subject")
    assert "=?" not in value, "pure ASCII needs no encoded-word"
    assert unfold(value) == " " + subject
    assert all(len(line) <= 78 for line in f"Subject:{value}".split("\r\n"))
    assert decoded(raw, "Subject") == subject
    assert parsed(raw)["Subject"] == subject


def test_ascii_that_looks_like_an_encoded_word_is_encoded(channel: Channel) -> None:
    trap = "Hi =?utf-8?b?0JDQtNC80LjQvQ==?= there"  # would display as "Hi Админ there" if sent as is
    raw = channel.send(trap, name="=?utf-8?q?Boss?=")
    check_shape(raw)
    assert decoded(raw, "Subject") == trap
    assert parsed(raw)["Subject"] == trap
    assert decoded(raw, "To") == "=?utf-8?q?Boss?= <owner@example.com>"


def test_display_names(channel: Channel) -> None:
    raw = channel.send("x", name="Ирина")
    assert decoded(raw, "To") == "Ирина <owner@example.com>"
    assert parsed(raw)["To"].addresses[0].display_name == "Ирина"

    raw = channel.send("x", name="O'Neil, Irene")  # ASCII with specials: quoted, not encoded
    assert raw_header(raw, "To") == ' "O\'Neil, Irene" <owner@example.com>'
    assert parsed(raw)["To"].addresses[0].display_name == "O'Neil, Irene"

    raw = channel.send("x", name=None)
    assert raw_header(raw, "To") == " owner@example.com"

    long_name = "Александра Константиновна Преображенская"  # no word longer than one encoded-word holds
    raw = channel.send("x", name=long_name)
    check_shape(raw)
    assert len(_ENCODED_WORD.findall(raw_header(raw, "To"))) > 1
    assert decoded(raw, "To") == f"{long_name} <owner@example.com>"
    # CPython's display-name parser keeps the whitespace between two encoded-words (RFC 2047 says drop it);
    # the words are cut after spaces, so it shows a doubled space, never a space inside a word.
    python_name = parsed(raw)["To"].addresses[0].display_name
    assert python_name.split() == long_name.split()
    assert parsed(raw)["To"].addresses[0].addr_spec == "owner@example.com"


def test_from_with_a_cyrillic_display_name_and_a_comment(smtp_server: SmtpServer) -> None:
    settings = load_settings({"NOTIFIER_SMTP_HOST": "127.0.0.1", "NOTIFIER_SMTP_PORT": str(smtp_server.port),
                              "NOTIFIER_SMTP_TLS": "none",
                              "NOTIFIER_EMAIL_FROM": "Уведомления ReplyX <noreply@replyx.test> (support)"})
    sender = build_email_sender(settings)
    try:
        sender.send(EmailTarget("owner@example.com", "Ирина", "<from.1@replyx.test>"),
                    RenderedEmail(subject="Новое сообщение", text="т\n", html="<p>т</p>"))
    finally:
        sender.close()
    [mail] = smtp_server.wait_for(1, timeout=5)
    check_shape(mail.raw)
    assert mail.mail_from == "noreply@replyx.test"  # the envelope sender is the parsed address
    assert mail.rcpt_tos == ("owner@example.com",)
    assert decoded(mail.raw, "From") == "Уведомления ReplyX <noreply@replyx.test>"
    assert str(mail.message["From"]) == "Уведомления ReplyX <noreply@replyx.test>"
    assert str(mail.message["Message-ID"]) == "<from.1@replyx.test>"


def test_control_characters_never_reach_a_header(channel: Channel) -> None:
    raw = channel.send("Привет\r\nBcc: evil@example.com\x00\u2028end", name="Ева\r\nBcc: evil2@example.com")
    check_shape(raw)
    msg = parsed(raw)
    assert msg["Bcc"] is None
    assert not any(line.lower().startswith("bcc:") for line in header_block(raw).split("\r\n"))
    assert decoded(raw, "Subject") == "Привет Bcc: evil@example.com end"
    assert msg["Subject"] == "Привет Bcc: evil@example.com end"
    assert decoded(raw, "To") == "Ева Bcc: evil2@example.com <owner@example.com>"
    assert msg["To"].addresses[0].addr_spec == "owner@example.com"

    raw = channel.send("Hello\r\nBcc: evil@example.com")  # ASCII takes the standard folding: same guarantee
    assert parsed(raw)["Bcc"] is None
    assert decoded(raw, "Subject") == "Hello Bcc: evil@example.com"


def test_the_body_survives_and_the_message_is_7bit(channel: Channel) -> None:
    raw = channel.send("3 new messages from Анна Петрова — Магазин Цветов")
    check_shape(raw)
    msg = parsed(raw)
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content().splitlines() == ["Текст письма 🌷"]  # CRLF inside: MIME's canonical text form
    assert "<p>Текст письма 🌷</p>" in html.get_content()
    assert {part["Content-Transfer-Encoding"] for part in (plain, html)} <= {"base64", "quoted-printable"}


@pytest.mark.parametrize("address", ["owner", "owner@", "@example.com", "a b@example.com", "ирина@пример.рф",
                                     "owner@пример.рф", "owner@example.com\r\nBcc: x@example.com"])
def test_a_malformed_recipient_is_refused_before_sending(channel: Channel, address: str) -> None:
    with pytest.raises(InvalidInput):
        channel.send("x", address=address)


# --- encoded-words on their own ----------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "3 new messages from Анна Петрова — Магазин Цветов",
    "Я" * 200,
    "🌷" * 60,
    "a" + " " * 120 + "б",
    "Новое сообщение от " + "ПосетительБезПробелов" * 6,
])
@pytest.mark.parametrize("first_room", [24, 60, 75])
def test_encoded_words_hold_whole_characters_within_the_limits(text: str, first_room: int) -> None:
    words = encoded_words(text, first_room)
    assert len(words[0]) <= first_room
    assert all(len(w) <= ENCODED_WORD_MAX for w in words)
    assert rfc2047_decode(" ".join(words)) == text
    assert "".join(decode_word(*_ENCODED_WORD.fullmatch(w).groups()) for w in words) == text  # type: ignore[union-attr]


def test_message_id_helper_uses_the_parsed_from_domain(tmp_path: Path) -> None:
    for email_from, domain in [
        ("ReplyX <noreply@replyx.ru> (support)", "replyx.ru"),
        ('"a@b" <noreply@replyx.ru>', "replyx.ru"),
        ("noreply@mail.replyx.ru", "mail.replyx.ru"),
        ("Уведомления <noreply@replyx.ru>", "replyx.ru"),
    ]:
        settings = load_settings({"NOTIFIER_EMAIL_FROM": email_from, "NOTIFIER_OUTBOX_DIR": str(tmp_path / "outbox")})
        assert message_id_for(41, 7, settings) == f"<notifier.41.d7@{domain}>"

    settings = load_settings({"NOTIFIER_EMAIL_FROM": '"a@b" <noreply@replyx.ru> (support)',
                              "NOTIFIER_OUTBOX_DIR": str(tmp_path / "outbox")})
    sender = build_email_sender(settings)
    sender.send(EmailTarget("owner@example.com", "Ирина", message_id_for(41, 7, settings)),
                RenderedEmail(subject="x", text="т\n", html="<p>т</p>"))
    [eml] = (tmp_path / "outbox").glob("*.eml")
    msg = parsed(eml.read_bytes())
    assert msg["Message-ID"] == "<notifier.41.d7@replyx.ru>"
    assert msg["From"].addresses[0].display_name == "a@b"
    assert msg["From"].addresses[0].addr_spec == "noreply@replyx.ru"
