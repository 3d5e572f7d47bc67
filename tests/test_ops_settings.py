"""The operations settings: NOTIFIER_METRICS_PORT / _ADDRESS (metrics off when the port is unset),
NOTIFIER_LOG_FORMAT and NOTIFIER_RETENTION_DAYS (tests/test_logs.py and tests/test_retention.py check
those two in use); each bad value is refused naming its variable."""

from __future__ import annotations

import os

import pytest

from notifier.config import Settings, load_settings
from notifier.errors import ConfigError
from notifier.metrics import exporter


def test_defaults() -> None:
    settings = load_settings({})
    assert (settings.metrics_port, settings.metrics_address, settings.retention_days, settings.log_format) == (
        None, "0.0.0.0", 30.0, "text")


@pytest.mark.parametrize(("raw", "port"), [("9808", 9808), (" 1 ", 1), ("65535", 65535), ("", None)])
def test_metrics_port(raw: str, port: int | None) -> None:
    assert load_settings({"NOTIFIER_METRICS_PORT": raw}).metrics_port == port


@pytest.mark.parametrize("raw", ["0", "65536", "-1", "http", "9808/tcp", "٩٨٠٨", "98.08"])
def test_a_bad_metrics_port_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="NOTIFIER_METRICS_PORT must be a TCP port from 1 to 65535"):
        load_settings({"NOTIFIER_METRICS_PORT": raw})


@pytest.mark.parametrize("raw", ["127.0.0.1", "::", "::1", "0.0.0.0", "localhost", "metrics.internal"])
def test_metrics_address(raw: str) -> None:
    assert load_settings({"NOTIFIER_METRICS_ADDRESS": raw}).metrics_address == raw


@pytest.mark.parametrize("raw", ["127.0.0.1:9808", "http://0.0.0.0", "a b", "-host", "host..name"])
def test_a_bad_metrics_address_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="NOTIFIER_METRICS_ADDRESS must be an IP address or a host name"):
        load_settings({"NOTIFIER_METRICS_ADDRESS": raw})


def test_without_a_port_the_exporter_does_nothing() -> None:
    before = os.environ.get(exporter.MULTIPROC_ENV)
    assert exporter.prepare(Settings()) is None
    assert exporter.start(Settings(), lambda: None) is False  # type: ignore[arg-type,return-value]
    assert os.environ.get(exporter.MULTIPROC_ENV) == before
