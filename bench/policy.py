"""Decision latency of each policy engine, in process, with the repository's policies.

    python bench/policy.py [--decisions 5000]

For Cedar (embedded) and OPA (managed sidecar on its unix socket): p50/p99 of one
decision on the allow path (one evaluation) and on the require-approval path (Cedar:
two evaluations), and the time to decide a 100-item list (visibility filtering, one
batch). Request documents are built by the broker's own request builder.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker.identity.principal import Principal  # noqa: E402
from broker.policy.cedar import CedarEngine  # noqa: E402
from broker.policy.engine import PolicyEngine  # noqa: E402
from broker.policy.opa import OpaEngine  # noqa: E402
from broker.policy.request import CallFacts, build_request  # noqa: E402
from broker.policy.version import policy_version  # noqa: E402

POLICIES = ROOT / "policies"
SCHEMA = ROOT / "schemas" / "mcp.cedarschema"


def tool(name: str, *, read_only: bool, destructive: bool) -> dict[str, Any]:
    return {
        "type": "Tool",
        "id": f"notes__{name}",
        "name": name,
        "server": "notes",
        "tenants": [],
        "tags": [],
        "annotations": {
            "readOnlyHint": read_only,
            "destructiveHint": destructive,
            "idempotentHint": False,
            "openWorldHint": False,
        },
    }


def opa_binary() -> str:
    done = subprocess.run(
        [str(ROOT / "scripts" / "install-opa.sh")], capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


async def measure(engine: PolicyEngine, decisions: int) -> dict[str, float]:
    engineer = Principal("User", "alice", roles=("engineer",))
    facts = CallFacts("streamable-http", "2025-11-25", "s1")
    allow, _ = build_request(
        engineer,
        "call_tool",
        tool("read_note", read_only=True, destructive=False),
        {"note_id": "welcome"},
        facts,
    )
    approval, _ = build_request(
        engineer,
        "call_tool",
        tool("delete_note", read_only=False, destructive=True),
        {"note_id": "welcome"},
        facts,
    )
    listing = [
        build_request(
            engineer,
            "call_tool",
            tool(f"t{i}", read_only=i % 2 == 0, destructive=i % 3 == 0),
            None,
            facts,
            listing=True,
        )[0]
        for i in range(100)
    ]
    out: dict[str, float] = {}
    for label, request, expected in (("allow", allow, "allow"), ("approval", approval, "require_approval")):
        for _ in range(300):
            await engine.decide(request)
        samples = []
        for _ in range(decisions):
            started = time.perf_counter()
            decision = await engine.decide(request)
            samples.append((time.perf_counter() - started) * 1e6)
        assert decision.effect.value == expected, decision
        samples.sort()
        out[f"{label}_p50_us"] = statistics.median(samples)
        out[f"{label}_p99_us"] = samples[int(0.99 * len(samples))]
    batches = []
    for _ in range(30):
        started = time.perf_counter()
        await engine.decide_many(listing)
        batches.append((time.perf_counter() - started) * 1000)
    out["list100_ms"] = statistics.median(batches)
    return out


async def main(decisions: int) -> None:
    cedar = CedarEngine(POLICIES, SCHEMA)
    opa = OpaEngine(
        mode="managed",
        policy_dir=POLICIES / "rego",
        url=None,
        binary=opa_binary(),
        policy_version=lambda: policy_version(POLICIES, sorted((POLICIES / "rego").rglob("*.rego"))),
    )
    rows = []
    for name, engine in (("cedar (embedded)", cedar), ("opa (managed sidecar, unix socket)", opa)):
        await engine.start()
        try:
            rows.append((name, await measure(engine, decisions)))
        finally:
            await engine.stop()
    print("| engine | allow p50 µs | allow p99 µs | approval p50 µs | approval p99 µs | 100-item list ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(
            f"| {name} | {r['allow_p50_us']:.0f} | {r['allow_p99_us']:.0f} | {r['approval_p50_us']:.0f} | "
            f"{r['approval_p99_us']:.0f} | {r['list100_ms']:.1f} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--decisions", type=int, default=5000)
    asyncio.run(main(parser.parse_args().decisions))
