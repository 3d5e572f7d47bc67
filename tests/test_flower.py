"""Flower as docker-compose runs it (`celery -A worker flower --basic-auth=...`), against the test Redis."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import REPO, WorkerProc, child_env, wait_until, worker_env
from tests.smtpserver import SmtpServer
from tests.support import RedisServer, free_port

AUTH = "ops:flower-test-password"


def get(url: str, auth: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""  # not listening yet


@pytest.fixture
def env(db_url: str, redis_server: RedisServer, smtp_server: SmtpServer, tmp_path: Path) -> dict[str, str]:
    return worker_env(db_url, redis_server.url, smtp_server.port, tmp_path)


@pytest.fixture
def flower(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = tmp_path / "flower.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", "flower", f"--port={port}", "--address=127.0.0.1",
             f"--basic-auth={AUTH}"],
            cwd=REPO, env=child_env(env), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def diag() -> str:
        return f"flower exit code {proc.poll()}; log:\n{log.read_text(errors='replace')[-3000:]}"

    try:
        wait_until(lambda: proc.poll() is None and get(f"{url}/healthcheck")[0] == 200, 30, "flower to answer", diag)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_flower_answers_its_healthcheck_and_guards_everything_else(flower: str) -> None:
    assert get(f"{flower}/healthcheck") == (200, b"OK")
    assert get(f"{flower}/")[0] == 401
    assert get(f"{flower}/", auth="ops:wrong")[0] == 401
    assert get(f"{flower}/api/workers")[0] == 401
    assert get(f"{flower}/", auth=AUTH)[0] == 200


@pytest.mark.slow
def test_flower_sees_a_running_worker(flower: str, env: dict[str, str], tmp_path: Path) -> None:
    worker = WorkerProc(tmp_path / "worker", env).start()
    try:

        def listed() -> bool:
            status, body = get(f"{flower}/api/workers?refresh=1", auth=AUTH)
            return status == 200 and any(name.startswith(f"{worker.name}@") for name in json.loads(body or b"{}"))

        wait_until(listed, 30, f"flower to list worker {worker.name}", worker.describe, interval=0.5)
    finally:
        worker.stop()
