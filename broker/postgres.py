"""Where a scale-out store reaches PostgreSQL: the settings shared by the approval store and the
audit sink when several broker replicas share one database (docs/scale-out.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SynchronousCommit = Literal["on", "remote_write", "remote_apply"]


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    dsn: str = field(repr=False)
    """libpq connection string or URI, resolved from its secret reference at start (it usually
    carries a password: kept out of repr and logs)."""
    max_connections: int = 4
    """Approval store: the largest connection pool."""
    timeout: float = 5.0
    """Seconds to get a connection (or, for the audit sink, to commit a batch) before failing closed."""
    statement_timeout: float = 5.0
    """Approval store: a statement or row-lock wait longer than this is cancelled."""
    synchronous_commit: SynchronousCommit = "on"
    """Audit sink: how durable a commit must be before a record counts as written."""
