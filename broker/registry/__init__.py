"""Tool registry security: pinned definitions, drift quarantine, shadowing and poisoning checks,
argument validation and output DLP (docs/registry.md).

A library: it imports nothing from the front or the gateway; `app.py` builds one
`RegistryGuard`, one `ArgumentValidator` and one `ResultGuard` from the `registry:` section
(`build_registry`) and the request path calls them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from broker.registry.dlp import Redactor
from broker.registry.guard import ItemVerdict, ListingCheck, RegistryGuard
from broker.registry.markers import MarkerScanner
from broker.registry.pins import Pins, load_pins
from broker.registry.results import GuardedResult, ResultGuard
from broker.registry.scan import RegistryScanner
from broker.registry.settings import RegistrySettings, registry_settings
from broker.registry.validate import ArgumentValidator, SchemaHandle

__all__ = [
    "ArgumentValidator",
    "GuardedResult",
    "ItemVerdict",
    "ListingCheck",
    "Registry",
    "RegistryGuard",
    "RegistrySettings",
    "ResultGuard",
    "SchemaHandle",
    "build_registry",
    "registry_settings",
]


@dataclass(frozen=True)
class Registry:
    """The three parts the request path uses, built together from one settings value."""

    guard: RegistryGuard
    validator: ArgumentValidator
    results: ResultGuard
    scanner: RegistryScanner


def build_registry(
    settings: RegistrySettings, upstream_order: list[str], pins: Pins | None = None
) -> Registry:
    """Load the lock file (LockFileError if it is broken: do not start) and build the parts."""
    loaded = pins if pins is not None else load_pins(Path(settings.lock_file))
    scanner = RegistryScanner(
        settings.severities, markers=MarkerScanner(min_blob_length=settings.min_blob_length)
    )
    validator = ArgumentValidator(settings.validation)
    guard = RegistryGuard(settings, loaded, scanner, validator, upstream_order)
    results = ResultGuard(
        scanner,
        Redactor(settings.dlp_patterns),
        default_action=settings.result_scan,
        tool_obligations=settings.dlp_tools,
    )
    return Registry(guard, validator, results, scanner)
