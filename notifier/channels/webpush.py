"""Web Push channel: VAPID keys (RFC 8292), subscription checks, aes128gcm delivery (RFC 8291).

Public: `generate_vapid_keys`, `load_vapid_private_key`, `validate_subscription`, `check_endpoint`,
`ValidSubscription`, `PushPayload`, `WebPushSender`, `MAX_PAYLOAD`.

We encrypt with pywebpush's `WebPusher.encode` and sign the JWT here instead of calling `pywebpush.webpush()`, which writes
`aud`/`exp` into the caller's claims dict, re-signs on every call and waits forever by default; and
py_vapid's signer refuses IPv6 origins and https subjects that have a path.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, NoReturn, Protocol, runtime_checkable
from urllib.parse import urlsplit

import requests
import urllib3
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from pywebpush import WebPusher
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.util import Retry, Timeout

from notifier.channels.base import DeliveryResult, PushTarget
from notifier.config import Settings
from notifier.enums import Channel
from notifier.errors import ConfigError, InvalidInput, PermanentError, SubscriptionGone, TransientError
from notifier.pushkeys import (  # noqa: F401 - re-exported: part of this channel's public API
    _KEY_VAR,
    ValidSubscription,
    _b64url,
    _b64url_decode,
    _decode_keys,
    _public_point,
    check_endpoint,
    generate_vapid_keys,
    load_vapid_private_key,
    validate_subscription,
)
from notifier.pushkeys import (
    check_subject as _check_subject,
)

logger = logging.getLogger(__name__)

MAX_PAYLOAD = 3993  # RFC 8291 §4: one 4096-byte record = 86 header + plaintext + 1 delimiter + 16 tag
_JWT_LIFETIME = 12 * 3600  # RFC 8292 caps exp at 24 h; half of that tolerates clock skew
_JWT_REFRESH_MARGIN = 600  # re-sign this early so no request carries a token about to expire
_OPAQUE = re.compile(r"[A-Za-z0-9_\-+/=.~%]{24,}")  # tokens and ids a push service may echo back
_NO_RETRIES = Retry(0, read=False)  # as requests sends: one try; a failed push is retried by the ledger


class _Answer(NamedTuple):
    status: int
    text: str
    location: str | None
    retry_after: str | None


class _Way(NamedTuple):
    """How pushes reach one push service: the session's adapter, a request naming the origin (all that
    picks the connection pool and the proxy), the TLS and proxy settings, and the session's headers."""

    adapter: HTTPAdapter
    request: requests.PreparedRequest
    environment: dict[str, Any]  # proxies, verify, cert (`WebPushSender._environment`)
    full_url: bool  # through a plain-HTTP proxy the request line names the whole URL
    headers: dict[str, str]


def _sign_jwt(claims: Mapping[str, object], key: ec.EllipticCurvePrivateKey) -> str:
    signing_input = _b64url(b'{"typ":"JWT","alg":"ES256"}') + "." + _b64url(json.dumps(claims, sort_keys=True).encode())
    r, s = decode_dss_signature(key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"  # JWS: raw r||s, not DER


def _topic(dialog_id: int) -> str:
    # One topic per dialog: a newer push replaces one still queued for an offline browser, so a returning
    # manager sees one notification per dialog, and a send retried after a timeout cannot show twice.
    topic = f"dialog-{dialog_id}"
    return topic if len(topic) <= 32 else _b64url(hashlib.sha256(topic.encode()).digest())[:32]


def _failure(exc: Exception) -> str:
    """What went wrong, by class name only: str(exc) carries the endpoint's path. urllib3's "max retries"
    wraps the real cause (a refused connection, a proxy or TLS error)."""
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    return type(exc).__name__


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds from Retry-After, which is either delta-seconds or an HTTP-date."""
    value = (value or "").strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now) if when.tzinfo is not None else None


@runtime_checkable
class PushPayload(Protocol):
    """What the sender needs from a rendered push (`notifier.render.RenderedPush`)."""

    @property
    def dialog_id(self) -> int: ...

    def payload(self) -> bytes: ...


class WebPushSender:
    """One per worker process: one VAPID key, one keep-alive session, one signed header per push service."""

    channel = Channel.WEBPUSH

    def __init__(
        self, settings: Settings, session: requests.Session | None = None, *, clock: Callable[[], float] | None = None
    ) -> None:
        self._subject = _check_subject(settings.vapid_subject)
        if not settings.vapid_private_key:
            raise ConfigError(f"{_KEY_VAR} is not set (generate a key pair with `notifier vapid`)")
        self._key = load_vapid_private_key(settings.vapid_private_key)
        self.public_key = _b64url(_public_point(self._key))  # the browser's applicationServerKey
        self._allowed, self._ttl = settings.push_allowed_hosts, str(max(0, settings.push_ttl_seconds))
        self._timeout = (min(5.0, settings.push_timeout_seconds), settings.push_timeout_seconds)
        self._urllib3_timeout = Timeout(connect=self._timeout[0], read=self._timeout[1])
        self._owns_session = session is None
        self._session = requests.Session() if session is None else session
        if session is None:
            # Up to NOTIFIER_MAX_IN_FLIGHT_PER_HOST pushes run at once per push service (notifier.sending),
            # each on a kept-alive connection of its own: requests' default pool keeps only 10 per host.
            adapter = HTTPAdapter(pool_connections=16, pool_maxsize=settings.max_in_flight_per_host)
            self._session.mount("https://", adapter)
            self._session.mount("http://", adapter)
        self._environments: dict[str, dict[str, Any]] = {}  # origin -> proxies, verify, cert: read once
        self._ways: dict[str, _Way] = {}  # origin -> how our own session reaches it
        # Looked up per call, not bound at import, so a frozen test clock applies here too.
        self._clock = clock or (lambda: time.time())
        self._lock = threading.Lock()
        self._headers: dict[str, tuple[str, float]] = {}  # origin -> (Authorization, re-sign after)
        self.signatures_made = 0

    def _authorization(self, origin: str) -> str:
        now = self._clock()
        with self._lock:
            cached = self._headers.get(origin)
            if cached is not None and now < cached[1]:
                return cached[0]
            exp = int(now) + _JWT_LIFETIME
            token = _sign_jwt({"aud": origin, "exp": exp, "sub": self._subject}, self._key)  # a fresh dict each time
            header = f"vapid t={token}, k={self.public_key}"
            self._headers[origin] = (header, exp - _JWT_REFRESH_MARGIN)
            self.signatures_made += 1
            return header

    def _environment(self, origin: str) -> dict[str, Any]:
        """What requests would take from the session and the environment for this origin (proxies, CA
        bundle, client certificate), read on the first push to it and kept."""
        with self._lock:
            found = self._environments.get(origin)
            if found is None:
                merged = self._session.merge_environment_settings(origin + "/", {}, None, None, None)
                found = self._environments[origin] = {k: merged[k] for k in ("proxies", "verify", "cert")}
            return found

    def _post(self, origin: str, url: str, body: bytes, headers: dict[str, str]) -> _Answer:
        """POST one push; its answer read whole, so the connection goes back to the pool. Never follows a
        redirect (a push service never sends one; we would not follow). Not through `Session.post`: what it
        adds is nothing a push needs and cost half of the CPU of a push (cookies, hooks, redirects, the
        environment read again on every request), and ~/.netrc's Basic credentials would replace the VAPID
        Authorization header."""
        if not self._owns_session:
            return self._post_through_adapter(origin, url, body, headers)
        way = self._way(origin, url)
        parts = urlsplit(url)
        target = url if way.full_url else (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        pool = way.adapter.get_connection_with_tls_context(way.request, **way.environment)
        response = pool.urlopen(
            "POST", target, body=body, headers={**way.headers, **headers}, redirect=False, assert_same_host=False,
            retries=_NO_RETRIES, timeout=self._urllib3_timeout, preload_content=True, decode_content=True,
        )
        return _Answer(response.status, response.data.decode("utf-8", "replace"),
                       response.headers.get("Location"), response.headers.get("Retry-After"))

    def _way(self, origin: str, url: str) -> _Way:
        """How requests would reach this push service (proxy, CA bundle, client certificate, the session's
        headers), worked out on the first push to it and kept: each push then goes straight to the pool of
        the session's own adapter (about 0.3 ms of CPU less per push than through `HTTPAdapter.send`)."""
        with self._lock:
            found = self._ways.get(origin)
        if found is not None:
            return found
        env = self._environment(origin)
        request = requests.PreparedRequest()
        request.prepare(method="POST", url=origin + "/")
        adapter = self._session.get_adapter(url)
        assert isinstance(adapter, HTTPAdapter)
        pool = adapter.get_connection_with_tls_context(request, env["verify"], env["proxies"], env["cert"])
        adapter.cert_verify(pool, request.url or url, env["verify"], env["cert"])  # a missing CA bundle: said now
        headers = {k: v for k, v in self._session.headers.items() if isinstance(v, str)}
        found = _Way(adapter, request, env, adapter.request_url(request, env["proxies"]) != request.path_url, headers)
        with self._lock:
            self._ways[origin] = found
        return found

    def _post_through_adapter(self, origin: str, url: str, body: bytes, headers: dict[str, str]) -> _Answer:
        """An injected session is honoured whole: its adapter sends (it may count, sign or route)."""
        merged = CaseInsensitiveDict(self._session.headers)  # the session's own (User-Agent, Accept...)
        merged.update(headers)
        prepared = requests.PreparedRequest()
        prepared.prepare(method="POST", url=url, headers=merged, data=body)
        adapter = self._session.get_adapter(url)
        with adapter.send(prepared, stream=False, timeout=self._timeout, **self._environment(origin)) as response:
            return _Answer(response.status_code, response.text, response.headers.get("Location"),
                           response.headers.get("Retry-After"))

    def send(self, target: PushTarget, rendered: PushPayload) -> DeliveryResult:
        try:
            # Again at send time: the allow list may have shrunk since the subscription was stored.
            origin = check_endpoint(target.endpoint, self._allowed)
            _decode_keys(target.p256dh, target.auth)  # refuse a corrupt row before encrypting
        except InvalidInput as exc:
            raise PermanentError(f"subscription {target.subscription_id} refused: {exc}") from None
        if len(payload := rendered.payload()) > MAX_PAYLOAD:
            logger.error("push payload of %d bytes exceeds %d — this is a bug", len(payload), MAX_PAYLOAD)
            raise PermanentError(f"push payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        # RFC 8291 encryption by pywebpush (a fresh ephemeral key and salt per message); the HTTP request,
        # VAPID signing and caching stay ours (see the module docstring for why not webpush()).
        subscription = {"endpoint": target.endpoint, "keys": {"p256dh": target.p256dh, "auth": target.auth}}
        body: bytes = WebPusher(subscription).encode(payload, content_encoding="aes128gcm")["body"]
        headers = {
            "Authorization": self._authorization(origin),
            "TTL": self._ttl,
            "Urgency": "high",  # a visitor is waiting for an answer
            "Topic": _topic(rendered.dialog_id),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
        }
        try:
            status, text, location, retry_after = self._post(origin, target.endpoint, body, headers)
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            # str(exc) carries the endpoint path; the class name is enough to act on.
            logger.warning("push to %s failed: %s", origin, _failure(exc))
            raise TransientError(f"push service {origin} unreachable: {_failure(exc)}") from None
        if status in (200, 201, 202):
            logger.debug("push to %s for subscription %d accepted (%d)", origin, target.subscription_id, status)
            return DeliveryResult(ref=location, detail=f"push service answered {status}")
        self._refused(origin, target.subscription_id, status, text, retry_after)

    def _refused(self, origin: str, sub_id: int, status: int, text: str, retry_after: str | None) -> NoReturn:
        if status in (404, 410):
            logger.info("push service %s says subscription %d is gone (%d)", origin, sub_id, status)
            raise SubscriptionGone(f"push service {origin} answered {status}: subscription gone")
        if status == 413:
            logger.error("push service %s answered 413 payload too large — this is a bug", origin)
            raise PermanentError(f"push service {origin} answered 413: payload too large")
        if status == 429 or status >= 500:
            wait = _retry_after(retry_after, self._clock())
            logger.warning("push service %s answered %d, retry after %s s", origin, status, wait)
            raise TransientError(f"push service {origin} answered {status}", retry_after=wait)
        if status in (401, 403):
            with self._lock:  # never reuse a token the service refused
                self._headers.pop(origin, None)
        excerpt = _OPAQUE.sub("[…]", " ".join(text.split()))[:200]
        logger.warning("push service %s refused subscription %d: %d %s", origin, sub_id, status, excerpt)
        raise PermanentError(f"push service {origin} answered {status}: {excerpt}")

    def close(self) -> None:
        if self._owns_session:  # an injected session belongs to whoever made it
            self._session.close()
