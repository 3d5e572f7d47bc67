"""deploy/: the alert rules load and pass their unit tests (Debian's `promtool`), the Prometheus config is
valid, the dashboard is well-formed Grafana JSON; and the PromQL checker the suite relies on does catch
a wrong name, label or legend. Whether the queries name what the code exports is checked against a real
worker's scrape in tests/test_worker_metrics.py; whether Prometheus evaluates them, in
tests/test_prometheus_graph.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.promql import ALERTS, DASHBOARD, alert_queries, check_expr, dashboard_queries

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PROMTOOL_MISSING = "install Debian's prometheus package (it ships promtool; .ci/run and `make test` do)"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(f"promtool not found: {PROMTOOL_MISSING}")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, check=False, cwd=DEPLOY)


def test_promtool_check_rules() -> None:
    out = promtool("check", "rules", str(ALERTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 5 rules found" in out.stdout


def test_promtool_test_rules_every_alert_fires_and_stays_quiet() -> None:
    tests_file = DEPLOY / "prometheus" / "alerts_test.yml"
    out = promtool("test", "rules", str(tests_file))
    assert out.returncode == 0, out.stdout + out.stderr
    cases = yaml.safe_load(tests_file.read_text(encoding="utf-8"))["tests"]
    alerts = {q["panel"].removeprefix("alert ") for q in alert_queries()}
    for alert in alerts:  # each alert has a case where it fires and one where it must not
        checks = [c for case in cases for c in case["alert_rule_test"] if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in checks), f"{alert}: no case where it fires"
        assert any(not c["exp_alerts"] for c in checks), f"{alert}: no case where it stays quiet"


def test_promtool_check_config() -> None:
    out = promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_dashboard_is_grafana_json_on_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = {p["title"] for p in panels}
    for wanted in ("Notifications sent per channel", "Skips by reason", "Lateness percentiles",
                   "Pending, in-flight and parked checks", "Failures"):
        assert wanted in titles
    for panel in panels:
        assert panel["type"] in ("timeseries", "stat") and panel["targets"], panel["title"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert {t["refId"] for t in panel["targets"]} == {chr(65 + i) for i in range(len(panel["targets"]))}
    lateness = next(p for p in panels if p["title"] == "Lateness percentiles")
    assert [t["expr"].split(",")[0] for t in lateness["targets"]] == [
        "histogram_quantile(0.5", "histogram_quantile(0.9", "histogram_quantile(0.99"]


EXPORTED = {
    "notifier_deliveries_total": {"channel", "status"},
    "notifier_send_seconds_bucket": {"channel", "le"},
    "notifier_pending_checks": set(),
}


@pytest.mark.parametrize(
    ("expr", "legend", "problem"),
    [
        ("rate(notifier_delivery_total[5m])", "", "metric notifier_delivery_total is not exported"),
        ('notifier_deliveries_total{state="sent"}', "", "notifier_deliveries_total has no label 'state'"),
        ("sum by (reason) (rate(notifier_deliveries_total[5m]))", "", "grouping by 'reason', which none of its"),
        ("sum by (channel) (rate(notifier_deliveries_total[5m]))", "{{status}}", "legend {{status}} is not a label"),
        ("vector(1)", "", "names no notifier metric"),
    ],
)
def test_the_checker_catches_what_the_code_does_not_export(expr: str, legend: str, problem: str) -> None:
    found = check_expr(expr, EXPORTED, legend)
    assert any(p.startswith(problem) for p in found), found


def test_the_checker_accepts_what_exists() -> None:
    for expr, legend in [
        ('histogram_quantile(0.9, sum by (le, channel) (rate(notifier_send_seconds_bucket{channel="email"}[1m])))',
         "p90 {{channel}}"),
        ("max(notifier_pending_checks)", "pending"),
        ('sum by (instance) (notifier_deliveries_total{job="notifier-worker"})', "{{instance}}"),
    ]:
        assert check_expr(expr, EXPORTED, legend) == []
    assert len(dashboard_queries()) >= 10 and len(alert_queries()) == 5
