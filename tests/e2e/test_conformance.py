"""The MCP conformance suite (`conformance server --suite all`, Node 22) through the real broker.

The conformance fixture (tests/fixtures/conformance_server.py) is run three ways: served directly
over Streamable HTTP (the reference), behind the broker as a stdio upstream, and behind the broker as
a Streamable HTTP upstream (both with `namespace: false`, since the suite calls fixed names). The
broker runs must have exactly the reference's check statuses, check by check (INFO traces aside),
except for the one spec-allowed difference in TOLERATED (JSON instead of SSE answers), and the
`test_reconnection` call of `server-sse-polling` must be answered as it is directly.

Each full suite run takes ~2-4 s; the reference run and the HTTP-upstream run are shared by the module.
A failing comparison prints every differing check: scenario, check id, both statuses and messages.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult

from tests.fixtures import REPO_ROOT, running_server
from tests.support.broker import (
    CONFORMANCE_JS,
    NODE22,
    broker_config,
    http_upstream,
    running_broker,
    stdio_upstream,
)
from tests.support.conformance import (
    ConformanceRun,
    Tolerance,
    compare_runs,
    only_scenarios,
    responses_seen,
    run_conformance,
    without_scenarios,
)

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "conformance_server.py"

pytestmark = pytest.mark.fail_if_missing(
    not (NODE22.exists() and CONFORMANCE_JS.exists()),
    reason="Node tools missing: run scripts/install-node-tools.sh",
)


def _answered_as_json(ref: dict[str, Any] | None, cand: dict[str, Any] | None, run: ConformanceRun) -> bool:
    """The broker answered the 3 parallel `tools/list` POSTs as application/json, so the suite had no
    SSE stream to test and reported INFO ("Server returned JSON for all requests - SSE streaming is
    optional") instead of SUCCESS. Allowed by the transport spec and a documented choice of the
    broker's front (broker/front/http.py: JSON unless something travels before the result)."""
    if ref is None or ref["status"] != "SUCCESS" or cand is None or cand["status"] != "INFO":
        return False
    details = cand.get("details") or {}
    return details.get("numSseStreams") == 0 and all(
        r.get("type") == "json" for r in details.get("results", [])
    )


# The only status differences accepted: (scenario, check id) -> (why, predicate on the two checks).
TOLERATED: dict[tuple[str, str], tuple[str, Tolerance]] = {
    ("server-sse-multiple-streams", "server-sse-streams-functional"): (
        "the broker answers tools/list as application/json (spec-allowed), so the suite's SSE check is INFO",
        _answered_as_json,
    ),
}


@pytest.fixture(scope="module")
def direct_run(tmp_path_factory: pytest.TempPathFactory) -> ConformanceRun:
    """The suite against the fixture served directly over Streamable HTTP (the reference)."""
    outdir = tmp_path_factory.mktemp("conformance") / "direct"
    with running_server(FIXTURE) as fixture:
        return run_conformance(fixture.url, outdir)


@dataclass
class BrokerRun:
    run: ConformanceRun
    log: str


@pytest.fixture(scope="module")
def http_upstream_run(tmp_path_factory: pytest.TempPathFactory) -> BrokerRun:
    """The suite through the broker, the fixture being a Streamable HTTP upstream of it.

    `timeouts.call: 5` bounds the reconnection bug below (the call otherwise hangs for the default 60 s
    and the suite gives up on it after ~25 s); every other scenario answers in well under a second.
    """
    directory = tmp_path_factory.mktemp("broker-http-upstream")
    with running_server(FIXTURE) as fixture:
        upstream = http_upstream(fixture.url, namespace=False, timeouts={"call": RECONNECT_BUG_CALL_TIMEOUT})
        with running_broker(directory, broker_config({"conformance": upstream})) as broker:
            run = run_conformance(broker.url, directory / "results")
            return BrokerRun(run, broker.log())


RECONNECT_BUG_CALL_TIMEOUT = 5
SSE_POLLING = "server-sse-polling"
RECONNECTION_BUG = (
    "BUG: a Streamable HTTP upstream that closes the POST SSE stream mid-call (SEP-1699: priming event "
    "with id + retry, then close) is never resumed with GET + Last-Event-ID; the call hangs until "
    "timeouts.call (broker/upstream/http.py _pump_events/_read_response)"
)


def _assert_broker_matches(direct: ConformanceRun, broker_run: ConformanceRun, log: str) -> None:
    comparison = compare_runs(direct, broker_run, TOLERATED)
    print(f"direct: {direct.summary_line}  broker: {broker_run.summary_line}")
    print(comparison.report())
    assert broker_run.scenarios() == direct.scenarios(), (
        f"scenarios run: missing through the broker {sorted(direct.scenarios() - broker_run.scenarios())}, "
        f"extra {sorted(broker_run.scenarios() - direct.scenarios())}\n{broker_run.describe()}"
    )
    assert not comparison.regressions, (
        f"the broker's conformance results differ from the fixture's own\n"
        f"direct: {direct.describe()}\nbroker: {broker_run.describe()}\n\n{comparison.report()}\n\n"
        f"broker log (tail):\n{log[-4000:]}"
    )
    direct_ok = {k for k, c in direct.checks.items() if c["status"] == "SUCCESS"}
    broker_ok = {k for k, c in broker_run.checks.items() if c["status"] == "SUCCESS"}
    assert broker_ok == direct_ok - {d.key for d in comparison.tolerated}
    assert not any(c["status"] == "FAILURE" for c in broker_run.checks.values()), broker_run.describe()


def _assert_reconnection_answered(direct: ConformanceRun, broker_run: ConformanceRun) -> None:
    """The status checks of `server-sse-polling` are two WARNINGs either way; what matters is that the
    `test_reconnection` call was answered at all (the suite traces the bodies as INFO)."""
    expected = _without_close_flag(responses_seen(direct, SSE_POLLING))
    assert expected, f"sanity: the direct run traced no test_reconnection result\n{direct.describe()}"
    got = _without_close_flag(responses_seen(broker_run, SSE_POLLING))
    assert got == expected, f"test_reconnection through the broker: {got}\ndirectly: {expected}"


def _without_close_flag(responses: list[Any]) -> list[Any]:
    """The fixture reports whether it closed the stream mid-call; it does so only for 2025-11-25 clients
    (the broker's upstream session), not for the suite's 2025-03-26 probe. The answer is what must match."""
    text = json.dumps(responses)
    flag = r"\(stream closed mid-call: (true|false)\)"
    return list(json.loads(re.sub(flag, "(stream closed mid-call: *)", text)))


def test_direct_fixture_passes_the_suite(direct_run: ConformanceRun) -> None:
    """Sanity: the fixture itself passes every check (the 2 WARNINGs are the suite's 2025-03-26 probe)."""
    assert direct_run.returncode == 0, direct_run.describe()
    counts = direct_run.counts()
    assert counts["FAILURE"] == 0, direct_run.describe()
    assert counts["SUCCESS"] == 44, direct_run.describe()
    assert len(direct_run.scenarios()) == 32, sorted(direct_run.scenarios())


def test_broker_with_stdio_upstream_matches_direct(direct_run: ConformanceRun, tmp_path: Path) -> None:
    config = broker_config({"conformance": stdio_upstream(FIXTURE, "--transport", "stdio", namespace=False)})
    with running_broker(tmp_path, config) as broker:
        broker_run = run_conformance(broker.url, tmp_path / "through-broker-stdio")
        log = broker.log()
    _assert_broker_matches(direct_run, broker_run, log)
    _assert_reconnection_answered(direct_run, broker_run)
    assert broker_run.returncode == 0, broker_run.describe()


def test_broker_with_http_upstream_matches_direct(
    direct_run: ConformanceRun, http_upstream_run: BrokerRun
) -> None:
    """Every scenario but server-sse-polling (see the next test) matches the direct run."""
    _assert_broker_matches(
        without_scenarios(direct_run, [SSE_POLLING]),
        without_scenarios(http_upstream_run.run, [SSE_POLLING]),
        http_upstream_run.log,
    )


def test_broker_with_http_upstream_server_sse_polling(
    direct_run: ConformanceRun, http_upstream_run: BrokerRun
) -> None:
    _assert_broker_matches(
        only_scenarios(direct_run, [SSE_POLLING]), only_scenarios(http_upstream_run.run, [SSE_POLLING]), ""
    )
    _assert_reconnection_answered(direct_run, http_upstream_run.run)
    assert http_upstream_run.run.returncode == 0, http_upstream_run.run.describe()


@pytest.mark.anyio
async def test_http_upstream_closing_the_post_stream_mid_call(tmp_path: Path) -> None:
    """Minimal reproduction with the SDK client: `test_reconnection` answers directly in ~0.3 s; through
    the broker (either era downstream: the upstream session is the same) it fails after timeouts.call."""
    with running_server(FIXTURE) as fixture:
        async with Client(fixture.url, mode="legacy") as direct:
            expected = await direct.call_tool("test_reconnection", {})
        assert "stream closed mid-call: true" in expected.content[0].text  # type: ignore[union-attr]
        upstream = http_upstream(fixture.url, namespace=False, timeouts={"call": 3})
        with running_broker(tmp_path, broker_config({"conformance": upstream})) as broker:
            with anyio.fail_after(10):
                async with Client(broker.url, mode="legacy") as client:
                    try:
                        result: CallToolResult | MCPError = await client.call_tool("test_reconnection", {})
                    except MCPError as exc:
                        result = exc
    assert isinstance(result, CallToolResult), f"through the broker: {result!r}; directly: {expected.content}"
    assert result.is_error is not True
    assert result.content == expected.content
