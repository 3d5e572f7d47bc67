"""Managers decide what reaches them: preferences resolved in one pure function, honoured when the check
decides and again just before sending; quiet hours across midnight and across daylight-saving changes."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time
from sqlalchemy import select

from notifier import models
from notifier.decide import Candidate, CheckInput, DialogFacts, Messages, Person, RecipientState, decide
from notifier.enums import Action, Channel, Reason, Relation
from notifier.errors import InvalidInput
from notifier.preferences import Defaults, Preferences, QuietHours, Stored, parse_fields, quiet_until, resolve_preferences
from notifier.runtime import Runtime
from tests.smtpserver import SmtpServer
from tests.support import Drive, Host
from worker import client

MSK, BERLIN = ZoneInfo("Europe/Moscow"), ZoneInfo("Europe/Berlin")
OWNER, MEMBER = 1, 2


def at(zone: ZoneInfo, *parts: int, fold: int = 0) -> float:
    return dt.datetime(*parts, tzinfo=zone, fold=fold).timestamp()  # type: ignore[misc]


def night(start: str = "22:00", end: str = "07:00", zone: str = "Europe/Moscow") -> Preferences:
    window = QuietHours(dt.time.fromisoformat(start), dt.time.fromisoformat(end))
    return Preferences(time_zone=zone, quiet_hours=window)


class TestResolution:
    def test_stored_values_win_none_inherits_the_default(self) -> None:
        defaults = Defaults(language="en", time_zone="Asia/Yekaterinburg")
        assert resolve_preferences(None, defaults) == Preferences(True, True, "en", "Asia/Yekaterinburg", None, frozenset())
        stored = Stored(push=False, email=None, language="ru", time_zone=None, muted_dialogs=frozenset({7}))
        assert resolve_preferences(stored, defaults) == Preferences(False, True, "ru", "Asia/Yekaterinburg", None, frozenset({7}))

    @pytest.mark.parametrize(
        ("fields", "names"),
        [
            ({"time_zone": "Mars/Olympus"}, "time_zone"),
            ({"time_zone": ""}, "time_zone"),
            ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, "quiet_hours.start"),
            ({"quiet_hours": {"start": "22:00", "end": "7:00"}}, "quiet_hours.end"),
            ({"quiet_hours": {"start": "22:00"}}, "quiet_hours.end"),
            ({"quiet_hours": {"start": "22:00", "end": "22:00"}}, "quiet_hours"),
            ({"quiet_hours": {"start": "22:00", "end": "07:00", "tz": "x"}}, "quiet_hours has unknown field"),
            ({"quiet_hours": "22:00-07:00"}, "quiet_hours"),
            ({"push": "yes"}, "push"),
            ({"email": 1}, "email"),
            ({"language": "de"}, "language"),
            ({"muted_dialogs": [1, 0]}, "muted_dialogs"),
            ({"muted_dialogs": "1,2"}, "muted_dialogs"),
            ({"sms": True}, "unknown preference field(s): sms"),
        ],
    )
    def test_bad_fields_are_named(self, fields: dict[str, object], names: str) -> None:
        with pytest.raises(InvalidInput, match=names.replace("(", r"\(").replace(")", r"\)")):
            parse_fields(fields)


class TestQuietUntil:
    """One second before and one second after each edge of the window."""

    def test_across_midnight(self) -> None:
        prefs = night()
        assert quiet_until(at(MSK, 2026, 11, 26, 21, 59, 59), prefs) is None
        assert quiet_until(at(MSK, 2026, 11, 26, 22, 0, 0), prefs) == at(MSK, 2026, 11, 27, 7, 0)
        assert quiet_until(at(MSK, 2026, 11, 26, 22, 0, 1), prefs) == at(MSK, 2026, 11, 27, 7, 0)
        assert quiet_until(at(MSK, 2026, 11, 27, 0, 0, 0), prefs) == at(MSK, 2026, 11, 27, 7, 0)
        assert quiet_until(at(MSK, 2026, 11, 27, 6, 59, 59), prefs) == at(MSK, 2026, 11, 27, 7, 0)
        assert quiet_until(at(MSK, 2026, 11, 27, 7, 0, 0), prefs) is None
        assert quiet_until(at(MSK, 2026, 11, 27, 7, 0, 1), prefs) is None

    def test_within_one_day(self) -> None:
        prefs = night("13:00", "14:00")
        assert quiet_until(at(MSK, 2026, 11, 26, 12, 59, 59), prefs) is None
        assert quiet_until(at(MSK, 2026, 11, 26, 13, 0, 1), prefs) == at(MSK, 2026, 11, 26, 14, 0)
        assert quiet_until(at(MSK, 2026, 11, 26, 13, 59, 59), prefs) == at(MSK, 2026, 11, 26, 14, 0)
        assert quiet_until(at(MSK, 2026, 11, 26, 14, 0, 1), prefs) is None

    def test_in_the_managers_own_zone(self) -> None:
        prefs = night(zone="Asia/Vladivostok")  # UTC+10: 22:00 there is 15:00 in Moscow
        assert quiet_until(at(MSK, 2026, 11, 26, 14, 59, 59), prefs) is None
        assert quiet_until(at(MSK, 2026, 11, 26, 15, 0, 1), prefs) == at(ZoneInfo("Asia/Vladivostok"), 2026, 11, 27, 7, 0)

    def test_spring_forward_night_is_an_hour_shorter(self) -> None:
        # Berlin, 29 March 2026: 02:00 CET becomes 03:00 CEST. A 22:00-07:00 window lasts 8 hours.
        prefs = night(zone="Europe/Berlin")
        start, end = at(BERLIN, 2026, 3, 28, 22, 0), at(BERLIN, 2026, 3, 29, 7, 0)
        assert end - start == 8 * 3600
        assert quiet_until(start - 1, prefs) is None and quiet_until(start + 1, prefs) == end
        assert quiet_until(end - 1, prefs) == end and quiet_until(end + 1, prefs) is None

    def test_an_end_inside_the_spring_forward_gap(self) -> None:
        # 02:30 never shows that night: the window ends when the clocks jump from 02:00 CET to 03:00 CEST.
        prefs = night("01:00", "02:30", zone="Europe/Berlin")
        end = dt.datetime(2026, 3, 29, 1, 0, tzinfo=dt.UTC).timestamp()
        assert quiet_until(at(BERLIN, 2026, 3, 29, 1, 59, 59), prefs) == end
        assert quiet_until(end - 1, prefs) == end
        assert quiet_until(end + 1, prefs) is None

    def test_fall_back_night_is_an_hour_longer(self) -> None:
        # Berlin, 25 October 2026: 03:00 CEST becomes 02:00 CET; 01:00-02:30 covers 02:00-02:30 twice.
        prefs = night("01:00", "02:30", zone="Europe/Berlin")
        start = at(BERLIN, 2026, 10, 25, 1, 0)
        end = at(BERLIN, 2026, 10, 25, 2, 30)  # the first 02:30 (CEST)
        assert end - start == 1.5 * 3600
        assert quiet_until(start - 1, prefs) is None and quiet_until(start + 1, prefs) == end
        assert quiet_until(end - 1, prefs) == end and quiet_until(end + 1, prefs) is None
        second = at(BERLIN, 2026, 10, 25, 2, 30, fold=1)  # wall clocks show 02:00-02:30 again, in CET
        assert quiet_until(second - 1, prefs) == second and quiet_until(second + 1, prefs) is None


T0 = at(MSK, 2026, 11, 26, 21, 59, 0)


def check(now: float, *states: RecipientState, grace: float = 60) -> CheckInput:
    ids = (11, 12)
    return CheckInput(
        dialog=DialogFacts(id=100, owner_id=OWNER, handoff_status="requested"),
        messages=Messages.from_ids(ids, 10, [s.read_pointer for s in states]),
        recipients=states, refused=(), now=now, seen_at=dict.fromkeys(ids, T0), unseen_at=now - grace,
        grace_seconds=grace, email_after_seconds=300,
    )


def recipient(person_id: int = OWNER, prefs: Preferences | None = None, **kw: object) -> RecipientState:
    person = Person(person_id, f"m{person_id}@example.com")
    return RecipientState(Candidate(person, Relation.OWNER), prefs=prefs or Preferences(), **kw)  # type: ignore[arg-type]


class TestDecide:
    def test_quiet_hours_hold_until_they_end(self) -> None:
        s = recipient(prefs=night(), has_push=True)
        out = decide(check(T0 + 61, s))  # 22:00:01: due, inside the window
        [d] = out.decisions
        assert (d.action, d.reason, d.due_at) == (Action.HOLD, Reason.QUIET_HOURS, at(MSK, 2026, 11, 27, 7, 0))
        assert out.recheck_at == at(MSK, 2026, 11, 27, 7, 0) and out.notify == ()
        morning = decide(check(at(MSK, 2026, 11, 27, 7, 0, 1), s))
        assert [(x.action, x.channel) for x in morning.decisions] == [(Action.NOTIFY, Channel.WEBPUSH)]
        # The email keeps its head start after a push that came this late: email_after - grace later.
        assert morning.recheck_at == at(MSK, 2026, 11, 27, 7, 0, 1) + 240

    def test_due_before_the_window_is_not_held(self) -> None:
        out = decide(check(T0 + 59.5, recipient(prefs=night("22:00", "07:00")), grace=59))
        assert [(d.action, d.channel) for d in out.decisions] == [(Action.NOTIFY, Channel.EMAIL)]

    def test_muted(self) -> None:
        [d] = decide(check(T0 + 61, recipient(prefs=Preferences(muted_dialogs=frozenset({100}))))).decisions
        assert (d.action, d.reason) == (Action.SKIP, Reason.MUTED)

    def test_push_off_means_email_at_grace(self) -> None:
        [d] = decide(check(T0 + 61, recipient(prefs=Preferences(push=False), has_push=True))).decisions
        assert (d.action, d.channel, d.reason) == (Action.NOTIFY, Channel.EMAIL, Reason.UNREAD)

    def test_email_off_means_push_only(self) -> None:
        s = recipient(prefs=Preferences(email=False), has_push=True)
        assert [(d.action, d.channel) for d in decide(check(T0 + 61, s)).decisions] == [(Action.NOTIFY, Channel.WEBPUSH)]
        pushed = recipient(prefs=Preferences(email=False), has_push=True, notified=frozenset({(Channel.WEBPUSH, 10)}))
        [d] = decide(check(T0 + 301, pushed)).decisions
        assert (d.action, d.channel, d.reason) == (Action.SKIP, Channel.EMAIL, Reason.CHANNEL_OFF)

    def test_both_off(self) -> None:
        [d] = decide(check(T0 + 61, recipient(prefs=Preferences(push=False, email=False), has_push=True))).decisions
        assert (d.action, d.reason) == (Action.SKIP, Reason.CHANNEL_OFF)

    def test_read_by_another_recipient(self) -> None:
        owner, member = recipient(OWNER), recipient(MEMBER, read_pointer=12)
        out = decide(check(T0 + 61, owner, member))
        assert [(d.manager_id, d.reason) for d in out.decisions] == [(OWNER, Reason.READ_BY_OTHER), (MEMBER, Reason.READ)]


class TestThroughThePipeline:
    def test_a_message_due_at_night_is_sent_when_the_night_ends(self, rt: Runtime, hostdb: Host, smtp_server: SmtpServer) -> None:
        hostdb.user(OWNER, "owner@example.com")
        hostdb.dialog(100, OWNER)
        client.set_preferences(OWNER, quiet_hours={"start": "22:00", "end": "07:00"})
        drive = Drive(rt)
        with freeze_time(dt.datetime.fromtimestamp(T0, dt.UTC)) as clock:
            client.schedule_fallback(100, hostdb.message(100, "Добрый вечер"))
            clock.tick(61)  # 22:00:01 MSK: due, held
            drive()
            clock.move_to(dt.datetime.fromtimestamp(at(MSK, 2026, 11, 27, 6, 59, 59), dt.UTC))
            drive()
            assert smtp_server.messages == []
            clock.tick(2)  # 07:00:01
            drive()
        assert len(smtp_server.wait_for(1)) == 1
        d = models.decisions
        with rt.engine.connect() as conn:
            made = conn.execute(select(d.c.action, d.c.reason).order_by(d.c.id)).all()
        assert [tuple(r) for r in made] == [("hold", "quiet_hours"), ("notify", "unread")]

    def test_read_during_the_night_nothing_in_the_morning(self, rt: Runtime, hostdb: Host, smtp_server: SmtpServer) -> None:
        hostdb.user(OWNER, "owner@example.com")
        hostdb.dialog(100, OWNER)
        client.set_preferences(OWNER, quiet_hours={"start": "22:00", "end": "07:00"})
        drive = Drive(rt)
        with freeze_time(dt.datetime.fromtimestamp(T0, dt.UTC)) as clock:
            mid = hostdb.message(100, "ау")
            client.schedule_fallback(100, mid)
            clock.tick(61)
            drive()
            client.mark_read(100, OWNER, mid)
            clock.move_to(dt.datetime.fromtimestamp(at(MSK, 2026, 11, 27, 7, 0, 1), dt.UTC))
            drive()
        assert smtp_server.messages == []

    def test_quiet_hours_that_begin_while_a_delivery_waits_hold_it_without_costing_an_attempt(
        self, rt: Runtime, hostdb: Host, smtp_server: SmtpServer
    ) -> None:
        hostdb.user(OWNER, "owner@example.com")
        hostdb.dialog(100, OWNER)
        client.set_preferences(OWNER, quiet_hours={"start": "22:00", "end": "07:00"})
        smtp_server.refuse_next(1)
        drive = Drive(rt)
        with freeze_time(dt.datetime.fromtimestamp(T0 - 120, dt.UTC)) as clock:  # 21:57
            client.schedule_fallback(100, hostdb.message(100, "ау"))
            clock.tick(61)  # 21:58:01: due, the server says 421
            [first] = drive()
            assert first.retry_in is not None
            clock.tick(3600)  # 22:58: the retry comes inside the window
            [held] = drive()
            assert held.reason == "quiet_hours"
            assert rows_one(rt).attempts == 1  # the 421; holding cost nothing
            clock.move_to(dt.datetime.fromtimestamp(at(MSK, 2026, 11, 27, 6, 59, 59), dt.UTC))
            assert drive() == []
            clock.tick(2)
            drive()
        assert len(smtp_server.wait_for(1)) == 1

    @pytest.mark.parametrize(("change", "reason"), [({"muted_dialogs": [100]}, "muted"), ({"email": False}, "channel_off")])
    def test_a_choice_made_while_the_email_waits_is_honoured_at_send_time(
        self, rt: Runtime, hostdb: Host, smtp_server: SmtpServer, change: dict[str, object], reason: str
    ) -> None:
        hostdb.user(OWNER, "owner@example.com")
        hostdb.dialog(100, OWNER)
        smtp_server.refuse_next(1)
        drive = Drive(rt)
        with freeze_time("2026-11-26 12:00:00") as clock:
            client.schedule_fallback(100, hostdb.message(100, "ау"))
            clock.tick(61)
            drive()
            client.set_preferences(OWNER, **change)
            clock.tick(3600)
            drive()
        assert smtp_server.messages == []
        row = rows_one(rt)
        assert (row.status, row.reason) == ("skipped", reason)

    def test_read_by_another_recipient_drops_the_others(self, rt: Runtime, hostdb: Host, smtp_server: SmtpServer) -> None:
        hostdb.user(OWNER, "owner@example.com")
        hostdb.user(MEMBER, "member@example.com")
        hostdb.dialog(100, OWNER)
        client.add_team_member(OWNER, MEMBER)
        smtp_server.refuse_next(2)  # both emails wait for their retry
        drive = Drive(rt)
        with freeze_time("2026-11-26 12:00:00") as clock:
            mid = hostdb.message(100, "ау")
            client.schedule_fallback(100, mid)
            clock.tick(61)
            drive()
            client.mark_read(100, MEMBER, mid)  # the member read it: nobody else needs telling
            clock.tick(3600)
            drive()
        assert smtp_server.messages == []
        d = models.deliveries
        with rt.engine.connect() as conn:
            got = conn.execute(select(d.c.manager_id, d.c.status, d.c.reason).order_by(d.c.manager_id)).all()
        assert [tuple(r) for r in got] == [(OWNER, "skipped", "read_by_other"), (MEMBER, "skipped", "read")]


def rows_one(rt: Runtime):  # type: ignore[no-untyped-def]
    with rt.engine.connect() as conn:
        return conn.execute(select(models.deliveries)).one()


def test_preferences_round_trip_through_the_client(rt: Runtime) -> None:
    assert client.get_preferences(OWNER) == {
        "push": None, "email": None, "language": None, "time_zone": None, "quiet_hours": None, "muted_dialogs": []}
    got = client.set_preferences(OWNER, email=False, time_zone="Asia/Yekaterinburg",
                                 quiet_hours={"start": "23:30", "end": "06:15"}, muted_dialogs=[7, 3, 7])
    assert got == {"push": None, "email": False, "language": None, "time_zone": "Asia/Yekaterinburg",
                   "quiet_hours": {"start": "23:30", "end": "06:15"}, "muted_dialogs": [3, 7]}
    assert client.set_preferences(OWNER, quiet_hours=None, muted_dialogs=[])["quiet_hours"] is None
    assert client.get_preferences(OWNER)["muted_dialogs"] == [] and client.get_preferences(OWNER)["email"] is False
    with pytest.raises(InvalidInput, match="time_zone"):
        client.set_preferences(OWNER, time_zone="Europe/Atlantis")
    assert client.get_preferences(OWNER)["time_zone"] == "Asia/Yekaterinburg"  # nothing changed
