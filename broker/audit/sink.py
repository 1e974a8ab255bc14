"""The seam between the broker and wherever audit records go: the AuditSink protocol.

The file sink (file_sink.py) is the embedded default; a PostgreSQL sink for several
replicas (issue #9) implements the same four members. The contract that matters to the
request path is `append`: it returns only once the record is as durable as the sink's
configured durability promises, and raises AuditUnavailable when it cannot promise that,
so the caller can fail closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from broker.errors import SERVER_ERROR, BrokerError

AuditRecord = dict[str, Any]
"""One record as built by `broker.audit.records`: JSON data (str keys, no NaN, ints within 64 bits)."""

SinkState = Literal["starting", "ok", "degraded", "failed", "closed"]


class AuditUnavailable(BrokerError):
    """The audit record could not be written: the call must not be answered as if it had been.

    A BrokerError so the front maps it like every other broker error (JSON-RPC -32000,
    reason `audit_unavailable`); it is not a Rejection because it can happen after the
    upstream was called (the record carries the upstream's outcome).
    """

    code = SERVER_ERROR
    reason = "audit_unavailable"


@dataclass(frozen=True, slots=True)
class SinkStatus:
    """What /readyz and /metrics need to know about a sink, without touching the disk."""

    state: SinkState
    ready: bool
    """False when appends would fail (fail_closed after an error, not started, closed)."""
    error: str | None = None
    """The last write error while it persists."""
    file: str | None = None
    """The file now being written."""
    seq: int = 0
    """The sequence number of the last durable record."""
    pending: int = 0
    """Records accepted, not yet written."""
    held: int = 0
    """Degraded mode: records kept in memory while the sink cannot write."""
    dropped: int = 0
    """Degraded mode: records lost because the memory buffer was full (a `gap` record follows)."""
    records: int = 0
    """Records written since start (sink records such as checkpoints included)."""
    batches: int = 0
    """Writes (group commits) since start."""
    failures: int = 0
    """Write failures since start."""

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "ready": self.ready,
            "error": self.error,
            "file": self.file,
            "seq": self.seq,
            "pending": self.pending,
            "held": self.held,
            "dropped": self.dropped,
            "records": self.records,
            "batches": self.batches,
            "failures": self.failures,
        }


class AuditSink(Protocol):
    async def start(self) -> None:
        """Open (or resume) the trail; raise AuditUnavailable if it cannot be written."""

    async def append(self, record: AuditRecord) -> None:
        """Add one record; return once it is durable per the configured durability.

        The sink takes ownership of `record` (it adds `seq`, `prev` and `hash`). Raises
        AuditUnavailable when the record cannot be written (fail_closed); in the degraded
        mode it returns and the record is kept in memory until the sink can write again.
        """

    async def close(self) -> None:
        """Write what is pending, mark the end of the trail, release the files."""

    def status(self) -> SinkStatus: ...

    def accepting(self) -> bool:
        """Whether an append now would be tried (False while a failed trail waits for its retry)."""
