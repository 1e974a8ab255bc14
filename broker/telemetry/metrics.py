"""Prometheus metrics of the broker, with one small typed method per thing the broker observes.

`BrokerMetrics` owns its own `CollectorRegistry`: nothing is registered in
prometheus_client's process-wide default registry, so two brokers (or a test and a
broker) in one process never share or collide on a series. `render()` gives the body
and content type of a `/metrics` answer.

The request path calls these methods for every call, so they are cheap: label values
are bounded first (`LabelCap`, see labels.py), then the labelled child is looked up in a
plain dict instead of prometheus_client's `labels()` (which validates and locks on every
call). Observing never raises for an unknown open-ended value: it is folded into
`other`. Closed vocabularies (the effect) raise `ValueError`, because passing anything
else is a programming error that a test must catch.

Metric names, labels and their meaning are listed in docs/observability.md; the alert
rules in deploy/prometheus/alerts.yml are checked against what this class exports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from broker.telemetry.labels import NONE, LabelCap

PREFIX: Final = "mcp_broker"

EFFECTS: Final[frozenset[str]] = frozenset({"allow", "deny", "require_approval", "none"})
"""`effect` label: the policy's answer, or `none` when the call stopped before a decision."""

APPROVAL_OUTCOMES: Final = ("approved", "denied", "expired", "cancelled", "error")
"""How an approval wait ends (`outcome` label of the approval metrics)."""

DECISION_BUCKETS: Final = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
"""Embedded Cedar decides in ≈ 0.2-0.3 ms, OPA over a local socket in ≈ 1 ms, and the OPA
timeout defaults to 100 ms: most resolution sits below a millisecond, where the decisions are."""

UPSTREAM_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Tools range from a local stdio call (≈ 1 ms) to a long remote job; the call timeout is ≈ 60 s."""

AUDIT_BUCKETS: Final = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
"""A buffered append is microseconds; an fsync is 0.1-10 ms on a disk, more on a network volume."""

APPROVAL_BUCKETS: Final = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
"""A human answers in seconds to hours."""


class BrokerMetrics:
    """Every metric the broker exports, registered in this instance's own registry.

    `max_tool_labels` bounds the distinct (server, tool) pairs the `tool` label takes
    across all metrics (0 turns the label off: every tool is `other`). Pass only names
    the catalog resolved: an unknown tool's name is chosen by the caller.
    """

    def __init__(self, *, max_tool_labels: int = 500, max_reason_labels: int = 64) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._tools = LabelCap(max_tool_labels)
        self._outcomes = LabelCap(max_reason_labels)
        self._methods = LabelCap(32)
        self._reasons = LabelCap(max_reason_labels)
        self._approval_outcomes = LabelCap(16)
        reg = self.registry

        self._calls = Counter(
            f"{PREFIX}_calls",
            "Requests routed to an upstream (tools/call, prompts/get, resources/read, ...), by their end.",
            ["method", "server", "tool", "effect", "outcome"],
            registry=reg,
        )
        self._decision = Histogram(
            f"{PREFIX}_decision_duration_seconds",
            "Time the policy engine took to decide one authorization request.",
            ["engine"],
            buckets=DECISION_BUCKETS,
            registry=reg,
        )
        self._upstream = Histogram(
            f"{PREFIX}_upstream_duration_seconds",
            "Time from sending a call to an upstream to its answer (or failure).",
            ["server"],
            buckets=UPSTREAM_BUCKETS,
            registry=reg,
        )
        self._approvals_pending = Gauge(
            f"{PREFIX}_approvals_pending", "Calls waiting for a human approval now.", registry=reg
        )
        self._approvals = Counter(
            f"{PREFIX}_approvals_resolved",
            "Approval requests that ended, by how (approved, denied, expired, cancelled, error).",
            ["outcome"],
            registry=reg,
        )
        self._approval_wait = Histogram(
            f"{PREFIX}_approval_wait_seconds",
            "Time a call waited for its approval.",
            ["outcome"],
            buckets=APPROVAL_BUCKETS,
            registry=reg,
        )
        self._rate_limited = Counter(
            f"{PREFIX}_rate_limited",
            "Calls refused by a rate limit or concurrency cap.",
            ["server", "tool"],
            registry=reg,
        )
        self._breaker_opened = Counter(
            f"{PREFIX}_breaker_opened",
            "Times the circuit breaker of an upstream opened.",
            ["server"],
            registry=reg,
        )
        self._breaker_open = Gauge(
            f"{PREFIX}_breaker_open",
            "1 while the circuit breaker of an upstream is open, else 0.",
            ["server"],
            registry=reg,
        )
        self._breaker_rejected = Counter(
            f"{PREFIX}_breaker_rejected",
            "Calls refused because the upstream's circuit breaker was open.",
            ["server"],
            registry=reg,
        )
        self._audit_write = Histogram(
            f"{PREFIX}_audit_write_duration_seconds",
            "Time to write one audit record durably (per the sink's durability setting).",
            ["sink"],
            buckets=AUDIT_BUCKETS,
            registry=reg,
        )
        self._audit_failures = Counter(
            f"{PREFIX}_audit_write_failures",
            "Audit records that could not be written (the call then fails closed).",
            ["sink"],
            registry=reg,
        )
        self._reloads = Counter(
            f"{PREFIX}_policy_reloads",
            "Policy reloads that were applied.",
            ["engine"],
            registry=reg,
        )
        self._reload_failures = Counter(
            f"{PREFIX}_policy_reload_failures",
            "Policy reloads that were refused (the previous policy set stays in force).",
            ["engine"],
            registry=reg,
        )
        self._reload_failing = Gauge(
            f"{PREFIX}_policy_last_reload_failed",
            "1 when the most recent policy reload was refused, 0 once one succeeds.",
            registry=reg,
        )
        self._auth_failures = Counter(
            f"{PREFIX}_authentication_failures",
            "Requests refused because their credential was missing or invalid, by reason.",
            ["reason"],
            registry=reg,
        )
        self._registry_quarantines = Counter(
            f"{PREFIX}_registry_quarantines",
            "Tools, resources and prompts the tool registry quarantined (drifted, unpinned, flagged).",
            ["server"],
            registry=reg,
        )
        self._registry_quarantined = Gauge(
            f"{PREFIX}_registry_quarantined",
            "Items the tool registry holds back now.",
            registry=reg,
        )
        self._build = Info(
            f"{PREFIX}_build",
            "The running broker: its version, the policy version in force, the engine.",
            registry=reg,
        )
        # Label tuples (already bounded) → labelled child: the hot path skips labels().
        self._call_children: dict[tuple[str, str, str, str, str], Counter] = {}
        self._decision_children: dict[str, Histogram] = {}
        self._upstream_children: dict[str, Histogram] = {}

    def declare(
        self, *, servers: Iterable[str], engine: str, audit_sinks: Iterable[str] = ("jsonl",)
    ) -> None:
        """Export zero-valued series for every known upstream, the engine and the audit sinks.

        Call at start (and when the set of upstreams changes). A labelled counter only
        exists once it is first incremented, and Prometheus' `increase()` cannot see a
        series' first value: without this the first breaker opening or audit failure after
        a start would never fire its alert.
        """
        for server in servers:
            self._breaker_opened.labels(server)
            self._breaker_open.labels(server).set(0)
            self._breaker_rejected.labels(server)
        self._reloads.labels(engine)
        self._reload_failures.labels(engine)
        for sink in audit_sinks:
            self._audit_failures.labels(sink)
        for outcome in APPROVAL_OUTCOMES:
            self._approvals.labels(self._approval_outcomes.label(outcome))

    # -- the request path ------------------------------------------------------------------

    def observe_call(
        self,
        *,
        server: str | None,
        tool: str | None,
        effect: str,
        outcome: str,
        method: str = "tools/call",
    ) -> None:
        """One routed request ended. `outcome`: `ok`, `tool_error` (result `isError`), `error`
        (the upstream answered a JSON-RPC error) or the broker's stable reason code
        (`policy_denied`, `unknown_tool`, `upstream_timeout`, ...)."""
        if effect not in EFFECTS:
            raise ValueError(f"unknown effect {effect!r}; expected one of {sorted(EFFECTS)}")
        srv = server or NONE
        key = (
            self._methods.label(method),
            srv,
            self._tools.label(tool, srv),
            effect,
            self._outcomes.label(outcome),
        )
        child = self._call_children.get(key)
        if child is None:
            child = self._call_children[key] = self._calls.labels(*key)
        child.inc()

    def observe_decision(self, engine: str, seconds: float) -> None:
        """One authorization request decided (calls and each list filtering alike)."""
        child = self._decision_children.get(engine)
        if child is None:
            child = self._decision_children[engine] = self._decision.labels(engine)
        child.observe(seconds)

    def observe_upstream(self, server: str, seconds: float) -> None:
        """One upstream round trip, whatever its result."""
        child = self._upstream_children.get(server)
        if child is None:
            child = self._upstream_children[server] = self._upstream.labels(server)
        child.observe(seconds)

    def authentication_failed(self, reason: str) -> None:
        """A credential was missing or refused (`missing`, `invalid`, `expired`, ...)."""
        self._auth_failures.labels(self._reasons.label(reason)).inc()

    # -- approvals -------------------------------------------------------------------------

    def approval_opened(self) -> None:
        """A call started waiting for a human."""
        self._approvals_pending.inc()

    def approval_closed(self, outcome: str, waited_seconds: float) -> None:
        """A wait ended: `approved`, `denied`, `expired`, `cancelled` or `error` (the store failed)."""
        self._approvals_pending.dec()
        label = self._approval_outcomes.label(outcome)
        self._approvals.labels(label).inc()
        self._approval_wait.labels(label).observe(waited_seconds)

    def set_approvals_pending(self, count: int) -> None:
        """Set the backlog from the approval store (when it, not this process, knows the count)."""
        self._approvals_pending.set(count)

    # -- traffic (issue #9) ----------------------------------------------------------------

    def rate_limited(self, server: str, tool: str | None) -> None:
        self._rate_limited.labels(server, self._tools.label(tool, server)).inc()

    def breaker_opened(self, server: str) -> None:
        self._breaker_opened.labels(server).inc()
        self._breaker_open.labels(server).set(1)

    def breaker_closed(self, server: str) -> None:
        self._breaker_open.labels(server).set(0)

    def breaker_rejected(self, server: str) -> None:
        self._breaker_rejected.labels(server).inc()

    def registry_changed(self, server: str, *, newly_quarantined: int, quarantined_now: int) -> None:
        """The tool registry judged a listing (or new pins): quarantines and the current count."""
        if newly_quarantined:
            self._registry_quarantines.labels(server).inc(newly_quarantined)
        self._registry_quarantined.set(quarantined_now)

    def watch_budgets(self, snapshot: Callable[[], Iterable[BudgetReading]], max_keys: int = 200) -> None:
        """Export the call budgets (issue #9) at scrape time: `mcp_broker_quota_remaining` and
        `mcp_broker_quota_budget` by rule and key (the principal or tenant the budget is per),
        at most `max_keys` keys, the rest summed under `other`."""
        self.registry.register(_BudgetCollector(snapshot, max_keys))

    # -- audit -----------------------------------------------------------------------------

    def observe_audit_write(self, seconds: float, sink: str = "jsonl") -> None:
        self._audit_write.labels(sink).observe(seconds)

    def audit_write_failed(self, sink: str = "jsonl") -> None:
        self._audit_failures.labels(sink).inc()

    # -- policy and build ------------------------------------------------------------------

    def policy_reloaded(self, engine: str, *, ok: bool) -> None:
        """A reload was applied (`ok`) or refused; a refused one leaves the old policies in force."""
        (self._reloads if ok else self._reload_failures).labels(engine).inc()
        self._reload_failing.set(0 if ok else 1)

    def set_build_info(self, *, version: str, policy_version: str, engine: str) -> None:
        """At start and after every applied reload: replaces the previous label set."""
        self._build.info({"version": version, "policy_version": policy_version, "engine": engine})

    # -- exposition ------------------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The body and Content-Type of a scrape, in the format the `Accept` header asks for
        (OpenMetrics when asked, the Prometheus text format otherwise)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class BudgetReading(Protocol):
    """One budget as the quota book reports it (broker/traffic/quota.py: QuotaStatus)."""

    @property
    def rule(self) -> str: ...

    @property
    def key(self) -> str: ...

    @property
    def budget(self) -> int: ...

    @property
    def remaining(self) -> int: ...


class _BudgetCollector(Collector):
    def __init__(self, snapshot: Callable[[], Iterable[BudgetReading]], max_keys: int) -> None:
        self._snapshot = snapshot
        self._max_keys = max_keys

    def collect(self) -> Iterator[Metric]:
        remaining = GaugeMetricFamily(
            f"{PREFIX}_quota_remaining",
            "Calls (cost units) left in a budget this period.",
            labels=["rule", "key"],
        )
        budget = GaugeMetricFamily(
            f"{PREFIX}_quota_budget", "The size of a budget per period.", labels=["rule", "key"]
        )
        totals: dict[tuple[str, str], tuple[int, int]] = {}
        for index, reading in enumerate(self._snapshot()):
            key = reading.key if index < self._max_keys else "other"
            left, size = totals.get((reading.rule, key), (0, 0))
            totals[(reading.rule, key)] = (left + reading.remaining, size + reading.budget)
        for (rule, key), (left, size) in sorted(totals.items()):
            remaining.add_metric([rule, key], left)
            budget.add_metric([rule, key], size)
        yield remaining
        yield budget

    def describe(self) -> Iterator[Metric]:
        return iter(())
