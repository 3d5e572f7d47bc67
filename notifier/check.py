"""A due check for one dialog: gather, decide (pure), record every decision, claim deliveries.

Orchestration only: reads go through `notifier.snapshot`, writes through `notifier.ledger`, Redis through
the runtime's `Store`, and every rule lives in `notifier.decide`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from notifier import ledger, metrics, snapshot
from notifier.config import Settings
from notifier.decide import CheckInput, Decision, RecipientState, decide
from notifier.enums import Action, Channel, Reason
from notifier.outages import is_outage
from notifier.preferences import Defaults, resolve_preferences
from notifier.retry import describe
from notifier.runtime import Runtime

log = logging.getLogger(__name__)

DISPATCH_BATCH = 1000
# Due checks travel to Celery in chunks: one message per chunk keeps the dispatcher fast under a backlog,
# and a chunk's reads and writes are a fixed number of statements whatever its size, so a check worker gets
# through more checks a second with bigger chunks (bench.deliver: about 400 a second at 50, 500 at 100).
CHECK_CHUNK = 100
CHECK_RETRY_CAP = 300.0


@dataclass(frozen=True)
class CheckResult:
    decisions: tuple[Decision, ...]
    delivery_ids: tuple[int, ...]
    recheck_at: float | None


def log_decision(dialog_id: int, x: Decision, at: str = "check") -> None:
    log.info(
        "decision at=%s dialog=%s manager=%s channel=%s action=%s reason=%s messages=%s..%s",
        at, dialog_id, x.manager_id, x.channel.value if x.channel else "-", x.action.value, x.reason.value,
        x.first_message_id, x.last_message_id,
    )
    metrics.count_decision(x)


def build_input(
    snap: snapshot.DialogSnapshot, online: set[int], seen: dict[int, float], now: float, settings: Settings
) -> CheckInput:
    defaults = Defaults(language=settings.default_language, time_zone=settings.default_time_zone)
    return CheckInput(
        dialog=snap.facts,
        messages=snap.messages,
        recipients=tuple(
            RecipientState(
                candidate=c,
                read_pointer=snap.pointers.get(c.person.id, 0),
                online=c.person.id in online,
                has_push=c.person.id in snap.with_push,
                notified=snap.notified.get(c.person.id, frozenset()),
                prefs=resolve_preferences(snap.stored.get(c.person.id), defaults),
            )
            for c in snap.candidates
        ),
        refused=snap.refused,
        now=now,
        seen_at=seen,
        # A message never scheduled (lost, or written while the AI was handling): its deadline is now.
        unseen_at=now - settings.grace_seconds,
        grace_seconds=settings.grace_seconds,
        email_after_seconds=settings.email_after_seconds,
        skip_ai_handled=settings.ai_handling_skips,
    )


Gathered = tuple[snapshot.DialogSnapshot, CheckInput] | None


def gather(rt: Runtime, dialog_id: int, now: float) -> Gathered:
    """The same facts for the check and for every delivery's last look before sending."""
    return gather_many(rt, [dialog_id], now)[dialog_id]


def gather_many(rt: Runtime, dialog_ids: list[int], now: float, conn: snapshot.Connection | None = None) -> dict[int, Gathered]:
    """`gather` for a chunk of dialogs, with one database read for all of them (`snapshot.load_dialogs`),
    on `conn` if given. Redis first, as for one dialog: a message scheduled meanwhile is in the database
    read, not missed."""
    seen = rt.store.seen_times_many(dialog_ids)
    if conn is None:
        with snapshot.reading(rt.engine) as own:
            snaps = snapshot.load_dialogs(own, dialog_ids, now, rt.push_enabled)
    else:
        snaps = snapshot.load_dialogs(conn, dialog_ids, now, rt.push_enabled)
    online = rt.store.online_on_dialogs({d: [c.person.id for c in s.candidates] for d, s in snaps.items()}, now)
    out: dict[int, Gathered] = {}
    for dialog_id in dialog_ids:
        snap = snaps.get(dialog_id)
        out[dialog_id] = None if snap is None else (snap, build_input(snap, online[dialog_id], seen[dialog_id], now, rt.settings))
    return out


_UNREAD = object()  # run_check's "read the facts yourself"


@dataclass(frozen=True)
class _Decided:
    decisions: tuple[Decision, ...]
    recheck_at: float | None
    newest: int  # the newest visitor message the decisions cover (0: none)


def _decide(gathered: Gathered) -> _Decided:
    if gathered is None:
        return _Decided((Decision(None, Action.SKIP, Reason.NO_DIALOG),), None, 0)
    outcome = decide(gathered[1])
    return _Decided(outcome.decisions, outcome.recheck_at, gathered[1].messages.last_visitor_id)


def _pushed_managers(decided: _Decided) -> set[int]:
    return {x.manager_id for x in decided.decisions
            if x.action is Action.NOTIFY and x.manager_id is not None and x.channel is Channel.WEBPUSH}


def _write(conn: snapshot.Connection, dialog_id: int, decided: _Decided, now: float) -> tuple[int, ...]:
    """Record a check's decisions and create its deliveries; the ids of those this call created."""
    return tuple(c.id for c in _write_many(conn, {dialog_id: decided}, now)[dialog_id])


def _write_many(conn: snapshot.Connection, decided: Mapping[int, _Decided],
                now: float) -> dict[int, tuple[ledger.Created, ...]]:
    """`_write` for a chunk of checks, one statement per kind of row for all of them: their decisions, their
    deliveries (to the push subscriptions of the managers they notify by push, read here), their coverage."""
    push_targets = snapshot.push_targets_many(conn, set().union(*map(_pushed_managers, decided.values())))
    ledger.record_decisions_many(conn, [(d, x.decisions) for d, x in decided.items()], now)
    created = ledger.claim_new_many(conn, [
        (dialog_id, x, push_targets.get(x.manager_id, []) if x.channel is Channel.WEBPUSH else [""])
        for dialog_id, one in decided.items()
        for x in one.decisions
        if x.action is Action.NOTIFY and x.manager_id is not None
    ], now)
    ledger.mark_covered_many(conn, [(d, x.newest) for d, x in decided.items() if x.recheck_at is None and x.newest], now)
    return {dialog_id: tuple(created.get(dialog_id, ())) for dialog_id in decided}


def _done(dialog_id: int, decided: _Decided, created: tuple[int, ...]) -> CheckResult:
    for x in decided.decisions:
        log_decision(dialog_id, x)
    return CheckResult(decided.decisions, created, decided.recheck_at)


def run_check(rt: Runtime, dialog_id: int, now: float | None = None, gathered: Gathered | object = _UNREAD) -> CheckResult:
    """Decide one dialog and record it; `gathered`: its facts already read with its chunk (`gather_many`)."""
    now = time.time() if now is None else now
    if gathered is _UNREAD:
        gathered = gather(rt, dialog_id, now)
    assert gathered is None or isinstance(gathered, tuple)
    decided = _decide(gathered)
    with rt.engine.begin() as conn:
        created = _write(conn, dialog_id, decided, now)
    return _done(dialog_id, decided, created)


def check_and_enqueue(rt: Runtime, dialog_id: int, enqueue: Callable[[int], object], now: float | None = None,
                      gathered: Gathered | object = _UNREAD) -> CheckResult:
    """Run a check, hand its new deliveries to `enqueue`, then release the dialog (or set its recheck).

    The release comes last: a crash before it leaves the inflight lease to expire, and the check runs
    again, harmlessly, against the same ledger keys.
    """
    result = run_check(rt, dialog_id, now, gathered)
    for delivery_id in result.delivery_ids:
        enqueue(delivery_id)
    rt.store.finish(dialog_id, result.recheck_at)
    return result


def run_checks(
    rt: Runtime, dialog_ids: list[int], enqueue: Callable[[int], object], now: float | None = None
) -> Iterator[tuple[int, CheckResult | None]]:
    """A chunk of due checks, yielding each dialog's result (None: its check failed and was counted).

    One dialog's error costs that dialog an attempt, never the others their turn; an outage (database or
    Redis unreachable) stops the chunk and propagates, so the caller retries what was not yielded."""
    started = time.time() if now is None else now
    rt.store.begin_checks(dialog_ids, started, rt.settings.check_lease_seconds)
    try:
        facts: dict[int, Gathered] = gather_many(rt, dialog_ids, started)
    except Exception as exc:
        if is_outage(exc):
            raise
        # One dialog's bad data (an id beyond its column, say) must not fail the others: each reads alone.
        log.warning("check chunk of %d read alone error=%s", len(dialog_ids), describe(exc))
        facts = {}
    decided, failed, written = _decide_and_write(rt, dialog_ids, facts, started)
    finished: dict[int, CheckResult] = {}
    for dialog_id, created in written.items():
        finished[dialog_id] = _done(dialog_id, decided[dialog_id], tuple(c.id for c in created))
    # The chunk's pushes are sent first, then its emails: when both fall due at once, the cheap and quick
    # channel should not wait behind a chunk's worth of mails (each costs several round trips).
    for delivery in sorted((c for cs in written.values() for c in cs), key=lambda c: c.channel is not Channel.WEBPUSH):
        enqueue(delivery.id)
    # The releases come last, as for one check: all of the chunk's in one round trip.
    rt.store.finish_many([(d, result.recheck_at) for d, result in finished.items()])
    for dialog_id in dialog_ids:
        result: CheckResult | None = None
        try:
            if dialog_id in failed:
                raise failed[dialog_id]
            if dialog_id in finished:
                result = finished[dialog_id]
            else:
                result = check_and_enqueue(rt, dialog_id, enqueue, started, facts.get(dialog_id, _UNREAD))
        except Exception as exc:
            if is_outage(exc):
                raise
            _check_failed(rt, dialog_id, exc, time.time() if now is None else now)
            result = None
        yield dialog_id, result


def _decide_and_write(
    rt: Runtime, dialog_ids: list[int], facts: dict[int, Gathered], now: float
) -> tuple[dict[int, _Decided], dict[int, Exception], dict[int, tuple[ledger.Created, ...]]]:
    """Decide each dialog read with its chunk, then record them all in one transaction (one commit for
    the chunk). If that transaction fails, nothing of it stays and each dialog is checked alone."""
    decided: dict[int, _Decided] = {}
    failed: dict[int, Exception] = {}
    for dialog_id in dialog_ids:
        if dialog_id not in facts:
            continue  # read alone, below
        try:
            decided[dialog_id] = _decide(facts[dialog_id])
        except Exception as exc:
            if is_outage(exc):
                raise
            failed[dialog_id] = exc
    if not decided:
        return decided, failed, {}
    try:
        with rt.engine.begin() as conn:
            written = _write_many(conn, decided, now)
    except Exception as exc:
        if is_outage(exc):
            raise
        log.warning("check chunk of %d written alone error=%s", len(decided), describe(exc))
        return decided, failed, {}
    return decided, failed, written


def _check_failed(rt: Runtime, dialog_id: int, exc: Exception, now: float) -> None:
    error = describe(exc)
    settings = rt.settings
    attempts, parked = rt.store.check_failed(dialog_id, now, settings.retry_base_seconds, CHECK_RETRY_CAP,
                                             settings.max_attempts, error)
    if parked:
        _record_parked(rt, dialog_id, attempts, error, now)
    else:
        log.warning("check dialog=%s outcome=retry attempts=%s error=%s", dialog_id, attempts, error)


def _record_parked(rt: Runtime, dialog_id: int, attempts: int, error: str, now: float) -> None:
    log.error("check dialog=%s outcome=parked attempts=%s error=%s", dialog_id, attempts, error)
    try:
        with rt.engine.begin() as conn:
            ledger.record_decisions(conn, dialog_id, [Decision(None, Action.SKIP, Reason.CHECK_FAILED)], now)
        metrics.count_decision(Decision(None, Action.SKIP, Reason.CHECK_FAILED))
    except Exception as exc:  # noqa: BLE001 - the record in Redis stands; the database may be the cause
        log.warning("check dialog=%s parked decision not recorded error=%s", dialog_id, describe(exc))


def dispatch(
    rt: Runtime,
    enqueue_checks: Callable[[list[int]], object],
    enqueue_delivery: Callable[[int], object],
    now: float | None = None,
    max_batches: int = 100,
    enqueue_clears: Callable[[list[int]], object] | None = None,
) -> int:
    """Move due checks to the queue (atomically in Redis), re-enqueue deliveries whose worker vanished, and
    hand clear-on-read requests to `enqueue_clears`."""
    now = time.time() if now is None else now
    settings = rt.settings
    moved = 0
    for _ in range(max_batches):
        batch = rt.store.dispatch(now, DISPATCH_BATCH, settings.check_lease_seconds, settings.max_attempts)
        for dialog_id in batch.parked:
            _record_parked(rt, dialog_id, settings.max_attempts, "check lease expired while running", now)
        for i in range(0, len(batch.due), CHECK_CHUNK):
            enqueue_checks(batch.due[i : i + CHECK_CHUNK])
        moved += len(batch.due)
        if len(batch.due) < DISPATCH_BATCH:
            break
    for delivery_id in ledger.sweep(rt.engine, now, settings.max_attempts):
        enqueue_delivery(delivery_id)
    if enqueue_clears is not None and (clears := rt.store.pop_clears(CHECK_CHUNK)):
        enqueue_clears(clears)
    return moved
