"""The `notifier` command: init-db, schedule, status, why, worker, demo, vapid."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from notifier import logs, snapshot
from notifier.config import get_settings, log_format
from notifier.db import get_engine
from notifier.errors import NotifierError
from notifier.validate import check_id


def _fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z" if ts else "-"


def cmd_init_db(_: argparse.Namespace) -> int:
    from notifier.migrate import upgrade

    settings = get_settings()
    engine = get_engine(settings.database_url)
    upgrade(engine)
    print(f"our tables are up to date ({engine.url.render_as_string(hide_password=True)})")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from worker import client

    ok = client.schedule_fallback(args.dialog_id, args.message_id)
    print("scheduled" if ok else "redis unavailable: not scheduled (the reconciler will catch it)")
    return 0 if ok else 1


def cmd_status(args: argparse.Namespace) -> int:
    from notifier.redis_conn import client_for, resolve_url
    from notifier.store import Store

    settings = get_settings()
    store = Store(client_for(resolve_url(settings)))
    counts = store.counts()
    print(f"pending checks: {counts['pending']}   in flight: {counts['inflight']}   parked: {counts['parked']}")
    for dialog_id, due in store.pending(10):
        print(f"  dialog {dialog_id} due {_fmt_time(due)}")
    with get_engine(settings.database_url).connect() as conn:
        print(f"\nrecent decisions (newest first, {args.limit}):")
        for r in snapshot.recent_decisions(conn, args.limit):
            print(
                f"  {_fmt_time(r.created_at)} dialog={r.dialog_id} manager={r.manager_id or '-'} "
                f"{r.action} {r.channel or '-'} reason={r.reason} "
                f"messages={r.first_message_id or '-'}..{r.last_message_id or '-'}"
            )
        print("\ndeliveries by channel and status:")
        for channel, status, count in snapshot.delivery_counts(conn):
            print(f"  {channel:8} {status:10} {count}")
        failed = snapshot.failed_deliveries(conn, args.limit)
    if failed:
        print("\nfailed deliveries:")
        for r in failed:
            print(f"  #{r.id} dialog={r.dialog_id} manager={r.manager_id} {r.channel} attempts={r.attempts} error={r.last_error}")
    return 0


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def why_report(dialog_id: int, manager_id: int | None) -> dict[str, Any]:
    """Every decision and delivery for a dialog, oldest first: the answer to "why was I (not) notified?"."""
    with get_engine(get_settings().database_url).connect() as conn:
        decisions, deliveries = snapshot.dialog_history(conn, dialog_id, manager_id)
    return {
        "dialog_id": dialog_id,
        "decisions": [
            {"at": _iso(r.created_at), "manager_id": r.manager_id, "channel": r.channel, "action": r.action,
             "reason": r.reason, "first_message_id": r.first_message_id, "last_message_id": r.last_message_id}
            for r in decisions
        ],
        "deliveries": [
            {"id": r.id, "manager_id": r.manager_id, "channel": r.channel, "status": r.status, "attempts": r.attempts,
             "last_error": r.last_error, "sent_at": _iso(r.sent_at)}
            for r in deliveries
        ],
    }


def cmd_why(args: argparse.Namespace) -> int:
    check_id("DIALOG_ID", args.dialog_id)
    if args.manager is not None:
        check_id("--manager", args.manager)
    report = why_report(args.dialog_id, args.manager)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    who = f" for manager {args.manager}" if args.manager is not None else ""
    print(f"dialog {args.dialog_id}{who}")
    print("decisions (oldest first):" if report["decisions"] else "no decisions yet")
    for x in report["decisions"]:
        first, last = x["first_message_id"], x["last_message_id"]
        messages = f" messages={first}..{last}" if first is not None else ""
        print(f"  {x['at']} manager={x['manager_id'] or '-'} {x['channel'] or '-'} {x['action']} reason={x['reason']}{messages}")
    print("deliveries:" if report["deliveries"] else "no deliveries")
    for x in report["deliveries"]:
        sent = f" sent={x['sent_at']}" if x["sent_at"] else ""
        error = f" last_error={x['last_error']}" if x["last_error"] else ""
        print(f"  #{x['id']} manager={x['manager_id']} {x['channel']} {x['status']} attempts={x['attempts']}{sent}{error}")
    return 0


def _celery_worker(args: argparse.Namespace, role: str, json_logs: bool) -> list[str]:
    from worker.celery_app import CONTROL_QUEUE, SEND_QUEUE

    queues = {"control": CONTROL_QUEUE, "send": SEND_QUEUE, "single": f"{CONTROL_QUEUE},{SEND_QUEUE}"}[role]
    argv = [sys.executable, "-m", "celery", "-A", "worker", "worker", "-E", "-l", args.loglevel, "-Q", queues]
    if role != "single":
        argv += ["-n", f"{role}@%h"]
    if role != "send" and not args.no_beat:
        argv.append("-B")
    if args.concurrency:
        argv += ["-c", str(args.concurrency)]
    if json_logs:
        argv.insert(4, "--quiet")  # Celery prints its start-up banner to stdout, around logging: not JSON
    return argv


def cmd_worker(args: argparse.Namespace) -> int:
    """Resolve Redis (starting the embedded one if needed), create our tables, then run Celery: by default
    two workers, one for control work (dispatch, checks, with beat) and one for sending, so that dispatch
    never waits behind a backlog of deliveries; `--role` runs one of them (one per container)."""
    from notifier.migrate import upgrade
    from notifier.redis_conn import resolve_url

    settings = get_settings()
    os.environ["NOTIFIER_REDIS_URL"] = resolve_url(settings)  # every child shares the same Redis
    upgrade(get_engine(settings.database_url))
    json_logs = settings.log_format == "json"
    if args.role != "both":
        argv = _celery_worker(args, args.role, json_logs)
        os.execvp(argv[0], argv)
    return _supervise([_celery_worker(args, "control", json_logs), _celery_worker(args, "send", json_logs)])


def _supervise(commands: list[list[str]]) -> int:
    """Run the commands side by side; stop them all when one exits or we are asked to stop."""
    procs = [subprocess.Popen(cmd) for cmd in commands]
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while all(proc.poll() is None for proc in procs):
        time.sleep(0.2)
    if not stopping:
        stop(signal.SIGTERM, None)
    codes = [proc.wait() for proc in procs]
    return 0 if stopping else max(codes, key=abs) or 1


def cmd_vapid(_: argparse.Namespace) -> int:
    from notifier.pushkeys import generate_vapid_keys

    private, public = generate_vapid_keys()
    print("# public key, for the admin panel's pushManager.subscribe({applicationServerKey}):")
    print(public)
    print("# worker environment (keep the private key secret):")
    print(f"NOTIFIER_VAPID_PRIVATE_KEY={private}")
    print("NOTIFIER_VAPID_SUBJECT=mailto:ops@example.com")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from notifier.demo import run_demo

    return run_demo(keep=args.keep)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="notifier", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init-db", help="create or upgrade our notifier_ tables (idempotent)").set_defaults(fn=cmd_init_db)
    p = sub.add_parser("schedule", help="schedule a fallback check for a visitor message")
    p.add_argument("dialog_id", type=int)
    p.add_argument("message_id", type=int)
    p.set_defaults(fn=cmd_schedule)
    p = sub.add_parser("status", help="pending checks, recent decisions, deliveries")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(fn=cmd_status)
    p = sub.add_parser("why", help="every decision and delivery of a dialog: why was a manager (not) notified?")
    p.add_argument("dialog_id", type=int, metavar="DIALOG_ID")
    p.add_argument("--manager", type=int, metavar="ID", help="only this manager's decisions and deliveries")
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.set_defaults(fn=cmd_why)
    p = sub.add_parser("worker", help="run the Celery workers (with beat) on the configured or embedded services")
    p.add_argument("--role", choices=("both", "control", "send", "single"), default="both",
                   help="both (default): a control worker with beat and a sending worker; control or send: one of "
                        "them; single: one worker for both queues (small installs)")
    p.add_argument("--no-beat", action="store_true", help="run beat elsewhere (one beat per deployment is enough)")
    p.add_argument("--concurrency", type=int, default=0, help="worker processes each (default: one per core)")
    p.add_argument("--loglevel", default="info")
    p.set_defaults(fn=cmd_worker)
    sub.add_parser("vapid", help="generate a VAPID key pair for Web Push").set_defaults(fn=cmd_vapid)
    p = sub.add_parser("demo", help="the whole story on this machine, with no configuration")
    p.add_argument("--keep", action="store_true", help="keep the embedded Redis data too (mail and database are kept)")
    p.set_defaults(fn=cmd_demo)
    args = parser.parse_args(argv)
    try:
        logs.configure_cli(log_format())
        return int(args.fn(args))
    except NotifierError as exc:
        print(f"notifier: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
