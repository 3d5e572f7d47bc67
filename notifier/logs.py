"""Log lines: the readable default, or one JSON object per line (NOTIFIER_LOG_FORMAT=json).

Public: `JsonFormatter`, `RedactingFormatter`, `formatter(kind, text=None)`, `use_format(logger, kind)` (the
worker's Celery signals call it for every logger Celery sets up), `configure_cli(kind)`, `redact(text)`.

A JSON line always has `time` (UTC, ISO 8601, milliseconds), `level`, `logger`, `event`, `dialog_id`,
`manager_id`, `channel`, `reason` and `delivery_id` (null when the line has none), plus the other
`key=value` pairs of our own lines (`action`, `outcome`, `attempt`, ...) and `exception` when there is one.
Lines of other libraries (Celery, kombu) keep their text as `event`.

Where the fields come from: each of our log calls spells its fields as `key=%s` pairs in its format
string ("decision at=%s dialog=%s manager=%s channel=%s ..."). The formatter reads the keys from the
format string and takes each value from that placeholder's own argument, so a value is never guessed by
splitting rendered text; fields passed as `extra={...}` take precedence. We chose this over adding
`extra=` to every call: the format string stays the one statement of what a line carries, the text and
JSON forms cannot disagree, and a new line written in the house style is structured with no more work.

Both formats write `[address]` in place of anything shaped like an email address (a mail server's reply,
quoted in an error, may carry the recipient's). Celery's node names (`name@this-host`) are left alone.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import re
import socket
from collections.abc import Mapping
from typing import Any

FIELDS = ("dialog_id", "manager_id", "channel", "reason", "delivery_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
OURS = ("notifier", "worker")
_RENAMED = {"dialog": "dialog_id", "manager": "manager_id", "message": "message_id"}
_KEY = re.compile(r"[a-z_]+")
_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]")
_ADDRESS = re.compile(r"[A-Za-z0-9._%+-]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")


@functools.lru_cache(maxsize=1)
def _this_host() -> str:
    return socket.gethostname().lower()


def redact(text: str) -> str:
    """`text` with every email address replaced by `[address]` (Celery node names on this host kept)."""
    if "@" not in text:
        return text
    return _ADDRESS.sub(lambda m: m.group(0) if m.group(1).lower() == _this_host() else "[address]", text)


def _ours(record: logging.LogRecord) -> bool:
    return record.name.split(".", 1)[0] in OURS


def _value(raw: str) -> object:
    if raw in ("-", "None", ""):
        return None
    if raw.isascii() and raw.isdigit():
        return int(raw)
    return redact(raw)


def _from_text(text: str) -> tuple[str, dict[str, str]]:
    """Event words, then key=value words (values without spaces): for a line we cannot read by placeholder."""
    event: list[str] = []
    fields: dict[str, str] = {}
    last: str | None = None
    for word in text.split():
        key, eq, value = word.partition("=")
        if eq and _KEY.fullmatch(key):
            last = key
            fields[key] = value
        elif last is None:
            event.append(word)
        else:
            fields["detail"] = f"{fields.get('detail', '')} {word}".strip()
    return " ".join(event), fields


def split_line(record: logging.LogRecord) -> tuple[str, dict[str, str]]:
    """(event, raw fields) of one of our records, read from its format string and arguments."""
    msg, args = record.msg, record.args
    if not isinstance(msg, str) or isinstance(args, Mapping):
        return _from_text(record.getMessage())
    values = tuple(args or ())
    used = 0
    event: list[str] = []
    fields: dict[str, str] = {}
    last: str | None = None
    for token in msg.split(" "):
        if not token:
            continue
        wanted = sum(1 for p in _PLACEHOLDER.findall(token) if p != "%%")
        try:
            text = token % values[used : used + wanted] if "%" in token else token
        except (TypeError, ValueError):
            return _from_text(record.getMessage())
        used += wanted
        key, eq, _ = token.partition("=")
        if eq and _KEY.fullmatch(key):
            last = key
            value, *more = text[len(key) + 1 :].split(" ")
            pairs = [word.partition("=") for word in more]
            if more and all(eq and _KEY.fullmatch(k) for k, eq, _ in pairs):  # "transient_error retry_in=0.4s"
                fields[key] = value
                fields.update((k, v) for k, _, v in pairs)
            else:
                fields[key] = text[len(key) + 1 :]
            continue
        for word in text.split():  # a placeholder may have rendered pairs of its own ("delivery id=5")
            key, eq, value = word.partition("=")
            if eq and _KEY.fullmatch(key):
                last = key
                fields[key] = value
            elif last is None:
                event.append(word)
            else:
                fields["detail"] = f"{fields.get('detail', '')} {word}".strip()
    if used != len(values):
        return _from_text(record.getMessage())
    return " ".join(event), fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "event": None,
            **dict.fromkeys(FIELDS),
        }
        if _ours(record):
            event, raw = split_line(record)
            out["event"] = event or record.name.rsplit(".", 1)[-1]
            for key, value in raw.items():
                name = _RENAMED.get(key, key)
                if key == "id" and event.startswith("delivery"):
                    name = "delivery_id"
                if name not in ("time", "level", "logger", "event", "exception"):
                    out[name] = _value(value)
        else:
            out["event"] = redact(record.getMessage())
        for name in ("event", *FIELDS):  # extra={...} wins
            given = record.__dict__.get(name)
            if given is not None:
                out[name] = redact(given) if isinstance(given, str) else given
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exception"] = redact(record.exc_text)
        if record.stack_info:
            out["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"), default=str)


class RedactingFormatter(logging.Formatter):
    """The readable line of another formatter (Celery's, or TEXT_FORMAT), with addresses replaced."""

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__(TEXT_FORMAT)
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self._inner.format(record) if self._inner is not None else super().format(record))


def formatter(kind: str, text: logging.Formatter | None = None) -> logging.Formatter:
    """JSON for `json`; otherwise the readable line (`text`, if given, else TEXT_FORMAT), redacted."""
    return JsonFormatter() if kind == "json" else RedactingFormatter(text)


def use_format(logger: logging.Logger | None, kind: str) -> None:
    """Give every handler of `logger` our formatter; handlers that already have one are left as they are."""
    if logger is None:
        return
    for handler in logger.handlers:
        if not isinstance(handler.formatter, (JsonFormatter, RedactingFormatter)):
            handler.setFormatter(formatter(kind, handler.formatter))


def configure_cli(kind: str) -> None:
    """The `notifier` command's logging, like `logging.basicConfig` (a no-op when logging is set up)."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(kind))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
