"""Clients for bench.deliver's baselines, against the same delayed sinks the workers use.

  capacity  a concurrent client hammering one sink alone (many connections at once, each reused): what the
            sink itself can take, so a worker figure near it says "the sink was the limit", not "we were".
  naive     what a plain implementation does, one after another: stdlib `smtplib` with a new connection per
            mail; `pywebpush.webpush()` per push (a new TLS connection, key load and signature per call).
"""

from __future__ import annotations

import asyncio
import os
import smtplib
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from bench._fleet import VAPID_SUBJECT

SENDER = "noreply@bench.test"


@dataclass(frozen=True)
class Rate:
    what: str
    count: int
    seconds: float
    failures: int = 0
    connections: int = 0

    @property
    def per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def sample_mail(i: int) -> bytes:
    """A mail the size of ours (text and HTML alternatives, Cyrillic, about 3 KB)."""
    msg = EmailMessage()
    msg["Subject"] = f"Новое сообщение в диалоге #{i}"
    msg["From"] = f"ReplyX <{SENDER}>"
    msg["To"] = f"naive{i}@naive.test"
    text = "Здравствуйте! Подскажите, пожалуйста, есть ли доставка в Екатеринбург и сколько она стоит? " * 8
    msg.set_content(text, charset="utf-8", cte="quoted-printable")
    msg.add_alternative(f"<html><body><p>{text}</p></body></html>", subtype="html", charset="utf-8", cte="quoted-printable")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))  # smtplib sends bytes as they are


def naive_smtp(port: int, n: int) -> Rate:
    failures = 0
    t0 = time.perf_counter()
    for i in range(n):
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:  # connect, EHLO, ..., QUIT per mail
                smtp.sendmail(SENDER, [f"naive{i}@naive.test"], sample_mail(i))
        except (smtplib.SMTPException, OSError):
            failures += 1
    return Rate("naive smtplib, new connection per mail", n - failures, time.perf_counter() - t0, failures, n)


def naive_push(origin: str, cert_file: str, n: int) -> Rate:
    """`pywebpush.webpush()` with its defaults (a fresh claims dict per call: it writes aud/exp into it)."""
    import pywebpush
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from bench.webpush import _b64url
    from notifier.pushkeys import generate_vapid_keys

    private, _public = generate_vapid_keys()
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    keys = {"p256dh": _b64url(point), "auth": _b64url(os.urandom(16))}
    data = '{"title": "Новое сообщение", "body": "Здравствуйте! Есть ли доставка в Екатеринбург?"}'
    saved = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = cert_file  # the same trust the workers get
    failures = 0
    t0 = time.perf_counter()
    try:
        for i in range(n):
            sub = {"endpoint": f"{origin}/push/naive{i}", "keys": keys}
            try:
                pywebpush.webpush(sub, data=data, vapid_private_key=private, vapid_claims={"sub": VAPID_SUBJECT},
                                  ttl=43200, timeout=10)
            except Exception:  # noqa: BLE001 - counted
                failures += 1
    finally:
        if saved is None:
            os.environ.pop("REQUESTS_CA_BUNDLE", None)
        else:
            os.environ["REQUESTS_CA_BUNDLE"] = saved
    return Rate("naive pywebpush.webpush() per push", n - failures, time.perf_counter() - t0, failures, n)


async def _hammer(worker: Any, concurrency: int, seconds: float) -> tuple[int, int, float]:
    done = [0, 0]
    stop_at = time.perf_counter() + seconds
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k, stop_at, done) for k in range(concurrency)))
    return done[0], done[1], time.perf_counter() - t0


def smtp_capacity(port: int, concurrency: int, seconds: float) -> Rate:
    """`concurrency` aiosmtplib connections, each sending mail after mail for `seconds`."""
    import aiosmtplib

    body = sample_mail(0)

    async def one(k: int, stop_at: float, done: list[int]) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10)
        await smtp.connect()
        try:
            while time.perf_counter() < stop_at:
                try:
                    await smtp.sendmail(SENDER, [f"cap{k}@cap.test"], body)
                    done[0] += 1
                except aiosmtplib.SMTPException:
                    done[1] += 1
        finally:
            await smtp.quit()

    sent, failed, took = asyncio.run(_hammer(one, concurrency, seconds))
    return Rate(f"sink capacity: {concurrency} concurrent SMTP connections", sent, took, failed, concurrency)


def push_capacity(origin: str, cert_file: str, concurrency: int, seconds: float) -> Rate:
    """`concurrency` threads, each with its own keep-alive `requests.Session`, posting push after push.

    (Threads, not httpx on asyncio: httpx's pool served 64 concurrent connections at a tenth of this rate.) The
    client shares this process's GIL, so the figure is a lower bound of what the sink takes."""
    import threading

    import requests

    body = os.urandom(300)
    done = [0, 0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def one(k: int) -> None:
        with requests.Session() as session:
            session.verify = cert_file
            while time.perf_counter() < stop_at:
                resp = session.post(f"{origin}/push/cap{k}", data=body, verify=cert_file, timeout=10,
                                    headers={"TTL": "60", "Content-Encoding": "aes128gcm"})
                with lock:
                    done[0 if resp.status_code == 201 else 1] += 1

    threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Rate(f"sink capacity: {concurrency} concurrent HTTPS connections", done[0], time.perf_counter() - t0, done[1],
                concurrency)
