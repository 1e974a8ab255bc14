"""PostgresAuditSink: one hash chain in one PostgreSQL table, appended to by every broker replica.

Why one chain and not one per replica: an auditor verifies one trail, in one order, with
the existing verifier, and a record deleted from the middle of the fleet's history breaks it
wherever it was written. The chain's order is the order in which replicas' transactions
took the head row (`broker_audit_head`, one row): a batch reads the head with
`UPDATE … RETURNING` (a row lock, re-read at its newest version if another replica held
it), seals its records after it (broker/audit/chain.py, the bytes the file sink writes),
inserts them and moves the head, and commits. Another replica's batch waits for that lock,
so seq never repeats or skips and every `prev` is the hash of the record committed just before.

Durability: `append` returns once the transaction holding its record has COMMITTED with
`synchronous_commit = on` (set on the sink's own connection, whatever the server default),
i.e. the record is in the WAL on the database's disk (or on the synchronous standbys, with
`remote_apply`/`remote_write` when given). Failure: any error, or no answer within
`timeout`, refuses the batch with AuditUnavailable (fail closed: the call is not answered
as if it were recorded); appends then fail fast until `retry_interval` has passed, when the
next batch reconnects and writes a `resume` record saying what failed. A commit whose
acknowledgement was lost may leave a record for a call that was refused, never the reverse.

Group commit, as in the file sink: one writer task per sink, one connection; records that
arrive while a batch is being written form the next batch, so concurrent callers share a
commit (and its WAL flush). Each sink's first record is `open` (an empty table: the chain
starts) or `resume` (a replica joining), naming its writer (pid, host).

Reading it back: `export_trail` streams the table in seq order into one JSON Lines file
named like the first file of a directory trail, which `broker.audit.verify.verify` checks
as it checks files; `verify_table` does both and also checks that nothing was cut off the
end (the head row must name the last exported record).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from psycopg import conninfo
from psycopg.rows import TupleRow

from broker.audit.chain import GENESIS, ChainHead, seal
from broker.audit.layout import file_name
from broker.audit.resume import open_record
from broker.audit.sink import AuditRecord, AuditUnavailable, SinkState, SinkStatus
from broker.audit.timefmt import FORMAT_VERSION, iso_time
from broker.audit.verify import Break, VerifyReport, verify

log = logging.getLogger("broker.audit")

SCHEMA_VERSION: Final = 1
"""The `audit` row of `broker_schema`; bumped (with a migration) when the tables change."""

SCHEMA_LOCK: Final = 0x6D63_7062_726B
"""The advisory lock every broker component takes to create its tables (same as the approval store)."""

SYNCHRONOUS_COMMIT: Final = ("on", "remote_write", "remote_apply")
"""Values of synchronous_commit that make a commit durable before it is acknowledged."""

EXPORT_CHUNK: Final = 1 << 20
"""Bytes an export collects before handing them to the writing thread."""

WriteObserver = Callable[[int, float, bool], None]
"""Called after each write attempt with (records in the batch, seconds it took, succeeded)."""

_TABLES: Final = """
CREATE TABLE IF NOT EXISTS broker_schema (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS broker_audit (
    seq BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    time TEXT,
    line BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS broker_audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
"""

_TAKE_HEAD: Final = "UPDATE broker_audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash"
_APPEND: Final = """
WITH appended AS (
    INSERT INTO broker_audit (seq, kind, time, line)
    SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::bytea[])
)
UPDATE broker_audit_head SET seq = %s, hash = %s WHERE id = 1
"""

Pending = tuple[AuditRecord, "asyncio.Future[None] | None"]


def describe_dsn(dsn: str) -> str:
    """Where the trail is, for status and errors: host, port, database; never the password."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "postgresql (unparsable DSN)"
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    return f"postgresql://{host}:{parts.get('port') or 5432}/{parts.get('dbname') or ''}#broker_audit"


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer from PostgreSQL in time"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no detail'}"


def _writer() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": os.uname().nodename}


async def create_tables(conn: psycopg.AsyncConnection[TupleRow]) -> None:
    """Create the audit tables if missing (replicas starting together take turns); check the version."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        await conn.execute(_TABLES)
        await conn.execute(
            "INSERT INTO broker_audit_head (id, seq, hash) VALUES (1, 0, %s) ON CONFLICT (id) DO NOTHING",
            (GENESIS,),
        )
        row = await (
            await conn.execute("SELECT version FROM broker_schema WHERE component = 'audit'")
        ).fetchone()
        if row is None:
            await conn.execute(
                "INSERT INTO broker_schema (component, version) VALUES ('audit', %s)", (SCHEMA_VERSION,)
            )
        elif row[0] != SCHEMA_VERSION:
            raise AuditUnavailable(
                f"the audit tables are at schema version {row[0]}, this broker knows {SCHEMA_VERSION}"
            )


class PostgresAuditSink:
    """The AuditSink protocol (broker/audit/sink.py) on PostgreSQL; see the module docstring."""

    def __init__(
        self,
        dsn: str,
        *,
        timeout: float = 5.0,
        retry_interval: float = 1.0,
        synchronous_commit: str = "on",
        clock: Callable[[], float] = time.time,
        on_write: WriteObserver | None = None,
    ) -> None:
        """`dsn`: libpq connection string or URI (from a secret reference); `timeout`: seconds a
        connect or a batch may take before its records are refused; `retry_interval`: seconds
        after a failure before the database is tried again (appends meanwhile fail fast)."""
        if synchronous_commit not in SYNCHRONOUS_COMMIT:
            raise ValueError(f"synchronous_commit must be one of {', '.join(SYNCHRONOUS_COMMIT)}")
        self._dsn = dsn
        self._where = describe_dsn(dsn)
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._synchronous_commit = synchronous_commit
        self._clock = clock
        self._on_write = on_write
        self._conn: psycopg.AsyncConnection[TupleRow] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._pending: list[Pending] = []
        self._head = ChainHead(0, GENESIS)
        self._state: SinkState = "starting"
        self._closing = False
        self._broken = False
        self._error: str | None = None
        self._failed_since = 0.0
        self._retry_at = 0.0
        self._refused = 0
        self._records = 0
        self._batches = 0
        self._failures = 0

    # -- the protocol ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._state != "starting":
            raise RuntimeError("a PostgresAuditSink starts once")
        try:
            await self._connect()
            await self._commit([], opening="start")
        except AuditUnavailable:
            await self._disconnect()
            self._state = "failed"
            raise
        if self._broken:  # the opening record could not be written
            await self._disconnect()
            self._state = "failed"
            raise AuditUnavailable(f"cannot write the audit trail in {self._where}: {self._error}")
        self._state = "ok"
        self._task = asyncio.create_task(self._run(), name="audit-writer-postgres")

    async def append(self, record: AuditRecord) -> None:
        if self._state != "ok" or self._closing:
            raise AuditUnavailable("the audit trail is not open: the request is refused")
        if self._broken and self._clock() < self._retry_at:
            self._refused += 1
            raise AuditUnavailable(f"the audit trail cannot be written ({self._error}): refused")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((record, waiter))
        self._wake.set()
        await waiter

    async def close(self) -> None:
        if self._task is None or self._closing:
            return
        self._closing = True
        self._wake.set()
        try:
            await self._task
        finally:
            await self._disconnect()
            self._state = "closed"

    def accepting(self) -> bool:
        if self._state != "ok" or self._closing:
            return False
        return not self._broken or self._clock() >= self._retry_at

    def status(self) -> SinkStatus:
        state = self._state
        if state == "ok" and self._broken:
            state = "failed"
        return SinkStatus(
            state=state,
            ready=state == "ok",
            error=self._error,
            file=self._where,
            seq=self._head.seq,
            pending=len(self._pending),
            records=self._records,
            batches=self._batches,
            failures=self._failures,
        )

    # -- the writer -----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._pending and not self._closing:
                await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                try:
                    await self._commit(batch, opening=None)
                except Exception as exc:  # a bug here must not leave callers waiting forever
                    log.exception("audit writer failed")
                    self._refuse(batch, f"internal error in the audit writer: {type(exc).__name__}")
            if self._closing and not self._pending:
                return

    async def _commit(self, batch: list[Pending], *, opening: str | None) -> None:
        """Write one batch in one transaction; `opening`: also write this sink's `open`/`resume` first."""
        now = self._clock()
        if self._broken:
            if now < self._retry_at:
                self._refuse(batch, self._error or "write error")
                return
            try:
                await self._connect()
            except AuditUnavailable as exc:
                self._failed(exc.message, now)
                self._refuse(batch, self._error or "write error")
                return
            opening = "recovery"
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                head, written, waiters = await self._write(batch, opening, now)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            self._observe(len(batch), time.perf_counter() - started, False)
            message = f"{_why(exc)} ({self._where})"
            self._failed(message, now)
            await self._disconnect()
            self._refuse(batch, message)
            return
        self._observe(written, time.perf_counter() - started, True)
        if self._broken:
            log.warning("audit trail writable again after: %s", self._error)
        self._broken, self._error, self._refused = False, None, 0
        self._head = head
        self._records += written
        self._batches += 1
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _write(
        self, batch: list[Pending], opening: str | None, now: float
    ) -> tuple[ChainHead, int, list[asyncio.Future[None]]]:
        """Take the head row, seal the batch after it, insert it, move the head; commit."""
        conn = self._conn
        if conn is None:
            raise psycopg.OperationalError("not connected")
        async with conn.transaction():
            row = await (await conn.execute(_TAKE_HEAD)).fetchone()
            if row is None:
                raise psycopg.DataError("broker_audit_head has no row: the audit tables were tampered with")
            head = ChainHead(int(row[0]), str(row[1]))
            records = list(batch)
            if opening is not None:
                records.insert(0, (self._opening_record(opening, head, now), None))
            seqs: list[int] = []
            kinds: list[str] = []
            times: list[str | None] = []
            lines: list[bytes] = []
            waiters: list[asyncio.Future[None]] = []
            for record, waiter in records:
                try:
                    line, head = seal(record, head)
                except TypeError as exc:  # not JSON data: a bug in whoever built it, never written
                    if waiter is not None and not waiter.done():
                        waiter.set_exception(AuditUnavailable(f"the audit record is not JSON data: {exc}"))
                    continue
                seqs.append(head.seq)
                kinds.append(str(record.get("kind", "")))
                when = record.get("time")
                times.append(when if isinstance(when, str) else None)
                lines.append(line[:-1])  # without the newline; the export adds it back
                if waiter is not None:
                    waiters.append(waiter)
            if lines:
                await conn.execute(_APPEND, (seqs, kinds, times, lines, head.seq, head.hash))
        return head, len(lines), waiters

    def _opening_record(self, reason: str, head: ChainHead, now: float) -> AuditRecord:
        """`open` when the chain starts here; else `resume`: a replica joined, or this one recovered."""
        if head.seq == 0:
            return open_record(file_name(1), None, "new", now, None, store="postgresql")
        detail = None
        if reason == "recovery":
            detail = {
                "error": self._error,
                "failed_since": iso_time(self._failed_since),
                "refused": self._refused,
                "expected_seq": self._head.seq,
            }
        return {
            "v": FORMAT_VERSION,
            "kind": "resume",
            "time": iso_time(now),
            "file": file_name(1),
            "reason": reason,
            "torn": None,
            "detail": detail,
            "key_id": None,
            "writer": _writer(),
        }

    def _failed(self, message: str, now: float) -> None:
        if not self._broken:
            log.error("audit trail write failed: %s", message)
            self._failed_since = now
        self._broken = True
        self._error = message
        self._failures += 1
        self._retry_at = now + self._retry_interval

    def _refuse(self, batch: list[Pending], why: str) -> None:
        for _, waiter in batch:
            self._refused += 1
            if waiter is not None and not waiter.done():
                waiter.set_exception(AuditUnavailable(f"the audit trail cannot be written ({why}): refused"))

    def _observe(self, records: int, seconds: float, ok: bool) -> None:
        if self._on_write is not None:
            self._on_write(records, seconds, ok)

    # -- the connection -------------------------------------------------------------------------

    async def _connect(self) -> None:
        await self._disconnect()
        try:
            async with asyncio.timeout(self._timeout):
                conn = await psycopg.AsyncConnection.connect(
                    self._dsn,
                    autocommit=True,
                    connect_timeout=max(1, int(self._timeout)),
                    application_name="mcp-broker-audit",
                )
                try:
                    await conn.execute(
                        "SELECT set_config('synchronous_commit', %s, false),"
                        " set_config('statement_timeout', %s, false)",
                        (self._synchronous_commit, str(max(1, int(self._timeout * 1000)))),
                    )
                    await create_tables(conn)
                except BaseException:
                    await conn.close()
                    raise
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise AuditUnavailable(f"cannot open the audit trail in {self._where}: {_why(exc)}") from None
        self._conn = conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()


# -- reading the trail back -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportedTrail:
    path: Path | None
    """The JSON Lines file written (None when the table is empty)."""
    records: int
    last_seq: int
    head: ChainHead
    """What the head row said in the same snapshot: the last record the writers committed."""


async def stream_lines(dsn: str, *, batch: int = 2000) -> AsyncIterator[bytes | ChainHead]:
    """Yield the head row, then every record's line (with its newline) in seq order, from one snapshot."""
    async with await psycopg.AsyncConnection.connect(dsn, application_name="mcp-broker-audit-export") as conn:
        await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        await conn.set_read_only(True)
        async with conn.transaction():
            row = await (
                await conn.execute("SELECT seq, hash FROM broker_audit_head WHERE id = 1")
            ).fetchone()
            yield ChainHead(int(row[0]), str(row[1])) if row else ChainHead(0, GENESIS)
            async with conn.cursor(name="broker_audit_export") as cursor:
                cursor.itersize = batch
                await cursor.execute("SELECT line FROM broker_audit ORDER BY seq")
                async for (line,) in cursor:
                    yield bytes(line) + b"\n"


async def export_trail(dsn: str, directory: Path) -> ExportedTrail:
    """Write the table as `directory/audit-000000000001.jsonl` (the verifier's file layout).

    File IO runs in a thread, in chunks of about a megabyte: an export may run inside a broker.
    """
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    path = directory / file_name(1)
    head = ChainHead(0, GENESIS)
    records = 0
    last_line = b""
    chunk = bytearray()
    out = await asyncio.to_thread(path.open, "wb")
    try:
        async for item in stream_lines(dsn):
            if isinstance(item, ChainHead):
                head = item
                continue
            chunk += item
            records += 1
            last_line = item
            if len(chunk) >= EXPORT_CHUNK:
                await asyncio.to_thread(out.write, bytes(chunk))
                chunk.clear()
        await asyncio.to_thread(out.write, bytes(chunk))
    finally:
        await asyncio.to_thread(out.close)
    if records == 0:
        await asyncio.to_thread(path.unlink)
        return ExportedTrail(None, 0, 0, head)
    last = orjson.loads(last_line)
    last_seq = last["seq"] if isinstance(last, dict) and type(last.get("seq")) is int else 0
    return ExportedTrail(path, records, last_seq, head)


async def verify_table(
    dsn: str, directory: Path, public_key: Ed25519PublicKey | None = None
) -> tuple[ExportedTrail, VerifyReport]:
    """Export the table into `directory` and verify it; records cut off the end are a `truncation`."""
    exported = await export_trail(dsn, directory)
    if exported.path is None:
        raise FileNotFoundError(f"no audit records in {describe_dsn(dsn)}")
    report = await asyncio.to_thread(verify, directory, public_key)
    if report.ok and (report.last_seq != exported.head.seq or report.last_hash != exported.head.hash):
        report.first_break = Break(
            str(exported.path),
            exported.records,
            "truncation",
            f"the head row names seq {exported.head.seq} ({exported.head.hash}), but the table ends at seq "
            f"{report.last_seq}: records were cut off its end",
            report.last_seq,
        )
    return exported, report
