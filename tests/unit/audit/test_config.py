"""AuditConfig: the defaults are valid; each wrong value is named by its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.audit.config import AuditConfig


def test_defaults() -> None:
    config = AuditConfig()
    assert config.durability == "fsync" and config.failure_mode == "fail_closed"
    assert config.directory == Path("audit") and config.signing_key is None and config.include_request


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"durability": "sometimes"}, "audit.durability"),
        ({"failure_mode": "fail_open"}, "audit.failure_mode"),
        ({"group_commit_window": -1}, "audit.group_commit_window"),
        ({"group_commit_window": 2.0}, "audit.group_commit_window"),
        ({"rotate_interval": float("nan")}, "audit.rotate_interval"),
        ({"checkpoint_interval": float("inf")}, "audit.checkpoint_interval"),
        ({"rotate_bytes": 100}, "audit.rotate_bytes"),
        ({"rotate_bytes": -1}, "audit.rotate_bytes"),
        ({"checkpoint_records": 1.5}, "audit.checkpoint_records"),
        ({"degraded_buffer": 0}, "audit.degraded_buffer"),
        ({"retry_interval": -0.1}, "audit.retry_interval"),
    ],
)
def test_invalid_values_name_their_key(settings: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        AuditConfig(**settings)
