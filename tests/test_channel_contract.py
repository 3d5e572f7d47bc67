"""One contract, every channel: `send(target, rendered) -> DeliveryResult`, errors that say what to do.

Each channel runs against its real counterpart: aiosmtpd for SMTP, a folder for the outbox, the loopback
push service (which verifies VAPID and decrypts) for Web Push.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from notifier.channels import build_sender
from notifier.channels.base import DeliveryResult, EmailTarget, PushTarget, Sender
from notifier.config import load_settings
from notifier.enums import Channel
from notifier.errors import PermanentError, TransientError
from notifier.pushkeys import generate_vapid_keys
from notifier.render import MessageView, RenderContext, Renderer
from tests.pushservice import PushService
from tests.smtpserver import SmtpServer

CTX = RenderContext(
    dialog_id=7, language="ru", recipient_name="Ирина", visitor_name="Анна", site_name="Магазин Цветов",
    messages=(MessageView(1, "Здравствуйте 🌷"),), dialog_url="https://app.replyx.test/dialogs?dialog_id=7",
)


@dataclass
class Rig:
    sender: Sender
    target: Any
    rendered: Any
    delivered: Callable[[], list[str]]  # what the counterpart received, as text
    refuse: Callable[[bool], None] | None  # make the next send fail (True: transient, False: permanent)


def _plain(raw: bytes) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    body = msg.get_body(preferencelist=("plain",))
    return str(body.get_content()) if body is not None else ""


@contextlib.contextmanager
def make_rig(kind: str, smtp_server: SmtpServer, tmp_path: Path) -> Iterator[Rig]:
    if kind == "smtp":
        settings = load_settings({"NOTIFIER_SMTP_HOST": "127.0.0.1", "NOTIFIER_SMTP_PORT": str(smtp_server.port),
                                  "NOTIFIER_SMTP_TLS": "none", "NOTIFIER_EMAIL_FROM": "X <noreply@replyx.test>"})
        sender = build_sender(Channel.EMAIL, settings)
        yield Rig(
            sender, EmailTarget("owner@example.com", "Ирина", "<contract.1@replyx.test>"), Renderer().email(CTX),
            lambda: [m.part("plain") for m in smtp_server.wait_for(1, timeout=2)],
            lambda transient: smtp_server.refuse_next(1, "421 4.3.2 busy" if transient else "550 5.1.1 no such user"),
        )
    elif kind == "outbox":
        settings = load_settings({"NOTIFIER_OUTBOX_DIR": str(tmp_path / "outbox")})
        sender = build_sender(Channel.EMAIL, settings)
        yield Rig(
            sender, EmailTarget("owner@example.com", "Ирина", "<contract.2@replyx.test>"), Renderer().email(CTX),
            lambda: [_plain(p.read_bytes()) for p in sorted((tmp_path / "outbox").glob("*.eml"))],
            None,
        )
    else:
        with PushService() as service:
            sub = service.new_subscription("contract")
            private, _ = generate_vapid_keys()
            settings = load_settings({"NOTIFIER_VAPID_PRIVATE_KEY": private, "NOTIFIER_VAPID_SUBJECT": "mailto:ops@replyx.test",
                                      "NOTIFIER_PUSH_ALLOWED_HOSTS": "127.0.0.1"})
            sender = build_sender(Channel.WEBPUSH, settings)
            target = PushTarget(1, sub["endpoint"], sub["keys"]["p256dh"], sub["keys"]["auth"])
            yield Rig(
                sender, target, Renderer().push(CTX),
                lambda: [r.payload["body"] for r in service.received],
                lambda transient: service.script("contract", [503 if transient else 400]),
            )
            sender.close()
            return
    sender.close()


@pytest.fixture(params=["smtp", "outbox", "webpush"])
def rig(request: pytest.FixtureRequest, smtp_server: SmtpServer, tmp_path: Path) -> Iterator[Rig]:
    with make_rig(request.param, smtp_server, tmp_path) as made:
        yield made


@pytest.fixture(params=["smtp", "webpush"])
def remote_rig(request: pytest.FixtureRequest, smtp_server: SmtpServer, tmp_path: Path) -> Iterator[Rig]:
    """Channels with a remote side that can refuse."""
    with make_rig(request.param, smtp_server, tmp_path) as made:
        yield made


def test_a_send_delivers_once_and_returns_a_result(rig: Rig) -> None:
    result = rig.sender.send(rig.target, rig.rendered)
    assert isinstance(result, DeliveryResult)
    got = rig.delivered()
    assert len(got) == 1
    assert "Здравствуйте 🌷" in got[0]


def test_the_channel_names_itself(rig: Rig) -> None:
    assert rig.sender.channel in (Channel.EMAIL, Channel.WEBPUSH)


@pytest.mark.parametrize(("transient", "error"), [(True, TransientError), (False, PermanentError)])
def test_refusals_say_whether_to_retry(remote_rig: Rig, transient: bool, error: type[Exception]) -> None:
    rig = remote_rig
    assert rig.refuse is not None
    rig.refuse(transient)
    with pytest.raises(error):
        rig.sender.send(rig.target, rig.rendered)
    assert rig.delivered() == []
    assert isinstance(rig.sender.send(rig.target, rig.rendered), DeliveryResult)  # and it recovers
    assert len(rig.delivered()) == 1


def test_close_is_idempotent(rig: Rig) -> None:
    rig.sender.close()
    rig.sender.close()
