"""The `registry:` section of the broker config, as one frozen value.

Parsed here (not in broker/config.py) so the registry can be built and tested on its own;
the config loader calls `registry_settings(raw, policy_dir)` with the section's mapping and
reports each ValueError with the key path it names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from broker.registry.findings import DEFAULT_SEVERITIES, Severity, severity_table
from broker.registry.pins import default_lock_path

UnpinnedMode = Literal["quarantine", "allow"]
ResultAction = Literal["record", "annotate", "strip", "block"]
InvalidSchemaMode = Literal["reject", "skip"]

DEFAULT_MAX_PAYLOAD_BYTES: Final = 1_048_576
DEFAULT_MAX_DEPTH: Final = 32
DEFAULT_MAX_STRING_LENGTH: Final = 262_144
MAX_DEPTH_LIMIT: Final = 200


@dataclass(frozen=True)
class ValidationSettings:
    """Argument checks before the decision (broker/registry/validate.py)."""

    enabled: bool = True
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH
    max_string_length: int = DEFAULT_MAX_STRING_LENGTH
    invalid_schema: InvalidSchemaMode = "reject"


@dataclass(frozen=True)
class RegistrySettings:
    enabled: bool = True
    lock_file: Path = Path("policies") / "registry.lock.yaml"
    unpinned: UnpinnedMode = "quarantine"
    severities: Mapping[str, Severity] = field(default_factory=lambda: dict(DEFAULT_SEVERITIES), hash=False)
    min_blob_length: int = 64
    result_scan: ResultAction = "record"
    validation: ValidationSettings = ValidationSettings()
    dlp_patterns: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Named extra detectors (name → regex) that obligations may ask for by name."""
    dlp_tools: Mapping[str, tuple[dict[str, Any], ...]] = field(default_factory=dict, hash=False)
    """Public tool name (or `server__*`, `*`) → redaction obligations applied to every result."""


_PATTERN_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def registry_settings(
    raw: Mapping[str, Any] | None, policy_dir: Path, base_dir: Path | None = None
) -> RegistrySettings:
    """Build the settings from the config section; raises ValueError naming the bad key.

    `lock_file` defaults to `registry.lock.yaml` in the policy directory; a relative
    `lock_file` is relative to `base_dir` (the config file's directory), like other paths.
    """
    from broker.registry.obligations import parse_obligations  # the obligations module checks shapes

    raw = raw or {}
    known = {
        "enabled",
        "lock_file",
        "unpinned",
        "findings",
        "min_blob_length",
        "result_scan",
        "validation",
        "dlp",
    }
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"registry: unknown key(s) {', '.join(sorted(unknown))}")
    lock = raw.get("lock_file")
    unpinned = raw.get("unpinned", "quarantine")
    if unpinned not in ("quarantine", "allow"):
        raise ValueError("registry.unpinned: must be quarantine or allow")
    result_scan = raw.get("result_scan", "record")
    if result_scan not in ("record", "annotate", "strip", "block"):
        raise ValueError("registry.result_scan: must be record, annotate, strip or block")
    try:
        severities = severity_table(raw.get("findings") or {})
    except ValueError as exc:
        raise ValueError(f"registry.findings: {exc}") from None
    dlp = raw.get("dlp") or {}
    patterns = dict(dlp.get("patterns") or {})
    for name, regex in patterns.items():
        if not _PATTERN_NAME.fullmatch(str(name)):
            raise ValueError(f"registry.dlp.patterns.{name}: names are lower_snake_case")
        try:
            re.compile(str(regex))
        except re.error as exc:
            raise ValueError(f"registry.dlp.patterns.{name}: not a valid regular expression: {exc}") from None
    tools: dict[str, tuple[dict[str, Any], ...]] = {}
    for tool, obligations in (dlp.get("tools") or {}).items():
        try:
            parsed = parse_obligations(obligations, patterns)
        except ValueError as exc:
            raise ValueError(f"registry.dlp.tools.{tool}: {exc}") from None
        tools[str(tool)] = tuple(o.to_json() for o in parsed)
    return RegistrySettings(
        enabled=bool(raw.get("enabled", True)),
        lock_file=_lock_path(lock, policy_dir, base_dir),
        unpinned=unpinned,
        severities=severities,
        min_blob_length=int(raw.get("min_blob_length", 64)),
        result_scan=result_scan,
        validation=_validation(raw.get("validation") or {}),
        dlp_patterns=patterns,
        dlp_tools=tools,
    )


def _lock_path(lock: Any, policy_dir: Path, base_dir: Path | None) -> Path:
    if not lock:
        return default_lock_path(policy_dir)
    path = Path(str(lock))
    return path if path.is_absolute() or base_dir is None else base_dir / path


def _validation(raw: Mapping[str, Any]) -> ValidationSettings:
    invalid = raw.get("invalid_schema", "reject")
    if invalid not in ("reject", "skip"):
        raise ValueError("registry.validation.invalid_schema: must be reject or skip")
    out = ValidationSettings(
        enabled=bool(raw.get("enabled", True)),
        max_payload_bytes=int(raw.get("max_payload_bytes", DEFAULT_MAX_PAYLOAD_BYTES)),
        max_depth=int(raw.get("max_depth", DEFAULT_MAX_DEPTH)),
        max_string_length=int(raw.get("max_string_length", DEFAULT_MAX_STRING_LENGTH)),
        invalid_schema=invalid,
    )
    for name in ("max_payload_bytes", "max_depth", "max_string_length"):
        if getattr(out, name) < 1:
            raise ValueError(f"registry.validation.{name}: must be at least 1")
    if out.max_depth > MAX_DEPTH_LIMIT:
        raise ValueError(
            f"registry.validation.max_depth: at most {MAX_DEPTH_LIMIT} (JSON parsers stop at 255)"
        )
    return out
