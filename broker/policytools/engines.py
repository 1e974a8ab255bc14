"""The broker's own engine adapters, built from a policy directory the way the broker builds them.

Every decision a policy command reports comes from `broker.policy.cedar.CedarEngine` or a
managed `broker.policy.opa.OpaEngine`, constructed by `broker.app.make_engine` from a
`PolicyConfig`: what the tools test is what the broker runs. Each engine is started once
per command (one OPA process), and stopped whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from broker.app import make_engine
from broker.config import DEFAULT_CEDAR_SCHEMA, OpaConfig, PolicyConfig
from broker.policy.decision import Decision
from broker.policy.engine import AuthzRequest, PolicyEngine, PolicyLoadError
from broker.policytools.common import ToolError, shown

ENGINES = ("cedar", "opa")
ENGINE_CHOICES = ("cedar", "opa", "both")
OPA_TIMEOUT_MS = 10_000.0
"""A decision's deadline here: generous, a slow CI machine must not turn into failing cases."""
OPA_CACHE = "mcp-authz-broker"


def engine_names(choice: str) -> tuple[str, ...]:
    return ENGINES if choice == "both" else (choice,)


def default_schema(given: str | None) -> Path:
    """`--schema`, else schemas/mcp.cedarschema here, else the one shipped next to the broker."""
    if given:
        path = Path(given)
        if not path.is_file():
            raise ToolError(f"the Cedar schema {given} does not exist; pass --schema FILE")
        return path
    here = Path("schemas") / "mcp.cedarschema"
    return here if here.is_file() else DEFAULT_CEDAR_SCHEMA


def find_opa(given: str | None) -> str:
    """`--opa`, else $MCP_BROKER_OPA, else `opa` on PATH, else the binary scripts/install-opa.sh caches."""
    for candidate in (given, os.environ.get("MCP_BROKER_OPA")):
        if candidate:
            if not Path(candidate).is_file():
                raise ToolError(f"the OPA binary {candidate} does not exist; run scripts/install-opa.sh")
            return candidate
    on_path = shutil.which("opa")
    if on_path:
        return on_path
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / OPA_CACHE
    built = sorted(cache.glob("opa-v*/opa"))
    if built:
        return str(built[-1])
    raise ToolError(
        "OPA is not installed: run scripts/install-opa.sh (or pass --opa PATH / set MCP_BROKER_OPA), "
        "or use --engine cedar"
    )


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Where one set of policies lives: `<policies>/cedar`, `<policies>/rego`, and the Cedar schema."""

    policies: Path
    schema: Path
    label: str
    """How messages name this set: the directory, or `policies/ at REF`."""

    def require(self, names: Sequence[str]) -> None:
        if not self.policies.is_dir():
            raise ToolError(f"the policy directory {self.label} does not exist; pass --policies DIR")
        for name in names:
            folder = self.policies / ("cedar" if name == "cedar" else "rego")
            if not folder.is_dir():
                raise ToolError(
                    f"{self.label} has no {folder.name}/ folder for the {name} engine; "
                    f"pass --policies DIR or --engine {'opa' if name == 'cedar' else 'cedar'}"
                )


def build_engine(name: str, policy_set: PolicySet, opa_binary: str | None) -> PolicyEngine:
    config = PolicyConfig(
        engine="cedar" if name == "cedar" else "opa",
        path=policy_set.policies.resolve(),
        cedar_schema=policy_set.schema.resolve(),
        watch=False,
        opa=OpaConfig(mode="managed", binary=opa_binary or "opa", timeout_ms=OPA_TIMEOUT_MS),
    )
    engine, _ = make_engine(config)
    return engine


@contextlib.asynccontextmanager
async def started_engines(
    names: Sequence[str], policy_set: PolicySet, opa_binary: str | None
) -> AsyncIterator[dict[str, PolicyEngine]]:
    """The named engines over `policy_set`, started together and always stopped."""
    policy_set.require(names)
    engines = {name: build_engine(name, policy_set, opa_binary) for name in names}
    results = await asyncio.gather(*(e.start() for e in engines.values()), return_exceptions=True)
    try:
        failures = [(n, r) for n, r in zip(engines, results, strict=True) if isinstance(r, BaseException)]
        for name, error in failures:
            if not isinstance(error, PolicyLoadError):
                raise error
            raise ToolError(
                f"the {name} policies in {policy_set.label} do not load; fix the problems above "
                "(mcp-broker policy check lists them all)",
                details=relative_messages(str(error), policy_set.policies),
            )
        yield engines
    finally:
        await asyncio.gather(*(e.stop() for e in engines.values()), return_exceptions=True)


def relative_messages(text: str, policies: Path) -> list[str]:
    """Engine messages name files relative to the policy directory's parent or absolutely: show them short."""
    parent = policies.resolve().parent
    prefix = shown(parent)
    lines = []
    for line in text.splitlines():
        line = line.replace(str(parent) + os.sep, "" if prefix == "." else prefix + os.sep)
        if prefix != "." and line.startswith(policies.resolve().name + os.sep):
            line = prefix + os.sep + line
        lines.append(line)
    return lines


async def decide_all(
    engine: PolicyEngine, requests: Sequence[AuthzRequest], chunk: int = 500
) -> list[Decision]:
    """Every request's decision, in order, in batches (one OPA query per batch)."""
    decisions: list[Decision] = []
    for start in range(0, len(requests), chunk):
        decisions.extend(await engine.decide_many(list(requests[start : start + chunk])))
    return decisions
