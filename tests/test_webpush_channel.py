"""Web Push channel against a real push service on loopback that verifies VAPID and decrypts (no mocks)."""

from __future__ import annotations

import base64
import copy
import email.utils
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notifier.channels import build_sender
from notifier.channels.base import PushTarget
from notifier.channels.webpush import (
    MAX_PAYLOAD,
    ValidSubscription,
    WebPushSender,
    check_endpoint,
    generate_vapid_keys,
    load_vapid_private_key,
    validate_subscription,
)
from notifier.config import Settings, load_settings
from notifier.enums import Channel
from notifier.errors import ConfigError, InvalidInput, PermanentError, SubscriptionGone, TransientError
from tests.procs import TcpProxy
from tests.pushservice import PushService, b64url

SUBJECT = "mailto:ops@example.com"
LOOPBACK = ("127.0.0.1",)
WNS = ("*.notify.windows.com",)


@dataclass(frozen=True)
class Push:
    """Stands in for notifier.render.RenderedPush: the sender only needs payload() and dialog_id."""

    dialog_id: int
    body: str = "Посетитель ждёт ответа"

    def payload(self) -> bytes:
        return json.dumps({"title": "Новое сообщение", "body": self.body, "dialog_id": self.dialog_id}).encode()


@pytest.fixture(scope="module")
def vapid() -> tuple[str, str]:
    return generate_vapid_keys()


def push_settings(private_key: str, **env: str) -> Settings:
    base = {
        "NOTIFIER_VAPID_PRIVATE_KEY": private_key,
        "NOTIFIER_VAPID_SUBJECT": SUBJECT,
        "NOTIFIER_PUSH_ALLOWED_HOSTS": "127.0.0.1",
    }
    return load_settings({**base, **env})


@pytest.fixture
def service() -> Iterator[PushService]:
    with PushService() as svc:
        yield svc


@pytest.fixture
def sender(vapid: tuple[str, str]) -> Iterator[WebPushSender]:
    s = WebPushSender(push_settings(vapid[0]))
    yield s
    s.close()


def target(sub: dict[str, Any], sub_id: int = 1) -> PushTarget:
    return PushTarget(sub_id, sub["endpoint"], sub["keys"]["p256dh"], sub["keys"]["auth"])


# --- VAPID keys --------------------------------------------------------------------------------------


def test_generated_keys_are_raw_unpadded_b64url_and_load_back(vapid: tuple[str, str]) -> None:
    private, public = vapid
    assert "=" not in private + public
    raw_public = base64.urlsafe_b64decode(public + "=")
    assert len(base64.urlsafe_b64decode(private + "=")) == 32
    assert len(raw_public) == 65 and raw_public[0] == 4
    key = load_vapid_private_key(private)
    assert key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint) == raw_public


@pytest.mark.parametrize("fmt", [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL])
def test_pem_keys_are_accepted_even_on_one_line(vapid: tuple[str, str], fmt: serialization.PrivateFormat) -> None:
    key = load_vapid_private_key(vapid[0])
    pem = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()
    for text in (pem, pem.replace("\n", "\\n")):  # the second is how .env files carry it
        assert load_vapid_private_key(text).private_numbers() == key.private_numbers()


@pytest.mark.parametrize(
    "value",
    [
        "S3cr3t-but-not-a-key",
        b64url(os.urandom(31)),
        b64url(b"\x00" * 32),  # zero is not a valid scalar
        "-----BEGIN PRIVATE KEY-----\nTOPSECRETGARBAGE\n-----END PRIVATE KEY-----\n",
        ec.generate_private_key(ec.SECP384R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode(),
    ],
    ids=["text", "31-bytes", "zero", "bad-pem", "p384"],
)
def test_garbage_keys_are_refused_without_echoing_them(value: str) -> None:
    with pytest.raises(ConfigError, match="NOTIFIER_VAPID_PRIVATE_KEY") as info:
        load_vapid_private_key(value)
    message = str(info.value)
    assert value.strip() not in message and "SECRET" not in message and "S3cr3t" not in message


# --- subscriptions -----------------------------------------------------------------------------------


def test_browser_subscription_is_accepted_when_loopback_is_allowed(service: PushService) -> None:
    sub = service.new_subscription("alice")
    before = copy.deepcopy(sub)
    valid = validate_subscription(sub, LOOPBACK)
    assert valid == ValidSubscription(sub["endpoint"], sub["keys"]["p256dh"], sub["keys"]["auth"])
    assert sub == before  # the caller's dict is left alone
    padded = {**sub, "keys": {k: v + "=" * (-len(v) % 4) for k, v in sub["keys"].items()}}
    assert validate_subscription(padded, LOOPBACK) == valid  # padding is accepted and stripped


def _with_keys(sub: dict[str, Any], **keys: Any) -> dict[str, Any]:
    merged = {**sub["keys"], **keys}
    return {**sub, "keys": {k: v for k, v in merged.items() if v is not None}}


def _compressed_point() -> str:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    return b64url(public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda s: {"endpoint": s["endpoint"]}, "keys are missing"),
        (lambda s: _with_keys(s, p256dh=None), "are required"),
        (lambda s: _with_keys(s, auth=None), "are required"),
        (lambda s: _with_keys(s, p256dh="not base64 at all!"), "not URL-safe base64"),
        (lambda s: _with_keys(s, p256dh=base64.b64encode(b"\xfb\xff" * 33).decode()), "not URL-safe base64"),
        (lambda s: _with_keys(s, p256dh=b64url(b"\x04" + os.urandom(64))), "not a point on the P-256 curve"),
        # Refused by decision: RFC 8291 derives keys from the exact uncompressed bytes browsers send.
        (lambda s: _with_keys(s, p256dh=_compressed_point()), "65-byte uncompressed"),
        (lambda s: _with_keys(s, auth=b64url(os.urandom(15))), "16 bytes"),
        (lambda s: _with_keys(s, auth="@@@"), "16 bytes"),
        (lambda s: {**s, "endpoint": None}, "missing or not a string"),
        (lambda s: {**s, "endpoint": 42}, "missing or not a string"),
    ],
    ids=[
        "no-keys",
        "no-p256dh",
        "no-auth",
        "p256dh-garbage",
        "p256dh-std-b64",
        "off-curve",
        "compressed",
        "auth-15",
        "auth-bad",
        "no-endpoint",
        "int-endpoint",
    ],  # noqa: E501
)
def test_malformed_subscriptions_are_refused(service: PushService, change: Any, error: str) -> None:
    with pytest.raises(InvalidInput, match=error):
        validate_subscription(change(service.new_subscription("bob")), LOOPBACK)


@pytest.mark.parametrize(
    ("endpoint", "allowed", "error"),
    [
        ("http://127.0.0.1:6379/", ("fcm.googleapis.com",), "not an allowed"),
        ("https://localhost/push/x", ("fcm.googleapis.com", "*.localhost"), "not an allowed"),
        ("https://[::1]/push/x", ("fcm.googleapis.com",), "not an allowed"),
        ("https://10.0.0.5/x", ("10.0.0.5",), "not an allowed"),  # listed, still never
        ("https://192.168.1.1/", ("192.168.1.1",), "not an allowed"),
        ("https://169.254.169.254/latest/meta-data", ("169.254.169.254",), "not an allowed"),
        ("https://[::ffff:10.0.0.5]/x", ("::ffff:10.0.0.5",), "not an allowed"),
        ("https://evil.example.com/", ("fcm.googleapis.com",), "'evil.example.com' is not an allowed"),
        ("ftp://fcm.googleapis.com/x", ("fcm.googleapis.com",), "must be an https URL"),
        ("http://fcm.googleapis.com/fcm/send/x", ("fcm.googleapis.com",), "must use https"),
        ("https://fcm.googleapis.com@evil.example.com/", ("fcm.googleapis.com",), "credentials"),
        ("https://fcm.googleapis.com:99999/x", ("fcm.googleapis.com",), "invalid port"),
        ("https://fcm.googleapis.com/x y", ("fcm.googleapis.com",), "well-formed"),
        ("https://evil.example.com\\.push.apple.com/x", ("*.push.apple.com",), "not an allowed"),
        ("https://fcm.googleapis.com./x", ("fcm.googleapis.com",), "not an allowed"),
    ],
)
def test_endpoints_outside_the_allow_list_are_refused(endpoint: str, allowed: tuple[str, ...], error: str) -> None:
    with pytest.raises(InvalidInput, match=error):
        check_endpoint(endpoint, allowed)


def test_wildcards_match_subdomains_only() -> None:
    assert check_endpoint("https://wns2-par02p.notify.windows.com/w/?token=x", WNS) == "https://wns2-par02p.notify.windows.com"
    for host in ("notify.windows.com.evil.com", "evilnotify.windows.com", "notify.windows.com"):
        with pytest.raises(InvalidInput, match="not an allowed"):
            check_endpoint(f"https://{host}/w/", WNS)


def test_check_endpoint_returns_the_origin_used_as_jwt_audience() -> None:
    allowed = ("fcm.googleapis.com", "localhost")
    assert check_endpoint("https://fcm.googleapis.com:443/fcm/send/abc", allowed) == "https://fcm.googleapis.com"
    assert check_endpoint("https://FCM.googleapis.com/fcm/send/abc", allowed) == "https://fcm.googleapis.com"
    assert check_endpoint("http://localhost:8080/p", allowed) == "http://localhost:8080"  # listed loopback: http allowed


# --- configuration -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"NOTIFIER_VAPID_SUBJECT": ""}, "NOTIFIER_VAPID_SUBJECT is not set"),
        ({"NOTIFIER_VAPID_SUBJECT": "ops@example.com"}, "mailto: address or an https: URL"),
        ({"NOTIFIER_VAPID_SUBJECT": "http://replyx.ru"}, "mailto: address or an https: URL"),
        ({"NOTIFIER_VAPID_PRIVATE_KEY": ""}, "NOTIFIER_VAPID_PRIVATE_KEY is not set"),
        ({"NOTIFIER_VAPID_PRIVATE_KEY": "hunter2hunter2"}, "not a P-256 private key"),
    ],
)
def test_sender_refuses_bad_configuration(vapid: tuple[str, str], env: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError, match=error) as info:
        WebPushSender(push_settings(vapid[0], **env))
    assert "hunter2" not in str(info.value) and vapid[0] not in str(info.value)


def test_https_subject_with_a_path_is_accepted(vapid: tuple[str, str]) -> None:
    WebPushSender(push_settings(vapid[0], NOTIFIER_VAPID_SUBJECT="https://replyx.ru/contact")).close()


def test_registry_builds_the_webpush_sender(vapid: tuple[str, str]) -> None:
    built = build_sender(Channel.WEBPUSH, push_settings(vapid[0]))
    assert isinstance(built, WebPushSender) and built.channel is Channel.WEBPUSH
    built.close()


# --- sending -----------------------------------------------------------------------------------------


def _auth_params(received_headers: dict[str, str]) -> dict[str, str]:
    scheme, _, params = received_headers["authorization"].partition(" ")
    assert scheme == "vapid"
    return dict(item.strip().split("=", 1) for item in params.split(","))


def test_push_arrives_encrypted_with_the_expected_headers(service: PushService, vapid: tuple[str, str]) -> None:
    sender = WebPushSender(push_settings(vapid[0], NOTIFIER_PUSH_TTL_SECONDS="600"))
    try:
        result = sender.send(target(service.new_subscription("alice")), Push(42))
    finally:
        sender.close()
    [got] = service.wait_for(1)
    assert service.rejections == []
    assert got.name == "alice" and got.payload == json.loads(Push(42).payload())
    assert result.ref is not None and result.ref.startswith(f"{service.origin}/message/")
    headers = got.headers
    assert (headers["ttl"], headers["urgency"], headers["topic"]) == ("600", "high", "dialog-42")
    assert (headers["content-encoding"], headers["content-type"]) == ("aes128gcm", "application/octet-stream")
    assert _auth_params(headers)["k"] == vapid[1] == sender.public_key
    assert got.jwt_claims["aud"] == service.origin and got.jwt_claims["sub"] == SUBJECT
    assert abs(got.jwt_claims["exp"] - (time.time() + 12 * 3600)) < 60


def test_topic_is_stable_per_dialog_and_fits_for_huge_ids(service: PushService, sender: WebPushSender) -> None:
    sub = target(service.new_subscription("alice"))
    for dialog_id in (7, 7, 10**40):
        sender.send(sub, Push(dialog_id))
    topics = [r.headers["topic"] for r in service.wait_for(3)]
    assert topics[0] == topics[1] == "dialog-7"
    assert len(topics[2]) <= 32 and topics[2] != topics[0]
    assert service.rejections == []  # the service checked the alphabet too


def test_every_browser_of_a_manager_receives(service: PushService, sender: WebPushSender) -> None:
    laptop, phone = service.new_subscription("laptop"), service.new_subscription("phone")
    sender.send(target(laptop, 1), Push(5))
    sender.send(target(phone, 2), Push(5))
    service.wait_for(2)
    assert [r.payload["dialog_id"] for r in service.received_for("laptop") + service.received_for("phone")] == [5, 5]
    assert service.rejections == []


def test_ten_sends_reuse_one_connection_and_one_signature(service: PushService, sender: WebPushSender) -> None:
    sub = target(service.new_subscription("alice"))
    for i in range(10):
        sender.send(sub, Push(i))
    assert len(service.wait_for(10)) == 10
    assert (service.connections, service.requests, sender.signatures_made) == (1, 10, 1)
    assert len({r.headers["authorization"] for r in service.received}) == 1
    assert service.rejections == []


def test_each_push_service_gets_its_own_audience(sender: WebPushSender) -> None:
    # pywebpush writes the first endpoint's `aud` into a shared claims dict; here every origin signs its own.
    with PushService() as first, PushService() as second:
        for svc in (first, second, first, second):
            sender.send(target(svc.new_subscription("x")), Push(1))
        assert [r.jwt_claims["aud"] for r in first.received + second.received] == [first.origin] * 2 + [second.origin] * 2
        assert sender.signatures_made == 2 and first.rejections == second.rejections == []


def test_signed_header_is_renewed_ten_minutes_before_it_expires(service: PushService, vapid: tuple[str, str]) -> None:
    now = [time.time()]
    sender = WebPushSender(push_settings(vapid[0]), clock=lambda: now[0])
    sub = target(service.new_subscription("alice"))
    try:
        sender.send(sub, Push(1))
        now[0] += 12 * 3600 - 600 - 1  # one second before the renewal point: still cached
        sender.send(sub, Push(1))
        assert sender.signatures_made == 1
        now[0] += 1  # at the renewal point: signed again
        sender.send(sub, Push(1))
        assert sender.signatures_made == 2
    finally:
        sender.close()
    exps = [r.jwt_claims["exp"] for r in service.wait_for(3)]
    assert exps[0] == exps[1] < exps[2]
    assert service.rejections == []


def test_concurrent_sends_share_one_signature(service: PushService, sender: WebPushSender) -> None:
    subs = [target(service.new_subscription(f"m{i}"), i) for i in range(8)]
    threads = [threading.Thread(target=sender.send, args=(sub, Push(3))) for sub in subs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(service.wait_for(8)) == 8 and sender.signatures_made == 1 and service.rejections == []


@pytest.mark.parametrize("status", [404, 410])
def test_gone_subscriptions_raise_subscription_gone(service: PushService, sender: WebPushSender, status: int) -> None:
    sub = target(service.new_subscription("alice"))
    service.script("alice", [status])
    with pytest.raises(SubscriptionGone, match=str(status)):
        sender.send(sub, Push(1))
    assert service.received == [] and service.rejections == []


def test_unsubscribed_browser_is_gone(service: PushService, sender: WebPushSender) -> None:
    sub = target(service.new_subscription("alice"))
    service.unsubscribe("alice")
    with pytest.raises(SubscriptionGone):
        sender.send(sub, Push(1))


def test_429_carries_retry_after_seconds_and_the_next_try_succeeds(service: PushService, sender: WebPushSender) -> None:
    sub = target(service.new_subscription("alice"))
    service.script("alice", [(429, {"Retry-After": "7"})])
    with pytest.raises(TransientError) as info:
        sender.send(sub, Push(1))
    assert info.value.retry_after == 7
    sender.send(sub, Push(1))
    assert len(service.wait_for(1)) == 1 and service.rejections == []


def test_5xx_is_transient_with_http_date_retry_after(service: PushService, sender: WebPushSender) -> None:
    sub = target(service.new_subscription("alice"))
    service.script("alice", [500, (503, {"Retry-After": email.utils.formatdate(time.time() + 120, usegmt=True)})])
    with pytest.raises(TransientError) as first:
        sender.send(sub, Push(1))
    with pytest.raises(TransientError) as second:
        sender.send(sub, Push(1))
    assert first.value.retry_after is None
    assert second.value.retry_after is not None and 110 <= second.value.retry_after <= 120
    assert service.received == [] and service.rejections == []


def test_413_is_a_logged_bug(service: PushService, sender: WebPushSender, caplog: pytest.LogCaptureFixture) -> None:
    sub = target(service.new_subscription("alice"))
    service.script("alice", [413])
    with caplog.at_level(logging.ERROR, logger="notifier"), pytest.raises(PermanentError, match="413"):
        sender.send(sub, Push(1))
    assert any(r.levelno == logging.ERROR and "bug" in r.getMessage() for r in caplog.records)


def test_oversized_payload_is_refused_before_sending(service: PushService, sender: WebPushSender) -> None:
    with pytest.raises(PermanentError, match="exceeds"):
        sender.send(target(service.new_subscription("alice")), Push(1, body="ж" * MAX_PAYLOAD))
    assert service.requests == 0


def test_largest_allowed_payload_fits_one_record(service: PushService, sender: WebPushSender) -> None:
    overhead = len(Push(1, body="").payload())
    sender.send(target(service.new_subscription("alice")), Push(1, body="x" * (MAX_PAYLOAD - overhead)))
    assert len(service.wait_for(1)) == 1 and service.rejections == []


def test_4xx_is_permanent_with_a_secret_free_excerpt(service: PushService, sender: WebPushSender) -> None:
    sub = target(service.new_subscription("alice"))
    token = b64url(os.urandom(48))
    service.script("alice", [(400, {}, f'{{"error": "bad request", "token": "{token}"}}'.encode()), 401])
    with pytest.raises(PermanentError, match="400") as info:
        sender.send(sub, Push(1))
    assert "bad request" in str(info.value) and token not in str(info.value)
    with pytest.raises(PermanentError, match="401"):
        sender.send(sub, Push(1))
    sender.send(sub, Push(1))  # a refused token is never reused
    assert sender.signatures_made == 2 and service.rejections == []


def test_redirects_are_not_followed(service: PushService, sender: WebPushSender) -> None:
    sub = target(service.new_subscription("alice"))
    elsewhere = service.new_subscription("elsewhere")["endpoint"]
    service.script("alice", [(307, {"Location": elsewhere})])
    with pytest.raises(PermanentError, match="307"):
        sender.send(sub, Push(1))
    assert service.requests == 1 and service.received == []


def test_unreachable_push_service_is_transient(service: PushService, sender: WebPushSender) -> None:
    sub = target(service.new_subscription("alice"))
    service.stop()
    with pytest.raises(TransientError, match="unreachable") as info:
        sender.send(sub, Push(1))
    assert "/push/alice" not in str(info.value)


def test_timeout_is_transient(service: PushService, vapid: tuple[str, str]) -> None:
    keys = service.new_subscription("alice")["keys"]
    with socket.socket() as silent:  # accepts the TCP connection (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}/push/alice"
        sender = WebPushSender(push_settings(vapid[0], NOTIFIER_PUSH_TIMEOUT_SECONDS="0.3"))
        started = time.monotonic()
        try:
            with pytest.raises(TransientError, match="Timeout"):
                sender.send(PushTarget(1, endpoint, keys["p256dh"], keys["auth"]), Push(1))
        finally:
            sender.close()
        assert time.monotonic() - started < 5


def test_endpoint_is_checked_again_at_send_time(service: PushService, vapid: tuple[str, str]) -> None:
    keys = service.new_subscription("alice")["keys"]
    sender = WebPushSender(push_settings(vapid[0]))
    strict = WebPushSender(push_settings(vapid[0], NOTIFIER_PUSH_ALLOWED_HOSTS="fcm.googleapis.com"))
    try:
        with pytest.raises(PermanentError, match="evil.example.com"):
            sender.send(PushTarget(9, "https://evil.example.com/push/alice", keys["p256dh"], keys["auth"]), Push(1))
        with pytest.raises(PermanentError, match="not an allowed"):  # stored while allowed, no longer allowed
            strict.send(PushTarget(9, f"{service.origin}/push/alice", keys["p256dh"], keys["auth"]), Push(1))
        with pytest.raises(PermanentError, match="16 bytes"):
            sender.send(PushTarget(9, f"{service.origin}/push/alice", keys["p256dh"], "short"), Push(1))
    finally:
        sender.close()
        strict.close()
    assert service.requests == 0


def test_logs_carry_no_secrets(service: PushService, vapid: tuple[str, str], caplog: pytest.LogCaptureFixture) -> None:
    sender = WebPushSender(push_settings(vapid[0]))
    sub = service.new_subscription("s3cr3t-token")
    service.script("s3cr3t-token", [500, 403])
    with caplog.at_level(logging.DEBUG, logger="notifier"):
        for _ in range(3):
            try:
                sender.send(target(sub), Push(1, body="private visitor text"))
            except PermanentError:
                pass
            except TransientError:
                pass
    sender.close()
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("notifier"))
    assert service.origin in logged
    for secret in ("s3cr3t-token", "vapid t=", vapid[0], sub["keys"]["auth"], "private visitor text"):
        assert secret not in logged


def test_injected_session_is_used_and_left_open(service: PushService, vapid: tuple[str, str]) -> None:
    class CountingAdapter(requests.adapters.HTTPAdapter):
        sends = 0

        def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
            self.sends += 1
            assert kwargs["timeout"] == (5.0, 10.0) and kwargs["stream"] is False
            return super().send(request, *args, **kwargs)

    class ClosingSession(requests.Session):
        closes = 0

        def close(self) -> None:
            self.closes += 1
            super().close()

    adapter = CountingAdapter()
    with ClosingSession() as session:
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers["User-Agent"] = "replyx-notifier-test"
        session.headers["ttl"] = "1"  # ours win, whatever the case of the session's names
        sender = WebPushSender(push_settings(vapid[0]), session)
        sender.send(target(service.new_subscription("alice")), Push(1))
        sender.close()
        assert (adapter.sends, session.closes) == (1, 0)
    [push] = service.received
    assert push.headers["user-agent"] == "replyx-notifier-test"  # the session's headers go along, as with post()
    assert push.headers["ttl"] == str(push_settings(vapid[0]).push_ttl_seconds)


# --- the push service itself: it must refuse what real ones refuse, or "zero rejections" proves nothing ----


def test_push_service_refuses_unsigned_requests(service: PushService) -> None:
    sub = service.new_subscription("alice")
    with requests.post(sub["endpoint"], data=b"x" * 100, headers={"TTL": "60", "Content-Encoding": "aes128gcm"}, timeout=5) as r:
        assert r.status_code == 400
    assert service.received == [] and service.rejections == ["alice: Authorization is missing or not the vapid scheme"]


def test_push_service_interoperates_with_pywebpush_and_checks_exp(service: PushService, vapid: tuple[str, str]) -> None:
    from pywebpush import WebPushException, webpush

    sub = service.new_subscription("alice")
    claims: dict[str, str | int] = {"sub": SUBJECT}
    webpush(sub, json.dumps({"hello": "мир"}), vapid_private_key=vapid[0], vapid_claims=claims, timeout=5)
    assert service.wait_for(1)[0].payload == {"hello": "мир"} and service.rejections == []
    assert claims["aud"] == service.origin and "exp" in claims  # pywebpush's quirk: it writes into your claims
    too_late = {"sub": SUBJECT, "exp": int(time.time()) + 25 * 3600}  # RFC 8292: at most 24 h ahead
    with pytest.raises(WebPushException):
        webpush(sub, "{}", vapid_private_key=vapid[0], vapid_claims=too_late, timeout=5)
    assert len(service.rejections) == 1 and "within the next 24 hours" in service.rejections[0]


# --- the environment: read once per push service, as requests would read it --------------------------------


def test_proxy_variables_still_apply(service: PushService, vapid: tuple[str, str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The sender reads proxy settings once per push service instead of on every request: a proxy named in
    the environment is still the way out, and NO_PROXY still exempts a host."""
    sub = service.new_subscription("alice")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, not listening: refused
        monkeypatch.setenv("HTTPS_PROXY", dead_proxy)
        monkeypatch.setenv("HTTP_PROXY", dead_proxy)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        via_proxy = WebPushSender(push_settings(vapid[0]))
        try:
            with pytest.raises(TransientError, match="ProxyError|ConnectionError"):
                via_proxy.send(target(sub), Push(1))
            with pytest.raises(TransientError):  # the second push takes the remembered way too
                via_proxy.send(target(sub), Push(1))
        finally:
            via_proxy.close()
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        exempt = WebPushSender(push_settings(vapid[0]))
        try:
            assert exempt.send(target(sub), Push(1)).detail.startswith("push service answered 201")
        finally:
            exempt.close()
    assert len(service.received) == 1


def test_a_plain_http_proxy_gets_the_whole_url(service: PushService, vapid: tuple[str, str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Through a plain-HTTP proxy the request line must name the whole URL (the proxy has no other way to
    know where to go); every later push to that service goes the same way, on the proxy's connection."""
    proxy = TcpProxy("127.0.0.1", int(service.origin.rsplit(":", 1)[1])).start()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    sender = WebPushSender(push_settings(vapid[0]))
    try:
        for name in ("alice", "bob"):
            assert sender.send(target(service.new_subscription(name)), Push(1)).detail == "push service answered 201"
    finally:
        sender.close()
        proxy.stop()
    assert [r.name for r in service.received] == ["alice", "bob"] and service.rejections == []
    assert (service.absolute_targets, proxy.accepted) == (2, 1)


def test_own_session_skips_the_adapters_send(service: PushService, vapid: tuple[str, str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Our own session's pushes go straight to its adapter's connection pool: `HTTPAdapter.send` rebuilt a
    response object per push for nothing (about 0.3 ms of CPU a push, bench.deliver)."""
    def refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
        raise AssertionError("HTTPAdapter.send was called")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", refuse)
    sender = WebPushSender(push_settings(vapid[0]))
    try:
        assert sender.send(target(service.new_subscription("alice")), Push(1)).ref is not None
    finally:
        sender.close()
    assert len(service.received) == 1


def test_netrc_does_not_replace_the_vapid_header(service: PushService, vapid: tuple[str, str],
                                                 monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """requests, trusting the environment, would put ~/.netrc's Basic credentials in place of our
    Authorization header: the push service would refuse every push to that host."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    sender = WebPushSender(push_settings(vapid[0]))
    try:
        assert sender.send(target(service.new_subscription("alice")), Push(1)).detail.startswith("push service answered")
    finally:
        sender.close()
    assert service.rejections == [] and len(service.received) == 1


def test_requests_carry_the_usual_headers(service: PushService, sender: WebPushSender) -> None:
    """Sent through the adapter, a push still carries what a requests session sends (a User-Agent, Accept)."""
    sender.send(target(service.new_subscription("alice")), Push(1))
    [push] = service.received
    assert push.headers["user-agent"].startswith("python-requests/") and push.headers["accept"] == "*/*"
