"""Turn an unread-message burst into email and Web Push content.

Public: `MessageView`, `RenderContext`, `RenderedEmail`, `RenderedPush`, `RenderedClear`, `Renderer`,
`default_templates_dir`.
Every word a manager reads comes from `templates/<email|push>/<lang>/`; this module only cleans,
cuts and counts values, so a translator never has to touch Python.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

LANGUAGES = ("ru", "en")
DEFAULT_LANGUAGE = "ru"
MAX_SHOWN = 10
MESSAGE_LIMIT = 500
NAME_LIMIT = 100
SUBJECT_LIMIT = 150
PREVIEW_LIMIT = 140
PUSH_TITLE_LIMIT = 100
PUSH_BODY_LIMIT = 200
PUSH_URL_LIMIT = 1800  # bytes
PUSH_PAYLOAD_LIMIT = 3000  # Web Push caps the *encrypted* record at 4096 bytes; leave room for its overhead
ELLIPSIS = "…"

# C0/C1 controls, DEL, Unicode line/paragraph separators and bidi overrides (the latter can spoof
# a subject line in the inbox list). Any of them in a header is either injection or garbage.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# Message bodies keep \n and \t; everything else control-like becomes a space.
_TEXT_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_SURROGATE = re.compile("[\ud800-\udfff]")  # lone surrogates cannot be encoded as UTF-8
_REGIONAL = re.compile("[\U0001f1e6-\U0001f1ff]")  # flag halves
_ZWJ = "\u200d"
_SPACES = re.compile("[^\\S\u00a0\u202f]+")  # runs of whitespace, no-break spaces excepted
# Besides combining marks (category M, incl. variation selectors): ZWJ, skin tones, emoji tag chars.
_ATTACHING = re.compile("[\u200d\U0001f3fb-\U0001f3ff\U000e0020-\U000e007f]")


@dataclass(frozen=True)
class MessageView:
    id: int
    text: str


@dataclass(frozen=True)
class RenderContext:
    dialog_id: int
    language: str
    recipient_name: str | None
    visitor_name: str | None
    site_name: str | None
    messages: tuple[MessageView, ...]  # oldest first; the newest ones when the burst is long
    dialog_url: str
    total: int | None = None  # unread messages in the burst, exact; None: len(messages)
    relation: str = "owner"  # why they get it: "owner", "assigned" or "team" (the email's footer says so)
    settings_url: str | None = None  # the manager's notification settings page
    unsubscribe_url: str | None = None  # one click turns email off


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class RenderedPush:
    title: str
    body: str
    url: str
    dialog_id: int
    tag: str

    def payload(self) -> bytes:
        """Compact UTF-8 JSON, never above PUSH_PAYLOAD_LIMIT bytes: only the body gives way."""
        # Capping the other fields (a no-op for Renderer output) bounds them at ~2.8 KB even in the
        # worst case, so the body always has room left; a URL past ~2 KB is broken in browsers anyway.
        data: dict[str, str | int] = {
            "title": truncate(self.title, PUSH_TITLE_LIMIT),
            "body": "",
            "url": self.url if _json_size(self.url) <= PUSH_URL_LIMIT else "#",
            "dialog_id": self.dialog_id,
            "tag": self.tag[:64],
        }
        data["body"] = _fit_bytes(self.body, PUSH_PAYLOAD_LIMIT - len(_dump(data)))
        return _dump(data)


@dataclass(frozen=True)
class RenderedClear:
    """A silent push: the dialog was read or answered, so the service worker closes its notification.
    Nothing in it is read by a person, so no template; it shares the notification's tag and Topic."""

    dialog_id: int

    @property
    def tag(self) -> str:
        return f"dialog-{self.dialog_id}"

    def payload(self) -> bytes:
        return _dump({"type": "clear", "dialog_id": self.dialog_id, "tag": self.tag})


def default_templates_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "templates"


class Renderer:
    def __init__(self, templates_dir: Path | None = None) -> None:
        loader = FileSystemLoader(templates_dir or default_templates_dir())
        # StrictUndefined: a typo in a template must fail the tests, not mail an empty greeting.
        # auto_reload off: templates do not change under a running worker (a deploy restarts it), and checking
        # each file's modification time on every render cost a few percent of a sending process's CPU.
        opts: dict[str, Any] = {"undefined": StrictUndefined, "trim_blocks": True, "lstrip_blocks": True,
                                "auto_reload": False}
        self._html = Environment(loader=loader, autoescape=select_autoescape(("html",), default=True), **opts)
        self._text = Environment(loader=loader, autoescape=False, **opts)  # subject/text/push: no "&amp;"
        for env in (self._html, self._text):
            env.filters["ru_plural"] = ru_plural
            env.filters["number"] = number
        self._html.filters["nl2br"] = nl2br

    def email(self, ctx: RenderContext) -> RenderedEmail:
        lang, values = _values(ctx)
        values["messages"] = tuple(
            MessageView(m.id, truncate(_clean_text(m.text), MESSAGE_LIMIT)) for m in ctx.messages[-MAX_SHOWN:]
        )
        subject = self._text.get_template(f"email/{lang}/subject.txt").render(values)
        return RenderedEmail(
            subject=truncate(one_line(subject), SUBJECT_LIMIT),
            text=self._text.get_template(f"email/{lang}/body.txt").render(values) + "\n",
            html=self._html.get_template(f"email/{lang}/body.html").render(values),
        )

    def push(self, ctx: RenderContext) -> RenderedPush:
        lang, values = _values(ctx)
        title = self._text.get_template(f"push/{lang}/title.txt").render(values)
        body = self._text.get_template(f"push/{lang}/body.txt").render(values)
        return RenderedPush(
            title=truncate(one_line(title), PUSH_TITLE_LIMIT),
            body=truncate(one_line(body), PUSH_BODY_LIMIT),
            url=safe_url(ctx.dialog_url),
            dialog_id=ctx.dialog_id,
            tag=f"dialog-{ctx.dialog_id}",
        )


def _values(ctx: RenderContext) -> tuple[str, dict[str, object]]:
    """Language plus the template variables shared by every template (StrictUndefined: all always set)."""
    lang = ctx.language.strip().lower().replace("_", "-").split("-")[0] if ctx.language else ""
    lang = lang if lang in LANGUAGES else DEFAULT_LANGUAGE
    latest = _clean_text(ctx.messages[-1].text) if ctx.messages else ""
    total = max(ctx.total or 0, len(ctx.messages))
    return lang, {
        "lang": lang,
        "recipient_name": _name(ctx.recipient_name),
        "visitor_name": _name(ctx.visitor_name),  # "" -> the template's own "Посетитель"/"Visitor"
        "site_name": _name(ctx.site_name),
        "total": total,
        "hidden": max(0, total - min(len(ctx.messages), MAX_SHOWN)),
        "latest": latest,
        "preview": truncate(one_line(latest), PREVIEW_LIMIT),
        "dialog_url": safe_url(ctx.dialog_url),
        "relation": ctx.relation if ctx.relation in ("owner", "assigned", "team") else "owner",
        "settings_url": safe_url(ctx.settings_url) if ctx.settings_url else "",
        "unsubscribe_url": safe_url(ctx.unsubscribe_url) if ctx.unsubscribe_url else "",
    }


def _dump(data: dict[str, str | int]) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _json_size(text: str) -> int:
    """Bytes `text` takes inside the compact UTF-8 JSON (escapes included, quotes not)."""
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8")) - 2


def _fit_bytes(text: str, budget: int) -> str:
    """Longest `truncate(text, n)` whose JSON size fits `budget`; that size grows with n, so bisect."""
    if _json_size(text) <= budget:
        return text
    best, lo, hi = "", 1, len(text) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        candidate = truncate(text, mid)
        if _json_size(candidate) <= budget:
            best, lo = candidate, mid + 1
        else:
            hi = mid - 1
    return best


def _name(value: str | None) -> str:
    return truncate(one_line(value), NAME_LIMIT) if value else ""


def _clean_text(text: str) -> str:
    text = _SURROGATE.sub("\ufffd", text).replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\u2028", "\n").replace("\u2029", "\n\n")
    return _TEXT_CONTROL.sub(" ", text).strip()


def one_line(text: str) -> str:
    """Header-safe: every control/separator becomes a space, runs of whitespace collapse."""
    # No-break spaces stay: they hold "10 000" together in a notification that wraps.
    return _SPACES.sub(" ", _CONTROL.sub(" ", _SURROGATE.sub("\ufffd", text))).strip(" ")


def _attaches_to_previous(ch: str) -> bool:
    """A char that belongs to the one before it must never be the first one cut off."""
    return unicodedata.category(ch).startswith("M") or _ATTACHING.match(ch) is not None


def truncate(text: str, limit: int) -> str:
    """At most `limit` characters, ending with "…" if cut; cuts only between whole graphemes (best effort)."""
    if len(text) <= limit:
        return text
    cut = max(limit - 1, 0)
    while cut > 0 and (_attaches_to_previous(text[cut]) or text[cut - 1] == _ZWJ):
        cut -= 1
    # A flag is a pair of regional indicators: an odd count before the cut would split one.
    run = 0
    while run < cut and _REGIONAL.match(text[cut - 1 - run]):
        run += 1
    if run % 2 and _REGIONAL.match(text[cut]):
        cut -= 1
    return text[:cut].rstrip() + ELLIPSIS


@lru_cache(maxsize=4096)  # the same dialog and settings links recur notification after notification
def safe_url(url: str) -> str:
    """Only absolute http(s) URLs may reach an href or a push click; anything else becomes "#"."""
    url = url.strip()
    if _CONTROL.search(url) or _SURROGATE.search(url) or any(c.isspace() for c in url):
        return "#"
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket; a bad link must not stop the notification
        return "#"
    return url if parts.scheme.lower() in ("http", "https") and parts.netloc else "#"


def ru_plural(n: int, one: str, few: str, many: str) -> str:
    """Russian plural form: 1 сообщение, 2-4 сообщения, 5-20 сообщений, 21 сообщение, 11-14 сообщений."""
    if n % 10 == 1 and n % 100 != 11:
        return one
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return few
    return many


def number(n: int, lang: str) -> str:
    """A count as a reader of `lang` writes it: 10,000 in English, 10 000 (no-break space) in Russian."""
    grouped = f"{n:,}"
    return grouped.replace(",", "\u00a0") if lang == "ru" else grouped


def nl2br(text: str) -> Markup:
    """Escape first, then turn line breaks into <br>; the result is Markup so Jinja will not re-escape it."""
    return Markup("<br>\n").join(escape(text).splitlines())
