"""Where approvals live, so that a broker restart loses in-flight calls but never approvals.

`ApprovalStore` is deliberately small — insert, read, compare-and-set a decision, consume
a grant, list, expire — so a Redis or PostgreSQL implementation (issue #9) fits it. Every
state change is a compare-and-set on the current status: two approvers racing, or an
approval racing its expiry, have exactly one winner.

`SqliteApprovalStore` is the default: one file, WAL, `synchronous=FULL` (approvals are
rare and must survive a power cut). SQLite calls block, so they run on one thread owned by
the store; the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

import orjson

from broker.approval.model import Approval, ApprovalStatus

T = TypeVar("T")


class ApprovalStoreError(Exception):
    """The store cannot be read or written: approvals fail closed."""


class ApprovalStore(Protocol):
    async def open(self) -> None: ...

    async def insert(self, approval: Approval) -> None: ...

    async def get(self, approval_id: str) -> Approval | None: ...

    async def for_retry(self, requester_key: str, target: str, digest: str, now: float) -> Approval | None:
        """The newest approval an identical call may wait on or use: pending, or granted and usable."""

    async def decide(self, approval: Approval, expected: ApprovalStatus) -> bool:
        """Store `approval`'s decision if its stored status is still `expected` (compare-and-set)."""

    async def consume(self, approval_id: str, now: float) -> bool:
        """Use a grant: true once for a single-use grant, every time for a reusable one, until it lapses."""

    async def listing(self, status: ApprovalStatus | None, limit: int) -> list[Approval]: ...

    async def expire_due(self, now: float) -> list[Approval]:
        """Mark pending approvals past their deadline expired; return them."""

    async def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    requester_key TEXT NOT NULL,
    target TEXT NOT NULL,
    argument_digest TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    usable_until REAL,
    reusable INTEGER NOT NULL DEFAULT 0,
    used_at REAL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_binding ON approvals (requester_key, target, argument_digest);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals (status, expires_at);
"""


def _body(approval: Approval) -> bytes:
    document = approval.summary()
    document["requester_key"] = approval.requester_key
    document["request"] = approval.request
    return orjson.dumps(document)


def _approval(body: bytes, used_at: float | None) -> Approval:
    d = orjson.loads(body)
    return Approval(
        id=d["id"],
        status=ApprovalStatus(d["status"]),
        requester=d["requester"],
        requester_key=d["requester_key"],
        method=d["method"],
        server=d["server"],
        target=d["target"],
        argument_digest=d["argument_digest"],
        arguments=d["arguments"],
        reasons=d["reasons"],
        policy_version=d["policy_version"],
        request=d["request"],
        created_at=d["created_at"],
        expires_at=d["expires_at"],
        session=d["session"],
        decided_at=d["decided_at"],
        approver=d["approver"],
        note=d["note"],
        usable_until=d["usable_until"],
        reuse_seconds=d["reuse_seconds"],
        used_at=used_at,
        channel=d["channel"],
    )


class SqliteApprovalStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="approvals-sqlite")
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, isolation_level=None)  # explicit transactions below
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")  # several brokers may share the file
            db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ApprovalStoreError(f"cannot open the approval store {self._path}: {exc}") from None
        self._db = db

    async def _run(self, work: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, work)
        except sqlite3.Error as exc:
            raise ApprovalStoreError(f"the approval store {self._path} failed: {exc}") from None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise ApprovalStoreError("the approval store is not open")
        return self._db

    async def insert(self, approval: Approval) -> None:
        def work() -> None:
            self._conn().execute(
                "INSERT INTO approvals (id, status, requester_key, target, argument_digest, created_at,"
                " expires_at, usable_until, reusable, used_at, body) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    approval.id,
                    approval.status.value,
                    approval.requester_key,
                    approval.target,
                    approval.argument_digest,
                    approval.created_at,
                    approval.expires_at,
                    approval.usable_until,
                    int(approval.reusable),
                    approval.used_at,
                    _body(approval),
                ),
            )

        await self._run(work)

    async def get(self, approval_id: str) -> Approval | None:
        def work() -> Approval | None:
            row = (
                self._conn()
                .execute("SELECT body, used_at FROM approvals WHERE id = ?", (approval_id,))
                .fetchone()
            )
            return _approval(row[0], row[1]) if row else None

        return await self._run(work)

    async def for_retry(self, requester_key: str, target: str, digest: str, now: float) -> Approval | None:
        def work() -> Approval | None:
            row = (
                self._conn()
                .execute(
                    "SELECT body, used_at FROM approvals WHERE requester_key = ? AND target = ?"
                    " AND argument_digest = ? AND ((status = 'pending' AND expires_at > ?) OR"
                    " (status = 'approved' AND usable_until > ? AND (used_at IS NULL OR reusable = 1)))"
                    " ORDER BY created_at DESC LIMIT 1",
                    (requester_key, target, digest, now, now),
                )
                .fetchone()
            )
            return _approval(row[0], row[1]) if row else None

        return await self._run(work)

    async def decide(self, approval: Approval, expected: ApprovalStatus) -> bool:
        def work() -> bool:
            cursor = self._conn().execute(
                "UPDATE approvals SET status = ?, usable_until = ?, reusable = ?, body = ?"
                " WHERE id = ? AND status = ?",
                (
                    approval.status.value,
                    approval.usable_until,
                    int(approval.reusable),
                    _body(approval),
                    approval.id,
                    expected.value,
                ),
            )
            return cursor.rowcount == 1

        return await self._run(work)

    async def consume(self, approval_id: str, now: float) -> bool:
        def work() -> bool:
            cursor = self._conn().execute(
                "UPDATE approvals SET used_at = ? WHERE id = ? AND status = 'approved'"
                " AND usable_until > ? AND (used_at IS NULL OR reusable = 1)",
                (now, approval_id, now),
            )
            return cursor.rowcount == 1

        return await self._run(work)

    async def listing(self, status: ApprovalStatus | None, limit: int) -> list[Approval]:
        def work() -> list[Approval]:
            if status is None:
                rows = self._conn().execute(
                    "SELECT body, used_at FROM approvals ORDER BY created_at DESC LIMIT ?", (limit,)
                )
            else:
                rows = self._conn().execute(
                    "SELECT body, used_at FROM approvals WHERE status = ? ORDER BY created_at DESC LIMIT ?",
                    (status.value, limit),
                )
            return [_approval(body, used) for body, used in rows.fetchall()]

        return await self._run(work)

    async def expire_due(self, now: float) -> list[Approval]:
        def work() -> list[Approval]:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute(
                    "SELECT body, used_at FROM approvals WHERE status = 'pending' AND expires_at <= ?", (now,)
                ).fetchall()
                expired = [
                    _approval(body, used).decided(ApprovalStatus.EXPIRED, at=now, note="no decision in time")
                    for body, used in rows
                ]
                for approval in expired:
                    db.execute(
                        "UPDATE approvals SET status = 'expired', body = ?"
                        " WHERE id = ? AND status = 'pending'",
                        (_body(approval), approval.id),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return expired

        return await self._run(work)

    async def close(self) -> None:
        def work() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        try:
            await self._run(work)
        finally:
            self._executor.shutdown(wait=False)
