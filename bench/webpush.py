"""How fast does `WebPushSender` deliver over HTTPS, next to a plain `pywebpush.webpush()` call per push?

    .venv/bin/python -m bench.webpush [--n 300] [--json PATH]

Real push services (FCM, Mozilla autopush, Apple, WNS) are HTTPS, so the receiver here is too: it runs in a
SEPARATE PROCESS (the tests' push service in sink mode, `python -m tests.pushservice --sink`) and serves HTTPS
on 127.0.0.1 with a fresh self-signed ECDSA P-256 certificate for IP 127.0.0.1, HTTP/1.1 keep-alive, one thread
per connection. It answers 201 at once and only stores each raw request; it checks nothing while the clock
runs, so neither path pays for verification in its timing, and it does not compete for this process's GIL.

Both clients trust that certificate through `REQUESTS_CA_BUNDLE` (set before any Session exists; requests
reads it per request, for our Session with trust_env and for the throwaway Session inside `requests.post()`
that pywebpush uses). A pre-flight proves verification is real: the same URL with requests' default trust
store (certifi), and the certificate presented for `localhost`, must both fail with CERTIFICATE_VERIFY_FAILED.
Nothing uses verify=False. The trust file is, with `--trust`:

  cert     the receiver's certificate alone: the cheapest trust store there is, so the baseline's
           per-connection `load_verify_locations` costs next to nothing (conservative for the ratio);
  certifi  (default) certifi's CA bundle with the receiver's certificate appended: what a default install trusts
           (requests 2.34 verifies with certifi's bundle and urllib3 loads it into a fresh SSLContext for
           every NEW connection), so the baseline pays that load per push, as it would in production.

The receiver sets TCP_NODELAY on accepted connections, as production servers do (Go's net/http, nginx):
without it, Nagle holds the response behind the TLS 1.3 session tickets until the client's delayed ACK
(~40 ms) fires, a loopback artefact that would hit mostly the baseline's fresh connections.

One browser-like subscription is made HERE (P-256 key pair + 16-byte auth secret; the receiver never sees the
private half), and N pushes go down each path in the same run, to the same receiver:

  ours    one `WebPushSender`: one keep-alive `requests.Session`, i.e. one TCP connection and ONE TLS
          handshake for the whole run; the VAPID Authorization header signed once per push-service origin
          and cached; a fresh ephemeral ECDH key per message (RFC 8291);
  plain   `pywebpush.webpush(...)` with its defaults: `requests.post()` per call, i.e. a new TCP connection
          and a FULL TLS handshake (new SSLContext, trust store load, ECDHE, certificate and host name
          verification) per push, a fresh key parse and a fresh ES256 signature per push. Only a fresh
          claims dict per call (pywebpush writes aud/exp into it), ttl, timeout=10 and Urgency: high are
          passed.

The payload is a realistic rendered push (`notifier.render.Renderer.push`, Russian templates, Cyrillic
visitor text, 310-360 bytes of UTF-8 JSON) for dialog ids cycling 1..50. The paths alternate in 3 rounds
(ours N/3, plain N/3, ours N/3, ...) so drift (CPU frequency, core placement, neighbours) hits both; the
figures are totals over the rounds. Connections and TLS handshakes are counted by the receiver (control
traffic goes over its stdin/stdout pipe, so it never shows up in the counts).

After timing, the receiver hands over everything it stored and THIS process verifies every push: the VAPID
JWT (ES256, raw r||s, signed by our VAPID key, aud == https://127.0.0.1:<port>, exp in the next 24 h, sub),
the RFC 8030 headers, the aes128gcm body (one record, a fresh sender key per message), decrypted with the
subscription's private key and auth secret, and the plaintext bytes equal to what was sent, in send order;
exactly 2N pushes, zero failures.

pywebpush 2.5.0 / py_vapid 1.9 need no workaround here: `webpush()` derives `aud` as `scheme://netloc` =
`https://127.0.0.1:<port>` (py_vapid's `^https?://[^/:]+(:\\d+)?$` accepts IP and port), and
`Vapid.from_string` takes our key format (raw 32-byte P-256 scalar, URL-safe base64, as `notifier vapid`
prints it), so the plain path gets the very same string as `NOTIFIER_VAPID_PRIVATE_KEY`.

Loopback still flatters the baseline: a real push service is one or more network round trips away, and a
new connection costs TCP + TLS round trips (2 RTT on TLS 1.3) on top of the handshake CPU measured here.

Target: ours >= 4x plain in pushes/s. A miss is reported ("MISSED"), not asserted: exit status 0 either way.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import socket
import ssl
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.control import ServiceProc

DEFAULT_N = 300
ROUNDS = 3
DIALOGS = 50
RATIO_TARGET = 4.0
SUBJECT = "mailto:bench@example.com"
TTL = 43200  # = the sender's default NOTIFIER_PUSH_TTL_SECONDS, so both paths send the same TTL
PACKAGES = ("pywebpush", "py-vapid", "http-ece", "requests", "urllib3", "cryptography")

# Visitor messages as the widget delivers them; the renderer quotes the latest one in the title.
_VISITOR_TEXTS = (
    "Здравствуйте! Подскажите, пожалуйста, есть ли доставка в Екатеринбург и сколько она стоит?",
    "Добрый день, заказ №48213 до сих пор не пришёл, трек-номер не отслеживается. Что случилось?",
    "Можно ли оплатить по счёту для юрлица? Нам нужны закрывающие документы с НДС.",
    "У вас на сайте цена 12 990 ₽, а в корзине 14 490 ₽ — это ошибка или скидка закончилась?",
    "Хочу вернуть куртку, размер не подошёл. Как оформить возврат, если чек потерялся?",
)
_VISITOR_NAMES = ("Анна", "Дмитрий Соколов", None, "Екатерина", "Игорь Петрович")


def _machine() -> tuple[dict[str, Any], str]:
    try:
        from bench._machine import describe, format_machine

        info = describe(None, packages=PACKAGES)
        return info, format_machine(info)
    except ImportError:  # bench/_machine.py missing: a minimal inline description
        import os
        import platform

        info = {
            "cpu_count": os.cpu_count(),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "platform": platform.platform(),
        }
        return info, f"CPU: {info['cpu_count']} cores | Python: {info['python']} | Platform: {info['platform']}"


def _rendered_pushes() -> list[Any]:
    """One rendered push per dialog id 1..DIALOGS, exactly as the worker would render them."""
    from notifier.render import MessageView, RenderContext, Renderer

    renderer = Renderer()
    pushes = []
    for dialog_id in range(1, DIALOGS + 1):
        count = 1 + dialog_id % 3
        messages = tuple(
            MessageView(dialog_id * 10 + k, _VISITOR_TEXTS[(dialog_id + k) % len(_VISITOR_TEXTS)]) for k in range(count)
        )
        ctx = RenderContext(
            dialog_id=dialog_id,
            language="ru",
            recipient_name="Мария",
            visitor_name=_VISITOR_NAMES[dialog_id % len(_VISITOR_NAMES)],
            site_name="Северный ветер",
            messages=messages,
            dialog_url=f"https://replyx.ru/dialogs?dialog_id={dialog_id}",
        )
        pushes.append(renderer.push(ctx))
    return pushes


def _split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(value: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", value):  # urlsafe_b64decode silently skips foreign characters
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


class Receiver(ServiceProc):
    """`tests.pushservice --sink` in a child process; control over its stdin/stdout (never over HTTP)."""

    def __init__(self) -> None:
        super().__init__("tests.pushservice", "--sink")
        self.origin: str = self.ready["origin"]
        self.cert_file: str = self.ready["cert_file"]

    def stats(self) -> dict[str, Any]:
        return self.command("stats")


def _trust_file(mode: str, receiver: Receiver, directory: Path) -> str:
    """The CA file both clients verify against (see the module docstring, `--trust`)."""
    if mode == "cert":
        return receiver.cert_file
    import certifi

    bundle = directory / "certifi+receiver.pem"
    own = Path(receiver.cert_file).read_text(encoding="ascii")
    bundle.write_text(Path(certifi.where()).read_text(encoding="utf-8").rstrip("\n") + "\n" + own, encoding="utf-8")
    return str(bundle)


def _context_load_us(cafile: str, repeat: int = 10) -> float:
    """What one new connection's trust setup costs: a fresh client SSLContext loading `cafile`."""
    t0 = time.perf_counter()
    for _ in range(repeat):
        ssl.create_default_context(cafile=cafile)
    return round((time.perf_counter() - t0) / repeat * 1e6, 1)


def _tls_preflight(receiver: Receiver, trust_file: str) -> dict[str, Any]:
    """Prove that both clients verify the receiver's certificate (and would fail without trusting it).

    Raises if the trusted paths fail or if an untrusted / wrong-host connection is NOT refused: a TLS
    verification failure must never be silently bypassed.
    """
    import requests
    import requests.utils

    url = receiver.origin + "/"
    out: dict[str, Any] = {}
    # 1. what requests will use as `verify` for the sender's Session (trust_env) and for requests.post()
    env = requests.Session().merge_environment_settings(url, {}, None, None, None)
    if env["verify"] != trust_file:
        raise RuntimeError(f"requests would verify with {env['verify']!r}, not {trust_file}")
    if requests.utils.get_environ_proxies(url):
        raise RuntimeError("an environment proxy applies to 127.0.0.1: the benchmark would measure the proxy")
    out["requests_verify"] = env["verify"]
    # 2. trusted: the path pywebpush takes (module-level requests.post -> fresh Session per call)
    resp = requests.get(url, timeout=10)
    if resp.status_code != 200 or resp.text != "ok":
        raise RuntimeError(f"trusted GET answered {resp.status_code} {resp.text!r}")
    # 3. the negotiated protocol, with the same trust anchor
    ctx = ssl.create_default_context(cafile=trust_file)
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            out["tls_version"] = tls.version()
            out["cipher"] = (tls.cipher() or ("?",))[0]
            cert = tls.getpeercert(binary_form=True) or b""
    from cryptography import x509

    pub = x509.load_der_x509_certificate(cert).public_key()
    out["server_key"] = f"ECDSA {pub.curve.name}" if isinstance(pub, ec.EllipticCurvePublicKey) else type(pub).__name__
    # 4. untrusted: requests' default store (certifi, no trust_env) must refuse the self-signed certificate
    untrusted = requests.Session()
    untrusted.trust_env = False
    for label, session, target in (
        ("untrusted_ca_refused", untrusted, url),
        ("wrong_host_refused", requests.Session(), f"https://localhost:{receiver.port}/"),  # cert is for the IP only
    ):
        try:
            session.get(target, timeout=10)
        except requests.exceptions.SSLError as exc:
            out[label] = "CERTIFICATE_VERIFY_FAILED" in str(exc)
        except requests.exceptions.ConnectionError as exc:  # e.g. localhost does not resolve to 127.0.0.1
            out[label] = f"skipped: {type(exc).__name__}"
            continue
        else:
            raise RuntimeError(f"{label}: a connection that must fail TLS verification succeeded")
        finally:
            session.close()
        if out[label] is not True:
            raise RuntimeError(f"{label}: unexpected TLS error")
    return out


def _verify_pushes(
    dump: dict[str, Any],
    expected: list[tuple[str, bytes, int]],
    *,
    origin: str,
    vapid_public: bytes,
    sub_key: ec.EllipticCurvePrivateKey,
    auth: bytes,
) -> tuple[list[str], dict[str, set[int]], int]:
    """Verify every stored push against what was sent, in order: (problems, connection ids per path, pushes OK)."""
    import http_ece
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    problems: list[str] = []
    conns: dict[str, set[int]] = {"ours": set(), "plain": set()}
    pushes = dump["pushes"]
    verified = 0
    if len(pushes) != len(expected):
        problems.append(f"receiver stored {len(pushes)} pushes, {len(expected)} were sent")
    vapid_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), vapid_public)
    sender_keys: set[bytes] = set()
    now = time.time()

    def check(push: dict[str, Any], path_name: str, payload: bytes, dialog_id: int) -> None:
        if push["path"] != "/push/bench":
            raise ValueError(f"path {push['path']!r}")
        names = [k.lower() for k, _ in push["headers"]]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate headers {names}")
        h = {k.lower(): v for k, v in push["headers"]}
        body = base64.b64decode(push["body_b64"], validate=True)
        if h.get("content-length") != str(len(body)):
            raise ValueError("Content-Length does not match the body")
        # RFC 8030 / 8291 headers, as both paths are asked to send them
        if h.get("content-encoding") != "aes128gcm":
            raise ValueError(f"Content-Encoding {h.get('content-encoding')!r}")
        if h.get("ttl") != str(TTL):
            raise ValueError(f"TTL {h.get('ttl')!r}")
        if h.get("urgency") != "high":
            raise ValueError(f"Urgency {h.get('urgency')!r}")
        if path_name == "ours" and h.get("topic") != f"dialog-{dialog_id}":
            raise ValueError(f"Topic {h.get('topic')!r}, expected 'dialog-{dialog_id}'")
        # RFC 8292 VAPID: `vapid t=<JWT>, k=<key>` (pywebpush writes no space after the comma)
        scheme, _, params = h.get("authorization", "").partition(" ")
        if scheme.lower() != "vapid":
            raise ValueError("Authorization is not the vapid scheme")
        parts = {}
        for item in params.split(","):
            key, sep, value = item.strip().partition("=")
            if sep:
                parts[key.strip().lower()] = value.strip()
        if _b64url_decode(parts.get("k", "")) != vapid_public:
            raise ValueError("k= is not our VAPID public key")
        header_b64, claims_b64, sig_b64 = parts.get("t", "").split(".")
        header, claims = json.loads(_b64url_decode(header_b64)), json.loads(_b64url_decode(claims_b64))
        sig = _b64url_decode(sig_b64)
        if header.get("alg") != "ES256" or len(sig) != 64:  # JWS ES256 = raw r||s, 64 bytes, not DER
            raise ValueError(f"not an ES256 JWT with a raw r||s signature (alg {header.get('alg')!r}, {len(sig)} bytes)")
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        try:
            vapid_key.verify(der, f"{header_b64}.{claims_b64}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise ValueError("VAPID signature does not verify") from None
        if claims.get("aud") != origin:
            raise ValueError(f"aud {claims.get('aud')!r} is not {origin}")
        exp = claims.get("exp")
        if not isinstance(exp, int) or isinstance(exp, bool) or not now < exp <= now + 24 * 3600:
            raise ValueError(f"exp {exp!r} is not within the next 24 hours")
        if claims.get("sub") != SUBJECT:
            raise ValueError(f"sub {claims.get('sub')!r}")
        # RFC 8291 aes128gcm: one record, keyid = the sender's 65-byte ephemeral key, fresh per message
        if len(body) > 4096 or len(body) < 86 or body[20] != 65 or len(body) - 86 > struct.unpack("!L", body[16:20])[0]:
            raise ValueError("aes128gcm body is not a single record keyed by a 65-byte sender key")
        sender_key = body[21:86]
        if sender_key in sender_keys:
            raise ValueError("sender ephemeral key reused")
        sender_keys.add(sender_key)
        plain = http_ece.decrypt(body, private_key=sub_key, auth_secret=auth, version="aes128gcm")
        if plain != payload:
            raise ValueError("decrypted payload differs from the payload sent")

    for i, (push, (path_name, payload, dialog_id)) in enumerate(zip(pushes, expected, strict=False)):
        conns[path_name].add(push["conn"])
        try:
            check(push, path_name, payload, dialog_id)
            verified += 1
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            problems.append(f"push #{i} ({path_name}): {type(exc).__name__}: {exc}"[:300])
    return problems, conns, verified


def run(n: int, trust: str = "cert") -> dict[str, Any]:
    import tempfile

    import pywebpush

    from notifier.channels.base import PushTarget
    from notifier.channels.webpush import WebPushSender
    from notifier.config import load_settings
    from notifier.pushkeys import generate_vapid_keys

    pushes = _rendered_pushes()
    payloads = [p.payload() for p in pushes]
    payload_strs = [b.decode("utf-8") for b in payloads]
    sizes = [len(b) for b in payloads]

    priv, pub = generate_vapid_keys()
    settings = load_settings(
        {
            "NOTIFIER_VAPID_PRIVATE_KEY": priv,
            "NOTIFIER_VAPID_SUBJECT": SUBJECT,
            "NOTIFIER_PUSH_ALLOWED_HOSTS": "127.0.0.1",
        }
    )
    # The browser's side of the subscription, made here: the receiver never sees the private half.
    sub_key = ec.generate_private_key(ec.SECP256R1())
    auth = os.urandom(16)
    p256dh = _b64url(sub_key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))

    import certifi

    saved_bundle = os.environ.get("REQUESTS_CA_BUNDLE")
    scratch = tempfile.TemporaryDirectory(prefix="bench-webpush-")
    receiver = Receiver()
    sender = None
    try:
        trust_file = _trust_file(trust, receiver, Path(scratch.name))
        # Before any Session exists: requests reads it per request, for Sessions with trust_env (ours) and
        # for the throwaway Session inside requests.post() (pywebpush).
        os.environ["REQUESTS_CA_BUNDLE"] = trust_file
        tls = _tls_preflight(receiver, trust_file)
        tls["trust"] = trust
        tls["trust_file_certs"] = Path(trust_file).read_text(encoding="utf-8").count("BEGIN CERTIFICATE")
        tls["context_load_us"] = _context_load_us(trust_file)
        tls["certifi_context_load_us"] = _context_load_us(certifi.where())

        origin = receiver.origin
        endpoint = f"{origin}/push/bench"
        sub = {"endpoint": endpoint, "expirationTime": None, "keys": {"p256dh": p256dh, "auth": _b64url(auth)}}
        target = PushTarget(subscription_id=1, endpoint=endpoint, p256dh=p256dh, auth=_b64url(auth))
        sender = active = WebPushSender(settings)

        keys = ("connections", "handshakes", "tls_failures", "requests", "cpu_s")
        stats: dict[str, dict[str, Any]] = {
            name: {"pushes": 0, "seconds": 0.0, "client_cpu_s": 0.0, "failures": 0, "errors": [], **{k: 0 for k in keys}}
            for name in ("ours", "plain")
        }
        expected: list[tuple[str, bytes, int]] = []  # (path, payload, dialog id) in the order sent
        seq = 0

        def ours(k: int) -> None:
            nonlocal seq
            st = stats["ours"]
            for _ in range(k):
                i = seq % DIALOGS
                seq += 1
                try:
                    active.send(target, pushes[i])
                    expected.append(("ours", payloads[i], pushes[i].dialog_id))
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    st["failures"] += 1
                    st["errors"].append(repr(exc)[:300])

        def plain(k: int) -> None:
            nonlocal seq
            st = stats["plain"]
            for _ in range(k):
                i = seq % DIALOGS
                seq += 1
                try:
                    pywebpush.webpush(
                        sub,
                        data=payload_strs[i],
                        vapid_private_key=priv,  # the same raw b64url scalar; py_vapid -> Vapid.from_raw
                        vapid_claims={"sub": SUBJECT},  # fresh each call: webpush() writes aud/exp into it
                        ttl=TTL,
                        timeout=10,
                        headers={"Urgency": "high"},
                    )
                    expected.append(("plain", payloads[i], pushes[i].dialog_id))
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    st["failures"] += 1
                    st["errors"].append(repr(exc)[:300])

        rounds = []
        for k in _split(n, ROUNDS):
            r: dict[str, Any] = {"n": k}
            for name, fn in (("ours", ours), ("plain", plain)):
                st = stats[name]
                before = receiver.stats()  # over the control pipe, outside the timed region
                c0, t0 = time.process_time(), time.perf_counter()
                fn(k)
                dt = time.perf_counter() - t0
                st["client_cpu_s"] += time.process_time() - c0
                after = receiver.stats()
                st["seconds"] += dt
                st["pushes"] += k
                for key in keys:
                    st[key] += after[key] - before[key]
                r[name] = {"seconds": round(dt, 4), "pushes_per_s": round(k / dt, 1) if dt > 0 else None}
            rounds.append(r)
        signatures = active.signatures_made
        sender.close()
        sender = None

        # Verification, after all timing: every push the receiver stored, in the benchmark process.
        t0 = time.perf_counter()
        dump = receiver.command("dump", "bodies")
        problems, conns, verified = _verify_pushes(
            dump,
            expected,
            origin=receiver.origin,
            vapid_public=_b64url_decode(pub),
            sub_key=sub_key,
            auth=auth,
        )
        verify_seconds = time.perf_counter() - t0
        verification = {
            "expected": 2 * n,
            "sent_ok": len(expected),
            "stored": len(dump["pushes"]),
            "verified_ok": verified,
            "problems": problems[:10],
            "problem_count": len(problems),
            "tls_failures_during_run": stats["ours"]["tls_failures"] + stats["plain"]["tls_failures"],
            "seconds": round(verify_seconds, 2),
            "connections_seen_in_pushes": {k: len(v) for k, v in conns.items()},
        }
        verification["ok"] = (
            len(dump["pushes"]) == 2 * n
            and len(expected) == 2 * n
            and not problems
            and stats["ours"]["failures"] == 0
            and stats["plain"]["failures"] == 0
            and verification["tls_failures_during_run"] == 0
        )
    finally:
        if sender is not None:
            sender.close()
        receiver.close()
        scratch.cleanup()
        if saved_bundle is None:
            os.environ.pop("REQUESTS_CA_BUNDLE", None)
        else:
            os.environ["REQUESTS_CA_BUNDLE"] = saved_bundle

    for st in stats.values():
        pushes_done = st["pushes"]
        st["pushes_per_s"] = round(pushes_done / st["seconds"], 1) if st["seconds"] > 0 else None
        st["wall_us_per_push"] = round(st["seconds"] / pushes_done * 1e6, 1)
        st["seconds"] = round(st["seconds"], 4)
        st["client_cpu_us_per_push"] = round(st.pop("client_cpu_s") / pushes_done * 1e6, 1)
        st["receiver_cpu_us_per_push"] = round(st.pop("cpu_s") / pushes_done * 1e6, 1)
        st["errors"] = st["errors"][:5]
    ours_rate, plain_rate = stats["ours"]["pushes_per_s"], stats["plain"]["pushes_per_s"]
    ratio = round(ours_rate / plain_rate, 2) if ours_rate and plain_rate else None
    stats["ours"]["vapid_signatures"] = signatures
    stats["plain"]["vapid_signatures"] = stats["plain"]["pushes"] - stats["plain"]["failures"]  # one per call
    return {
        "n": n,
        "rounds": rounds,
        "payload_bytes": {"min": min(sizes), "max": max(sizes), "mean": round(sum(sizes) / len(sizes), 1)},
        "origin": origin,
        "tls": tls,
        "ours": stats["ours"],
        "plain": stats["plain"],
        "ratio_ours_over_plain": ratio,
        "client_cpu_ratio_plain_over_ours": round(
            stats["plain"]["client_cpu_us_per_push"] / stats["ours"]["client_cpu_us_per_push"], 2
        ),
        "target_ratio": RATIO_TARGET,
        "target_met": ratio is not None and ratio >= RATIO_TARGET and verification["ok"],
        "verification": verification,
    }


def report(result: dict[str, Any], machine_text: str) -> str:
    v, o, p, tls = result["verification"], result["ours"], result["plain"], result["tls"]
    pb = result["payload_bytes"]
    lines = [
        "Machine:",
        *("  " + line for line in machine_text.splitlines()),
        "",
        f"N = {result['n']} pushes per path, {ROUNDS} alternating rounds, one subscription, dialog ids 1..{DIALOGS}",
        f"payload: {pb['min']}..{pb['max']} bytes of UTF-8 JSON (mean {pb['mean']}), Cyrillic text",
        f"receiver: separate process, HTTPS on 127.0.0.1 ({tls['tls_version']}, {tls['cipher']}, self-signed "
        f"{tls['server_key']} certificate for IP 127.0.0.1), answers 201 at once, stores raw requests, no checks",
        f"TLS trust (--trust {tls['trust']}): both clients verify via REQUESTS_CA_BUNDLE = "
        + ("the receiver's certificate alone" if tls["trust"] == "cert" else "certifi's bundle + the receiver's certificate")
        + f" ({tls['trust_file_certs']} cert(s)); pre-flight: untrusted CA refused={tls['untrusted_ca_refused']}, "
        f"wrong host name refused={tls['wrong_host_refused']}",
        f"  a new client SSLContext loading that file costs {tls['context_load_us']:.0f} us (paid per push by plain, once "
        f"by ours); with requests' default certifi bundle it costs {tls['certifi_context_load_us']:.0f} us"
        + (" -- see --trust certifi" if tls["trust"] == "cert" else ""),
        "",
        "  ours : WebPushSender - one keep-alive requests.Session: ONE TCP connect + TLS handshake, reused for",
        "         every push; VAPID JWT signed once per origin and cached; fresh ECDH key + aes128gcm per push",
        "  plain: pywebpush.webpush() with defaults - requests.post() per call: a NEW TCP connection + FULL TLS",
        "         handshake (new SSLContext + trust file load, ECDHE, certificate + host name check) per push,",
        "         VAPID key parsed and JWT signed per push; fresh ECDH key + aes128gcm per push",
        "",
    ]
    for i, r in enumerate(result["rounds"], 1):
        lines.append(
            f"  round {i}: n={r['n']:<4} ours {r['ours']['pushes_per_s']:>8} /s   plain {r['plain']['pushes_per_s']:>8} /s"
        )
    lines += [""]
    for label, s in (("ours  (WebPushSender)", o), ("plain (pywebpush)    ", p)):
        lines.append(
            f"{label}: {s['pushes_per_s']:>8} pushes/s  ({s['seconds']:.3f} s, {s['connections']} TCP connection(s), "
            f"{s['handshakes']} TLS handshake(s), {s['vapid_signatures']} VAPID signature(s), {s['failures']} failures)"
        )
    lines += [
        f"ratio ours/plain     : {result['ratio_ours_over_plain']}x",
        "per push (us)          wall   sender CPU   receiver CPU",
        f"  ours           {o['wall_us_per_push']:>10} {o['client_cpu_us_per_push']:>12} {o['receiver_cpu_us_per_push']:>14}",
        f"  plain          {p['wall_us_per_push']:>10} {p['client_cpu_us_per_push']:>12} {p['receiver_cpu_us_per_push']:>14}",
        f"sender CPU per push: plain / ours = {result['client_cpu_ratio_plain_over_ours']}x",
        "",
        f"verification (after timing, in this process, of ALL stored pushes: VAPID ES256 signature with our key, "
        f"aud={result['origin']}, exp, sub, headers, aes128gcm decrypt with the "
        f"subscription key, payload bytes in send order):",
        f"  {v['stored']} stored (expected {v['expected']}), {v['verified_ok']} verified, {v['problem_count']} problem(s), "
        f"{v['tls_failures_during_run']} TLS failures during the run, checked in {v['seconds']} s -> "
        f"{'OK' if v['ok'] else 'VERIFICATION FAILED'}",
    ]
    for prob in v["problems"][:5]:
        lines.append(f"  problem: {prob}")
    for name in ("ours", "plain"):
        for err in result[name]["errors"]:
            lines.append(f"  {name} error: {err}")
    lines.append(
        f"target ≥ {RATIO_TARGET:g}×: {'met' if result['target_met'] else 'MISSED'}"
        + ("" if v["ok"] else " (verification failed)")
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webpush", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=DEFAULT_N, help=f"pushes per path (default {DEFAULT_N})")
    parser.add_argument(
        "--trust",
        choices=("cert", "certifi"),
        default="certifi",
        help="trust file: certifi's bundle + the receiver's certificate (default, as in production) or the certificate alone",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    n = max(ROUNDS, args.n)

    machine, machine_text = _machine()
    try:
        result = run(n, args.trust)
    except Exception:  # noqa: BLE001 - a benchmark reports, it does not fail the build
        print(machine_text)
        print("benchmark failed:\n" + traceback.format_exc(), file=sys.stderr)
        result = {"n": n, "error": traceback.format_exc(), "target_met": False}
    else:
        print(report(result, machine_text))
    if args.json is not None:
        result["machine"] = machine
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
