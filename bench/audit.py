"""What the audit trail costs per record, under each durability mode, in one run.

    python bench/audit.py [--sequential 2000] [--appenders 16] [--per-appender 500] [--dir DIR]

Rows (all through a real FileAuditSink on a real file in --dir, default a temporary
directory on the same disk as the repository):

- caller side: what a request pays on the event loop to build its record (`request_record`
  with a realistic call, redaction and the authorization request included) and to hand it
  to the sink (`append` up to the point where it would wait; measured in `none` mode,
  where append never waits: the same code path minus one future);
- the writer's CPU per record (seal: canonical JSON + sha256), measured alone;
- per mode: sequential `await append` latency (one caller, so one record per batch) and 16
  concurrent appenders, each yielding once between records as a request handler would
  (records/s, append latency p50/p99, process CPU per record including building it, fsyncs
  counted by a FileOps wrapper, records per batch).

Times are wall-clock per call (perf_counter_ns), p50/p99 in microseconds; fsync latency
depends on the disk, ratios between modes and the CPU per record transfer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker.audit.chain import START, seal  # noqa: E402
from broker.audit.config import AuditConfig  # noqa: E402
from broker.audit.file_sink import FileAuditSink  # noqa: E402
from broker.audit.fileops import FileOps  # noqa: E402
from broker.audit.records import Outcome, request_record  # noqa: E402
from broker.audit.redact import SecretRedactor  # noqa: E402
from broker.gateway.call import Call, Target  # noqa: E402
from broker.gateway.gateway import NullRelay  # noqa: E402
from broker.gateway.sessions import DownstreamSession  # noqa: E402
from broker.identity.principal import Principal  # noqa: E402
from broker.policy.decision import Decision, Effect, Reason  # noqa: E402
from broker.policy.request import CallFacts, build_request  # noqa: E402
from broker.protocol import tool_hints  # noqa: E402


class CountingFileOps(FileOps):
    def __init__(self) -> None:
        self.syncs = 0

    def sync(self, fd: int) -> None:
        self.syncs += 1
        super().sync(fd)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def realistic_call() -> tuple[Call, Any, Any]:
    who = Principal("Agent", "code-review-bot", "acme", ("reviewer", "engineer"), {"sub": "crb"}, "alice")
    session = DownstreamSession("6f1c2a9e0b7d4c35", "2025-11-25", {}, {}, "streamable-http", who)
    resource = {
        "type": "Tool",
        "id": "github__create_issue",
        "name": "create_issue",
        "server": "github",
        "tenants": ["acme"],
        "tags": ["write"],
        "annotations": tool_hints({"readOnlyHint": False}),
    }
    arguments = {
        "repo": "acme/api",
        "title": "Flaky test in the payment service",
        "body": "The test `test_refund_partial` fails about once in 40 runs on CI; see the logs attached. "
        "It looks like a race between the ledger writer and the refund worker.",
        "labels": ["bug", "flaky-test"],
        "assignees": ["bob"],
    }
    call = Call(
        "tools/call",
        {"name": "github__create_issue", "arguments": arguments},
        42,
        "2025-11-25",
        "streamable-http",
        NullRelay(),
        session=session,
        principal=who,
        target=Target("github", "tool", "create_issue", True, resource),
        decision=Decision(
            Effect.ALLOW, (Reason("engineers-write", "engineers may write"),), "cedar", "git:1a2b3c4d5e6f"
        ),
    )
    request, summary = build_request(
        who, "call_tool", resource, arguments, CallFacts("streamable-http", "2025-11-25")
    )
    return call, request, summary


def micro(fn: Callable[[], Any], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


async def sequential(sink: FileAuditSink, make: Callable[[], dict[str, Any]], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        record = make()
        start = time.perf_counter_ns()
        await sink.append(record)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


async def concurrent(
    sink: FileAuditSink, make: Callable[[], dict[str, Any]], appenders: int, per: int
) -> tuple[list[float], float, float]:
    samples: list[float] = []

    async def appender() -> None:
        for _ in range(per):
            record = make()
            start = time.perf_counter_ns()
            await sink.append(record)
            samples.append((time.perf_counter_ns() - start) / 1000)
            await asyncio.sleep(0)  # a request handler does other work between records

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(appender() for _ in range(appenders)))
    return samples, time.perf_counter() - wall, time.process_time() - cpu


async def mode_rows(
    directory: Path,
    durability: str,
    window: float,
    make: Callable[[], dict[str, Any]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    ops = CountingFileOps()
    sink = FileAuditSink(
        AuditConfig(directory=directory, durability=durability, group_commit_window=window),  # type: ignore[arg-type]
        ops=ops,
    )
    await sink.start()
    n = args.sequential if durability != "fsync" else max(200, args.sequential // 4)
    seq = await sequential(sink, make, n)
    before_syncs, before_batches = ops.syncs, sink.status().batches
    samples, wall, cpu = await concurrent(sink, make, args.appenders, args.per_appender)
    syncs = ops.syncs - before_syncs
    batches = sink.status().batches - before_batches
    total = args.appenders * args.per_appender
    await sink.close()
    return {
        "mode": durability + (f", window {window * 1000:g} ms" if window else ""),
        "seq_p50": percentile(seq, 0.5),
        "seq_p99": percentile(seq, 0.99),
        "rate": total / wall,
        "p50": percentile(samples, 0.5),
        "p99": percentile(samples, 0.99),
        "cpu": cpu / total * 1e6,
        "syncs": syncs,
        "per_batch": total / batches if batches else float("nan"),
    }


async def run(
    args: argparse.Namespace, base: Path
) -> tuple[list[tuple[str, list[float]]], list[dict[str, Any]]]:
    call, request, summary = realistic_call()
    redactor = SecretRedactor()
    outcome = Outcome("ok", 12.5)

    def make() -> dict[str, Any]:
        return request_record(
            call, outcome, redactor=redactor, summary=summary, request=request, trace_id="4bf92f35"
        )

    def make_small() -> dict[str, Any]:
        return request_record(call, outcome, redactor=redactor, summary=summary, trace_id="4bf92f35")

    for _ in range(500):
        make()
    parts: list[tuple[str, list[float]]] = [
        ("build the record (request_record, with `request`)", micro(make, 5000)),
        ("build the record (request_record, without `request`)", micro(make_small, 5000)),
    ]
    sample = make()
    parts.append(
        ("writer: seal one record (orjson + sha256)", micro(lambda: seal(dict(sample), START), 5000))
    )

    sink = FileAuditSink(AuditConfig(directory=base / "enqueue", durability="none"))
    await sink.start()
    records = [make() for _ in range(5000)]
    enqueue = []
    for record in records:
        start = time.perf_counter_ns()
        await sink.append(record)  # none: never waits, so this is the caller-side part alone
        enqueue.append((time.perf_counter_ns() - start) / 1000)
        if len(enqueue) % 1000 == 0:
            await asyncio.sleep(0)  # let the writer drain
    await sink.close()
    parts.append(("append, caller side (enqueue + wake the writer)", enqueue))
    line = len(seal(dict(sample), START)[0])
    parts.append((f"(record size on disk: {line} bytes)", []))

    rows = []
    for durability, window in (("fsync", 0.0), ("fsync", 0.001), ("write", 0.0), ("none", 0.0)):
        rows.append(await mode_rows(base / f"{durability}-{window}", durability, window, make, args))
    return parts, rows


def markdown(
    parts: list[tuple[str, list[float]]], rows: list[dict[str, Any]], args: argparse.Namespace
) -> str:
    out = [
        f"Machine: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d')}",
        "",
        "| per record | p50 µs | p99 µs | mean µs |",
        "|---|---:|---:|---:|",
    ]
    for name, samples in parts:
        if samples:
            out.append(
                f"| {name} | {percentile(samples, 0.5):.1f} | {percentile(samples, 0.99):.1f} | "
                f"{statistics.fmean(samples):.1f} |"
            )
        else:
            out.append(f"| {name} | | | |")
    out += [
        "",
        f"| durability | sequential append p50 µs | p99 µs | {args.appenders} appenders: records/s | "
        "append p50 µs | p99 µs | CPU µs/record | fsyncs | records/batch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['mode']} | {r['seq_p50']:.0f} | {r['seq_p99']:.0f} | {r['rate']:,.0f} | {r['p50']:.0f} | "
            f"{r['p99']:.0f} | {r['cpu']:.1f} | {r['syncs']} | {r['per_batch']:.1f} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sequential", type=int, default=2000, help="sequential appends per mode (fsync: /4)"
    )
    parser.add_argument("--appenders", type=int, default=16)
    parser.add_argument("--per-appender", type=int, default=500)
    parser.add_argument("--dir", help="where to write (default: a temporary directory under the repository)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir or ROOT, prefix=".bench-audit-") as base:
        parts, rows = asyncio.run(run(args, Path(base)))
    print(markdown(parts, rows, args))


if __name__ == "__main__":
    main()
