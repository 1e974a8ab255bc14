"""PostgresAuditSink on a real PostgreSQL: one chain from several replicas, verified by the file verifier."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from broker.audit.pg_sink import PostgresAuditSink, export_trail, verify_table
from broker.audit.sink import AuditUnavailable
from broker.audit.verify import verify
from tests.support.postgres import PostgresServer, running_postgres
from tests.unit.audit.conftest import record

pytestmark = pytest.mark.anyio


def rows(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        return [orjson.loads(line) for (line,) in conn.execute("SELECT line FROM broker_audit ORDER BY seq")]


@pytest.fixture
async def sink(database: str) -> AsyncIterator[PostgresAuditSink]:
    opened = PostgresAuditSink(database)
    await opened.start()
    yield opened
    await opened.close()


async def test_records_form_one_chain_that_verifies(
    sink: PostgresAuditSink, database: str, tmp_path: Path
) -> None:
    for i in range(20):
        await sink.append(record(i))
    status = sink.status()
    assert status.state == "ok" and status.ready and status.seq == 21 and status.records == 21
    assert "password" not in (status.file or "") and (status.file or "").startswith("postgresql://127.0.0.1:")

    stored = rows(database)
    assert [r["kind"] for r in stored[:2]] == ["open", "request"]
    assert stored[0]["writer"]["pid"] > 0 and stored[0]["store"] == "postgresql"
    assert [r["seq"] for r in stored] == list(range(1, 22))
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(stored))
    assert [r["i"] for r in stored[1:]] == list(range(20))

    exported, report = await verify_table(database, tmp_path / "export")
    assert report.ok, report.lines()
    assert exported.records == 21 and exported.last_seq == 21 and exported.head.seq == 21
    assert report.records == 21 and report.live


async def test_two_replicas_appending_concurrently_make_one_chain(database: str, tmp_path: Path) -> None:
    a, b = PostgresAuditSink(database), PostgresAuditSink(database)
    await asyncio.gather(a.start(), b.start())  # both create the tables at once: no race
    try:

        async def replica(sink: PostgresAuditSink, name: str) -> None:
            async def caller(k: int) -> None:
                for i in range(k, 200, 8):
                    await sink.append(record(i, replica=name))

            await asyncio.gather(*(caller(k) for k in range(8)))

        await asyncio.gather(replica(a, "a"), replica(b, "b"))
    finally:
        await asyncio.gather(a.close(), b.close())

    stored = rows(database)
    assert len(stored) == 402  # 2 x 200, one `open`, one `resume` (the replica that came second)
    assert [r["kind"] for r in stored[:2]] == ["open", "resume"]  # both started before any append
    assert stored[0]["writer"] == stored[1]["writer"]  # same process here; the pid and host in real life
    by_replica = {name: sorted(r["i"] for r in stored if r.get("replica") == name) for name in "ab"}
    assert by_replica == {"a": list(range(200)), "b": list(range(200))}
    order = [r.get("replica") for r in stored if r.get("replica")]
    switches = sum(1 for x, y in itertools.pairwise(order) if x != y)
    assert switches > 2, f"the replicas did not interleave ({switches} switches): not a concurrency test"
    assert a.status().batches + b.status().batches < 400, "no group commit happened"

    exported, report = await verify_table(database, tmp_path / "export")
    assert report.ok, report.lines()
    assert report.records == 402 and exported.head.seq == 402


async def test_an_edited_row_is_reported_where_it_is(
    sink: PostgresAuditSink, database: str, tmp_path: Path
) -> None:
    for i in range(10):
        await sink.append(record(i))
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            "UPDATE broker_audit SET line = convert_to(replace(convert_from(line, 'UTF8'),"
            ' \'"effect":"allow"\', \'"effect":"deny"\'), \'UTF8\') WHERE seq = 7'
        )
    exported, report = await verify_table(database, tmp_path / "export")
    assert not report.ok
    assert report.first_break is not None
    assert (report.first_break.kind, report.first_break.seq, report.first_break.line) == ("edit", 7, 7)
    assert report.first_break.file == str(exported.path)


async def test_a_deleted_row_and_a_cut_off_end_are_reported(
    sink: PostgresAuditSink, database: str, tmp_path: Path
) -> None:
    for i in range(10):
        await sink.append(record(i))
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("DELETE FROM broker_audit WHERE seq = 4")
    _, report = await verify_table(database, tmp_path / "middle")
    assert report.first_break is not None and report.first_break.kind == "deletion"

    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("INSERT INTO broker_audit SELECT 4, kind, time, line FROM broker_audit WHERE seq = 5")
        conn.execute("DELETE FROM broker_audit WHERE seq >= 4")
    _, report = await verify_table(database, tmp_path / "end")
    assert report.first_break is not None
    assert report.first_break.kind == "truncation" and "seq 11" in report.first_break.message


async def test_the_export_is_one_trail_file_the_cli_verifier_accepts(
    sink: PostgresAuditSink, database: str, tmp_path: Path
) -> None:
    for i in range(5):
        await sink.append(record(i))
    exported = await export_trail(database, tmp_path / "export")
    assert exported.path is not None and exported.path.name == "audit-000000000001.jsonl"
    assert exported.path.read_bytes().count(b"\n") == 6
    assert verify(exported.path).ok  # the file on its own, as `mcp-broker audit verify FILE` does


async def test_a_record_that_is_not_json_fails_alone(sink: PostgresAuditSink, database: str) -> None:
    results = await asyncio.gather(
        sink.append(record(1)),
        sink.append(record(2, bad={1, 2})),
        sink.append(record(3)),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], AuditUnavailable) and "not JSON" in results[1].message
    assert [r.get("i") for r in rows(database)] == [None, 1, 3]


async def test_a_closed_sink_refuses(database: str) -> None:
    sink = PostgresAuditSink(database)
    await sink.start()
    await sink.append(record(0))
    await sink.close()
    assert not sink.accepting() and sink.status().state == "closed"
    with pytest.raises(AuditUnavailable, match="not open"):
        await sink.append(record(1))


async def test_an_unreachable_database_fails_the_start(postgres: PostgresServer) -> None:
    dsn = postgres.dsn("no_such_database")
    sink = PostgresAuditSink(dsn, timeout=2)
    with pytest.raises(AuditUnavailable, match="cannot open the audit trail"):
        await sink.start()
    assert sink.status().state == "failed" and not sink.accepting()


async def test_a_database_that_goes_down_fails_closed_then_resumes_the_chain(tmp_path: Path) -> None:
    with running_postgres() as server:  # its own server: this test stops it
        dsn = server.create_database()
        sink = PostgresAuditSink(dsn, timeout=2, retry_interval=0.3)
        await sink.start()
        try:
            await sink.append(record(0))
            server.stop()
            with pytest.raises(AuditUnavailable, match="cannot be written"):
                await sink.append(record(1))
            status = sink.status()
            assert status.state == "failed" and not status.ready and status.error and status.failures == 1
            assert not sink.accepting()
            with pytest.raises(AuditUnavailable, match="refused"):  # fails fast until the retry
                await sink.append(record(2))
            await asyncio.sleep(0.35)
            assert sink.accepting()
            with pytest.raises(AuditUnavailable, match="cannot open"):  # the retry: still down
                await sink.append(record(3))

            server.start()
            deadline = time.monotonic() + 10
            while True:
                await asyncio.sleep(0.35)
                try:
                    await sink.append(record(4))
                    break
                except AuditUnavailable:
                    assert time.monotonic() < deadline, "the sink did not recover within 10 s"
            assert sink.status().state == "ok" and sink.status().error is None
            await sink.append(record(5))
        finally:
            await sink.close()

        stored = rows(dsn)
        assert [r["kind"] for r in stored] == ["open", "request", "resume", "request", "request"]
        resume = stored[2]
        assert resume["reason"] == "recovery" and resume["detail"]["expected_seq"] == 2
        assert resume["detail"]["refused"] >= 3
        assert [r["i"] for r in stored if r["kind"] == "request"] == [0, 4, 5]
        _, report = await verify_table(dsn, tmp_path / "export")
        assert report.ok, report.lines()
