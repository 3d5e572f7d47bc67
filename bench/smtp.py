"""What a mail costs the sending process: our SMTP pool (one event loop for every conversation) next to one
event loop per sending thread, the way the pool worked before.

    .venv/bin/python -m bench.smtp [--mails 1500] [--threads 32] [--rounds 4] [--delay 0.02]

A sending lane has NOTIFIER_MAX_IN_FLIGHT_PER_HOST threads (32 by default), each running one send at a
time. aiosmtplib is asyncio-only, so a thread's send runs on an event loop somewhere:

  ours       `notifier.channels.email.SmtpPool`: one loop on a thread of the pool's own; a sending thread
             hands its conversation over and waits for the end of it; idle connections are reused by
             whichever send comes next;
  baseline   one `asyncio.Runner` and one kept-open aiosmtplib connection per sending thread (the pool
             before this change): each of a mail's replies (MAIL, RCPT, DATA, end of data) wakes the
             thread that waits for it.

The SMTP sink (`tests.smtpserver`, a separate process) delays every reply after the greeting by `--delay`,
as a server a round trip away would. Both ways send the same composed message (Russian templates, 7.5 KB)
from `--threads` threads; the ways alternate for `--rounds` rounds, each after a warm-up that opens every
connection. Prints, per way, this process's CPU per mail (median of the rounds, and the spread) and the
mails per second; then the ratio of ours to the baseline; and the machine. The sink's own CPU is not in
either figure.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import aiosmtplib

from bench._machine import describe, format_machine
from notifier.channels.base import EmailTarget
from notifier.channels.email import SmtpPool
from notifier.channels.mailbytes import compose
from notifier.channels.mailheaders import recipient_address
from notifier.config import Settings, load_settings
from notifier.render import MessageView, RenderContext, RenderedEmail, Renderer
from tests.control import ServiceProc

PACKAGES = ("aiosmtplib", "aiosmtpd")


class PerThreadLoops:
    """The baseline: every sending thread owns an event loop and one kept-open connection."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[tuple[asyncio.Runner, aiosmtplib.SMTP]] = []

    def _mine(self) -> tuple[asyncio.Runner, aiosmtplib.SMTP]:
        mine: tuple[asyncio.Runner, aiosmtplib.SMTP] | None = getattr(self._local, "mine", None)
        if mine is None:
            s = self.settings
            smtp = aiosmtplib.SMTP(hostname=s.smtp_host, port=s.smtp_port, start_tls=False,
                                   timeout=s.smtp_timeout_seconds)
            mine = self._local.mine = (asyncio.Runner(), smtp)
            with self._lock:
                self._all.append(mine)
        return mine

    async def _send(self, smtp: aiosmtplib.SMTP, recipient: str, data: bytes) -> None:
        if not smtp.is_connected:
            await smtp.connect()
        await smtp.sendmail(self.settings.email_from_address.addr_spec, [recipient], data,
                            timeout=self.settings.smtp_timeout_seconds)

    def send(self, target: EmailTarget, rendered: RenderedEmail) -> None:
        runner, smtp = self._mine()
        runner.run(self._send(smtp, recipient_address(target).addr_spec, compose(self.settings, target, rendered)))

    def close(self) -> None:
        with self._lock:
            everything, self._all = self._all, []
        for runner, smtp in everything:
            if smtp.is_connected:
                runner.run(smtp.quit())
            runner.close()


@dataclass(frozen=True)
class Round:
    cpu_ms_per_mail: float
    mails_per_second: float


def one_round(sender: SmtpPool | PerThreadLoops, threads: int, mails: int, target: EmailTarget,
              rendered: RenderedEmail) -> Round:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: sender.send(target, rendered), range(threads * 4)))  # every connection open
        cpu, wall = time.process_time(), time.perf_counter()
        list(pool.map(lambda _: sender.send(target, rendered), range(mails)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return Round(1000 * cpu / mails, mails / wall)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.smtp", description=__doc__.split("\n")[0])
    parser.add_argument("--mails", type=int, default=1500, help="mails per way and round")
    parser.add_argument("--threads", type=int, default=32, help="sending threads (NOTIFIER_MAX_IN_FLIGHT_PER_HOST)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--delay", type=float, default=0.02, help="the sink's delay before every reply")
    args = parser.parse_args()
    for name in ("mails", "threads", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.delay < 0:
        parser.error("--delay must not be negative")

    sink = ServiceProc("tests.smtpserver", "--delay", str(args.delay))
    try:
        settings = load_settings({"NOTIFIER_DATABASE_URL": "sqlite://", "NOTIFIER_SMTP_HOST": "127.0.0.1",
                                  "NOTIFIER_SMTP_PORT": str(sink.port), "NOTIFIER_SMTP_TLS": "none"})
        rendered = Renderer().email(RenderContext(
            dialog_id=1, language="ru", recipient_name="Анна", visitor_name="Посетитель", site_name="Сайт",
            messages=(MessageView(1, "Здравствуйте! Подскажите, когда придёт заказ 12345?"),),
            dialog_url="https://example.com/dialogs/1", total=1))
        target = EmailTarget("r1@bench.example", "Анна", "<bench.1@example.com>", None)
        results: dict[str, list[Round]] = {"ours": [], "baseline": []}
        for i in range(args.rounds):
            order = ("ours", "baseline") if i % 2 == 0 else ("baseline", "ours")
            for way in order:
                sender = SmtpPool(settings) if way == "ours" else PerThreadLoops(settings)
                try:
                    results[way].append(one_round(sender, args.threads, args.mails, target, rendered))
                finally:
                    sender.close()
                sink.command("reset")
        stored = len(compose(settings, target, rendered))
    finally:
        sink.close()

    print(format_machine(describe(None, PACKAGES)))
    print(f"{args.mails:,} mails per way and round from {args.threads} threads, {args.rounds} rounds; "
          f"SMTP sink in its own process, {args.delay * 1000:.0f} ms before every reply; message {stored:,} bytes")
    medians = {}
    for way, label in (("ours", "ours: one event loop for the pool"), ("baseline", "baseline: a loop per thread")):
        cpu = [r.cpu_ms_per_mail for r in results[way]]
        rate = [r.mails_per_second for r in results[way]]
        medians[way] = statistics.median(cpu)
        print(f"  {label:36} {medians[way]:.3f} ms CPU/mail (rounds {min(cpu):.3f}-{max(cpu):.3f}), "
              f"{statistics.median(rate):.0f} mails/s")
    print(f"  ours / baseline, CPU per mail: {medians['ours'] / medians['baseline']:.2f}x")


if __name__ == "__main__":
    main()
