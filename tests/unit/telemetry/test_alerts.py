"""deploy/prometheus/alerts.yml against what the broker really exports, and through promtool.

Two checks, both always run (a missing promtool is a failure that says how to get one):

- every metric, label matcher and grouping label the rules use is one `BrokerMetrics`
  exports: a `BrokerMetrics` is exercised through every method, scraped with `render()` and
  parsed with the Prometheus text parser; label values the rules select on must be values
  the broker emits (effects, reason codes of broker/errors.py, approval outcomes);
- `promtool check rules` (syntax, templates) and `promtool test rules` on
  deploy/prometheus/alerts.test.yml (each alert fires on its trouble and not on health).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker import errors
from broker.telemetry.metrics import APPROVAL_OUTCOMES, EFFECTS, BrokerMetrics
from broker.telemetry.outcome import OWN_OUTCOMES
from tests.unit.telemetry.scrape import exercise_every_method, samples

REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "alerts.test.yml"

PROMQL_WORDS = frozenset(
    {
        "sum", "min", "max", "avg", "count", "stddev", "topk", "bottomk", "quantile", "count_values",
        "rate", "irate", "increase", "delta", "deriv", "changes", "resets", "absent", "absent_over_time",
        "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "count_over_time",
        "histogram_quantile", "clamp_min", "clamp_max", "vector", "scalar", "time", "abs", "ceil", "floor",
        "by", "without", "on", "ignoring", "group_left", "group_right",
        "and", "or", "unless", "bool", "offset",
    }
)  # fmt: skip
TARGET_LABELS = frozenset({"instance", "job"})
"""Labels Prometheus adds to every scraped series: the broker does not export them, rules may use them."""


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]


def parse_expr(expr: str) -> tuple[list[Selector], set[str]]:
    """The metric selectors of a PromQL expression and the labels it groups by.

    Not a PromQL parser: enough of one for the rules we write (selectors, `by (...)`,
    ranges, offsets, numbers), and every unknown word counts as a metric name, so a
    function this does not know fails the test loudly rather than passing quietly.
    """
    selectors: list[Selector] = []
    text = expr
    for match in re.finditer(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", text):
        matchers = tuple(
            (m.group(1), m.group(2), m.group(3))
            for m in re.finditer(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', match.group(2))
        )
        selectors.append(Selector(match.group(1), matchers))
    text = re.sub(r"([a-zA-Z_:][\w:]*)\s*\{[^}]*\}", " ", text)
    grouping: set[str] = set()
    for match in re.finditer(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        grouping.update(label.strip() for label in match.group(2).split(",") if label.strip())
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    text = re.sub(r"\b\d[\w.]*", " ", text)
    for word in re.findall(r"[a-zA-Z_:][\w:]*", text):
        if word not in PROMQL_WORDS:
            selectors.append(Selector(word, ()))
    return selectors, grouping


@functools.cache
def exported() -> dict[str, dict[str, set[str]]]:
    """Sample name → label name → values, from a BrokerMetrics exercised through every method."""
    metrics = BrokerMetrics()
    exercise_every_method(metrics)
    out: dict[str, dict[str, set[str]]] = {}
    for sample in samples(metrics):
        labels = out.setdefault(sample.name, {})
        for key, val in sample.labels.items():
            labels.setdefault(key, set()).add(val)
    return out


def reason_codes() -> set[str]:
    found: set[str] = set()
    stack: list[type[errors.BrokerError]] = [errors.BrokerError]
    while stack:
        cls = stack.pop()
        found.add(cls.reason)
        stack.extend(cls.__subclasses__())
    return found


def allowed_values(metric: str, label: str) -> set[str]:
    """The values a label can take, where the broker defines them; else the ones the scrape showed."""
    if label == "effect":
        return set(EFFECTS)
    if label == "outcome" and metric.startswith("mcp_broker_calls"):
        return set(OWN_OUTCOMES) | reason_codes()
    if label == "outcome" and metric.startswith("mcp_broker_approval"):
        return set(APPROVAL_OUTCOMES)
    return exported()[metric].get(label, set())


def problems_of(expr: str) -> list[str]:
    """What in one rule expression does not match the broker's exports (empty: all good)."""
    found: list[str] = []
    selectors, grouping = parse_expr(expr)
    known_labels: set[str] = set(TARGET_LABELS)
    for selector in selectors:
        if selector.metric not in exported():
            found.append(f"metric {selector.metric} is not exported by BrokerMetrics")
            continue
        labels = exported()[selector.metric]
        known_labels.update(labels)
        for label, op, wanted in selector.matchers:
            if label not in labels and label not in TARGET_LABELS:
                found.append(f"{selector.metric} has no label {label!r} (it has {sorted(labels)})")
            elif op == "=" and label in labels and wanted not in allowed_values(selector.metric, label):
                found.append(f"{selector.metric}{{{label}={wanted!r}}} is a value the broker never emits")
    found.extend(f"grouping label {g!r} is on none of the metrics" for g in sorted(grouping - known_labels))
    return found


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_every_rule_uses_only_metrics_and_labels_the_broker_exports(rule: dict[str, Any]) -> None:
    assert problems_of(rule["expr"]) == []
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_checker_catches_a_wrong_name_label_value_and_grouping() -> None:
    bad = (
        "sum by (tenant) (rate(mcp_broker_call_total[5m]))"
        ' + sum(rate(mcp_broker_calls_total{effect="denied", principal="x"}[5m]))'
        ' + sum(rate(mcp_broker_calls_total{outcome="policy_error"}[5m]))'
        ' + sum(rate(mcp_broker_calls_total{outcome="not_a_reason"}[5m]))'
        " + some_function(mcp_broker_approvals_pending)"
    )
    assert sorted(problems_of(bad)) == sorted(
        [
            "metric mcp_broker_call_total is not exported by BrokerMetrics",
            "mcp_broker_calls_total{effect='denied'} is a value the broker never emits",
            "mcp_broker_calls_total has no label 'principal' (it has "
            "['effect', 'method', 'outcome', 'server', 'tool'])",
            "mcp_broker_calls_total{outcome='not_a_reason'} is a value the broker never emits",
            "metric some_function is not exported by BrokerMetrics",
            "grouping label 'tenant' is on none of the metrics",
        ]
    )


def test_the_rules_cover_what_the_issue_asks_for() -> None:
    names = {rule["alert"] for rule in rules()}
    assert {
        "MCPBrokerDenialSpike",
        "MCPBrokerBreakerOpen",
        "MCPBrokerApprovalBacklog",
        "MCPBrokerAuditWriteFailures",
        "MCPBrokerPolicyReloadFailed",
    } <= names


@functools.cache
def promtool() -> Path:
    """promtool from $MCP_BROKER_PROMTOOL, or installed (and cached) by scripts/install-promtool.sh."""
    given = os.environ.get("MCP_BROKER_PROMTOOL")
    if given:
        assert Path(given).is_file(), f"MCP_BROKER_PROMTOOL={given} does not exist"
        return Path(given)
    done = subprocess.run(
        [str(REPO / "scripts" / "install-promtool.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, f"promtool is required and could not be installed:\n{done.stderr[-2000:]}"
    return Path(done.stdout.strip().splitlines()[-1])


def test_promtool_accepts_the_rules() -> None:
    done = subprocess.run(
        [str(promtool()), "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout + done.stderr


def test_each_alert_fires_on_its_trouble_and_not_on_health() -> None:
    done = subprocess.run(
        [str(promtool()), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname:\s*(\w+)", RULE_TESTS.read_text()))
    assert tested == {rule["alert"] for rule in rules()}, "every alert has a promtool unit test"
