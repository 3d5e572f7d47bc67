"""Every read of the host's tables and ours, and nothing else. Writes live in `notifier.ledger`.

Public: `DialogSnapshot`, `Subscription`, `load_dialog`, `load_dialogs`, `load_people`, `load_team`,
`load_subscription`, `load_subscriptions`,
`push_targets_many`, `load_shown_many`, `load_stored`, `message_time`;
for operations `ScannedMessage`, `first_id_since`,
`scan_visitor_messages`, `host_tables_missing`, `recent_decisions`, `delivery_counts`, `failed_deliveries`,
`dialog_history`; for the host's side `DialogAccess`, `visible_dialog`, `load_viewer`, `MissedDialog`,
`load_missed`, `MISSED_LIMIT`; for sending `Route`, `load_routes`; `reading(engine)`, the connection the hot paths read on.
"""

from sqlalchemy import Connection  # the type of what every read takes, for callers outside this package

from notifier.db import autocommit as reading  # a connection for reads: no transaction around them
from notifier.snapshot.access import DialogAccess, load_viewer, visible_dialog
from notifier.snapshot.clears import load_pushed
from notifier.snapshot.dialog import (
    DialogSnapshot,
    Subscription,
    load_dialog,
    load_dialogs,
    load_people,
    load_subscription,
    load_subscriptions,
    load_team,
    push_targets_many,
)
from notifier.snapshot.hosttime import message_time
from notifier.snapshot.messages import load_shown_many
from notifier.snapshot.missed import MISSED_LIMIT, MissedDialog, load_missed
from notifier.snapshot.ops import (
    ScannedMessage,
    delivery_counts,
    dialog_history,
    failed_deliveries,
    first_id_since,
    host_tables_missing,
    recent_decisions,
    scan_visitor_messages,
)
from notifier.snapshot.prefs import load_stored
from notifier.snapshot.routes import Route, load_routes

__all__ = [
    "Connection",
    "reading",
    "Route",
    "load_routes",
    "MISSED_LIMIT",
    "DialogAccess",
    "DialogSnapshot",
    "MissedDialog",
    "ScannedMessage",
    "Subscription",
    "delivery_counts",
    "dialog_history",
    "failed_deliveries",
    "first_id_since",
    "host_tables_missing",
    "load_dialog",
    "load_dialogs",
    "load_missed",
    "load_people",
    "load_pushed",
    "load_shown_many",
    "load_stored",
    "load_subscription",
    "load_subscriptions",
    "load_team",
    "load_viewer",
    "message_time",
    "push_targets_many",
    "recent_decisions",
    "scan_visitor_messages",
    "visible_dialog",
]
