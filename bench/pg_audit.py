"""What the PostgreSQL audit sink and approval store cost, against the file sink on the same disk.

    python bench/pg_audit.py [--sequential 1000] [--appenders 16] [--per-appender 200]

Starts a throwaway PostgreSQL (tests/support/postgres.py: initdb in a temp dir, 127.0.0.1,
fsync and synchronous_commit on, default settings otherwise) and measures, in one run:

- audit appends through PostgresAuditSink: one caller awaiting each append (one record per
  commit), `--appenders` concurrent callers on one sink (group commit), and two sinks
  ("two replicas") with that many callers each, appending to one chain;
- the same workloads through FileAuditSink in `fsync` mode on the same disk: the ratios are
  what transfers to another machine, absolute numbers move with the disk and the load;
- approval store reads (`get`) and compare-and-set writes (`consume`) through
  PostgresApprovalStore's pool, against one connection behind an asyncio.Lock (the
  alternative design), with 1 and 16 concurrent callers.

Latencies are wall-clock per call (perf_counter), p50/p99 in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from broker.approval.pg_store import PostgresApprovalStore  # noqa: E402
from broker.audit.config import AuditConfig  # noqa: E402
from broker.audit.file_sink import FileAuditSink  # noqa: E402
from broker.audit.pg_sink import PostgresAuditSink, verify_table  # noqa: E402
from tests.support.postgres import running_postgres  # noqa: E402
from tests.unit.approval.test_store import granted, pending  # noqa: E402
from tests.unit.audit.conftest import record  # noqa: E402

Append = Callable[[dict[str, Any]], Awaitable[None]]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def drive(appends: list[Append], callers: int, per_caller: int) -> dict[str, float]:
    """`callers` tasks per append function, each awaiting `per_caller` appends in turn."""
    latencies: list[float] = []

    async def caller(append: Append, k: int) -> None:
        for i in range(per_caller):
            started = time.perf_counter()
            await append(record(k * per_caller + i))
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller(a, k) for a in appends for k in range(callers)))
    elapsed = time.perf_counter() - started
    return {
        "records": len(latencies),
        "per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
    }


async def audit_rows(
    dsn_for: Callable[[], str], args: argparse.Namespace
) -> list[tuple[str, dict[str, float]]]:
    out: list[tuple[str, dict[str, float]]] = []
    workloads = [
        ("1 caller", 1, 1, args.sequential),
        (f"{args.appenders} callers", 1, args.appenders, args.per_appender),
        (f"2 sinks x {args.appenders} callers", 2, args.appenders, args.per_appender),
    ]
    for name, sinks, callers, per_caller in workloads:
        dsn = dsn_for()
        pg = [PostgresAuditSink(dsn) for _ in range(sinks)]
        for sink in pg:
            await sink.start()
        row = await drive([s.append for s in pg], callers, per_caller)
        row["batches"] = sum(s.status().batches for s in pg)
        for sink in pg:
            await sink.close()
        with tempfile.TemporaryDirectory(dir=ROOT) as scratch:
            _, report = await verify_table(dsn, Path(scratch))
            assert report.ok, report.lines()
        out.append((f"postgres, {name}", row))
        if sinks == 1:
            with tempfile.TemporaryDirectory(dir=ROOT) as scratch:
                file_sink = FileAuditSink(AuditConfig(directory=Path(scratch) / "audit", durability="fsync"))
                await file_sink.start()
                file_row = await drive([file_sink.append], callers, per_caller)
                file_row["batches"] = file_sink.status().batches
                await file_sink.close()
            out.append((f"file fsync, {name}", file_row))
    return out


async def timed(operation: Callable[[], Awaitable[None]], callers: int, each: int) -> dict[str, float]:
    latencies: list[float] = []

    async def caller() -> None:
        for _ in range(each):
            started = time.perf_counter()
            await operation()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - started
    return {
        "records": len(latencies),
        "per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
    }


async def approval_rows(dsn: str, operations: int) -> list[tuple[str, dict[str, float]]]:
    store = PostgresApprovalStore(dsn)
    await store.open()
    approval = pending()
    await store.insert(approval)
    await store.decide(granted(approval, reuse=3600, valid=3600), approval.status)
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    lock = asyncio.Lock()

    async def locked_get() -> None:
        async with lock:
            await (
                await conn.execute("SELECT body, used_at FROM broker_approvals WHERE id = %s", (approval.id,))
            ).fetchone()

    async def pooled_get() -> None:
        await store.get(approval.id)

    async def pooled_consume() -> None:
        assert await store.consume(approval.id, time.time())

    out: list[tuple[str, dict[str, float]]] = []
    for callers in (1, 16):
        for name, operation in (
            ("get, one connection + lock", locked_get),
            ("get, pool 1..4", pooled_get),
            ("consume, pool 1..4", pooled_consume),
        ):
            row = await timed(operation, callers, max(1, operations // callers))
            out.append((f"approvals {name}, {callers} caller(s)", row))
    await conn.close()
    await store.close()
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=1000)
    parser.add_argument("--appenders", type=int, default=16)
    parser.add_argument("--per-appender", type=int, default=200)
    parser.add_argument("--approval-operations", type=int, default=2000)
    args = parser.parse_args()
    with running_postgres() as server:
        with psycopg.connect(server.admin_dsn) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        where = f"Python {platform.python_version()}, {platform.machine()}"
        print(f"# PostgreSQL {version[0] if version else '?'}, {where}")
        rows = await audit_rows(server.create_database, args)
        rows += await approval_rows(server.create_database(), args.approval_operations)
    print("| workload | ops | ops/s | p50 ms | p99 ms | commits (batches) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, row in rows:
        batches = f"{int(row['batches'])}" if "batches" in row else "-"
        latency = f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f}"
        print(f"| {name} | {int(row['records'])} | {row['per_s']:.0f} | {latency} | {batches} |")


if __name__ == "__main__":
    asyncio.run(main())
