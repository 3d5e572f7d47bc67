"""A dumb HTTPS push receiver for `bench.webpush`, meant to run in its own process.

    .venv/bin/python -m bench._pushreceiver

At startup it makes a fresh, CA-less, self-signed ECDSA P-256 certificate for IP 127.0.0.1 (SAN
IPAddress(127.0.0.1), serverAuth), writes it to a private temp directory (the key is deleted as soon as the
server context has loaded it), listens on a free port of 127.0.0.1 with a `ThreadingHTTPServer` speaking
HTTP/1.1 keep-alive over TLS, and prints ONE JSON line on stdout:

    {"ready": true, "port": 12345, "cert_file": "/tmp/pushreceiver-.../cert.pem", "pid": 4242}

Every POST is answered 201 at once and stored raw (path, headers, body, connection id, arrival order); it
is NOT verified here: the benchmark verifies everything after its timed run. `GET /` answers 200 "ok" and
is not stored (for TLS pre-flight checks). The TLS handshake runs in each connection's own thread.

Control is over stdin/stdout, one command per line, one JSON line back, so that control traffic never shows
up in the connection counts:

    stats   {"connections", "handshakes", "tls_failures", "tls_failure_reasons", "requests", "pushes", "cpu_s"}
    dump    the stats plus "pushes": [{"seq", "conn", "path", "headers": [[name, value], ...], "body_b64"}]
    quit    (or EOF on stdin) stop, remove the temp directory, exit
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MAX_BODY = 1 << 20


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed leaf for IP 127.0.0.1, valid for a day; returns (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_file, key_file


class Store:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections = 0  # TCP connections accepted
        self.handshakes = 0  # TLS handshakes completed
        self.tls_failures = 0
        self.tls_failure_reasons: list[str] = []
        self.requests = 0  # HTTP requests of any kind
        self.pushes: list[dict[str, Any]] = []

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "connections": self.connections,
                "handshakes": self.handshakes,
                "tls_failures": self.tls_failures,
                "tls_failure_reasons": self.tls_failure_reasons[-10:],
                "requests": self.requests,
                "pushes": len(self.pushes),
                "cpu_s": time.process_time(),  # this whole process: accept loop, handshakes, HTTP parsing
            }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, context: ssl.SSLContext, store: Store) -> None:
        self.context, self.store = context, store
        self.local = threading.local()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Once per accepted TCP connection (not per HTTP request): keep-alive shows up here.
        with self.store.lock:
            self.store.connections += 1
            conn_id = self.store.connections
        threading.Thread(target=self._serve, args=(request, client_address, conn_id), daemon=True).start()

    def _serve(self, request: socket.socket, client_address: Any, conn_id: int) -> None:
        # In the connection's own thread: the TLS handshake, then the HTTP/1.1 keep-alive loop.
        self.local.conn = conn_id
        request.settimeout(30)
        # As production servers do (Go's net/http, nginx `tcp_nodelay on`): without it, Nagle holds the
        # response behind the server's unacknowledged TLS 1.3 session tickets until the client's delayed
        # ACK fires (~40 ms on Linux), a loopback artefact that would mostly hit new connections.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.context.wrap_socket(request, server_side=True)  # detaches `request`; handshake now
        except (ssl.SSLError, OSError) as exc:
            with self.store.lock:
                self.store.tls_failures += 1
                self.store.tls_failure_reasons.append(f"{type(exc).__name__}: {exc}"[:200])
            request.close()
            return
        with self.store.lock:
            self.store.handshakes += 1
        try:
            _Handler(tls, client_address, self)
        except (ssl.SSLError, OSError):
            pass  # a client that went away mid-request; nothing was stored
        finally:
            try:
                tls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            tls.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle keep-alive connection must not pin a thread forever
    server: _Server

    def do_POST(self) -> None:
        store = self.server.store
        length = self.headers.get("Content-Length", "")
        if not (length.isascii() and length.isdigit()) or int(length) > MAX_BODY:
            self.close_connection = True
            self._answer(411, {"Connection": "close"}, b"")
            return
        body = self.rfile.read(int(length))
        with store.lock:
            store.requests += 1
            seq = len(store.pushes)
            store.pushes.append(
                {
                    "seq": seq,
                    "conn": getattr(self.server.local, "conn", 0),
                    "path": self.path,
                    "headers": [[k, v] for k, v in self.headers.items()],
                    "body": body,
                }
            )
        self._answer(201, {"Location": f"/message/{seq + 1}"}, b"")

    def do_GET(self) -> None:
        with self.server.store.lock:
            self.server.store.requests += 1
        if self.path == "/":
            self._answer(200, {"Content-Type": "text/plain"}, b"ok")
        else:
            self._answer(404, {}, b"")

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main() -> int:
    directory = Path(tempfile.mkdtemp(prefix="pushreceiver-"))
    try:
        cert_file, key_file = make_certificate(directory)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        key_file.unlink()
        store = Store()
        server = _Server(context, store)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="accept", daemon=True)
        thread.start()
        _say({"ready": True, "port": server.server_address[1], "cert_file": str(cert_file), "pid": os.getpid()})
        for line in sys.stdin:
            command = line.strip()
            if command == "stats":
                _say(store.stats())
            elif command == "dump":
                stats = store.stats()
                with store.lock:
                    pushes = [
                        {**{k: v for k, v in p.items() if k != "body"}, "body_b64": base64.b64encode(p["body"]).decode()}
                        for p in store.pushes
                    ]
                _say({**stats, "pushes": pushes})
            elif command == "quit":
                break
            else:
                _say({"error": f"unknown command {command!r}"})
        server.shutdown()
        server.server_close()
        return 0
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
