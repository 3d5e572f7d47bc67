"""The reference for notifier.channels.mailbytes: the same mail built with the email package's EmailMessage
and written by its generator under HEADER_POLICY (how the product built every mail before mailbytes).
`compose` must give exactly these bytes for the same Date and boundary."""

from __future__ import annotations

from email.headerregistry import Address
from email.message import EmailMessage

from notifier.channels.base import EmailTarget
from notifier.channels.mailheaders import HEADER_POLICY, clean, recipient_address
from notifier.config import Settings
from notifier.render import RenderedEmail


def _cte(body: str) -> str:
    return "quoted-printable" if body.isascii() else "base64"


def reference_bytes(settings: Settings, target: EmailTarget, rendered: RenderedEmail, date: str, boundary: str) -> bytes:
    sender = settings.email_from_address
    msg = EmailMessage(policy=HEADER_POLICY)
    msg["Subject"] = clean(rendered.subject)
    msg["From"] = Address(display_name=clean(sender.display_name), addr_spec=sender.addr_spec)
    msg["To"] = recipient_address(target)
    msg["Message-ID"] = clean(target.message_id)
    msg["Date"] = date
    if target.unsubscribe_url:
        msg["List-Unsubscribe"] = f"<{clean(target.unsubscribe_url)}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(rendered.text, charset="utf-8", cte=_cte(rendered.text))
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8", cte=_cte(rendered.html))
    del msg.get_payload()[1]["MIME-Version"]  # add_alternative gives the second part one; it belongs on top only
    msg.set_boundary(boundary)
    return msg.as_bytes(policy=HEADER_POLICY)
