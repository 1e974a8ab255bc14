"""`audit:` in the broker config: where the trail goes, how durable, how it rotates and is signed.

The broker config maps a YAML section `audit:` one to one onto AuditConfig (same key
names, seconds as numbers, paths resolved against the config file's directory by the
loader). Every field has a default, so `audit:` may be absent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from broker.postgres import PostgresSettings

Durability = Literal["fsync", "write", "none"]
SinkKind = Literal["file", "postgresql"]
FailureMode = Literal["fail_closed", "degraded"]

DURABILITY_MODES: tuple[Durability, ...] = ("fsync", "write", "none")
FAILURE_MODES: tuple[FailureMode, ...] = ("fail_closed", "degraded")


@dataclass(frozen=True, slots=True)
class AuditConfig:
    enabled: bool = True
    """Write the audit trail. Off only for development: then no call has a record."""
    directory: Path = Path("audit")
    """The directory of the trail: audit-<first seq>.jsonl files, audit.checkpoint, a lock file."""
    durability: Durability = "fsync"
    """When `append` returns: `fsync` once the record is on stable storage (survives power loss),
    `write` once the operating system has it (survives a broker crash, not an OS crash),
    `none` once it is queued in memory (a crash loses what was not yet written)."""
    group_commit_window: float = 0.0
    """Seconds the writer waits after the first record of a batch for more to join it. 0: records
    that arrive while a write is in flight form the next batch anyway (no added latency)."""
    rotate_bytes: int = 64 * 1024 * 1024
    """Start a new file once the current one holds this many bytes; 0 = never by size."""
    rotate_interval: float = 86400.0
    """Start a new file once the current one is this many seconds old; 0 = never by age."""
    checkpoint_records: int = 1000
    """Write a signed checkpoint after this many records (needs `signing_key`); 0 = never by count."""
    checkpoint_interval: float = 60.0
    """Write a signed checkpoint this many seconds after the last one if records were written since;
    0 = never by time."""
    signing_key: Path | None = None
    """Ed25519 private key (PEM, unencrypted) for checkpoints (`mcp-broker audit keygen` makes one).
    None: no checkpoints; the chain still detects edits, but not a rewrite of the whole tail."""
    failure_mode: FailureMode = "fail_closed"
    """`fail_closed`: a record that cannot be written fails its call (AuditUnavailable).
    `degraded`: calls go on; records are held in memory (up to `degraded_buffer`) and written
    when the disk works again; records beyond that are lost and a `gap` record says how many."""
    degraded_buffer: int = 10000
    """Degraded mode: records held in memory while the sink cannot write."""
    retry_interval: float = 1.0
    """After a write error, seconds before the sink tries the disk again (appends in between fail
    fast in fail_closed mode)."""
    sink: SinkKind = "file"
    """`file`: hash-chained JSON Lines in `directory` (one broker per directory). `postgresql`: one
    chain in a PostgreSQL table shared by every replica (`postgresql` settings)."""
    postgresql: PostgresSettings | None = None
    """Where the `postgresql` sink writes."""
    include_request: bool = True
    """Decision records carry the authorization request the engine saw (arguments redacted) under
    `request`, so `mcp-broker policy diff --log` can replay them against new policies."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.durability not in DURABILITY_MODES:
            problems.append(
                f"audit.durability: {self.durability!r} is not one of {', '.join(DURABILITY_MODES)}"
            )
        if self.failure_mode not in FAILURE_MODES:
            problems.append(
                f"audit.failure_mode: {self.failure_mode!r} is not one of {', '.join(FAILURE_MODES)}"
            )
        for name in ("group_commit_window", "rotate_interval", "checkpoint_interval", "retry_interval"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                problems.append(f"audit.{name}: expected a finite number >= 0, got {value!r}")
        if self.sink == "postgresql":
            if self.postgresql is None:
                problems.append("audit.postgresql: the postgresql sink needs postgresql.dsn")
            if self.failure_mode != "fail_closed":
                problems.append("audit.failure_mode: the postgresql sink always fails closed")
            if self.signing_key is not None:
                problems.append("audit.signing_key: signed checkpoints are written by the file sink only")
        if self.group_commit_window > 1.0:
            problems.append("audit.group_commit_window: at most 1 second (every call waits for it)")
        for name in ("rotate_bytes", "checkpoint_records"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(f"audit.{name}: expected an integer >= 0, got {value!r}")
        if isinstance(self.rotate_bytes, int) and 0 < self.rotate_bytes < 4096:
            problems.append("audit.rotate_bytes: at least 4096 (or 0 for never)")
        if not isinstance(self.degraded_buffer, int) or self.degraded_buffer < 1:
            problems.append(f"audit.degraded_buffer: expected an integer >= 1, got {self.degraded_buffer!r}")
        if problems:
            raise ValueError("; ".join(problems))
