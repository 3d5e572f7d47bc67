"""One-click unsubscribe (RFC 8058): signed links that turn a channel off for one manager, no login needed.

A token names the manager, the channel and an expiry 30 days out, signed with HMAC-SHA256 under
NOTIFIER_SECRET_KEY: `<payload>.<signature>`, both URL-safe base64. A forged, altered or expired token is
refused with InvalidInput; nothing else is needed to verify it (no table of issued tokens). Stdlib only:
the host's API process verifies tokens through the kit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from urllib.parse import quote

from notifier.enums import Channel
from notifier.errors import ConfigError, InvalidInput

LIFETIME_SECONDS = 30 * 86400
_PAYLOAD = re.compile(r"([1-9][0-9]{0,18})\.(email|webpush)\.([0-9]{1,12})")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", text) or len(text) % 4 == 1:
        raise InvalidInput("token is malformed")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), b"notifier-unsubscribe\0" + payload, hashlib.sha256).digest()


def make_token(secret: str | None, manager_id: int, channel: Channel, now: float) -> str:
    if not secret:
        raise ConfigError("NOTIFIER_SECRET_KEY is not set: unsubscribe links cannot be signed")
    payload = f"{manager_id}.{channel.value}.{int(now + LIFETIME_SECONDS)}".encode()
    return f"{_b64(payload)}.{_b64(_sign(secret, payload))}"


def read_token(secret: str | None, token: object, now: float) -> tuple[int, Channel]:
    """(manager id, channel) of a valid token; InvalidInput for a forged, altered, malformed or expired one."""
    if not secret:
        raise ConfigError("NOTIFIER_SECRET_KEY is not set: unsubscribe links cannot be verified")
    if not isinstance(token, str) or len(token) > 200 or token.count(".") != 1:
        raise InvalidInput("token is malformed")
    encoded, signature = token.split(".")
    payload, given = _unb64(encoded), _unb64(signature)
    if not hmac.compare_digest(given, _sign(secret, payload)):
        raise InvalidInput("token signature does not match")
    match = _PAYLOAD.fullmatch(payload.decode("ascii", "replace"))
    if match is None:
        raise InvalidInput("token is malformed")
    if int(match.group(3)) < now:
        raise InvalidInput("token has expired; use the link in a newer email or the notification settings")
    return int(match.group(1)), Channel(match.group(2))


def unsubscribe_url(public_url: str | None, secret: str | None, manager_id: int, channel: Channel, now: float) -> str | None:
    """The link for an email's List-Unsubscribe header and footer, or None without NOTIFIER_PUBLIC_URL."""
    if not public_url:
        return None
    return f"{public_url}/unsubscribe?token={quote(make_token(secret, manager_id, channel, now))}"
