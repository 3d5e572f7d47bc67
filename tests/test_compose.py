"""docker-compose.yml, the Dockerfile and the Celery app they name, checked without a Docker engine.

The compose file is validated by Debian's `docker-compose` (a missing binary fails the run, it is never
skipped). The Celery app is imported in a child process, so this process's app and settings stay untouched
and nothing connects anywhere.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from notifier.config import Settings, load_settings
from tests.support import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CONFIG_SOURCE = ROOT / "notifier" / "config.py"

LONG_RUNNING = ("redis", "postgres", "mailcatcher", "worker", "sender", "beat", "flower")
ONE_SHOT = ("migrate",)
PROJECT_SERVICES = ("migrate", "worker", "sender", "beat", "flower")
APP_SERVICES = ("migrate", "worker", "sender", "beat")  # the ones that run our code with the whole configuration
# Flower gets the broker and its own login, nothing else (see the comment on its service).
FLOWER_ENV = {"NOTIFIER_REDIS_URL", "FLOWER_BASIC_AUTH"}
SECRET_NAME = re.compile(r"PASSWORD|PRIVATE_KEY|SECRET|TOKEN|DATABASE_URL|USERNAME", re.I)
ESSENTIAL = {
    "NOTIFIER_DATABASE_URL",
    "NOTIFIER_REDIS_URL",
    "NOTIFIER_SMTP_HOST",
    "NOTIFIER_SMTP_PORT",
    "NOTIFIER_SMTP_TLS",
}
# Interpolated by compose into a command line; never passed to the app, so config.py need not read them.
COMPOSE_ONLY = {"NOTIFIER_WORKER_CONCURRENCY", "NOTIFIER_SENDER_CONCURRENCY"}
# The stack's own wiring, deliberately different from the code's single-machine defaults.
STACK_FIELDS = {"database_url", "redis_url", "smtp_host", "smtp_port", "smtp_tls", "templates_dir", "metrics_port"}
MONITORING = ("prometheus", "grafana")
DEPLOY = ROOT / "deploy"
FAKE_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: any connection attempt would fail loudly
COMPOSE_MISSING = "install Debian's docker-compose package (CI's .ci/run does)"

_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def config_variables() -> set[str]:
    return set(re.findall(r"NOTIFIER_[A-Z_]+", CONFIG_SOURCE.read_text(encoding="utf-8")))


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}` and `$$`, enough to read our defaults."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return arg
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise KeyError(f"{name}: {arg}")
        return value or ""

    return _INTERPOLATION.sub(sub, value)


def argv(command: Any) -> list[str]:
    """A compose `command` as the argv the container runs (compose splits a string with shell rules)."""
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list), command
    return [str(part) for part in command]


def effective_argv(command: Any) -> list[str]:
    """The argv, looking through `sh -c "exec ..."` wrappers."""
    args = argv(command)
    if len(args) >= 3 and args[0] in ("sh", "/bin/sh", "bash") and args[1] == "-c":
        script = args[2]
        return shlex.split(script.removeprefix("exec "))
    return args


def option(args: list[str], name: str) -> str | None:
    """The value of `--name value` or `--name=value` in args."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1 :]
    return None


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def healthcheck_test(service: dict[str, Any]) -> list[str]:
    test = (service.get("healthcheck") or {}).get("test")
    assert test, "no healthcheck test"
    return [test] if isinstance(test, str) else [str(part) for part in test]


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def published_ports(service: dict[str, Any], env: dict[str, str] | None = None) -> list[tuple[str | None, str, str]]:
    """(host IP or None, published port, target port) of each `ports` entry, short or long syntax, with
    compose's interpolation applied from `env`."""
    found: list[tuple[str | None, str, str]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            found.append((entry.get("host_ip"), str(entry.get("published", "")), str(entry["target"])))
            continue
        parts = interpolate(str(entry), env or {}).split("/")[0].split(":")
        if len(parts) == 3:
            found.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            found.append((None, parts[0], parts[1]))
        else:
            found.append((None, "", parts[0]))
    return found


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


# --- structure -----------------------------------------------------------------------------------


def test_every_service_exists_and_long_running_ones_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    missing = [name for name in (*LONG_RUNNING, *ONE_SHOT, *MONITORING) if name not in services]
    assert not missing, f"docker-compose.yml lacks services {missing}"
    for name in (*LONG_RUNNING, *MONITORING):
        test = healthcheck_test(services[name])
        assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck must run a command, got {test}"
        assert not (services[name].get("healthcheck") or {}).get("disable"), f"{name}: healthcheck disabled"
        assert services[name].get("restart") in ("unless-stopped", "always"), f"{name} must restart after a crash"
    assert str(services["migrate"].get("restart", "no")) == "no", "migrate is one-shot"


def test_project_services_run_the_project_image(services: dict[str, dict[str, Any]]) -> None:
    for name in PROJECT_SERVICES:
        build = services[name].get("build")
        context = build.get("context") if isinstance(build, dict) else build
        assert context in (".", "./"), f"{name} must be built from the project, got build={build!r}"
    assert argv(services["migrate"]["command"]) == ["notifier", "init-db"]


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    assert depends_on(services["migrate"]).get("postgres") == "service_healthy"
    for name in ("worker", "beat"):
        deps = depends_on(services[name])
        assert deps.get("redis") == "service_healthy", name
        assert deps.get("postgres") == "service_healthy", name
        assert deps.get("migrate") == "service_completed_successfully", name
    assert depends_on(services["flower"]).get("redis") == "service_healthy"


def test_stateful_services_keep_their_data(services: dict[str, dict[str, Any]], compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    for name, target in (("redis", "/data"), ("postgres", "/var/lib/postgresql/data"), ("beat", "/var/lib/notifier")):
        mounts = [str(v).split(":") for v in services[name].get("volumes") or []]
        sources = [m[0] for m in mounts if len(m) >= 2 and m[1] == target]
        assert sources, f"{name} needs a volume on {target}"
        assert sources[0] in named, f"{name}: {sources[0]} should be a named volume"


# --- environment ---------------------------------------------------------------------------------


def test_every_notifier_variable_is_one_config_reads() -> None:
    named = set(re.findall(r"NOTIFIER_[A-Z_]+", COMPOSE.read_text(encoding="utf-8")))
    unknown = named - config_variables() - COMPOSE_ONLY
    assert not unknown, f"docker-compose.yml names variables notifier/config.py never reads: {sorted(unknown)}"
    assert ESSENTIAL <= config_variables()


def test_project_services_share_the_environment_with_the_essentials(services: dict[str, dict[str, Any]]) -> None:
    envs = {
        name: {k: v for k, v in environment(services[name]).items() if k.startswith("NOTIFIER_")} for name in APP_SERVICES
    }
    for name, env in envs.items():
        missing = ESSENTIAL - set(env)
        assert not missing, f"{name} lacks {sorted(missing)}"
        assert not set(env) & COMPOSE_ONLY, f"{name}: {sorted(set(env) & COMPOSE_ONLY)} are compose-only"
    first = envs["worker"]
    for name, env in envs.items():
        assert env == first, f"{name}'s NOTIFIER_* environment differs from the worker's (use the shared anchor)"


def test_environment_defaults_load_and_match_the_code(services: dict[str, dict[str, Any]]) -> None:
    env = {k: interpolate(v, {}) for k, v in environment(services["worker"]).items()}
    settings = load_settings(env)  # raises ConfigError on a bad default
    assert settings.database_url.startswith("postgresql://") and "@postgres:5432/" in settings.database_url
    assert settings.redis_url == "redis://redis:6379/0"
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_tls) == ("mailcatcher", 1025, "none")
    assert str(settings.templates_dir) == "/app/templates"
    code = Settings()
    differing = {
        name: (getattr(settings, name), getattr(code, name))
        for name in Settings.__dataclass_fields__
        if name not in STACK_FIELDS and getattr(settings, name) != getattr(code, name)
    }
    assert not differing, f"compose defaults differ from the code's (compose, code): {differing}"


def test_overrides_reach_the_app(services: dict[str, dict[str, Any]]) -> None:
    outside = {"NOTIFIER_GRACE_SECONDS": "15", "NOTIFIER_SMTP_HOST": "smtp.example.com", "POSTGRES_PASSWORD": "s3cret"}
    env = {k: interpolate(v, outside) for k, v in environment(services["worker"]).items()}
    settings = load_settings(env)
    assert settings.grace_seconds == 15.0
    assert settings.smtp_host == "smtp.example.com"
    assert ":s3cret@postgres:5432/" in settings.database_url


# --- commands ------------------------------------------------------------------------------------


def test_redis_is_durable_and_never_evicts(services: dict[str, dict[str, Any]]) -> None:
    args = argv(services["redis"]["command"])
    assert option(args, "--appendonly") == "yes"
    assert option(args, "--appendfsync") == "everysec"
    assert option(args, "--maxmemory-policy") == "noeviction"
    assert healthcheck_test(services["redis"])[1:] == ["redis-cli", "ping"]


@pytest.mark.parametrize(("service", "queue", "concurrency"), [
    ("worker", "notifier", "${NOTIFIER_WORKER_CONCURRENCY:-2}"),
    ("sender", "notifier.send", "${NOTIFIER_SENDER_CONCURRENCY:-2}"),
])
def test_worker_commands(services: dict[str, dict[str, Any]], service: str, queue: str, concurrency: str) -> None:
    """Control work and sending on their own queues, each consumed by its own service."""
    args = argv(services[service]["command"])
    assert args[:4] == ["celery", "-A", "worker", "worker"], args
    assert "-E" in args, "the worker must send task events for Flower"
    assert option(args, "-Q") == queue
    assert option(args, "--concurrency") == concurrency
    check = " ".join(healthcheck_test(services[service]))
    assert "celery -A worker inspect ping" in check
    assert re.search(r"-d celery@\$\$\{?HOSTNAME\}?", check), f"ping this worker's node only: {check}"


def test_beat_command(services: dict[str, dict[str, Any]]) -> None:
    args = argv(services["beat"]["command"])
    assert args[:4] == ["celery", "-A", "worker", "beat"], args
    schedule = option(args, "--schedule") or option(args, "-s")
    assert schedule == "/var/lib/notifier/celerybeat-schedule"
    test = healthcheck_test(services["beat"])
    if "pgrep" in " ".join(test):
        assert test[0] == "CMD", "with CMD-SHELL, pgrep -f would find the healthcheck's own shell"
        assert "procps" in DOCKERFILE.read_text(encoding="utf-8"), "pgrep needs procps in the image"


def test_flower_command_requires_basic_auth(services: dict[str, dict[str, Any]]) -> None:
    flower = services["flower"]
    args = effective_argv(flower["command"])
    assert args[:4] == ["celery", "-A", "worker", "flower"], args
    assert option(args, "--port") == "5555"
    auth = option(args, "--basic-auth")
    assert auth in ("$${FLOWER_BASIC_AUTH}", "$$FLOWER_BASIC_AUTH", "${FLOWER_BASIC_AUTH}", "$FLOWER_BASIC_AUTH"), auth
    if argv(flower["command"])[0] != "celery":
        assert argv(flower["command"])[2].startswith("exec "), "exec celery, so it gets the stop signal"
    required = environment(flower).get("FLOWER_BASIC_AUTH", "")
    assert required.startswith("${FLOWER_BASIC_AUTH:?"), f"FLOWER_BASIC_AUTH must be required, got {required!r}"
    assert any(str(p).split(":")[-1] == "5555" for p in flower.get("ports") or []), "publish 5555"
    assert "http://localhost:5555/healthcheck" in " ".join(healthcheck_test(flower))


def test_flower_is_published_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    ports = published_ports(services["flower"])
    assert ports, "Flower's UI must be reachable from the host"
    for host_ip, published, target in ports:
        assert host_ip == "127.0.0.1", f"Flower must be bound to the host's loopback, got {services['flower']['ports']}"
        assert (published, target) == ("5555", "5555")
    assert published_ports(services["flower"], {"FLOWER_PORT": "15555"}) == [("127.0.0.1", "15555", "5555")]


def test_flower_gets_the_broker_and_its_login_only(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["flower"])
    assert set(env) == FLOWER_ENV, f"Flower's environment: {sorted(env)}; expected only {sorted(FLOWER_ENV)}"
    assert env["NOTIFIER_REDIS_URL"] == environment(services["worker"])["NOTIFIER_REDIS_URL"], "the same broker"
    assert not [name for name in env if name != "FLOWER_BASIC_AUTH" and SECRET_NAME.search(name)]
    assert not [value for value in env.values() if "POSTGRES_PASSWORD" in value or "VAPID" in value]
    # And Flower's configuration loads from that alone (the app reads everything through load_settings).
    settings = load_settings({k: interpolate(v, {"FLOWER_BASIC_AUTH": "ops:pw"}) for k, v in env.items()})
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.smtp_password is None and settings.vapid_private_key is None


def test_mailcatcher(services: dict[str, dict[str, Any]]) -> None:
    assert str(services["mailcatcher"]["image"]).startswith("axllent/mailpit")
    assert healthcheck_test(services["mailcatcher"]) == ["CMD", "/mailpit", "readyz"]


# --- image ---------------------------------------------------------------------------------------


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^WORKDIR /app$", text, re.M)
    lock = re.search(r"pip install --no-cache-dir --require-hashes -r requirements/worker\.lock$", text, re.M)
    assert lock, "install the worker's dependencies from the lock file, hashes checked"
    project = re.search(r"pip install --no-cache-dir --no-deps --no-build-isolation \.(\s|$)", text)
    assert project and project.start() > lock.start(), "then the project (non-editable) without dependencies"
    assert not re.search(r"pip install[^\n]*\s-e\s", text), "the image needs a non-editable install"
    assert re.search(r"^ENV NOTIFIER_TEMPLATES_DIR=/app/templates$", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0"), "run as a non-root user"
    assert (ROOT / "templates").is_dir()
    ignored = {line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()}
    assert {".venv", "var", ".git", "__pycache__"} <= ignored
    assert not ignored & {"templates", "notifier", "worker", "pyproject.toml"}


# --- the Celery app the commands name --------------------------------------------------------------

_PROBE = """
import json, sys
import worker, worker.tasks
from celery.app.utils import find_app
app = worker.app
print(json.dumps({
    "main": app.main,
    "found_by_celery_cli": find_app("worker") is app,
    "tasks": sorted(app.tasks),
    "default_queue": app.conf.task_default_queue,
    "broker_url": app.conf.broker_url,
    "events": app.conf.worker_send_task_events,
    "beat_tasks": sorted(entry["task"] for entry in app.conf.beat_schedule.values()),
    "embedded_redis": "notifier.embedded_redis" in sys.modules,
}))
"""


@pytest.fixture(scope="module")
def celery_app(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What `celery -A worker` finds, read in a child process with a Redis URL nobody listens on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFIER_", "CELERY_"))}
    env["NOTIFIER_REDIS_URL"] = FAKE_REDIS
    env["NOTIFIER_DATABASE_URL"] = f"sqlite:///{tmp_path_factory.mktemp('compose') / 'unused.sqlite3'}"
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "Signal handler" not in proc.stderr, f"the app's configuration failed:\n{proc.stderr}"
    probe: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return probe


def test_celery_app_is_the_one_commands_name(celery_app: dict[str, Any]) -> None:
    assert celery_app["main"] == "notifier"
    assert celery_app["found_by_celery_cli"], "`celery -A worker` must find worker.app"
    assert not celery_app["embedded_redis"], "importing the app must not start or probe anything"


def test_celery_tasks_are_registered(celery_app: dict[str, Any]) -> None:
    for name in ("notifier.check_dialog", "notifier.deliver", "notifier.dispatch_due"):
        assert name in celery_app["tasks"], f"{name} not registered; have {celery_app['tasks']}"


def test_celery_configuration_matches_the_compose_commands(
    celery_app: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert celery_app["broker_url"] == FAKE_REDIS, "the app must take its broker from NOTIFIER_REDIS_URL"
    assert celery_app["default_queue"] == option(argv(services["worker"]["command"]), "-Q"), (
        "tasks must go to the queue the worker consumes"
    )
    assert celery_app["events"]
    assert {"notifier.dispatch_due", "notifier.reconcile", "notifier.retention"} <= set(celery_app["beat_tasks"])
    assert set(celery_app["beat_tasks"]) <= set(celery_app["tasks"])


# --- docker-compose's own validation --------------------------------------------------------------


def _compose_config(tmp_path: Path, quiet: bool = True, profile: str | None = None,
                    **extra: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(f"docker-compose not found: {COMPOSE_MISSING}")
    empty = tmp_path / "empty.env"  # ignore a developer's .env next to the compose file
    empty.write_text("", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"}
    env.update(extra)
    return subprocess.run(
        [binary, "--env-file", str(empty), "-f", str(COMPOSE), *(["--profile", profile] if profile else []), "config",
         *(["-q"] if quiet else [])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_docker_compose_config_is_valid(tmp_path: Path) -> None:
    proc = _compose_config(tmp_path, FLOWER_BASIC_AUTH="admin:secret")
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stdout}\n{proc.stderr}"


def test_docker_compose_config_is_valid_with_the_monitoring_profile(tmp_path: Path) -> None:
    proc = _compose_config(tmp_path, False, "monitoring", FLOWER_BASIC_AUTH="admin:secret")
    assert proc.returncode == 0, f"docker-compose --profile monitoring config failed:\n{proc.stdout}\n{proc.stderr}"
    rendered = yaml.safe_load(proc.stdout)["services"]
    assert set(MONITORING) <= set(rendered)
    for name in MONITORING:  # docker-compose resolved the bind mounts to the repository's deploy/ folder
        sources = [Path(str(v).split(":")[0]) for v in rendered[name]["volumes"] if str(v).startswith("/")]
        assert sources and all(src.is_relative_to(DEPLOY) and src.exists() for src in sources), sources


def test_docker_compose_refuses_to_run_flower_without_basic_auth(tmp_path: Path) -> None:
    proc = _compose_config(tmp_path)
    assert proc.returncode != 0, "docker-compose accepted the file without FLOWER_BASIC_AUTH"
    assert "FLOWER_BASIC_AUTH" in proc.stdout + proc.stderr


def test_docker_compose_renders_flower_on_loopback_without_secrets(tmp_path: Path) -> None:
    """What docker-compose itself makes of the file, with every secret of the stack set."""
    secrets = {
        "POSTGRES_PASSWORD": "pg-secret-4711",
        "NOTIFIER_SMTP_USERNAME": "smtp-user-4711",
        "NOTIFIER_SMTP_PASSWORD": "smtp-secret-4711",
        "NOTIFIER_VAPID_PRIVATE_KEY": "vapid-secret-4711",
    }
    proc = _compose_config(tmp_path, quiet=False, FLOWER_BASIC_AUTH="ops:flower-4711", **secrets)
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stdout}\n{proc.stderr}"
    rendered = yaml.safe_load(proc.stdout)["services"]
    flower, worker = rendered["flower"], rendered["worker"]
    flower_text, worker_text = yaml.safe_dump(flower), yaml.safe_dump(worker)
    for name, value in secrets.items():
        assert value in worker_text, f"{name} should reach the worker (or this check proves nothing)"
        assert value not in flower_text, f"{name} reaches Flower"
    assert set(environment(flower)) == FLOWER_ENV
    assert environment(flower)["FLOWER_BASIC_AUTH"] == "ops:flower-4711"
    assert [host_ip for host_ip, _, _ in published_ports(flower)] == ["127.0.0.1"]


def test_flower_runs_on_its_compose_environment_alone(
    services: dict[str, dict[str, Any]], redis_server: RedisServer, tmp_path: Path
) -> None:
    """A real Flower (the compose command's program and app) with exactly Flower's compose environment, the
    stack's Redis host replaced by the test's redis-server: it starts, serves its UI behind basic auth and
    reads the broker, without a database URL or any other NOTIFIER_* setting."""
    env = {k: interpolate(v, {"FLOWER_BASIC_AUTH": "ops:flower-test"}) for k, v in environment(services["flower"]).items()}
    assert env["NOTIFIER_REDIS_URL"] == "redis://redis:6379/0"
    env["NOTIFIER_REDIS_URL"] = redis_server.url
    env.update({"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8"})
    port = free_port()
    args = effective_argv(services["flower"]["command"])
    assert args[:4] == ["celery", "-A", "worker", "flower"]
    argv = [sys.executable, "-m", *args[:4], f"--port={port}", "--address=127.0.0.1", "--basic-auth=ops:flower-test"]
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    log_path = tmp_path / "flower.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    auth = "Basic " + base64.b64encode(b"ops:flower-test").decode("ascii")

    def get(path: str, authorization: str | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(base + path, headers={"Authorization": authorization} if authorization else {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    try:
        deadline = time.monotonic() + 45
        while True:
            assert proc.poll() is None, f"Flower exited ({proc.returncode}):\n{log_path.read_text(errors='replace')}"
            try:
                if get("/healthcheck") == (200, b"OK"):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"Flower did not answer:\n{log_path.read_text(errors='replace')}"
            time.sleep(0.2)
        assert get("/api/workers")[0] == 401, "the UI needs the basic auth"
        status, body = get("/api/queues/length", auth)
        assert status == 200, body
        assert "notifier" in [q["name"] for q in json.loads(body)["active_queues"]], body  # read from our Redis
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    assert list(workdir.iterdir()) == [], "Flower wrote files (an embedded Redis, a database?) in its directory"


# --- the monitoring profile -----------------------------------------------------------------------


def _bind_mounts(service: dict[str, Any]) -> dict[str, tuple[Path, bool]]:
    """Container path -> (the repository path mounted there, read-only?) for `./...` bind mounts."""
    found: dict[str, tuple[Path, bool]] = {}
    for volume in service.get("volumes") or []:
        parts = str(volume).split(":")
        if parts[0].startswith("./"):
            found[parts[1]] = (ROOT / parts[0], len(parts) > 2 and "ro" in parts[2].split(","))
    return found


def test_monitoring_runs_only_with_its_profile(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        profiles = service.get("profiles") or []
        if name in MONITORING:
            assert profiles == ["monitoring"], f"{name}: profiles {profiles}"
            assert service.get("restart") == "unless-stopped"
        else:
            assert not profiles, f"{name} must run without a profile"
            assert not set(depends_on(service)) & set(MONITORING), f"{name} must not need the monitoring services"
    assert str(services["prometheus"]["image"]).startswith("prom/prometheus:v")
    assert str(services["grafana"]["image"]).startswith("grafana/grafana:")


def test_monitoring_uis_are_published_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    assert published_ports(services["prometheus"]) == [("127.0.0.1", "9090", "9090")]
    assert published_ports(services["grafana"]) == [("127.0.0.1", "3000", "3000")]
    assert published_ports(services["grafana"], {"GRAFANA_PORT": "13000"}) == [("127.0.0.1", "13000", "3000")]
    env = environment(services["grafana"])
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED") == "false" and env.get("GF_USERS_ALLOW_SIGN_UP") == "false"
    assert not [name for name in (*environment(services["prometheus"]), *env) if name.startswith("NOTIFIER_")], (
        "the monitoring services need no notifier setting (none of its secrets)")


def test_prometheus_is_provisioned_from_deploy(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    mounts = _bind_mounts(prometheus)
    folder, read_only = mounts["/etc/prometheus"]
    assert folder == DEPLOY / "prometheus" and read_only
    args = argv(prometheus["command"])
    assert "--config.file=/etc/prometheus/prometheus.yml" in args
    config = yaml.safe_load((folder / "prometheus.yml").read_text(encoding="utf-8"))
    assert all((folder / rules).is_file() for rules in config["rule_files"]), config["rule_files"]
    assert "alerts.yml" in config["rule_files"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # The worker job finds every replica of the compose service by DNS, on the port the worker listens on.
    [dns] = jobs["notifier-worker"]["dns_sd_configs"]
    assert dns["names"] == ["worker", "sender"] and dns["type"] == "A"
    worker = services["worker"]
    port = interpolate(environment(worker)["NOTIFIER_METRICS_PORT"], {})
    assert str(dns["port"]) == port and [str(p) for p in worker.get("expose") or []] == [port]
    assert load_settings({k: interpolate(v, {}) for k, v in environment(worker).items()}).metrics_port == int(port)
    assert not published_ports(worker), "the worker's metrics stay on the compose network"
    [file_sd] = jobs["replyx-api"]["file_sd_configs"]
    assert [p.name for p in folder.glob(file_sd["files"][0])] == ["api.yml"]
    assert yaml.safe_load((folder / "targets" / "api.yml").read_text(encoding="utf-8")) == []


def test_grafana_is_provisioned_from_deploy(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    mounts = _bind_mounts(grafana)
    provisioning, ro = mounts["/etc/grafana/provisioning"]
    dashboards, ro2 = mounts["/var/lib/grafana/dashboards"]
    assert ro and ro2 and provisioning == DEPLOY / "grafana" / "provisioning" and dashboards == DEPLOY / "grafana" / "dashboards"
    [datasource] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "notifier.yml").read_text(encoding="utf-8"))["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads((dashboards / "notifier.json").read_text(encoding="utf-8"))
    home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/var/lib/grafana/dashboards/notifier.json"
    used = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]} | {
        p["datasource"]["uid"] for p in dashboard["panels"]}
    assert used == {datasource["uid"]}, "every panel must use the provisioned datasource"
    assert dashboard["uid"] == "replyx-notifier" and not dashboard["editable"]
    assert depends_on(grafana) == {"prometheus": "service_healthy"}
