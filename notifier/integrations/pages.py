"""The one-click unsubscribe pages: ask (GET, a button), done, or a bad link; Russian and English.

A page a person sees, with no Jinja2 (the kit installs beside a host without it): the layout is
`notifier/static/unsubscribe.html`, a `string.Template`; every value is escaped.
"""

from __future__ import annotations

import functools
from html import escape
from importlib import resources
from string import Template

_PAGE = {
    "ru": {
        "ask": ("Отписаться от писем?", "Письма о непрочитанных сообщениях посетителей больше не будут приходить на "
                "вашу почту. Push-уведомления это не затронет.", "Отписаться"),
        "done": ("Вы отписались", "Письма больше не придут. Включить их снова можно в настройках уведомлений."),
        "bad": ("Ссылка недействительна", "Ссылка устарела или повреждена. Отписаться можно по ссылке из более "
                "нового письма или в настройках уведомлений."),
    },
    "en": {
        "ask": ("Unsubscribe from these emails?", "You will no longer get emails about visitors' unread messages. "
                "Push notifications are not affected.", "Unsubscribe"),
        "done": ("You are unsubscribed", "No more emails. You can turn them back on in your notification settings."),
        "bad": ("This link is not valid", "The link has expired or is damaged. Use the link in a newer email, or "
                "your notification settings."),
    },
}


def unsubscribe_page(lang: str, kind: str, settings_url: str | None, form: bool = False) -> str:
    words = _PAGE["en" if lang == "en" else "ru"][kind]
    if form:  # GET shows this form: mail scanners that follow links must never unsubscribe anybody
        action = f'<form method="post"><button type="submit">{escape(words[2])}</button></form>'
    elif settings_url:
        label = "Notification settings" if lang == "en" else "Настройки уведомлений"
        action = f'<p><a href="{escape(settings_url)}">{escape(label)}</a></p>'
    else:
        action = ""
    template = _layout()
    return template.substitute(lang=escape(lang), title=escape(words[0]), text=escape(words[1]), action=action)




@functools.lru_cache(maxsize=1)
def _layout() -> Template:
    return Template((resources.files("notifier") / "static" / "unsubscribe.html").read_text("utf-8"))
