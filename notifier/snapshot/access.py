"""Who may see a dialog: the facts `decide.may_see` judges, and what listing a viewer's dialogs needs."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from notifier import host, models
from notifier.decide import DialogFacts, Person, may_see
from notifier.snapshot.dialog import load_people, load_team


@dataclass(frozen=True)
class DialogAccess:
    viewer: Person
    dialog: DialogFacts
    team_ids: frozenset[int]  # the owner's registered team
    last_message_id: int  # the dialog's newest message of any sender, 0 when it has none


def load_viewer(conn: Connection, viewer_id: int) -> tuple[Person, frozenset[int]]:
    """The viewer as a `Person` (someone the host knows but `users` lacks is no admin) and the owners of
    the teams they are registered in."""
    viewer = load_people(conn, {viewer_id}).get(viewer_id) or Person(viewer_id, None, role=None)
    t = models.team_members
    member_of = frozenset(int(o) for o in conn.execute(select(t.c.owner_id).where(t.c.user_id == viewer_id)).scalars())
    return viewer, member_of


def visible_dialog(conn: Connection, viewer_id: int, dialog_id: int) -> DialogAccess | None:
    """The dialog's access facts when `viewer_id` may see it; None when it does not exist or they may not
    (one answer for both, so a caller cannot learn which dialogs exist)."""
    d, m = host.dialogs, host.dialog_messages
    row = conn.execute(
        select(d.c.user_id, d.c.handoff_status, d.c.is_taken_over, d.c.assigned_manager_id).where(d.c.id == dialog_id)
    ).one_or_none()
    if row is None:
        return None
    facts = DialogFacts(
        id=dialog_id, owner_id=int(row.user_id or 0), handoff_status=row.handoff_status,
        is_taken_over=bool(row.is_taken_over), assigned_manager_id=row.assigned_manager_id,
    )
    viewer = load_people(conn, {viewer_id}).get(viewer_id) or Person(viewer_id, None, role=None)
    team = load_team(conn, facts.owner_id)
    if not may_see(viewer, facts, team):
        return None
    last = conn.execute(select(func.max(m.c.id)).where(m.c.dialog_id == dialog_id)).scalar_one_or_none()
    return DialogAccess(viewer, facts, team, int(last or 0))
