"""`/metrics` over real HTTP, parsed with the Prometheus text parser, as a Prometheus server scrapes it."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from broker.telemetry.endpoint import metrics_app, metrics_route
from broker.telemetry.metrics import BrokerMetrics
from tests.unit.telemetry.scrape import exercise_every_method
from tests.unit.telemetry.serve import serving


def test_metrics_are_scraped_over_http_and_parse() -> None:
    metrics = BrokerMetrics()
    exercise_every_method(metrics)
    with serving(metrics_app(metrics)) as url:
        first = httpx.get(f"{url}/metrics", timeout=10)
        metrics.observe_call(server="github", tool="create_issue", effect="deny", outcome="policy_denied")
        second = httpx.get(f"{url}/metrics", timeout=10)
        post = httpx.post(f"{url}/metrics", timeout=10)
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert first.headers["cache-control"] == "no-store"

    def denied(body: str) -> float:
        labels = {
            "method": "tools/call",
            "server": "github",
            "tool": "create_issue",
            "effect": "deny",
            "outcome": "policy_denied",
        }
        return next(
            s.value
            for family in text_string_to_metric_families(body)
            for s in family.samples
            if s.name == "mcp_broker_calls_total" and s.labels == labels
        )

    assert denied(first.text) == 1
    assert denied(second.text) == 2  # every scrape reads the live values
    assert post.status_code == 405


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it() -> None:
    metrics = BrokerMetrics()
    metrics.observe_decision("cedar", 0.0002)
    app = Starlette(routes=[metrics_route(metrics, "/internal/metrics")])
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    with serving(app) as url:
        answer = httpx.get(f"{url}/internal/metrics", headers={"accept": accept}, timeout=10)
        missing = httpx.get(f"{url}/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.rstrip().endswith("# EOF")
    assert 'mcp_broker_decision_duration_seconds_count{engine="cedar"} 1' in answer.text
    assert missing.status_code == 404
