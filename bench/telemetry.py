"""Per-request cost of the broker's telemetry: spans with tracing off and on, metric observations, log lines.

    python bench/telemetry.py [--requests 20000]

One "request" is what the pipeline does for one tools/call: open the request span (with
a caller traceparent to extract), an authentication step, principal and target, a
decision step with its record, an upstream client span that injects into `_meta`, the
outcome. Metrics: `observe_call` + `observe_decision` + `observe_upstream` +
`observe_audit_write`. Each variant is timed per request (perf_counter_ns), in one
process, one after the other; p50/p99 in µs, minus the timing loop's own cost (the
`nothing` row). Compare with the broker's CPU per forwarded call (≈ 600 µs, bench/README.md).

Tracing variants:
- off: `tracing.enabled: false`, the shared no-op objects;
- on, not sampled: a caller that sent sampled=0 (ParentBased sampler: non-recording spans);
- on, in-memory: sampled, SimpleSpanProcessor → InMemorySpanExporter (export cost inline);
- on, batch: sampled, BatchSpanProcessor → InMemorySpanExporter (export in its own thread,
  as in production with OTLP).
"""

from __future__ import annotations

import argparse
import gc
import io
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from prometheus_client import CollectorRegistry, Counter  # noqa: E402

from broker.telemetry.logging import JsonLogFormatter  # noqa: E402
from broker.telemetry.metrics import BrokerMetrics  # noqa: E402
from broker.telemetry.tracing import Tracing, TracingConfig  # noqa: E402

SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
NOT_SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"


def one_request(tracing: Tracing, headers: dict[str, str]) -> None:
    meta: dict[str, Any] = {}
    with tracing.request(method="tools/call", request_id=1, headers=headers, session_id="s-1") as req:
        with req.authentication("bearer") as step:
            step.outcome("ok")
        req.set_principal("code-review-bot", "acme")
        req.set_target("github", "github__create_issue")
        with req.decision("cedar") as decision:
            decision.record_decision(effect="allow", policy_version="v42", policy_ids=("allow-reads",))
        with req.upstream_call(
            server="github", method="tools/call", name="create_issue", transport="stdio"
        ) as call:
            call.inject_meta(meta)
        req.outcome("ok")


def timed(fn: Callable[[], None], n: int, between: Callable[[], None] | None = None) -> list[float]:
    """Per-call durations in µs; `between` runs untimed every 1000 calls (emptying exporters)."""
    for _ in range(min(1000, n)):
        fn()
    out: list[float] = []
    clock = time.perf_counter_ns
    for i in range(n):
        start = clock()
        fn()
        out.append((clock() - start) / 1000)
        if between is not None and i % 1000 == 999:
            between()
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    n = args.requests
    rows: list[tuple[str, list[float]]] = []

    rows.append(("nothing (timing loop)", timed(lambda: None, n)))

    off = Tracing(TracingConfig(enabled=False))
    headers = {"traceparent": SAMPLED}
    rows.append(("tracing off", timed(lambda: one_request(off, headers), n)))

    memory = InMemorySpanExporter()
    sampled_out = Tracing(TracingConfig(enabled=True), processor=SimpleSpanProcessor(memory))
    rows.append(
        (
            "tracing on, caller not sampled",
            timed(lambda: one_request(sampled_out, {"traceparent": NOT_SAMPLED}), n, memory.clear),
        )
    )
    rows.append(
        ("tracing on, in-memory exporter", timed(lambda: one_request(sampled_out, headers), n, memory.clear))
    )
    sampled_out.shutdown()

    batch_memory = InMemorySpanExporter()
    batch = Tracing(
        TracingConfig(enabled=True),
        processor=BatchSpanProcessor(batch_memory, max_queue_size=65536, schedule_delay_millis=200),
    )
    rows.append(
        ("tracing on, batch processor", timed(lambda: one_request(batch, headers), n, batch_memory.clear))
    )
    batch.shutdown()

    metrics = BrokerMetrics()

    def observe() -> None:
        metrics.observe_call(server="github", tool="create_issue", effect="allow", outcome="ok")
        metrics.observe_decision("cedar", 0.00012)
        metrics.observe_upstream("github", 0.0021)
        metrics.observe_audit_write(0.00004)

    rows.append(("metrics: 4 observations", timed(observe, n)))

    raw = Counter(
        "raw_calls", "", ["method", "server", "tool", "effect", "outcome"], registry=CollectorRegistry()
    )
    rows.append(
        (
            "(raw prometheus_client labels().inc())",
            timed(lambda: raw.labels("tools/call", "github", "create_issue", "allow", "ok").inc(), n),
        )
    )
    rows.append(
        (
            "(BrokerMetrics.observe_call alone)",
            timed(
                lambda: metrics.observe_call(
                    server="github", tool="create_issue", effect="allow", outcome="ok"
                ),
                n,
            ),
        )
    )

    formatter = JsonLogFormatter()
    record = logging.LogRecord("broker", logging.INFO, __file__, 1, "forwarded %s", ("create_issue",), None)
    sink = io.StringIO()
    rows.append(("JSON log line (format only)", timed(lambda: sink.write(formatter.format(record)), n)))

    base50, base99 = pct(rows[0][1], 0.5), pct(rows[0][1], 0.99)
    print(
        f"{n} requests per row; µs per request, timing loop subtracted (p50 {base50:.2f}, p99 {base99:.2f})"
    )
    print(f"gc enabled: {gc.isenabled()}; Python {sys.version.split()[0]}")
    print()
    print("| variant | p50 µs | p99 µs | mean µs |")
    print("|---|---:|---:|---:|")
    for name, values in rows[1:]:
        print(
            f"| {name} | {pct(values, 0.5) - base50:.2f} | {pct(values, 0.99) - base99:.2f} "
            f"| {statistics.fmean(values) - statistics.fmean(rows[0][1]):.2f} |"
        )


if __name__ == "__main__":
    main()
