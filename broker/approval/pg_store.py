"""PostgresApprovalStore: the approvals of several broker replicas in one PostgreSQL database.

Why PostgreSQL here: an approval asked for through replica A may be decided through the
approvals API of replica B, and the caller's call on A must then see the grant and use it
exactly once. So the store has the same compare-and-set semantics as SqliteApprovalStore,
and each of them is ONE statement whose WHERE clause carries the expected state (PostgreSQL
re-checks it on the newest row version when two replicas race): a decision applies only to
a row still `pending`, a single-use grant is consumed by only one UPDATE, and `expire_due`
locks the rows it expires (SKIP LOCKED), so an overdue approval is returned by exactly one
replica.

Connections come from a small psycopg pool (docs/scale-out.md has the measurement against
one connection behind a lock): replicas make concurrent calls, and a pool replaces a
connection broken by a database restart on its own. Each statement runs in autocommit
(committed when it returns, with the server's synchronous_commit); `expire_due` is the one
explicit transaction. Every database error is an ApprovalStoreError: approvals fail closed.

The row layout is the SQLite store's (same columns, the same JSON body as bytes), so the
two stores read and write approvals through the same functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from broker.approval.model import Approval, ApprovalStatus
from broker.approval.store import ApprovalStoreError, _approval, _body

SCHEMA_VERSION: Final = 1
"""The `approvals` row of `broker_schema`; bumped (with a migration) when the table changes."""

SCHEMA_LOCK: Final = 0x6D63_7062_726B  # "mcpbrk": one advisory lock for every broker schema change
"""Replicas starting together create the tables one after the other, never racing on the catalog."""

_TABLES: Final = """
CREATE TABLE IF NOT EXISTS broker_schema (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS broker_approvals (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    requester_key TEXT NOT NULL,
    target TEXT NOT NULL,
    argument_digest TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    usable_until DOUBLE PRECISION,
    reusable BOOLEAN NOT NULL DEFAULT FALSE,
    used_at DOUBLE PRECISION,
    body BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS broker_approvals_binding
    ON broker_approvals (requester_key, target, argument_digest);
CREATE INDEX IF NOT EXISTS broker_approvals_status ON broker_approvals (status, expires_at);
CREATE INDEX IF NOT EXISTS broker_approvals_created ON broker_approvals (created_at);
"""

Pool = AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]


class PostgresApprovalStore:
    """The ApprovalStore protocol (broker/approval/store.py) on PostgreSQL, shared by replicas."""

    def __init__(
        self,
        dsn: str,
        *,
        min_connections: int = 1,
        max_connections: int = 4,
        timeout: float = 5.0,
        statement_timeout: float = 5.0,
    ) -> None:
        """`dsn`: a libpq connection string or URI (resolved from a secret reference by the caller).

        `timeout`: seconds to wait for a connection (a database that is down fails calls after
        this long, never hangs them); `statement_timeout`: seconds a statement may run or wait
        for a row lock before the database cancels it.
        """
        self._dsn = dsn
        self._timeout = timeout
        self._statement_timeout_ms = max(1, int(statement_timeout * 1000))
        self._pool: Pool = AsyncConnectionPool(
            dsn,
            min_size=min_connections,
            max_size=max_connections,
            open=False,
            timeout=timeout,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout))},
            configure=self._configure,
            name="broker-approvals",
        )

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(
            "SELECT set_config('statement_timeout', %s, false)", (str(self._statement_timeout_ms),)
        )

    async def open(self) -> None:
        """Connect once directly (so a wrong password or host is reported as such, at once), create
        or check the tables with that connection, then open the pool."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=max(1, int(self._timeout))
            )
            async with conn:
                await self._create_tables(conn)
            await self._pool.open(wait=True, timeout=self._timeout)
        except psycopg.Error as exc:
            await self._pool.close()
            raise ApprovalStoreError(f"cannot open the approval store in PostgreSQL: {_why(exc)}") from None

    async def _create_tables(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            await conn.execute(_TABLES)
            row = await (
                await conn.execute("SELECT version FROM broker_schema WHERE component = 'approvals'")
            ).fetchone()
            if row is None:
                await conn.execute(
                    "INSERT INTO broker_schema (component, version) VALUES ('approvals', %s)",
                    (SCHEMA_VERSION,),
                )
            elif row[0] != SCHEMA_VERSION:
                raise ApprovalStoreError(
                    f"the approval tables are at schema version {row[0]}, this broker knows "
                    f"{SCHEMA_VERSION}: upgrade the broker (or migrate the database)"
                )

    async def _execute(self, query: str, params: Sequence[Any]) -> psycopg.AsyncCursor[TupleRow]:
        """One autocommitted statement; its cursor is already fetched-from-able (rows are client side)."""
        try:
            async with self._pool.connection() as conn:
                return await conn.execute(query, params)
        except psycopg.Error as exc:
            raise ApprovalStoreError(f"the approval store (PostgreSQL) failed: {_why(exc)}") from None

    async def _one(self, query: str, params: Sequence[Any]) -> Approval | None:
        try:
            async with self._pool.connection() as conn:
                row = await (await conn.execute(query, params)).fetchone()
        except psycopg.Error as exc:
            raise ApprovalStoreError(f"the approval store (PostgreSQL) failed: {_why(exc)}") from None
        return _approval(row[0], row[1]) if row else None

    async def _many(self, query: str, params: Sequence[Any]) -> list[Approval]:
        try:
            async with self._pool.connection() as conn:
                rows = await (await conn.execute(query, params)).fetchall()
        except psycopg.Error as exc:
            raise ApprovalStoreError(f"the approval store (PostgreSQL) failed: {_why(exc)}") from None
        return [_approval(body, used) for body, used in rows]

    async def insert(self, approval: Approval) -> None:
        await self._execute(
            "INSERT INTO broker_approvals (id, status, requester_key, target, argument_digest, created_at,"
            " expires_at, usable_until, reusable, used_at, body)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (
                approval.id,
                approval.status.value,
                approval.requester_key,
                approval.target,
                approval.argument_digest,
                approval.created_at,
                approval.expires_at,
                approval.usable_until,
                approval.reusable,
                approval.used_at,
                _body(approval),
            ),
        )

    async def get(self, approval_id: str) -> Approval | None:
        return await self._one("SELECT body, used_at FROM broker_approvals WHERE id = %s", (approval_id,))

    async def for_retry(self, requester_key: str, target: str, digest: str, now: float) -> Approval | None:
        return await self._one(
            "SELECT body, used_at FROM broker_approvals WHERE requester_key = %s AND target = %s"
            " AND argument_digest = %s AND ((status = 'pending' AND expires_at > %s) OR"
            " (status = 'approved' AND usable_until > %s AND (used_at IS NULL OR reusable)))"
            " ORDER BY created_at DESC LIMIT 1",
            (requester_key, target, digest, now, now),
        )

    async def decide(self, approval: Approval, expected: ApprovalStatus) -> bool:
        cursor = await self._execute(
            "UPDATE broker_approvals SET status = %s, usable_until = %s, reusable = %s, body = %s"
            " WHERE id = %s AND status = %s",
            (
                approval.status.value,
                approval.usable_until,
                approval.reusable,
                _body(approval),
                approval.id,
                expected.value,
            ),
        )
        return cursor.rowcount == 1

    async def consume(self, approval_id: str, now: float) -> bool:
        cursor = await self._execute(
            "UPDATE broker_approvals SET used_at = %s WHERE id = %s AND status = 'approved'"
            " AND usable_until > %s AND (used_at IS NULL OR reusable)",
            (now, approval_id, now),
        )
        return cursor.rowcount == 1

    async def listing(self, status: ApprovalStatus | None, limit: int) -> list[Approval]:
        if status is None:
            return await self._many(
                "SELECT body, used_at FROM broker_approvals ORDER BY created_at DESC LIMIT %s", (limit,)
            )
        return await self._many(
            "SELECT body, used_at FROM broker_approvals WHERE status = %s ORDER BY created_at DESC LIMIT %s",
            (status.value, limit),
        )

    async def expire_due(self, now: float) -> list[Approval]:
        try:
            async with self._pool.connection() as conn, conn.transaction():
                rows = await (
                    await conn.execute(
                        "SELECT body, used_at FROM broker_approvals WHERE status = 'pending'"
                        " AND expires_at <= %s ORDER BY created_at FOR UPDATE SKIP LOCKED",
                        (now,),
                    )
                ).fetchall()
                expired = [
                    _approval(body, used).decided(ApprovalStatus.EXPIRED, at=now, note="no decision in time")
                    for body, used in rows
                ]
                if expired:
                    async with conn.cursor() as cursor:
                        await cursor.executemany(
                            "UPDATE broker_approvals SET status = 'expired', body = %s"
                            " WHERE id = %s AND status = 'pending'",
                            [(_body(approval), approval.id) for approval in expired],
                        )
        except psycopg.Error as exc:
            raise ApprovalStoreError(f"the approval store (PostgreSQL) failed: {_why(exc)}") from None
        return expired

    async def close(self) -> None:
        await self._pool.close()


def _why(exc: psycopg.Error) -> str:
    """The server's or libpq's message on one line, without the DSN (it may hold a password)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no detail'}"
