"""BrokerMetrics, read back through the Prometheus text parser as a scraper would read it."""

from __future__ import annotations

import inspect

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.telemetry.metrics import DECISION_BUCKETS, EFFECTS, BrokerMetrics
from broker.traffic.quota import QuotaStatus
from tests.unit.telemetry.scrape import exercise_every_method, samples, value


def test_every_registered_metric_has_a_method_that_feeds_it() -> None:
    metrics = BrokerMetrics()
    exercise_every_method(metrics)
    body, _ = metrics.render()
    families = list(text_string_to_metric_families(body.decode()))
    # A labelled metric only has samples once something observed it: an empty family here
    # is a metric no method of BrokerMetrics reaches.
    empty = [f.name for f in families if not f.samples]
    assert families and empty == []
    public = {
        name
        for name, member in inspect.getmembers(BrokerMetrics, inspect.isfunction)
        if not name.startswith("_") and name != "render"
    }
    called = set(inspect.getsource(exercise_every_method).split("metrics.")[1:])
    called_names = {c.split("(")[0] for c in called}
    assert public <= called_names, f"not exercised: {sorted(public - called_names)}"


def test_calls_are_counted_by_method_server_tool_effect_and_outcome() -> None:
    metrics = BrokerMetrics()
    for _ in range(3):
        metrics.observe_call(server="github", tool="create_issue", effect="deny", outcome="policy_denied")
    metrics.observe_call(server="github", tool="create_issue", effect="allow", outcome="ok")
    metrics.observe_call(server="docs", tool=None, effect="allow", outcome="ok", method="resources/read")
    deny = {"method": "tools/call", "server": "github", "tool": "create_issue"}
    assert value(metrics, "mcp_broker_calls_total", **deny, effect="deny", outcome="policy_denied") == 3
    assert value(metrics, "mcp_broker_calls_total", **deny, effect="allow", outcome="ok") == 1
    read = {"method": "resources/read", "server": "docs", "tool": "", "effect": "allow", "outcome": "ok"}
    assert value(metrics, "mcp_broker_calls_total", **read) == 1


def test_a_call_stopped_before_any_decision_has_effect_none_and_no_server() -> None:
    metrics = BrokerMetrics()
    metrics.observe_call(server=None, tool=None, effect="none", outcome="unknown_tool")
    labels = {"method": "tools/call", "server": "", "tool": "", "effect": "none", "outcome": "unknown_tool"}
    assert value(metrics, "mcp_broker_calls_total", **labels) == 1


def test_an_effect_outside_the_vocabulary_is_a_programming_error() -> None:
    metrics = BrokerMetrics()
    with pytest.raises(ValueError, match=r"unknown effect 'Effect\.DENY'"):
        metrics.observe_call(server="github", tool="t", effect="Effect.DENY", outcome="policy_denied")
    assert {"allow", "deny", "require_approval", "none"} == EFFECTS


def test_tool_labels_are_capped_and_later_tools_fold_into_other() -> None:
    metrics = BrokerMetrics(max_tool_labels=2)
    for tool in ("a", "b", "c", "d", "a"):
        metrics.observe_call(server="s", tool=tool, effect="allow", outcome="ok")
    metrics.rate_limited("s", "e")
    tools = {s.labels["tool"]: s.value for s in samples(metrics) if s.name == "mcp_broker_calls_total"}
    assert tools == {"a": 2, "b": 1, "other": 2}
    limited = [s.labels["tool"] for s in samples(metrics) if s.name == "mcp_broker_rate_limited_total"]
    assert limited == ["other"]


def test_the_same_tool_name_on_two_servers_is_two_label_values() -> None:
    metrics = BrokerMetrics(max_tool_labels=2)
    for server in ("one", "two", "three"):
        metrics.observe_call(server=server, tool="search", effect="allow", outcome="ok")
    pairs = {
        (s.labels["server"], s.labels["tool"]) for s in samples(metrics) if s.name == "mcp_broker_calls_total"
    }
    assert pairs == {("one", "search"), ("two", "search"), ("three", "other")}


def test_a_zero_tool_cap_switches_the_tool_label_off() -> None:
    metrics = BrokerMetrics(max_tool_labels=0)
    metrics.observe_call(server="s", tool="a", effect="allow", outcome="ok")
    assert [s.labels["tool"] for s in samples(metrics) if s.name == "mcp_broker_calls_total"] == ["other"]


def test_outcomes_and_authentication_reasons_are_capped_too() -> None:
    metrics = BrokerMetrics(max_reason_labels=1)
    metrics.observe_call(server="s", tool="t", effect="deny", outcome="policy_denied")
    metrics.observe_call(server="s", tool="t", effect="deny", outcome="made_up_by_a_caller")
    metrics.authentication_failed("expired")
    metrics.authentication_failed("x" * 200)
    outcomes = {s.labels["outcome"] for s in samples(metrics) if s.name == "mcp_broker_calls_total"}
    reasons = {
        s.labels["reason"] for s in samples(metrics) if s.name == "mcp_broker_authentication_failures_total"
    }
    assert outcomes == {"policy_denied", "other"}
    assert reasons == {"expired", "other"}


def test_a_sub_millisecond_decision_lands_in_a_sub_millisecond_bucket() -> None:
    metrics = BrokerMetrics()
    metrics.observe_decision("cedar", 0.0003)
    metrics.observe_decision("opa", 0.004)
    buckets = {
        (s.labels["engine"], s.labels["le"]): s.value
        for s in samples(metrics)
        if s.name == "mcp_broker_decision_duration_seconds_bucket"
    }
    assert buckets[("cedar", "0.00025")] == 0
    assert buckets[("cedar", "0.0005")] == 1
    assert buckets[("opa", "0.0025")] == 0
    assert buckets[("opa", "0.005")] == 1
    assert sum(1 for b in DECISION_BUCKETS if b < 0.001) >= 4
    assert value(metrics, "mcp_broker_decision_duration_seconds_count", engine="cedar") == 1
    assert value(metrics, "mcp_broker_decision_duration_seconds_sum", engine="cedar") == pytest.approx(0.0003)


def test_approvals_pending_goes_up_and_down_and_resolutions_are_counted() -> None:
    metrics = BrokerMetrics()
    metrics.approval_opened()
    metrics.approval_opened()
    metrics.approval_opened()
    metrics.approval_closed("approved", 12.0)
    assert value(metrics, "mcp_broker_approvals_pending") == 2
    assert value(metrics, "mcp_broker_approvals_resolved_total", outcome="approved") == 1
    assert value(metrics, "mcp_broker_approval_wait_seconds_count", outcome="approved") == 1
    metrics.set_approvals_pending(7)
    assert value(metrics, "mcp_broker_approvals_pending") == 7


def test_breaker_gauge_follows_opening_and_closing() -> None:
    metrics = BrokerMetrics()
    metrics.breaker_opened("github")
    assert value(metrics, "mcp_broker_breaker_open", server="github") == 1
    metrics.breaker_closed("github")
    metrics.breaker_opened("github")
    metrics.breaker_rejected("github")
    assert value(metrics, "mcp_broker_breaker_opened_total", server="github") == 2
    assert value(metrics, "mcp_broker_breaker_rejected_total", server="github") == 1
    metrics.breaker_closed("github")
    assert value(metrics, "mcp_broker_breaker_open", server="github") == 0


def test_declare_exports_zero_series_so_the_first_failure_is_an_increase() -> None:
    metrics = BrokerMetrics()
    metrics.declare(servers=["github", "time"], engine="opa", audit_sinks=["jsonl", "postgres"])
    assert value(metrics, "mcp_broker_breaker_opened_total", server="time") == 0
    assert value(metrics, "mcp_broker_breaker_open", server="github") == 0
    assert value(metrics, "mcp_broker_audit_write_failures_total", sink="postgres") == 0
    assert value(metrics, "mcp_broker_policy_reload_failures_total", engine="opa") == 0
    assert value(metrics, "mcp_broker_approvals_resolved_total", outcome="expired") == 0


def test_a_failed_reload_sets_the_failing_gauge_until_a_good_one() -> None:
    metrics = BrokerMetrics()
    metrics.policy_reloaded("cedar", ok=False)
    metrics.policy_reloaded("cedar", ok=False)
    assert value(metrics, "mcp_broker_policy_last_reload_failed") == 1
    assert value(metrics, "mcp_broker_policy_reload_failures_total", engine="cedar") == 2
    metrics.policy_reloaded("cedar", ok=True)
    assert value(metrics, "mcp_broker_policy_last_reload_failed") == 0
    assert value(metrics, "mcp_broker_policy_reloads_total", engine="cedar") == 1


def test_build_info_carries_the_policy_version_in_force_only() -> None:
    metrics = BrokerMetrics()
    metrics.set_build_info(version="0.1.0", policy_version="v1", engine="cedar")
    metrics.set_build_info(version="0.1.0", policy_version="v2", engine="cedar")
    infos = [s for s in samples(metrics) if s.name == "mcp_broker_build_info"]
    assert [(s.labels, s.value) for s in infos] == [
        ({"version": "0.1.0", "policy_version": "v2", "engine": "cedar"}, 1.0)
    ]


def test_audit_writes_and_failures_per_sink() -> None:
    metrics = BrokerMetrics()
    metrics.observe_audit_write(0.00002)
    metrics.observe_audit_write(0.003, sink="postgres")
    metrics.audit_write_failed(sink="postgres")
    assert value(metrics, "mcp_broker_audit_write_duration_seconds_bucket", sink="jsonl", le="2.5e-05") == 1
    assert value(metrics, "mcp_broker_audit_write_duration_seconds_bucket", sink="jsonl", le="1e-05") == 0
    assert value(metrics, "mcp_broker_audit_write_failures_total", sink="postgres") == 1


def test_two_instances_share_nothing_and_the_global_registry_stays_untouched() -> None:
    first, second = BrokerMetrics(), BrokerMetrics()
    first.observe_call(server="s", tool="t", effect="allow", outcome="ok")
    labels = {"method": "tools/call", "server": "s", "tool": "t", "effect": "allow", "outcome": "ok"}
    assert value(first, "mcp_broker_calls_total", **labels) == 1
    assert value(second, "mcp_broker_calls_total", **labels) is None
    global_names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not any(name.startswith("mcp_broker") for name in global_names)


def test_render_answers_openmetrics_when_asked_and_text_otherwise() -> None:
    metrics = BrokerMetrics()
    metrics.observe_call(server="s", tool="t", effect="allow", outcome="ok")
    body, ctype = metrics.render("application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    body, ctype = metrics.render(None)
    assert ctype.startswith("text/plain; version=0.0.4")
    assert b"# EOF" not in body
    assert (
        b'mcp_broker_calls_total{effect="allow",method="tools/call",outcome="ok",server="s",tool="t"} 1.0'
        in body.splitlines()
    )


def test_budgets_are_read_at_scrape_time_and_their_keys_are_bounded() -> None:
    metrics = BrokerMetrics()
    readings = [QuotaStatus("daily", f"User:u{i}@acme", 10, i, 0.0) for i in range(5)]
    metrics.watch_budgets(lambda: readings, max_keys=3)
    assert value(metrics, "mcp_broker_quota_remaining", rule="daily", key="User:u1@acme") == 9
    assert value(metrics, "mcp_broker_quota_budget", rule="daily", key="User:u0@acme") == 10
    # keys past the cap are summed under "other": u3 (7 left) and u4 (6 left)
    assert value(metrics, "mcp_broker_quota_remaining", rule="daily", key="other") == 13
    readings[0] = QuotaStatus("daily", "User:u0@acme", 10, 4, 0.0)  # spent meanwhile: read live
    assert value(metrics, "mcp_broker_quota_remaining", rule="daily", key="User:u0@acme") == 6
