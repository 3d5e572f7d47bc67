"""`compose` writes a mail directly; the email package (tests/mailref.py, EmailMessage under HEADER_POLICY)
must have written exactly the same bytes. Every header the product writes, each kind of value that takes
a different path (short ASCII, long ASCII, non-ASCII, text that looks like an encoded-word, quoting), and
both body encodings with every kind of line end."""

from __future__ import annotations

import email
import email.policy
import itertools
import time

import pytest

from notifier.channels.base import EmailTarget
from notifier.channels.mailbytes import compose, new_boundary
from notifier.config import Settings, load_settings
from notifier.render import MessageView, RenderContext, RenderedEmail, Renderer
from tests.mailref import reference_bytes

DATE = "Mon, 30 Nov 2026 05:12:16 -0000"

SUBJECTS = [
    "New message",
    "Новое сообщение от Анна Петрова — Магазин",
    "Re: " + "word " * 30,  # long ASCII, folds at spaces
    "x" * 120,  # one ASCII word longer than a line
    "=?utf-8?b?0JA=?= looks encoded",
    "Emoji 🌷 in the subject",
    "  spaces around  ",
    "tab\there and\r\nnewline",  # clean() turns control runs into one space
    "",
]
NAMES = [None, "", "Ирина", "Irina", 'Ir "x" ina', "Petrova, Irina", "I" * 90, "Ирина " * 12, "=?x?", "a\u202eb"]
FROMS = ["ReplyX <noreply@replyx.test>", "noreply@replyx.test", "Служба ReplyX <noreply@replyx.test>",
         '"Replyx, Inc." <noreply@replyx.test>']
BODIES = [
    "Hello,\nplain ASCII text.\n",
    "Line ending CRLF\r\nand CR\ralone, no newline at the end",
    "A long ASCII line " + "with = signs and trailing spaces   " * 6 + "\n",
    "Здравствуйте!\nЕсть ли доставка?\n",
    "Mixed «quotes» and — dashes\r\n" * 20,
    "",
]


def settings(from_: str = FROMS[0]) -> Settings:
    return load_settings({"NOTIFIER_EMAIL_FROM": from_, "NOTIFIER_SMTP_HOST": "mail.example.com"})


def both(s: Settings, target: EmailTarget, rendered: RenderedEmail, boundary: str) -> tuple[bytes, bytes]:
    return compose(s, target, rendered, date=DATE, boundary=boundary), reference_bytes(s, target, rendered, DATE, boundary)


@pytest.mark.parametrize("subject", SUBJECTS)
@pytest.mark.parametrize("name", NAMES)
def test_headers_are_the_email_packages(subject: str, name: str | None) -> None:
    rendered = RenderedEmail(subject, "text\n", "<p>html</p>\n")
    for boundary, unsubscribe in (("==abc", None), (new_boundary(), "https://app.replyx.test/u?t=" + "z" * 80)):
        target = EmailTarget("irina@example.com", name, "<notifier.1.d5@replyx.test>", unsubscribe)
        ours, theirs = both(settings(), target, rendered, boundary)
        assert ours == theirs


@pytest.mark.parametrize("from_", FROMS)
def test_from_is_the_email_packages(from_: str) -> None:
    target = EmailTarget("irina@example.com", "Ирина", "<notifier.1.d5@replyx.test>", None)
    ours, theirs = both(settings(from_), target, RenderedEmail("s", "t", "h"), new_boundary())
    assert ours == theirs


@pytest.mark.parametrize(("text", "html"), list(itertools.product(BODIES, BODIES[::2])))
def test_bodies_are_the_email_packages(text: str, html: str) -> None:
    target = EmailTarget("irina@example.com", "Irina", "<notifier.7.d9@replyx.test>", "https://app.replyx.test/u")
    ours, theirs = both(settings(), target, RenderedEmail("Subject", text, html), new_boundary())
    assert ours == theirs
    parsed = email.message_from_bytes(ours, policy=email.policy.default)
    plain, rich = (part.get_content() for part in parsed.iter_parts())
    # What a client reads back: the same text, line ends made CRLF (the email package's own normalisation).
    # An empty body still ends with one line end.
    assert plain.replace("\r\n", "\n") == ("".join(line + "\n" for line in text.splitlines()) or "\n")
    assert rich.replace("\r\n", "\n") == ("".join(line + "\n" for line in html.splitlines()) or "\n")


@pytest.mark.parametrize("language", ["ru", "en"])
def test_the_rendered_notification_is_the_email_packages(language: str) -> None:
    s = settings()
    ctx = RenderContext(
        dialog_id=5, language=language, recipient_name="Ирина", visitor_name="Анна Петрова", site_name="Магазин",
        messages=(MessageView(1, "Здравствуйте! Есть ли доставка в Екатеринбург?"), MessageView(2, "Alo <b>?</b>")),
        dialog_url="https://app.replyx.test/dialogs?dialog_id=5", total=2, relation="owner",
        settings_url="https://app.replyx.test/settings", unsubscribe_url="https://app.replyx.test/u?t=abc",
    )
    rendered = Renderer(s.templates_dir).email(ctx)
    target = EmailTarget("irina@example.com", "Ирина", "<notifier.1.d5@replyx.test>", ctx.unsubscribe_url)
    ours, theirs = both(s, target, rendered, new_boundary())
    assert ours == theirs


def test_defaults_are_now_and_a_fresh_boundary() -> None:
    target = EmailTarget("irina@example.com", None, "<notifier.1.d5@replyx.test>", None)
    first = email.message_from_bytes(compose(settings(), target, RenderedEmail("s", "t", "h")), policy=email.policy.default)
    second = email.message_from_bytes(compose(settings(), target, RenderedEmail("s", "t", "h")), policy=email.policy.default)
    assert first.get_boundary() != second.get_boundary() and first.get_boundary().startswith("==")
    assert abs(first["Date"].datetime.timestamp() - time.time()) < 60
