"""Settings the worker refuses to start with: a From that is not one address, a dialog URL with any
placeholder but {dialog_id}. Each error names the variable; `notifier worker` stops on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from notifier.config import Settings, load_settings
from notifier.errors import ConfigError

# --- NOTIFIER_EMAIL_FROM ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "display_name", "addr_spec", "domain"),
    [
        ("ReplyX <noreply@replyx.ru>", "ReplyX", "noreply@replyx.ru", "replyx.ru"),
        ("ReplyX <noreply@replyx.ru> (support)", "ReplyX", "noreply@replyx.ru", "replyx.ru"),
        ('"a@b" <noreply@replyx.ru>', "a@b", "noreply@replyx.ru", "replyx.ru"),
        ('"ReplyX <support@evil.example>" <noreply@replyx.ru>', "ReplyX <support@evil.example>", "noreply@replyx.ru",
         "replyx.ru"),
        ("noreply@mail.replyx.ru", "", "noreply@mail.replyx.ru", "mail.replyx.ru"),
        ("Уведомления ReplyX <noreply@replyx.ru>", "Уведомления ReplyX", "noreply@replyx.ru", "replyx.ru"),
        ("ReplyX <noreply@[192.0.2.1]>", "ReplyX", "noreply@[192.0.2.1]", "[192.0.2.1]"),
    ],
)
def test_email_from_is_parsed_not_sliced(value: str, display_name: str, addr_spec: str, domain: str) -> None:
    settings = load_settings({"NOTIFIER_EMAIL_FROM": value})
    assert settings.email_from == value
    assert settings.email_from_address.display_name == display_name
    assert settings.email_from_address.addr_spec == addr_spec
    assert settings.message_id_domain == domain


def test_email_from_default() -> None:
    settings = load_settings({})
    assert settings.message_id_domain == "replyx.ru"
    assert settings.email_from_address.addr_spec == "noreply@replyx.ru"


@pytest.mark.parametrize(
    "value",
    [
        "noreply",  # no domain
        "ReplyX <noreply@>",
        "ReplyX <@replyx.ru>",
        "<>",
        "ReplyX noreply@replyx.ru",  # a display name without angle brackets
        "noreply@replyx.ru trailing words",
        "ReplyX <noreply@replyx.ru",  # unbalanced
        "a@replyx.ru, b@replyx.ru",  # two addresses
        "Team: a@replyx.ru;",  # a group
        "Team: ;",
        "noreply@реплай.рф",  # an address we could only send with SMTPUTF8
        "ReplyX <noreply@replyx.ru>\r\nBcc: victim@example.com",
        "ReplyX <noreply@replyx.ru>\x00",
    ],
)
def test_a_bad_email_from_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="NOTIFIER_EMAIL_FROM"):
        load_settings({"NOTIFIER_EMAIL_FROM": value})


def test_settings_built_by_hand_parse_on_use() -> None:
    assert Settings(email_from="x <a@b.example>").message_id_domain == "b.example"
    with pytest.raises(ConfigError, match="NOTIFIER_EMAIL_FROM"):
        _ = Settings(email_from="nobody").message_id_domain


# --- NOTIFIER_DIALOG_URL ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "link"),
    [
        ("https://replyx.ru/dialogs?dialog_id={dialog_id}", "https://replyx.ru/dialogs?dialog_id=42"),
        ("https://replyx.ru/dialogs/{dialog_id}#m{dialog_id}", "https://replyx.ru/dialogs/42#m42"),
        # Escaped braces are literal braces in the link.
        ("https://replyx.ru/#/dialogs/{dialog_id}?f={{open}}", "https://replyx.ru/#/dialogs/42?f={open}"),
        ("https://replyx.ru/d/{{{dialog_id}}}", "https://replyx.ru/d/{42}"),
    ],
)
def test_valid_dialog_urls(value: str, link: str) -> None:
    assert load_settings({"NOTIFIER_DIALOG_URL": value}).dialog_link(42) == link


def test_dialog_url_default() -> None:
    assert load_settings({}).dialog_link(7) == "https://replyx.ru/dialogs?dialog_id=7"


@pytest.mark.parametrize(
    "value",
    [
        "https://replyx.ru/dialogs?dialog_id={dialog}",
        "https://replyx.ru/dialogs?dialog_id={0}",
        "https://replyx.ru/dialogs?dialog_id={}",
        "https://replyx.ru/dialogs?dialog_id={dialog_id!r}",
        "https://replyx.ru/dialogs?dialog_id={dialog_id!s}",
        "https://replyx.ru/dialogs?dialog_id={dialog_id:x}",
        "https://replyx.ru/dialogs?dialog_id={dialog_id:>10}",
        "https://replyx.ru/dialogs?dialog_id={dialog_id.real}",
        "https://replyx.ru/dialogs?dialog_id={dialog_id[0]}",
        "https://replyx.ru/dialogs/{dialog_id}?site={site_id}",  # a second, unknown placeholder
        "https://replyx.ru/dialogs?dialog_id={dialog_id",  # unbalanced
        "https://replyx.ru/dialogs?dialog_id=dialog_id}",
        "https://replyx.ru/{/dialogs?dialog_id={dialog_id}",
        "https://replyx.ru/}/dialogs?dialog_id={dialog_id}",
        "https://replyx.ru/dialogs",  # no placeholder at all
        "https://replyx.ru/dialogs?dialog_id={{dialog_id}}",  # escaped: a literal, not a placeholder
    ],
)
def test_a_bad_dialog_url_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=r"NOTIFIER_DIALOG_URL.*\{dialog_id\}"):
        load_settings({"NOTIFIER_DIALOG_URL": value})


@pytest.mark.parametrize(
    ("name", "value"),
    [("NOTIFIER_DIALOG_URL", "https://replyx.ru/dialogs?dialog_id={dialog}"), ("NOTIFIER_EMAIL_FROM", "noreply")],
)
def test_the_worker_refuses_to_start(tmp_path: Path, name: str, value: str) -> None:
    """`notifier worker` in a child process (were the check gone, it would go on to exec Celery)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFIER_", "CELERY_"))}
    env.update({
        name: value,
        "NOTIFIER_REDIS_URL": "redis://127.0.0.1:1/0",  # nothing listens there
        "NOTIFIER_DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}",
    })
    proc = subprocess.run([sys.executable, "-m", "notifier.cli", "worker"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert name in proc.stderr
    assert not (tmp_path / "unused.sqlite3").exists(), "it stopped before touching the database"
