"""A Web Push service on loopback that verifies VAPID and really decrypts, for tests.

It plays the push service of RFC 8030: the subscriptions it hands out look like the browser's
`PushSubscription.toJSON()`, and every POST is checked the way real services check it (RFC 8292 JWT,
RFC 8291 aes128gcm, RFC 8030 headers) before it is recorded. Scripted answers (410, 429, 500, ...) let
tests drive a sender's error paths over real HTTP instead of through mocks.

    with PushService() as service:
        sub = service.new_subscription("alice")
        service.script("alice", [(429, {"Retry-After": "7"}), 201])
        ...
        assert service.rejections == []

Sink mode (`PushService(sink=True)`) is for load: every POST is answered 201 WITHOUT verifying, counted, and
kept raw (path, headers, body, connection number, arrival time) for whoever wants to verify it afterwards.
`delay` holds every POST's answer that long, in the connection's own thread (one thread per connection), so
a slow push service is slow per connection and concurrent clients overlap their waits. `tls=True` serves
HTTPS with a fresh self-signed certificate for IP 127.0.0.1 (`cert_file`, for clients to trust).

In its own process (control over stdin, see tests/control.py; HTTPS unless --http):

    python -m tests.pushservice --sink --delay 0.03
    -> {"ready": true, "port": 12345, "origin": "https://127.0.0.1:12345", "cert_file": "...", "pid": 4242}
    stats           {"connections", "handshakes", "tls_failures", "tls_failure_reasons", "requests", "pushes", "cpu_s"}
    dump            the stats plus "pushes": [{"seq", "conn", "name", "at"}] in arrival order
    dump bodies     ... each also with "path", "headers": [[name, value], ...] and "body_b64"
    reset           forget what was received
    subscribe NAME  (verifying mode) a new subscription, as new_subscription(NAME)
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import re
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

MAX_BODY = 4096  # RFC 8030 §7.2: what every push service must accept, and what the big ones cap at
URGENCIES = ("very-low", "low", "normal", "high")
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
_NAME = re.compile(r"/push/([A-Za-z0-9_.-]+)")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")

Scripted = int | tuple[int, dict[str, str]] | tuple[int, dict[str, str], bytes]


@dataclass(frozen=True)
class Received:
    name: str
    payload: dict[str, Any]
    headers: dict[str, str]  # names lower-cased
    jwt_claims: dict[str, Any]


@dataclass(frozen=True)
class Arrival:
    """A POST as a sink took it, unverified."""

    seq: int
    conn: int  # the TCP connection it came on, numbered from 1 in accept order
    path: str
    name: str  # the subscription name from /push/<name>, else the path
    at: float  # time.time() when its body had been read
    headers: tuple[tuple[str, str], ...]  # as sent, in order
    body: bytes


class Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Subscriber:
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    gone: bool = False
    script: deque[tuple[int, dict[str, str], bytes | None]] = field(default_factory=deque)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(value: str) -> bytes:
    # Strict: base64.urlsafe_b64decode silently drops characters outside the alphabet.
    if not _B64URL.fullmatch(value):
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    request_queue_size = 128

    def __init__(self, service: PushService) -> None:
        self.service = service
        self.local = threading.local()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Called once per accepted TCP connection, not per HTTP request: keep-alive shows up here.
        self.service._connection_opened(request)
        super().process_request(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # In the connection's own thread: the TLS handshake (if any), then the HTTP/1.1 keep-alive loop.
        service = self.service
        self.local.conn = service._connection_number(request)
        # As production servers do: without it, Nagle holds an answer behind unacknowledged TLS 1.3 session
        # tickets until the client's delayed ACK (~40 ms), a loopback artefact.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if service._tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(30)
        try:
            tls = service._tls.wrap_socket(request, server_side=True)  # detaches `request`
        except (ssl.SSLError, OSError) as exc:
            service._handshake_done(request, None, exc)
            return
        service._handshake_done(request, tls, None)
        try:
            _Handler(tls, client_address, self)
        except (ssl.SSLError, OSError):
            pass  # a client that went away mid-request
        finally:
            service._connection_closed(tls)
            try:
                tls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            tls.close()

    def shutdown_request(self, request: Any) -> None:
        self.service._connection_closed(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle keep-alive connection must not pin a thread forever
    server: _Server

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length", "")
        if not (length.isascii() and length.isdigit()) or int(length) > 1 << 20:
            # Without a sane length we cannot find the next request on this connection: close it.
            self.close_connection = True
            self._answer(411, {"Connection": "close"}, b"")
            return
        body = self.rfile.read(int(length))
        service = self.server.service
        if self.path.startswith(service.origin + "/"):
            # The absolute form a client uses through a plain-HTTP proxy (RFC 9112 §3.2.2: servers accept it).
            self.path = self.path[len(service.origin):]
            with service._cond:
                service.absolute_targets += 1
        if service.sink:
            pairs = tuple((k, v) for k, v in self.headers.items())
            status, extra, reply = service._take(self.path, pairs, body, getattr(self.server.local, "conn", 0))
        else:
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, reply = service._handle(self.path, headers, body)
        if service.delay > 0:
            time.sleep(service.delay)  # this connection's thread only
        self._answer(status, extra, reply)

    def do_GET(self) -> None:
        if self.path == "/":  # for TLS pre-flight checks; not counted as a push
            self._answer(200, {}, b"ok")
        else:
            self._answer(405, {"Allow": "POST"}, b"")

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean; rejections are recorded instead


class PushService:
    """The push service. Thread-safe; `rejections` lists every request it refused, with the reason."""

    def __init__(self, sink: bool = False, delay: float = 0.0, tls: bool = False) -> None:
        self.sink, self.delay, self.tls = sink, delay, tls
        self._tls: ssl.SSLContext | None = None
        self._tls_dir: Path | None = None
        self.cert_file: Path | None = None  # with tls: the certificate clients must trust
        self._arrivals: list[Arrival] = []
        self._conn_numbers: dict[socket.socket, int] = {}
        self.handshakes = 0
        self.tls_failures: list[str] = []
        self._cond = threading.Condition()
        self._subscribers: dict[str, _Subscriber] = {}
        self._received: list[Received] = []
        self._open: set[socket.socket] = set()
        self._ids = itertools.count(1)
        self.rejections: list[str] = []
        self.connections = 0  # TCP connections accepted
        self.requests = 0  # HTTP requests seen
        self.absolute_targets = 0  # requests that named the whole URL (they came through an HTTP proxy)
        self._server: _Server | None = None
        self._origin: str | None = None  # kept after stop(), so requests in flight can still finish
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------------------------------
    def start(self) -> PushService:
        if self._server is None:
            if self.tls and self._tls is None:
                from tests.tlscert import server_context

                self._tls_dir = Path(tempfile.mkdtemp(prefix="pushservice-"))
                self._tls, self.cert_file = server_context(self._tls_dir)
            self._server = _Server(self)
            scheme = "https" if self.tls else "http"
            self._origin = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
            self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="pushservice", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with self._cond:
            still_open = list(self._open)
        for sock in still_open:  # wake handler threads parked on an idle keep-alive connection
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()  # joins the handler threads
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)

    def __enter__(self) -> PushService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        if self._origin is None:
            raise RuntimeError("PushService is not started")
        return self._origin

    # test API ------------------------------------------------------------------------------------
    def new_subscription(self, name: str) -> dict[str, Any]:
        """A fresh browser-like subscription; the service keeps the private half to decrypt."""
        if not _NAME.fullmatch(f"/push/{name}"):
            raise ValueError(f"subscription name {name!r} must be URL-safe")
        key = ec.generate_private_key(ec.SECP256R1())
        auth = os.urandom(16)
        with self._cond:
            self._subscribers[name] = _Subscriber(key, auth)
        point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return {
            "endpoint": f"{self.origin}/push/{name}",
            "expirationTime": None,
            "keys": {"p256dh": b64url(point), "auth": b64url(auth)},
        }

    def script(self, name: str, responses: list[Scripted]) -> None:
        """Answer the next POSTs to `name` with these statuses (optionally headers, body), then 201.

        Requests are verified first either way; only 2xx answers record the push as received.
        """
        with self._cond:
            queue = self._subscribers[name].script
            for item in responses:
                if isinstance(item, int):
                    queue.append((item, {}, None))
                else:
                    queue.append((item[0], dict(item[1]), item[2] if len(item) == 3 else None))

    def unsubscribe(self, name: str) -> None:
        """The browser dropped the subscription: from now on the service answers 410, as real ones do."""
        with self._cond:
            self._subscribers[name].gone = True

    @property
    def received(self) -> list[Received]:
        with self._cond:
            return list(self._received)

    def received_for(self, name: str) -> list[Received]:
        with self._cond:
            return [r for r in self._received if r.name == name]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Block until at least `count` pushes were accepted; AssertionError (with rejections) if not."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._received) >= count, timeout=timeout):
                raise AssertionError(f"expected {count} pushes, got {len(self._received)}; rejections: {self.rejections}")
            return list(self._received)

    # sink mode -----------------------------------------------------------------------------------
    @property
    def arrivals(self) -> list[Arrival]:
        with self._cond:
            return list(self._arrivals)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "connections": self.connections,
                "handshakes": self.handshakes,
                "tls_failures": len(self.tls_failures),
                "tls_failure_reasons": self.tls_failures[-10:],
                "requests": self.requests,
                "pushes": len(self._arrivals) if self.sink else len(self._received),
                "cpu_s": time.process_time(),  # the whole process: meaningful when it runs alone (main())
            }

    def reset(self) -> None:
        with self._cond:
            self._arrivals.clear()
            self._received.clear()
            self.rejections.clear()

    def _take(self, path: str, headers: tuple[tuple[str, str], ...], body: bytes, conn: int) -> tuple[int, dict[str, str], bytes]:
        match = _NAME.fullmatch(path)
        with self._cond:
            self.requests += 1
            seq = len(self._arrivals)
            self._arrivals.append(Arrival(seq, conn, path, match.group(1) if match else path, time.time(), headers, body))
            self._cond.notify_all()
        return 201, {"Location": f"{self.origin}/message/{seq + 1}"}, b""

    # request handling (handler threads) -----------------------------------------------------------
    def _connection_opened(self, sock: socket.socket) -> None:
        with self._cond:
            self.connections += 1
            self._open.add(sock)
            self._conn_numbers[sock] = self.connections

    def _connection_number(self, sock: socket.socket) -> int:
        with self._cond:
            return self._conn_numbers.get(sock, 0)

    def _connection_closed(self, sock: socket.socket) -> None:
        with self._cond:
            self._open.discard(sock)
            self._conn_numbers.pop(sock, None)

    def _handshake_done(self, raw: socket.socket, tls: socket.socket | None, error: Exception | None) -> None:
        with self._cond:
            self._open.discard(raw)
            if tls is None:
                self.tls_failures.append(f"{type(error).__name__}: {error}"[:200])
            else:
                self.handshakes += 1
                self._open.add(tls)

    def _handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        match = _NAME.fullmatch(path)
        name = match.group(1) if match else path
        with self._cond:
            self.requests += 1
            subscriber = self._subscribers.get(name)
        if subscriber is None:
            return self._reject(name, "unknown subscription", 404)
        if subscriber.gone:
            return 410, {}, _error(410, "subscription expired")
        try:
            claims = self._verify_vapid(headers)
            _verify_headers(headers)
            payload = _decrypt(subscriber, body)
        except Rejected as exc:
            return self._reject(name, exc.reason, 400)
        with self._cond:
            status, extra, reply = subscriber.script.popleft() if subscriber.script else (201, {}, None)
            if not 200 <= status < 300:
                return status, extra, _error(status, "scripted") if reply is None else reply
            self._received.append(Received(name, payload, headers, claims))
            self._cond.notify_all()
            location = f"{self.origin}/message/{next(self._ids)}"
        return status, {"Location": location, **extra}, b""

    def _reject(self, name: str, reason: str, status: int) -> tuple[int, dict[str, str], bytes]:
        with self._cond:
            self.rejections.append(f"{name}: {reason}")
        return status, {}, _error(status, reason)

    def _verify_vapid(self, headers: dict[str, str]) -> dict[str, Any]:
        """RFC 8292: `vapid t=<ES256 JWT>, k=<public key>`; returns the verified claims."""
        scheme, _, params = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "vapid":
            raise Rejected("Authorization is missing or not the vapid scheme")
        parts: dict[str, str] = {}
        for item in params.split(","):
            key, sep, value = item.strip().partition("=")
            if sep:
                parts[key.strip().lower()] = value.strip()
        if not parts.get("t") or not parts.get("k"):
            raise Rejected("Authorization lacks t= or k=")
        try:
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(parts["k"]))
            header_b64, claims_b64, signature_b64 = parts["t"].split(".")
            header = json.loads(b64url_decode(header_b64))
            claims = json.loads(b64url_decode(claims_b64))
            signature = b64url_decode(signature_b64)
        except ValueError as exc:  # also JSONDecodeError, UnicodeDecodeError, bad point
            raise Rejected(f"malformed VAPID token or key: {exc}") from None
        if not isinstance(header, dict) or header.get("alg") != "ES256" or not isinstance(claims, dict):
            raise Rejected("VAPID token is not an ES256 JWT with a claims object")
        if len(signature) != 64:  # JWS carries raw r||s, not DER (RFC 7518 §3.4)
            raise Rejected(f"ES256 signature must be 64 bytes, got {len(signature)}")
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        try:
            public.verify(der, f"{header_b64}.{claims_b64}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise Rejected("VAPID signature does not verify with k") from None
        if claims.get("aud") != self.origin:
            raise Rejected(f"aud {claims.get('aud')!r} is not {self.origin}")
        exp, now = claims.get("exp"), time.time()
        if not isinstance(exp, int) or isinstance(exp, bool) or not now < exp <= now + 24 * 3600:
            raise Rejected(f"exp {exp!r} is not within the next 24 hours")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
            raise Rejected(f"sub {sub!r} is neither mailto: nor https:")
        return claims


def _verify_headers(headers: dict[str, str]) -> None:
    if headers.get("content-encoding") != "aes128gcm":
        raise Rejected(f"Content-Encoding {headers.get('content-encoding')!r} is not aes128gcm")
    ttl = headers.get("ttl")
    if ttl is None or not (ttl.isascii() and ttl.isdigit()):
        raise Rejected(f"TTL {ttl!r} is missing or not a non-negative integer")
    if headers.get("urgency", "normal") not in URGENCIES:
        raise Rejected(f"Urgency {headers.get('urgency')!r} is not one of {URGENCIES}")
    topic = headers.get("topic")
    if topic is not None and not _TOPIC.fullmatch(topic):
        raise Rejected(f"Topic {topic!r} is not 1-32 characters of the base64url alphabet")


def _decrypt(subscriber: _Subscriber, body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY:
        raise Rejected(f"body of {len(body)} bytes exceeds {MAX_BODY}")
    # RFC 8291 §4: keyid is the sender's 65-byte ephemeral key, and the message is one record.
    if len(body) < 21 or body[20] != 65 or len(body) - 86 > struct.unpack("!L", body[16:20])[0]:
        raise Rejected("aes128gcm header is not a single record keyed by a 65-byte sender key")
    try:
        plain = http_ece.decrypt(body, private_key=subscriber.private_key, auth_secret=subscriber.auth, version="aes128gcm")
        payload = json.loads(plain)
    except (http_ece.ECEException, ValueError, struct.error) as exc:
        raise Rejected(f"cannot decrypt: {getattr(exc, 'message', exc)}") from None
    if not isinstance(payload, dict):
        raise Rejected("payload is not a JSON object")
    return payload


def _error(status: int, message: str) -> bytes:
    # Shaped like Mozilla autopush's error bodies.
    return json.dumps({"code": status, "error": message}).encode()


def main(argv: list[str] | None = None) -> int:
    from tests.control import serve_stdin

    parser = argparse.ArgumentParser(prog="python -m tests.pushservice", description="a Web Push service on loopback")
    parser.add_argument("--sink", action="store_true", help="accept every POST with 201, unverified, and keep it raw")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before answering each POST")
    parser.add_argument("--http", action="store_true", help="plain HTTP instead of HTTPS with a self-signed certificate")
    args = parser.parse_args(argv)
    service = PushService(sink=args.sink, delay=args.delay, tls=not args.http).start()

    def dump(args: list[str]) -> dict[str, Any]:
        bodies = args == ["bodies"]
        pushes = []
        for a in service.arrivals:
            item: dict[str, Any] = {"seq": a.seq, "conn": a.conn, "name": a.name, "at": a.at}
            if bodies:
                item.update(path=a.path, headers=[list(h) for h in a.headers], body_b64=base64.b64encode(a.body).decode())
            pushes.append(item)
        return {**service.stats(), "pushes": pushes}

    def reset(_args: list[str]) -> dict[str, Any]:
        service.reset()
        return service.stats()

    ready = {"port": int(service.origin.rsplit(":", 1)[1]), "origin": service.origin, "pid": os.getpid(),
             "cert_file": str(service.cert_file) if service.cert_file else None, "sink": service.sink,
             "delay": service.delay}
    try:
        serve_stdin(ready, {
            "stats": lambda _args: service.stats(),
            "dump": dump,
            "reset": reset,
            "subscribe": lambda args: service.new_subscription(args[0]),
        })
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
