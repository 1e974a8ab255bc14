"""End to end: the load and fault test of issue #9 (bench/load.py), run briefly.

The same harness as `python bench/load.py`, with fewer sessions and seconds: a real broker
(API-key callers and an approver, the Cedar or Rego policies of tests/support/policies/load, an
fsync'd audit trail, a rate limit), the counter fixture and the echo example over stdio, the
official SDK client in many concurrent sessions, an approver approving through the API, the
counter killed with SIGKILL in the middle (and, with OPA, the OPA sidecar too). Afterwards
the harness checks its invariants — `audit verify` passes, every answered call has exactly one
matching record, nothing was forwarded without an allow, the counter saw exactly the allowed
hits, the faults were recovered from, the broker's RSS stayed bounded — and these tests
assert them, and that each path of the mix was really taken. Timings are printed by the
harness, never asserted here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from bench import load
from tests.support.broker import broker_config, running_broker, stdio_upstream
from tests.support.opa import opa_binary


def check(report: load.EngineReport) -> None:
    assert report.failures == [], "\n".join(report.failures)
    kinds = report.kinds
    assert kinds["echo"].get("ok", 0) > 0
    assert kinds["hit"].get("ok", 0) > 0 and kinds["hit"].get("rate_limited", 0) > 0
    assert kinds["reset"].get("policy_denied", 0) > 0 and "ok" not in kinds["reset"]
    assert kinds["destructive"].get("ok", 0) > 0, "no call completed after an approval"
    assert report.approvals.get("approved", 0) >= kinds["destructive"]["ok"]
    counter = report.counter
    assert counter["hit_before_kill"] > 0 and counter["hit_after_restart"] > 0
    assert counter["hit_before_kill"] + counter["hit_after_restart"] == counter["hit_ok_records"]
    killed = report.faults[0]
    assert killed.what.startswith("kill -9 counter") and killed.new_pid not in (None, killed.old_pid)
    assert report.rss_mb["samples"] > 0


@pytest.mark.slow
def test_cedar_under_load_with_an_upstream_killed_loses_nothing(tmp_path: Path) -> None:
    # A low rate limit, so that calls are refused at any throughput this machine reaches.
    options = load.Options(
        sessions=20, seconds=8, engine="cedar", baseline_seconds=1.5, hit_limit=3, workdir=tmp_path
    )
    direct, (report,) = load.run(options)
    print(load.table(direct, [report]))
    check(report)
    assert "policy_error" not in {reason for answers in report.kinds.values() for reason in answers}


@pytest.mark.slow
def test_opa_under_load_with_the_sidecar_killed_fails_closed_and_recovers(tmp_path: Path) -> None:
    options = load.Options(
        sessions=10,
        seconds=5,
        engine="opa",
        baseline_seconds=1,
        hit_limit=3,
        opa=str(opa_binary()),
        workdir=tmp_path,
    )
    direct, (report,) = load.run(options)
    print(load.table(direct, [report]))
    check(report)
    sidecar = report.faults[1]
    assert sidecar.what == "kill -9 OPA sidecar" and sidecar.new_pid not in (None, sidecar.old_pid)
    assert "policy_error" in sidecar.note, sidecar.note


@pytest.mark.anyio
async def test_a_rate_limited_call_is_not_logged_as_an_unexpected_error(tmp_path: Path) -> None:
    traffic = {"rate_limits": [{"name": "hits", "match": {"tool": "counter__hit"}, "limits": ["1/minute"]}]}
    config = broker_config({"counter": stdio_upstream("counter")}, traffic=traffic)
    with running_broker(tmp_path, config) as broker:
        async with Client(broker.url, mode="legacy") as client:
            await client.call_tool("counter__hit", {})
            with pytest.raises(MCPError) as refused:
                await client.call_tool("counter__hit", {})
            assert refused.value.error.data["reason"] == "rate_limited"
        log = broker.log()
    assert "unexpected error" not in log, log[-2000:]
