"""The seam between the broker and a policy engine (embedded Cedar, sidecar OPA)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from broker.policy.decision import Decision

AuthzRequest = dict[str, Any]
"""One authorization request document, as described by schemas/authz-request.schema.json."""


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The outcome of loading or reloading policies: on failure the previous set stays live."""

    ok: bool
    policy_version: str
    message: str = ""


class PolicyEngine(Protocol):
    name: str

    @property
    def policy_version(self) -> str:
        """The version of the policy set in force (git commit of policies/, else a content hash)."""

    async def start(self) -> None:
        """Load policies (and start a sidecar); raise PolicyLoadError if nothing valid can be loaded."""

    async def stop(self) -> None: ...

    async def decide(self, request: AuthzRequest) -> Decision:
        """One decision. Never raises: an engine failure is returned as Decision.failure(...)."""

    async def decide_many(self, requests: Sequence[AuthzRequest]) -> list[Decision]:
        """Decisions for many requests (list filtering), in order. Never raises."""

    async def reload(self) -> LoadResult:
        """Validate the policies on disk and swap them in only if valid; keep the old set otherwise."""


class PolicyLoadError(Exception):
    """No valid policy set could be loaded; the text names the file and line where possible."""
