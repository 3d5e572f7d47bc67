"""The host's authentication, standing in for ReplyX's JWT: a Bearer token in the Authorization header
(the admin panel keeps it in localStorage), or in the `token` query parameter where the browser cannot
send headers (EventSource). The notifier kit never sees a token, only the id this dependency returns."""

from __future__ import annotations

import base64
import hashlib
import hmac

from fastapi import HTTPException, Query, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from examples.replyx_host.config import config

_bearer = HTTPBearer(auto_error=False)


def _signature(user_id: int, secret: str) -> str:
    mac = hmac.new(secret.encode(), f"user:{user_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def issue_token(user_id: int, secret: str | None = None) -> str:
    return f"{user_id}.{_signature(user_id, secret or config().secret)}"


def verify_token(token: str | None) -> int | None:
    user, _, signature = (token or "").partition(".")
    if not user.isdigit() or not hmac.compare_digest(signature, _signature(int(user), config().secret)):
        return None
    return int(user)


def _unauthorized() -> HTTPException:
    return HTTPException(401, detail="Не удалось проверить учетные данные", headers={"WWW-Authenticate": "Bearer"})


async def current_manager_id(credentials: HTTPAuthorizationCredentials | None = Security(_bearer)) -> int:
    """The dependency the notifier kit is mounted behind."""
    user_id = verify_token(credentials.credentials if credentials else None)
    if user_id is None:
        raise _unauthorized()
    return user_id


async def stream_manager_id(token: str | None = Query(None)) -> int:
    user_id = verify_token(token)
    if user_id is None:
        raise _unauthorized()
    return user_id
