"""Every write to our tables, and nothing else: decisions, deliveries, and what the host's processes write.

Public: `record_decisions`, `mark_covered` (and their `_many` forms); `claim_new`, `claim_new_many`,
`Created`, `claim`, `DeliveryRow`, `mark_sent`, `mark_skipped`, `mark_failed`, `mark_retry`, `sweep`,
`renew_enqueue_leases`, `release_enqueue_leases`; `mark_read`, `add_team_member`, `remove_team_member`,
`set_language`, `save_subscription`, `delete_subscription`, `set_preferences`, `hold`; `purge_history`,
`Purged` (retention). Reads live in `notifier.snapshot`.
"""

from notifier.ledger.decisions import mark_covered, mark_covered_many, record_decisions, record_decisions_many
from notifier.ledger.deliveries import (
    Created,
    DeliveryRow,
    claim,
    claim_many,
    claim_new,
    claim_new_many,
    delete_subscription_by_id,
    hold,
    mark_cleared,
    mark_failed,
    mark_retry,
    mark_sent,
    mark_sent_many,
    mark_skipped,
    release_enqueue_leases,
    renew_enqueue_leases,
    sweep,
)
from notifier.ledger.host_writes import (
    add_team_member,
    delete_subscription,
    mark_read,
    remove_team_member,
    save_subscription,
    set_language,
    set_preferences,
)
from notifier.ledger.retention import Purged, purge_history

__all__ = [
    "Created",
    "DeliveryRow",
    "Purged",
    "add_team_member",
    "claim",
    "claim_many",
    "claim_new",
    "claim_new_many",
    "delete_subscription",
    "delete_subscription_by_id",
    "hold",
    "mark_cleared",
    "mark_covered",
    "mark_covered_many",
    "mark_failed",
    "mark_read",
    "mark_retry",
    "mark_sent",
    "mark_sent_many",
    "mark_skipped",
    "purge_history",
    "record_decisions",
    "record_decisions_many",
    "release_enqueue_leases",
    "remove_team_member",
    "renew_enqueue_leases",
    "save_subscription",
    "set_language",
    "set_preferences",
    "sweep",
]
