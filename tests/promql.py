"""What the dashboard and the alert rules ask Prometheus, and what a scrape really exports.

    exported = scraped_labels(text)                       # sample name -> label names, from /metrics text
    problems = check_expr(expr, exported)                 # [] when every name and label exists

Enough PromQL for our own queries: metric selectors (`name{label="v"}`), `by (...)`/`without (...)`
groupings and Grafana's `{{label}}` legends. Labels Prometheus adds to every target (`job`, `instance`)
are always allowed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "notifier.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
TARGET_LABELS = {"job", "instance"}
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}

_SELECTOR = re.compile(r"\b(notifier_[a-z_]+)\b\s*(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_LEGEND = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


def scraped_labels(text: str) -> dict[str, set[str]]:
    """Sample name (`..._total`, `..._bucket`, ...) -> label names, from Prometheus text exposition."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def dashboard_queries() -> list[dict[str, Any]]:
    """Every target of every panel: {"panel", "expr", "legend"}."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [
        {"panel": panel["title"], "expr": target["expr"], "legend": target.get("legendFormat", "")}
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def alert_queries() -> list[dict[str, Any]]:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [{"panel": f"alert {r['alert']}", "expr": r["expr"], "legend": ""} for g in rules["groups"] for r in g["rules"]]


def for_prometheus(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, as Prometheus's API accepts it."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def check_expr(expr: str, exported: dict[str, set[str]], legend: str = "") -> list[str]:
    """Names and labels `expr` (and its legend) uses that the scrape does not have."""
    problems: list[str] = []
    used: set[str] = set()
    names = _SELECTOR.findall(expr)
    for name, braces in names:
        if name not in exported:
            problems.append(f"metric {name} is not exported")
            continue
        used |= exported[name]
        for label in _MATCHER.findall(braces or ""):
            if label not in exported[name] | TARGET_LABELS:
                problems.append(f"{name} has no label {label!r}")
    if not names:
        problems.append("names no notifier metric")
    grouped: set[str] = set()
    for group in _GROUPING.findall(expr):
        for label in (part.strip() for part in group.split(",")):
            if label and label not in used | TARGET_LABELS:
                problems.append(f"grouping by {label!r}, which none of its metrics has")
            grouped.add(label)
    for label in _LEGEND.findall(legend):
        if label not in (grouped or used) | TARGET_LABELS:
            problems.append(f"legend {{{{{label}}}}} is not a label of the result")
    return problems
