"""The packed Redis layout of seen times: exact for every id, compact, and readable beside the legacy one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from notifier.store import (
    LEGACY_LATEST,
    LEGACY_SEEN,
    PENDING,
    SEEN_CAP,
    SEEN_LONG,
    SEEN_PACKED_MAX,
    Store,
    merge_seen,
    parse_seen,
    seen_key,
)
from tests.support import RedisServer

pytestmark = pytest.mark.host  # Redis and notifier.store only

T0 = 1_795_000_000.0
BIG = 2**63 - 1  # the largest id we accept


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[Store]:
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield Store(r)
    r.close()


def test_dialogs_share_buckets_of_a_hundred() -> None:
    assert seen_key(1234567) == ("notifier:seen:12345", "67")
    assert seen_key(1234500)[0] == seen_key(1234599)[0] != seen_key(1234600)[0]
    assert seen_key(7) == ("notifier:seen:0", "7")


@pytest.mark.parametrize(
    "messages",
    [
        [(11, 0.0), (13, 10.0), (12, 10.5), (13, 20.0)],  # out of order, a repeat keeps its first time
        [(500, 0.0), (12, 1.25), (499, 3.0)],  # ids below the first: negative deltas
        [(BIG - 5, 0.0), (BIG, 1.0), (BIG - 5, 2.0), (3, 4.0)],  # ids too long for a delta are written whole
        [(10**14 - 1, 0.0), (10**14, 1.0), (10**14 + 1, 2.0), (10**14 - 2, 3.0), (10**14, 9.0)],  # at the boundary
        [(7, 0.0), (BIG, 1.0), (8, 2.0)],
    ],
)
def test_seen_times_are_exact(store: Store, messages: list[tuple[int, float]]) -> None:
    expected: dict[int, float] = {}
    for mid, dt in messages:
        store.schedule(42, mid, T0 + dt, 60)
        expected.setdefault(mid, T0 + dt)
    assert store.seen_times(42) == expected
    assert store.latest(42) == max(expected)
    assert float(store.r.zscore(PENDING, "42")) == T0 + 60  # the burst's first message sets the deadline


def test_times_are_kept_to_the_millisecond(store: Store) -> None:
    store.schedule(42, 1, T0 + 0.1234, 60)
    store.schedule(42, 2, T0 + 5.0006, 60)
    assert store.seen_times(42) == {1: T0 + 0.123, 2: T0 + 5.001}


def test_a_burst_of_five_stays_compact(store: Store) -> None:
    for dialog in range(1200, 1300):
        for i in range(5):
            store.schedule(dialog, 10_000_000 + dialog * 10 + i, T0 + 7.5 * i, 60)
    key = seen_key(1200)[0]
    assert store.r.hlen(key) == 100
    assert store.r.object("encoding", key) == "listpack"
    assert store.r.exists(SEEN_LONG) == 0


def test_a_long_burst_moves_out_of_its_bucket_and_the_cap_holds(store: Store) -> None:
    """One dialog's long burst must not turn its bucket (a hundred dialogs) into a hashtable."""
    for dialog in range(1200, 1300):
        store.schedule(dialog, 10_000_000 + dialog, T0, 60)
    expected: dict[int, float] = {}
    for i in range(12):
        store.schedule(1234, 20_000_000 + i, T0 + i, 60)
        expected.setdefault(20_000_000 + i, T0 + i)
    key, slot = seen_key(1234)
    assert store.r.hget(key, slot) is None and store.r.object("encoding", key) == "listpack"
    assert len(store.r.hget(SEEN_LONG, "1234")) > SEEN_PACKED_MAX
    assert store.seen_times(1234) == {10_000_000 + 1234: T0, **expected}
    store.schedule(1234, 20_000_000 + 99, T0 + 99, 60)  # later messages follow it there
    assert store.latest(1234) == 20_000_099
    store.r.zrem(PENDING, "1234")
    store.finish(1234, None)
    assert store.seen_times(1234) == {} and store.r.exists(SEEN_LONG) == 0
    # Hundreds of messages in one burst: recording stops at the cap; later ones are unseen (due at once).
    for mid in range(1, 2000):
        store.schedule(99, mid, T0 + mid, 60)
    raw = store.r.hget(SEEN_LONG, "99")
    assert SEEN_CAP <= len(raw) < SEEN_CAP + 40
    assert list(store.seen_times(99)) == list(range(1, len(store.seen_times(99)) + 1))


def test_legacy_entries_are_read_merged_and_removed_by_the_finished_check(store: Store) -> None:
    """What the previous version left in Redis (or an API process not yet upgraded keeps writing)."""
    r = store.r
    r.hset(LEGACY_SEEN, "100", f"11={T0!r},12={T0 + 10!r}")
    r.hset(LEGACY_LATEST, "100", "12")
    r.zadd(PENDING, {"100": T0 + 60})
    r.hset(LEGACY_SEEN, "101", f"5={T0!r}")  # another dialog's legacy entry stays until its own check ends
    store.schedule(100, 12, T0 + 5, 60)  # scheduled again after the upgrade: the earlier time wins
    store.schedule(100, 13, T0 + 20, 60)
    assert store.seen_times(100) == {11: T0, 12: T0 + 5, 13: T0 + 20}
    assert store.latest(100) == 13
    assert r.zscore(PENDING, "100") == T0 + 60

    store.finish(100, T0 + 300)  # a recheck: everything stays
    assert store.seen_times(100) == {11: T0, 12: T0 + 5, 13: T0 + 20}
    r.zrem(PENDING, "100")
    store.finish(100, None)  # done: both layouts forget the dialog
    assert store.seen_times(100) == {} and store.latest(100) is None
    assert r.hget(LEGACY_LATEST, "100") is None and r.hget(*seen_key(100)) is None
    assert store.seen_times(101) == {5: T0}


def test_parse_and_merge() -> None:
    assert parse_seen(None) == {} == parse_seen("")
    assert parse_seen("11=1.5,12=2.5,11=9") == {11: 1.5, 12: 2.5}  # legacy
    assert parse_seen("100@1500,+2@1000,-99@-500,77@0") == {100: 1.5, 102: 2.5, 1: 1.0, 77: 1.5}
    assert merge_seen({1: 2.0, 2: 5.0}, {1: 1.0, 3: 4.0}) == {1: 1.0, 2: 5.0, 3: 4.0}


def test_a_chunk_reads_its_seen_times_in_one_go(store: Store) -> None:
    store.r.hset(LEGACY_SEEN, "7", f"70={T0!r}")
    for i in range(8):
        store.schedule(1234, 20_000_000 + i, T0 + i, 60)  # long: in seen:long
    store.schedule(5, 50, T0, 60)
    store.schedule(7, 71, T0 + 1, 60)
    dialogs = [5, 7, 1234, 999]
    assert store.seen_times_many(dialogs) == {d: store.seen_times(d) for d in dialogs}
    assert store.seen_times_many(dialogs)[7] == {70: T0, 71: T0 + 1} and store.seen_times_many([]) == {}
