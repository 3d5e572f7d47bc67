"""Rendering of email and Web Push content: plain values in, strings out, no services."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from notifier.render import (
    MessageView,
    RenderContext,
    RenderedPush,
    Renderer,
    default_templates_dir,
    ru_plural,
    truncate,
)

URL = "https://app.replyx.ru/dialogs/42"
CONTROL = re.compile("[\x00-\x1f\x7f\u2028\u2029]")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def make_ctx(*texts: str, **overrides: object) -> RenderContext:
    ctx = RenderContext(
        dialog_id=42,
        language="ru",
        recipient_name="Иван",
        visitor_name="Анна Петрова",
        site_name="Магазин Цветов",
        messages=tuple(MessageView(i, t) for i, t in enumerate(texts or ("Здравствуйте!",), start=1)),
        dialog_url=URL,
    )
    return replace(ctx, **overrides)  # type: ignore[arg-type]


def test_default_templates_dir_is_the_repo_templates() -> None:
    assert default_templates_dir() == Path(__file__).resolve().parents[1] / "templates"
    assert (default_templates_dir() / "email" / "ru" / "body.html").is_file()


def test_cyrillic_and_emoji_survive_everywhere(renderer: Renderer) -> None:
    email = renderer.email(make_ctx("Хочу букет 💐 на завтра", "Есть тюльпаны? 🌷"))
    assert email.subject == "2 новых сообщения от Анна Петрова — Магазин Цветов"
    for body in (email.text, email.html):
        assert "Хочу букет 💐 на завтра" in body
        assert "Есть тюльпаны? 🌷" in body
        assert "Здравствуйте, Иван!" in body
    assert '<html lang="ru">' in email.html
    assert '<meta charset="utf-8">' in email.html
    assert email.html.count(f'href="{URL}"') == 2  # button and plain link
    assert f"Открыть диалог: {URL}" in email.text


def test_single_message_subject_and_missing_names(renderer: Renderer) -> None:
    email = renderer.email(make_ctx("Привет", recipient_name=None, visitor_name="", site_name=None))
    assert email.subject == "Новое сообщение от посетителя"
    assert "Здравствуйте!" in email.text
    assert "Посетитель ждёт ответа: 1 непрочитанное сообщение." in email.text


def test_html_injection_is_escaped(renderer: Renderer) -> None:
    ctx = make_ctx("<script>alert(1)</script>", '<img src=x onerror="alert(2)">', visitor_name="<b>Eve</b>")
    html = renderer.email(ctx).html
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img" not in html
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in html
    assert "<b>Eve</b>" not in html and "&lt;b&gt;Eve&lt;/b&gt;" in html


def test_newlines_become_br_after_escaping(renderer: Renderer) -> None:
    html = renderer.email(make_ctx("первая <i>\r\nвторая\nтретья")).html
    assert "первая &lt;i&gt;<br>\nвторая<br>\nтретья" in html


def test_header_injection_in_visitor_name(renderer: Renderer) -> None:
    ctx = make_ctx("hi", visitor_name="Eve\r\nBcc: evil@example.com\t\x00\u2028x")
    subject = renderer.email(ctx).subject
    assert "\r" not in subject and "\n" not in subject
    assert not CONTROL.search(subject)
    assert "Eve Bcc: evil@example.com x" in subject  # one line, runs of spaces collapsed
    title = renderer.push(ctx).title
    assert not CONTROL.search(title)


def test_subject_is_capped_at_150(renderer: Renderer) -> None:
    subject = renderer.email(make_ctx("hi", visitor_name="Я" * 90, site_name="С" * 90)).subject
    assert len(subject) == 150
    assert subject.endswith("…")


def test_twelve_messages_show_last_ten_oldest_first(renderer: Renderer) -> None:
    texts = [f"сообщение-{i:02d}" for i in range(1, 13)]
    email = renderer.email(make_ctx(*texts))
    for body in (email.text, email.html):
        assert "сообщение-01" not in body and "сообщение-02" not in body
        # rindex: the HTML preheader quotes the newest message once more near the top.
        positions = [body.rindex(t) for t in texts[2:]]
        assert positions == sorted(positions)
        assert "…и ещё 2 сообщения" in body
    assert email.subject.startswith("12 новых сообщений")
    assert "12 непрочитанных сообщений" in email.text


def test_hidden_count_plural_en(renderer: Renderer) -> None:
    en = make_ctx(*[f"m{i}" for i in range(11)], language="en")
    assert "…and 1 earlier message " in renderer.email(en).text
    en = make_ctx(*[f"m{i}" for i in range(15)], language="en")
    assert "…and 5 earlier messages " in renderer.email(en).text


@pytest.mark.parametrize(
    ("n", "word"),
    [
        (1, "сообщение"),
        (2, "сообщения"),
        (4, "сообщения"),
        (5, "сообщений"),
        (11, "сообщений"),
        (12, "сообщений"),
        (14, "сообщений"),
        (21, "сообщение"),
        (22, "сообщения"),
        (25, "сообщений"),
        (111, "сообщений"),
        (101, "сообщение"),
    ],
)
def test_ru_plural(n: int, word: str) -> None:
    assert ru_plural(n, "сообщение", "сообщения", "сообщений") == word


def test_hidden_count_plural_ru_in_email(renderer: Renderer) -> None:
    text = renderer.email(make_ctx(*[f"m{i}" for i in range(15)])).text
    assert "…и ещё 5 сообщений ранее" in text


def test_long_message_cut_at_500(renderer: Renderer) -> None:
    long = "Ж" * 498 + "👋🏽" + "хвост" * 100  # the 500th character is the skin-tone modifier
    email = renderer.email(make_ctx(long))
    shown = "Ж" * 498 + "…"
    assert shown in email.text and shown in email.html
    assert "хвост" not in email.text
    assert "👋" not in email.text  # stepped back before the emoji instead of splitting it from its tone
    assert len(truncate("Ж" * 600, 500)) == 500


def test_english_renders(renderer: Renderer) -> None:
    email = renderer.email(make_ctx("Hello", "Prices?", language="en", recipient_name="John"))
    assert email.subject == "2 new messages from Анна Петрова — Магазин Цветов"
    assert "Hi, John!" in email.text and "Hi, John!" in email.html
    assert '<html lang="en">' in email.html
    assert "Open dialog" in email.html
    assert "Открыть" not in email.html
    push = renderer.push(make_ctx("Hello", language="en"))
    assert push.title == "New message — Магазин Цветов"
    assert push.body == "Анна Петрова: Hello"


@pytest.mark.parametrize("language", ["de", "", "xx-YY"])
def test_unknown_language_falls_back_to_ru(renderer: Renderer, language: str) -> None:
    email = renderer.email(make_ctx("Привет", language=language))
    assert email.subject.startswith("Новое сообщение")
    assert '<html lang="ru">' in email.html
    assert renderer.push(make_ctx("Привет", language=language)).title.startswith("Новое сообщение")


def test_language_region_and_case_are_ignored(renderer: Renderer) -> None:
    assert renderer.email(make_ctx("x", language="EN-us")).subject.startswith("New message")


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", " JavaScript:alert(1)", "java\nscript:alert(1)", "data:text/html,x", "//evil", "http://[::1"],
)
def test_unsafe_dialog_url_becomes_hash(renderer: Renderer, url: str) -> None:
    ctx = make_ctx("hi", dialog_url=url)
    email = renderer.email(ctx)
    assert 'href="#"' in email.html
    assert "javascript" not in email.html.lower()
    assert "alert(1)" not in email.text
    assert renderer.push(ctx).url == "#"


def test_push_shape_and_tag_per_dialog(renderer: Renderer) -> None:
    push = renderer.push(make_ctx("первое", "второе\nстрока"))
    assert push.title == "2 новых сообщения — Магазин Цветов"
    assert push.body == "Анна Петрова: второе строка"  # latest message, one line
    assert push.url == URL
    assert push.tag == "dialog-42"
    assert renderer.push(make_ctx("x", dialog_id=7)).tag == "dialog-7"
    data = json.loads(push.payload())
    assert data == {"title": push.title, "body": push.body, "url": URL, "dialog_id": 42, "tag": "dialog-42"}


def test_push_without_site_uses_visitor_name(renderer: Renderer) -> None:
    assert renderer.push(make_ctx("x", site_name=None)).title == "Новое сообщение — Анна Петрова"
    push = renderer.push(make_ctx("x", site_name=None, visitor_name=None))
    assert push.title == "Новое сообщение"
    assert push.body == "Посетитель: x"


def test_push_payload_for_huge_mixed_text(renderer: Renderer) -> None:
    push = renderer.push(make_ctx("Привет 👋🏽 " * 1000))
    raw = push.payload()
    assert len(raw) <= 3000
    data = json.loads(raw.decode("utf-8"))
    assert data["body"].endswith("…")
    assert len(data["body"]) <= 200
    assert data["body"].startswith("Анна Петрова: Привет 👋🏽 Привет")
    assert len(data["body"]) == 200  # cut exactly at the limit: "Приве…" is a fine character boundary
    assert not data["body"].removesuffix("…").endswith("👋")  # but a hand never loses its skin tone


def test_payload_shrinks_a_hand_built_oversized_body() -> None:
    push = RenderedPush(title="Т", body="Привет 👋🏽 " * 1000, url=URL, dialog_id=1, tag="dialog-1")
    raw = push.payload()
    assert 2900 < len(raw) <= 3000  # shrunk to fit, not emptied
    body = json.loads(raw.decode("utf-8"))["body"]
    assert body.endswith("…")
    assert not body.removesuffix("…").endswith("👋")  # skin tone kept with its hand


def test_payload_survives_oversized_title_and_url() -> None:
    push = RenderedPush(title="Я" * 5000, body="тело", url=URL + "?q=" + "a" * 5000, dialog_id=1, tag="dialog-1")
    raw = push.payload()
    assert len(raw) <= 3000
    data = json.loads(raw.decode("utf-8"))
    assert data["body"] == "тело"  # the body keeps its room; the oversized fields gave way
    assert data["title"] == "Я" * 99 + "…"
    assert data["url"] == "#"


def test_payload_keeps_a_normal_long_url() -> None:
    url = URL + "?q=" + "a" * 1500
    assert json.loads(RenderedPush(title="t", body="b", url=url, dialog_id=1, tag="dialog-1").payload())["url"] == url


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("короткий", 20, "короткий"),
        ("abcdef", 4, "abc…"),
        ("ab👋🏽cd", 4, "ab…"),  # never split a skin-tone modifier from its emoji
        ("x👨\u200d👩\u200d👧y", 4, "x…"),  # nor a ZWJ sequence
        ("🇷🇺🇺🇸🇩🇪", 4, "🇷🇺…"),  # nor a flag's regional-indicator pair
        ("еее\u0301ж", 4, "ее…"),  # nor a letter from its combining accent
        ("слово   дальше", 9, "слово…"),  # no dangling spaces before the ellipsis
    ],
)
def test_truncate(text: str, limit: int, expected: str) -> None:
    assert truncate(text, limit) == expected


def test_lone_surrogate_does_not_break_encoding(renderer: Renderer) -> None:
    ctx = make_ctx("bad \ud83d half", visitor_name="X\udc00")
    email = renderer.email(ctx)
    email.html.encode("utf-8")
    email.subject.encode("utf-8")
    assert json.loads(renderer.push(ctx).payload().decode("utf-8"))["body"] == "X\ufffd: bad \ufffd half"


def test_custom_templates_dir_and_strict_undefined(tmp_path: Path) -> None:
    (tmp_path / "push" / "ru").mkdir(parents=True)
    (tmp_path / "push" / "ru" / "title.txt").write_text("{{ no_such_variable }}", encoding="utf-8")
    (tmp_path / "push" / "ru" / "body.txt").write_text("b", encoding="utf-8")
    from jinja2 import UndefinedError

    with pytest.raises(UndefinedError):
        Renderer(tmp_path).push(make_ctx("x"))
