"""The shape a maintainer relies on, checked: one home for each concern, one error tree, a stated API."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import notifier.errors
from notifier.errors import NotifierError
from worker import client

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("notifier", "worker")


def sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py") if "migrations" not in p.parts)


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


@pytest.mark.parametrize("name", ["check", "deliver", "sending", "reconcile", "cli"])
def test_orchestration_holds_no_sql(name: str) -> None:
    used = imports(REPO / "notifier" / f"{name}.py")
    assert not any(m == "sqlalchemy" or m.startswith("sqlalchemy.") for m in used), sorted(used)


def test_dialect_switches_live_in_two_helpers() -> None:
    """How each database spells INSERT ... ON CONFLICT (the upsert helper) and a list of ids (`db.any_of`)."""
    users = [p.relative_to(REPO).as_posix() for p in sources() if any("sqlalchemy.dialects" in m for m in imports(p))]
    assert users == ["notifier/ledger/_upsert.py"]
    compilers = [p.relative_to(REPO).as_posix() for p in sources() if "@compiles(" in p.read_text()]
    assert compilers == ["notifier/db.py"]


def test_only_the_store_touches_redis_keys() -> None:
    """Nothing but `notifier.store.Store` runs commands on our keys (`store.r` stays private in practice)."""
    offenders = []
    for path in sources():
        if path.name == "store.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "store.r." in line or "store.r)" in line or ".r.pipeline(" in line:
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []


def test_sql_reads_and_writes_have_one_home_each() -> None:
    """select/insert/update/delete are spelled only in snapshot (reads) and ledger (writes), plus the demo's
    seeding of a host-shaped database and the migration helper."""
    allowed_prefixes = ("notifier/snapshot/", "notifier/ledger/")
    allowed = {"notifier/demo.py"}
    offenders = []
    for path in sources():
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith(allowed_prefixes) or rel in allowed:
            continue
        used = imports(path)
        sql = {m for m in used if m.split(".")[-1] in ("select", "insert", "update", "delete") and m.startswith("sqlalchemy")}
        if sql:
            offenders.append(f"{rel}: {sorted(sql)}")
    assert offenders == []


def test_no_import_cycles_at_import_time() -> None:
    graph: dict[str, set[str]] = {}
    names = {module_name(p): p for p in sources()}
    for name, path in names.items():
        targets = set()
        for imported in imports(path, top_level_only=True):
            while imported and imported not in names:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str], done: set[str]) -> None:
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            # A package importing its own submodules (its __init__ re-exports) is not a cycle.
            if not nxt.startswith(node + "."):
                visit(nxt, [*stack, node], done)
        done.add(node)

    done: set[str] = set()
    for node in sorted(graph):
        visit(node, [], done)
    assert cycles == []


def test_every_error_we_define_is_a_notifier_error() -> None:
    defined = []
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and (b.id.endswith("Error") or b.id == "Exception") for b in node.bases
            ):
                defined.append((path.relative_to(REPO).as_posix(), node.name))
    assert defined and all(p == "notifier/errors.py" for p, _ in defined), defined
    for _, name in defined:
        cls = getattr(notifier.errors, name)
        assert issubclass(cls, NotifierError), name


def test_we_raise_only_our_own_errors() -> None:
    """No bare ValueError/TypeError/RuntimeError/KeyError leaves our code (worker's module __getattr__ raises
    AttributeError, as Python requires)."""
    offenders = []
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name):
                name = node.exc.func.id
                if name in ("ValueError", "TypeError", "RuntimeError", "KeyError", "Exception"):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} raises {name}")
    assert offenders == []


CLIENT_API = [
    "Presence",
    "aclose",
    "add_team_member",
    "amark_read",
    "amay_see_dialog",
    "amissed",
    "aschedule_fallback",
    "delete_subscription",
    "get_preferences",
    "mark_read",
    "may_see_dialog",
    "metrics_collector",
    "missed",
    "presence",
    "remove_team_member",
    "save_subscription",
    "schedule_fallback",
    "set_language",
    "set_preferences",
    "stats",
    "unsubscribe",
]


def test_the_client_api_is_pinned() -> None:
    assert sorted(client.__all__) == CLIENT_API
    public = sorted(
        n for n, v in vars(client).items() if not n.startswith("_") and getattr(v, "__module__", None) == client.__name__
    )
    assert set(public) <= set(CLIENT_API), f"public but not declared: {set(public) - set(CLIENT_API)}"
    for name in CLIENT_API:
        assert hasattr(client, name)
    for name in ("aclose", "amark_read", "amay_see_dialog", "amissed", "aschedule_fallback"):
        assert inspect.iscoroutinefunction(getattr(client, name)), name
    for name in ("atouch", "aleave", "atouch_site", "aleave_site", "aconnection_stats"):
        assert inspect.iscoroutinefunction(getattr(client.presence, name)), name
