"""Helpers for the registry's unit tests: listings built from plain definitions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from broker.registry.confusables import Skeletons
from broker.registry.scan import RegistryScanner


@dataclass(frozen=True)
class Listing:
    """The shape of broker.upstream.listing.UpstreamListing that the registry reads."""

    tools: Sequence[dict[str, Any]] = ()
    resource_templates: Sequence[dict[str, Any]] = ()
    prompts: Sequence[dict[str, Any]] = field(default_factory=tuple)


def tool(
    name: str, description: str = "Does one thing.", schema: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    return {"name": name, "description": description, "inputSchema": schema or {"type": "object"}, **extra}


@pytest.fixture(scope="session")
def skeletons() -> Skeletons:
    return Skeletons()


@pytest.fixture(scope="session")
def scanner(skeletons: Skeletons) -> RegistryScanner:
    return RegistryScanner(skeletons=skeletons)
