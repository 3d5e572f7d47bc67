"""Where each delivery of a batch goes, read before sending so that each waits only for its own server."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, select

from notifier import models
from notifier.db import any_of
from notifier.enums import Channel


@dataclass(frozen=True)
class Route:
    channel: Channel
    endpoint: str | None  # a push subscription's endpoint; None for email, or when the subscription is gone


_d, _ps = models.deliveries, models.push_subscriptions
_DELIVERIES = select(_d.c.id, _d.c.channel, _d.c.target).where(any_of(_d.c.id, "ids"))
_ENDPOINTS = select(_ps.c.id, _ps.c.endpoint).where(any_of(_ps.c.id, "ids"))


def load_routes(conn: Connection, delivery_ids: Iterable[int]) -> dict[int, Route]:
    """Two indexed reads for a whole batch: the deliveries' channel and target, then the targets' endpoints.
    Ids with no delivery row are left out (the delivery itself will say it is not claimable)."""
    rows = conn.execute(_DELIVERIES, {"ids": list(delivery_ids)}).all()
    wanted = {int(t) for _, channel, t in rows if channel == Channel.WEBPUSH.value and str(t).isdigit()}
    endpoints: dict[int, str] = {}
    if wanted:
        endpoints = {int(i): str(e) for i, e in conn.execute(_ENDPOINTS, {"ids": sorted(wanted)})}
    routes = {}
    for delivery_id, channel, target in rows:
        endpoint = endpoints.get(int(target)) if str(target).isdigit() else None
        routes[int(delivery_id)] = Route(Channel(channel), endpoint)
    return routes
