"""Web Push keys and subscriptions: VAPID key handling and the checks a subscription passes before it is
stored and again before anything is sent to it (no SSRF: https, allowed push-service hosts only).

Light on purpose (cryptography only): `worker.client` imports it to validate subscriptions in the host.
Public: `generate_vapid_keys`, `load_vapid_private_key`, `validate_subscription`, `check_endpoint`,
`ValidSubscription`.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notifier.errors import ConfigError, InvalidInput

_B64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_HOSTNAME = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)*")  # what DNS can resolve; urllib3 and WHATWG disagree on the rest
_OPAQUE = re.compile(r"[A-Za-z0-9_\-+/=.~%]{24,}")  # tokens and ids a push service may echo back
_KEY_VAR, _SUBJECT_VAR = "NOTIFIER_VAPID_PRIVATE_KEY", "NOTIFIER_VAPID_SUBJECT"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(value: object) -> bytes | None:
    # Strict on purpose: base64.urlsafe_b64decode silently skips characters outside the alphabet.
    if not isinstance(value, str) or not _B64URL.fullmatch(value) or len(bare := value.rstrip("=")) % 4 == 1:
        return None
    return base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))


def _public_point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def generate_vapid_keys() -> tuple[str, str]:
    """(private, public): the raw 32-byte scalar, and the 65-byte point that the browser's subscribe() takes."""
    key = ec.generate_private_key(ec.SECP256R1())
    return _b64url(key.private_numbers().private_value.to_bytes(32, "big")), _b64url(_public_point(key))


def load_vapid_private_key(value: str) -> ec.EllipticCurvePrivateKey:
    """The raw URL-safe base64 scalar, or an unencrypted PEM (PKCS8 or SEC1). Never echoes the value."""
    text, key = value.strip(), None
    try:
        if text.startswith("-----BEGIN"):
            # .env files and compose often carry a PEM on one line with literal "\n".
            pem = text if "\n" in text else text.replace("\\n", "\n")
            key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
        elif (raw := _b64url_decode(text)) is not None and len(raw) == 32:
            key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(
            f"{_KEY_VAR} is not a P-256 private key: expected 32 raw bytes in URL-safe base64 "
            "(as `notifier vapid` prints) or an unencrypted PEM"
        )
    return key


@dataclass(frozen=True)
class ValidSubscription:
    endpoint: str
    p256dh: str  # URL-safe base64, padding stripped
    auth: str


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_loopback(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost") or ((ip := _ip(host)) is not None and ip.is_loopback)


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    if _is_loopback(host):
        return host in allowed  # exact entries only: no wildcard may open the worker's own ports
    if (ip := _ip(host)) is not None:
        # Private, link-local (cloud metadata), reserved, multicast: never, whatever the list says.
        return ip.is_global and not ip.is_multicast and host in allowed
    if not _HOSTNAME.fullmatch(host):
        return False
    return any(host.endswith(entry[1:]) if entry.startswith("*.") else host == entry for entry in allowed)


def check_endpoint(endpoint: object, allowed_hosts: tuple[str, ...]) -> str:
    """The endpoint's origin (scheme://host[:port], the JWT `aud`) if we may POST to it; else InvalidInput."""
    if not isinstance(endpoint, str) or not endpoint:
        raise InvalidInput("subscription endpoint is missing or not a string")
    if len(endpoint) > 2048 or not endpoint.isprintable() or " " in endpoint:
        raise InvalidInput("subscription endpoint is not a well-formed URL")
    try:
        parts = urlsplit(endpoint)
    except ValueError:  # e.g. an unclosed IPv6 bracket, "https://[::1"
        raise InvalidInput("subscription endpoint is not a well-formed URL") from None
    try:
        port = parts.port
    except ValueError:
        raise InvalidInput("subscription endpoint has an invalid port") from None
    host = parts.hostname
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidInput(f"subscription endpoint must be an https URL, got scheme {parts.scheme!r}")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("subscription endpoint must not carry credentials")
    if not _host_allowed(host, allowed_hosts):
        raise InvalidInput(f"subscription endpoint host {host!r} is not an allowed push service")
    if parts.scheme == "http" and not _is_loopback(host):  # loopback got here only by being listed
        raise InvalidInput("subscription endpoint must use https")
    netloc = f"[{host}]" if ":" in host else host
    default = port is None or port == (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{netloc}" + ("" if default else f":{port}")


def _decode_keys(p256dh: object, auth: object) -> tuple[bytes, bytes]:
    if p256dh is None or auth is None:
        raise InvalidInput("subscription keys.p256dh and keys.auth are required")
    if (point := _b64url_decode(p256dh)) is None:
        raise InvalidInput("subscription keys.p256dh is not URL-safe base64")
    # Browsers send the 65-byte uncompressed point and RFC 8291 mixes exactly those bytes into the key
    # derivation: a compressed (33-byte) form would encrypt to something the browser cannot read.
    if len(point) != 65 or point[0] != 4:
        raise InvalidInput("subscription keys.p256dh must be a 65-byte uncompressed P-256 point")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise InvalidInput("subscription keys.p256dh is not a point on the P-256 curve") from None
    if (secret := _b64url_decode(auth)) is None or len(secret) != 16:
        raise InvalidInput("subscription keys.auth must be 16 bytes in URL-safe base64")
    return point, secret


def validate_subscription(sub: Mapping[str, object], allowed_hosts: tuple[str, ...]) -> ValidSubscription:
    """Check a browser's `PushSubscription.toJSON()` before storing it; InvalidInput says what is wrong."""
    if not isinstance(sub, Mapping):
        raise InvalidInput("subscription must be a JSON object")
    endpoint, keys = sub.get("endpoint"), sub.get("keys")
    check_endpoint(endpoint, allowed_hosts)
    if not isinstance(keys, Mapping):
        raise InvalidInput("subscription keys are missing")
    p256dh, auth = keys.get("p256dh"), keys.get("auth")
    _decode_keys(p256dh, auth)
    assert isinstance(endpoint, str) and isinstance(p256dh, str) and isinstance(auth, str)
    return ValidSubscription(endpoint, p256dh.rstrip("="), auth.rstrip("="))


def check_subject(subject: str | None) -> str:
    """The VAPID `sub` claim: a mailto: address or an https: URL (push services contact us there)."""
    if not subject:
        raise ConfigError("NOTIFIER_VAPID_SUBJECT is not set: push services require a contact, e.g. mailto:ops@example.com")
    if (subject.startswith("mailto:") and "@" in subject) or (subject.startswith("https://") and urlsplit(subject).hostname):
        return subject
    raise ConfigError(f"NOTIFIER_VAPID_SUBJECT must be a mailto: address or an https: URL, got {subject!r}")
