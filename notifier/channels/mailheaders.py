"""Mail headers that decode to exactly what we meant: the policy both email senders write with.

Headers with non-ASCII text (a Subject mixing Latin and Cyrillic, a Cyrillic display name) are written as
whole UTF-8 encoded-words with every space inside a word, so an RFC 2047 decoder, which drops whitespace
between adjacent encoded-words, gives back exactly the text we meant. Pure ASCII folds as usual.

Public: `HEADER_POLICY`, `HeaderPolicy`, `clean`, `needs_encoding`, `encoded_words`, `fold_text`,
`fold_addresses`, `recipient_address`,
`ENCODED_WORD_MAX`, `ENCODED_LINE_MAX`.
"""

from __future__ import annotations

import base64
import re
import string
from collections.abc import Sequence
from email.errors import MessageError
from email.headerregistry import Address, AddressHeader, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.policy import EmailPolicy
from functools import lru_cache
from typing import Any, cast

from notifier.channels.base import EmailTarget
from notifier.errors import InvalidInput

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


def clean(value: str) -> str:
    """A header value with every run of control characters turned into one space."""
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


_WORD_OVERHEAD = len("=?utf-8?q??=")


def _q_length(ch: str) -> int:
    return 1 if ch in _Q_LITERAL or ch == " " else 3 * len(ch.encode("utf-8"))


class _WordLength:
    """The length of `_encoded_word(text)` kept up to date one character at a time (no re-encoding)."""

    def __init__(self, encoding: str, text: str = "") -> None:
        self.b = encoding == "b"
        self.units = 0  # UTF-8 bytes (B) or encoded characters (Q)
        for ch in text:
            self.units += self.unit(ch)

    def unit(self, ch: str) -> int:
        return len(ch.encode("utf-8")) if self.b else _q_length(ch)

    def with_char(self, ch: str) -> int:
        units = self.units + self.unit(ch)
        return _WORD_OVERHEAD + (4 * -(-units // 3) if self.b else units)


def _split_words(text: str, first_room: int, encoding: str) -> list[str]:
    """Greedy: as many whole characters per word as fit (the first word within first_room), a word
    preferably ending just after a space. Decoders that wrongly keep the whitespace between two words
    (CPython's own display-name parser does) then show a doubled space, not a space inside a word."""
    words: list[str] = []
    current = ""
    size = _WordLength(encoding)
    room = first_room
    for ch in text:
        if current and size.with_char(ch) > room:
            cut = current.rstrip(" ").rfind(" ") + 1  # just after the last space that has text after it
            head, current = (current[:cut], current[cut:]) if cut > 0 else (current, "")
            words.append(_encoded_word(head, encoding))
            size = _WordLength(encoding, current)
            room = ENCODED_WORD_MAX
            if current and size.with_char(ch) > room:
                words.append(_encoded_word(current, encoding))
                current, size = "", _WordLength(encoding)
        current += ch
        size.units += size.unit(ch)
    if current:
        words.append(_encoded_word(current, encoding))
    return words


def encoded_words(text: str, first_room: int = ENCODED_WORD_MAX) -> list[str]:
    """`text` as UTF-8 encoded-words, each at most 75 characters (the first at most first_room), split only
    between characters. Q or B encoding, whichever is shorter overall; spaces travel inside the words."""
    return list(_encoded_words(text, min(max(first_room, _MIN_WORD_ROOM), ENCODED_WORD_MAX)))


@lru_cache(maxsize=4096)
def _encoded_words(text: str, first_room: int) -> tuple[str, ...]:
    # Cached: the same subjects and names recur mail after mail, and splitting is done a character at a time.
    candidates = [_split_words(text, first_room, enc) for enc in ("q", "b")]
    best: list[str] = min(candidates, key=lambda words: (sum(map(len, words)), len(words)))
    return tuple(best)


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


def fold_text(name: str, text: str) -> _Lines | None:
    """Unstructured text that needs encoded-words (or has a word too long for a line), folded our way;
    None: ASCII that the standard folding keeps readable."""
    room = 78 - len(name) - 2
    if not needs_encoding(text) and all(len(word) <= room for word in text.split()):
        return None
    lines = _Lines(name)
    lines.add_encoded(text)
    return lines


def fold_addresses(name: str, addresses: Sequence[Address]) -> _Lines | None:
    """Mailboxes with a display name that needs encoded-words, folded our way; None: the standard
    folding is right (no display name needs encoding)."""
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


def _fold_encoded(name: str, value: Any) -> _Lines | None:
    """Our folding for a header with text that needs encoded-words; None: the standard folding is right."""
    if isinstance(value, UnstructuredHeader):
        return fold_text(name, str(value))
    if isinstance(value, AddressHeader):
        if any(group.display_name is not None for group in value.groups):
            return None  # we never write groups
        return fold_addresses(name, value.addresses)
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


class _CachedRegistry(HeaderRegistry):
    """The standard registry builds a new class with `type()` for every header it makes (some 30 per
    message, a fifth of the cost of assembling one); the class for a name never changes, so keep it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._classes: dict[str, type[BaseHeader]] = {}

    def map_to_type(self, name: str, cls: type[BaseHeader]) -> None:
        super().map_to_type(name, cls)
        self._classes.clear()

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        found = self._classes.get(key)
        if found is None:
            found = self._classes[key] = super().__getitem__(name)
        return found


def _header_registry() -> HeaderRegistry:
    registry = _CachedRegistry(default_class=_VerbatimText)
    # HeaderRegistry mixes BaseHeader into the classes it is given; typeshed wants that already done.
    registry.map_to_type("subject", cast("type[BaseHeader]", _VerbatimUniqueText))
    return registry


# CRLF line ends and 7-bit bodies (quoted-printable or base64, whichever is shorter): the bytes are what
# SMTP carries, and what the outbox writes.
HEADER_POLICY = HeaderPolicy(linesep="\r\n", cte_type="7bit", header_factory=_header_registry())


def recipient_address(target: EmailTarget) -> Address:
    """The target's mailbox, parsed; InvalidInput for anything we cannot put in To and RCPT TO as is."""
    return _mailbox(target.address, target.name or "")


@lru_cache(maxsize=1024)  # asked for twice per mail (the To header, RCPT TO), and managers recur
def _mailbox(addr: str, name: str) -> Address:
    if _CONTROL.search(addr):
        raise InvalidInput("recipient address is malformed")
    try:
        address = Address(display_name=clean(name), addr_spec=addr.strip())
    except (ValueError, IndexError, MessageError):
        raise InvalidInput("recipient address is malformed") from None
    if not address.username or not address.domain:
        raise InvalidInput("recipient address is malformed")
    if not address.addr_spec.isascii():
        raise InvalidInput("recipient address is not ASCII (SMTPUTF8 is not used)")
    return address


