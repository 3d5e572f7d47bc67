"""Who may see a dialog (`decide.may_see`) and which tenants a viewer lists (`decide.visible_tenants`):
pure functions, checked exhaustively over plain values."""

from __future__ import annotations

import itertools

import pytest

from notifier.decide import DialogFacts, Person, may_see, resolve_recipients, visible_tenants

pytestmark = pytest.mark.host

OWNER, MEMBER, ASSIGNED_OUTSIDER, ADMIN, STRANGER, OTHER_OWNER = 1, 2, 3, 4, 5, 6


def person(id: int, role: str | None = "user", status: str | None = "active") -> Person:
    return Person(id, f"u{id}@example.com", role=role, status=status)


PEOPLE = {
    OWNER: person(OWNER),
    MEMBER: person(MEMBER),
    ASSIGNED_OUTSIDER: person(ASSIGNED_OUTSIDER),  # another tenant's manager, assigned through a host bug
    ADMIN: person(ADMIN, role=" Admin "),
    STRANGER: person(STRANGER),
    OTHER_OWNER: person(OTHER_OWNER),
}
TEAM = frozenset({MEMBER})


@pytest.mark.parametrize(
    ("viewer", "expected"),
    [(OWNER, True), (MEMBER, True), (ADMIN, True), (ASSIGNED_OUTSIDER, False), (STRANGER, False), (OTHER_OWNER, False)],
)
@pytest.mark.parametrize("handoff", [None, "none", "requested", "active", "released", "cancelled"])
@pytest.mark.parametrize("assigned", [None, OWNER, MEMBER, ASSIGNED_OUTSIDER, ADMIN])
def test_owner_team_and_admin_see_an_assignment_alone_does_not(viewer: int, expected: bool, handoff: str | None,
                                                                 assigned: int | None) -> None:
    dialog = DialogFacts(100, OWNER, handoff_status=handoff, assigned_manager_id=assigned)
    assert may_see(PEOPLE[viewer], dialog, TEAM) is expected


@pytest.mark.parametrize("status", ["blocked", "inactive", None])
def test_account_status_is_the_hosts_business(status: str | None) -> None:
    dialog = DialogFacts(100, OWNER)
    assert may_see(person(OWNER, status=status), dialog, frozenset()) is True
    assert may_see(person(STRANGER, status=status), dialog, frozenset()) is False


def test_someone_the_users_table_lacks_is_no_admin() -> None:
    unknown = Person(ADMIN, None, role=None)
    assert may_see(unknown, DialogFacts(100, OWNER), TEAM) is False
    assert may_see(Person(OWNER, None, role=None), DialogFacts(100, OWNER), TEAM) is True


def test_every_recipient_the_notifier_picks_may_see_the_dialog() -> None:
    """Whoever resolve_recipients would notify passes may_see: nobody is told about a dialog they cannot open."""
    for handoff, assigned, team in itertools.product(
        [None, "requested", "active"], [None, OWNER, MEMBER, ASSIGNED_OUTSIDER, ADMIN], [frozenset(), TEAM]
    ):
        dialog = DialogFacts(100, OWNER, handoff_status=handoff, assigned_manager_id=assigned)
        candidates, refused = resolve_recipients(dialog, PEOPLE, team)
        assert all(may_see(c.person, dialog, team) for c in candidates), (handoff, assigned, team)
        assert all(not may_see(PEOPLE[r.manager_id], dialog, team) for r in refused if r.manager_id is not None)


def test_visible_tenants_agree_with_may_see() -> None:
    """A dialog is listed for a viewer exactly when may_see admits them (memberships: who is in whose team)."""
    teams = {OWNER: frozenset({MEMBER}), OTHER_OWNER: frozenset({MEMBER, STRANGER})}
    for viewer in PEOPLE.values():
        member_of = frozenset(owner for owner, team in teams.items() if viewer.id in team)
        tenants = visible_tenants(viewer, member_of)
        for owner in (OWNER, OTHER_OWNER, 99):
            listed = tenants is None or owner in tenants
            assert listed is may_see(viewer, DialogFacts(1, owner), teams.get(owner, frozenset())), (viewer.id, owner)
    assert visible_tenants(PEOPLE[ADMIN], frozenset()) is None
    assert visible_tenants(PEOPLE[MEMBER], frozenset({OWNER, OTHER_OWNER})) == {MEMBER, OWNER, OTHER_OWNER}
