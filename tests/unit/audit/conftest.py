"""Real audit trails in tmp dirs: a real key pair, a real FileAuditSink, real files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.audit.config import AuditConfig
from broker.audit.file_sink import FileAuditSink
from broker.audit.fileops import FileOps
from broker.audit.signing import generate_key_pair, load_public_key


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    public_key: Ed25519PublicKey


@pytest.fixture
def keys(tmp_path: Path) -> KeyPair:
    private, public = tmp_path / "signing.pem", tmp_path / "signing.pub.pem"
    generate_key_pair(private, public)
    return KeyPair(private, public, load_public_key(public))


class CountingFileOps(FileOps):
    """The real system calls, counted: how many writes and fdatasyncs a workload really made."""

    def __init__(self) -> None:
        self.writes = 0
        self.syncs = 0
        self.dir_syncs = 0

    def write(self, fd: int, data: bytes) -> None:
        self.writes += 1
        super().write(fd, data)

    def sync(self, fd: int) -> None:
        self.syncs += 1
        super().sync(fd)

    def sync_dir(self, directory: Path) -> None:
        self.dir_syncs += 1
        super().sync_dir(directory)


class Clock:
    """A settable wall clock for rotation and checkpoint ages (the sink reads time only through it)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


SinkFactory = Callable[..., FileAuditSink]


@pytest.fixture
def make_sink(tmp_path: Path) -> SinkFactory:
    def make(
        directory: Path | None = None, *, ops: FileOps | None = None, clock: Any = None, **config: Any
    ) -> FileAuditSink:
        settings = AuditConfig(directory=directory or tmp_path / "audit", **config)
        if clock is None:
            return FileAuditSink(settings, ops=ops)
        return FileAuditSink(settings, ops=ops, clock=clock)

    return make


def record(i: int, **extra: Any) -> dict[str, Any]:
    """A small request-shaped record; `i` makes it findable."""
    return {
        "v": 1,
        "kind": "request",
        "time": f"2026-01-07T10:00:{i % 60:02d}.000000Z",
        "i": i,
        "principal": {
            "type": "Agent",
            "id": f"agent-{i % 3}",
            "tenant": "acme",
            "roles": [],
            "acting_for": None,
        },
        "session": f"s{i % 2}",
        "method": "tools/call",
        "target": {"kind": "tool", "id": "notes__read", "name": "read"},
        "decision": {"effect": "allow" if i % 4 else "deny", "policies": ["p"]},
        **extra,
    }
