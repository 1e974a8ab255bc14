"""Test helpers: read a `BrokerMetrics` the way Prometheus does, through its text format parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from broker.telemetry.metrics import BrokerMetrics
from broker.traffic.quota import QuotaStatus


def samples(metrics: BrokerMetrics) -> list[Sample]:
    """Every sample of a scrape of `render()`, parsed by prometheus_client's text parser."""
    body, _ = metrics.render()
    return [s for family in text_string_to_metric_families(body.decode()) for s in family.samples]


def value(metrics: BrokerMetrics, name: str, **labels: str) -> float | None:
    """The value of the one sample called `name` with exactly these labels, or None if absent."""
    found = [s.value for s in samples(metrics) if s.name == name and s.labels == labels]
    assert len(found) <= 1, f"{name}{labels} matched {len(found)} samples"
    return found[0] if found else None


def exercise_every_method(metrics: BrokerMetrics) -> None:
    """Call every observation method once, with values the alert rules select on."""
    metrics.declare(servers=["github", "time"], engine="cedar")
    metrics.observe_call(server="github", tool="create_issue", effect="allow", outcome="ok")
    metrics.observe_call(server="github", tool="create_issue", effect="deny", outcome="policy_denied")
    metrics.observe_call(server="github", tool="create_issue", effect="deny", outcome="policy_error")
    metrics.observe_call(server="time", tool="now", effect="allow", outcome="tool_error")
    metrics.observe_decision("cedar", 0.0003)
    metrics.observe_upstream("github", 0.02)
    metrics.authentication_failed("invalid")
    metrics.approval_opened()
    metrics.approval_opened()
    metrics.approval_closed("expired", 300.0)
    metrics.set_approvals_pending(1)
    metrics.rate_limited("github", "create_issue")
    metrics.breaker_opened("github")
    metrics.breaker_rejected("github")
    metrics.breaker_closed("github")
    metrics.observe_audit_write(0.0004)
    metrics.audit_write_failed()
    metrics.policy_reloaded("cedar", ok=True)
    metrics.policy_reloaded("cedar", ok=False)
    metrics.set_build_info(version="0.1.0", policy_version="abc123", engine="cedar")
    metrics.registry_changed("github", newly_quarantined=1, quarantined_now=1)
    metrics.watch_budgets(lambda: [QuotaStatus("tenant-daily", "acme", 100, 40, 0.0)])
