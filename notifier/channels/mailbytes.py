"""A notification mail as the bytes SMTP carries: written directly, as the email package would write it.

The email package builds a tree of header objects, parses every value it is given and folds it again on
output: about 1.6 ms of CPU per mail, more than a fifth of a delivery's whole cost. Our mails have one
shape (multipart/alternative, a text and an HTML part, a fixed set of headers), so `compose` writes them
straight out. A header goes through the email package (`HEADER_POLICY`, the folding of
`notifier.channels.mailheaders`) only where the result is not obvious: non-ASCII text, anything that looks
like an encoded-word, or a line too long to stay unfolded. Everything else is the same bytes the email
package would produce, which tests/mailref.py checks against the package itself.

The message is 7-bit ASCII with CRLF line ends: bodies are base64 (Cyrillic) or quoted-printable (ASCII),
as `_transfer_encoding` chooses.

Public: `compose`, `new_boundary`.
"""

from __future__ import annotations

import base64
import secrets
from email import quoprimime
from email.headerregistry import Address
from email.utils import formatdate
from functools import lru_cache
from typing import TYPE_CHECKING

from notifier.channels.base import EmailTarget
from notifier.channels.mailheaders import (
    HEADER_POLICY,
    clean,
    fold_addresses,
    fold_text,
    needs_encoding,
    recipient_address,
)
from notifier.config import Settings

if TYPE_CHECKING:
    from notifier.render import RenderedEmail

_CRLF = "\r\n"
_MAX_LINE = 78  # the policy's max_line_length: what fits is written as one line
# Headers HEADER_POLICY treats as unstructured text (its registry's default class): ours fold them directly.
_UNSTRUCTURED = frozenset({"Subject", "List-Unsubscribe"})


def new_boundary() -> str:
    """A boundary that cannot occur in the parts: "==" never starts a base64 or quoted-printable line."""
    return f"=={secrets.token_hex(16)}"


def _plain(name: str, value: str) -> str | None:
    """`Name: value` when the email package would write exactly that: short ASCII with nothing to encode."""
    line = f"{name}: {value}"
    simple = value.isascii() and value.isprintable() and "=?" not in value and value == value.strip()
    if value and simple and len(line) <= _MAX_LINE:
        return line + _CRLF
    return None


def _folded(name: str, value: str | Address) -> str:
    """One header the way `HEADER_POLICY` writes it (its own encoded-words and folding)."""
    folded = HEADER_POLICY.fold_binary(name, HEADER_POLICY.header_store_parse(name, value)[1])
    return folded.decode("ascii")


def _header(name: str, value: str) -> str:
    plain = _plain(name, value)
    if plain is not None:
        return plain
    ours = fold_text(name, value) if name in _UNSTRUCTURED else None
    return ours.join(_CRLF) if ours is not None else _folded(name, value)


def _address(name: str, address: Address) -> str:
    if not needs_encoding(address.display_name):
        plain = _plain(name, str(address))  # str() quotes a display name where it has to
        return plain if plain is not None else _folded(name, address)
    ours = fold_addresses(name, [address])
    return ours.join(_CRLF) if ours is not None else _folded(name, address)


@lru_cache(maxsize=8)
def _from_header(display_name: str, addr_spec: str) -> str:
    return _address("From", Address(display_name=clean(display_name), addr_spec=addr_spec))


def _transfer_encoding(body: str) -> str:
    """Quoted-printable keeps ASCII readable; anything else (Cyrillic) is shorter in base64. Chosen here
    because the email package, left to choose, encodes the whole body both ways to compare."""
    return "quoted-printable" if body.isascii() else "base64"


def _part(subtype: str, body: str) -> str:
    """A text part: its headers, a blank line, the body encoded with CRLF line ends (as `set_content`
    normalises them: any of CR, LF, CRLF ends a line, and the body ends with one)."""
    lines = body.encode("utf-8").splitlines()
    cte = _transfer_encoding(body)
    if cte == "base64":
        # 57 bytes (76 characters) per line, as the email package cuts them: what encodebytes does.
        encoded = base64.encodebytes(b"\r\n".join(lines) + b"\r\n").decode("ascii")
    else:
        encoded = quoprimime.body_encode((b"\n".join(lines) + b"\n").decode("latin-1"), _MAX_LINE)
    encoded = encoded.replace("\n", _CRLF)
    return (f'Content-Type: text/{subtype}; charset="utf-8"{_CRLF}'
            f"Content-Transfer-Encoding: {cte}{_CRLF}{_CRLF}{encoded}")


def _multipart(boundary: str) -> str:
    line = f'Content-Type: multipart/alternative; boundary="{boundary}"'
    return line + _CRLF if len(line) <= _MAX_LINE else line.replace("; ", ";" + _CRLF + " ") + _CRLF


def compose(settings: Settings, target: EmailTarget, rendered: RenderedEmail, *,
            date: str | None = None, boundary: str | None = None) -> bytes:
    """The whole mail: headers (every value stripped of control characters), then a multipart/alternative
    body with the text part first. `date` and `boundary` are for tests; by default now and a random one."""
    recipient = recipient_address(target)
    sender = settings.email_from_address
    boundary = boundary or new_boundary()
    out = [
        _header("Subject", clean(rendered.subject)),
        _from_header(sender.display_name, sender.addr_spec),
        _address("To", recipient),
        _header("Message-ID", clean(target.message_id)),
        _header("Date", date or formatdate(localtime=False)),
    ]
    if target.unsubscribe_url:
        out += [_header("List-Unsubscribe", f"<{clean(target.unsubscribe_url)}>"),
                f"List-Unsubscribe-Post: List-Unsubscribe=One-Click{_CRLF}"]
    out += [
        f"Auto-Submitted: auto-generated{_CRLF}",
        f"X-Auto-Response-Suppress: All{_CRLF}",
        f"MIME-Version: 1.0{_CRLF}",
        _multipart(boundary),
        _CRLF,
        f"--{boundary}{_CRLF}",
        _part("plain", rendered.text),
        f"{_CRLF}--{boundary}{_CRLF}",
        _part("html", rendered.html),
        f"{_CRLF}--{boundary}--{_CRLF}",
    ]
    return "".join(out).encode("ascii")
