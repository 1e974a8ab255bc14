"""Load balancing across instances of one upstream, with real processes.

Each stdio instance of the counter fixture counts its own hits, which proves where calls
went; the crashy fixture's `pid` tool names the instance that answered and its `slow` tool
keeps one instance busy; the echo example runs over Streamable HTTP on free ports. Members
are killed with SIGKILL by PID. The listener stands in for the gateway and records what the
group tells it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from broker.config import RestartPolicy, Timeouts, UpstreamConfig
from broker.errors import BrokerError, UpstreamUnavailable
from broker.gateway.sessions import DownstreamSession
from broker.upstream.connection import PendingCall, UpstreamConnection, UpstreamRpcError
from broker.upstream.group import (
    Balance,
    Upstream,
    UpstreamGroup,
    listing_difference,
    member_configs,
    same_catalog,
)
from broker.upstream.listing import UpstreamListing
from broker.upstream.supervisor import UpstreamState
from tests.fixtures import REPO_ROOT, example_script, fixture_script, running_server

pytestmark = pytest.mark.anyio

COUNTER_TOOLS = ("hit", "hit_destructive", "count", "reset")


class RecordingGateway:
    """What the gateway hears from the group (availability) and from members (their messages)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.listings: list[UpstreamListing] = []
        self.group: UpstreamGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def upstream_ready(self, upstream: Upstream, listing: UpstreamListing) -> None:
        self.events.append(("ready", tuple(tool["name"] for tool in listing.tools)))
        self.listings.append(listing)

    def upstream_down(self, upstream: Upstream, reason: str) -> None:
        self.events.append(("down", reason))

    def upstream_notification(self, conn: UpstreamConnection, message: Any, call: PendingCall | None) -> None:
        # As the gateway does on list_changed from an upstream's own connection (owner None).
        if message.get("method") == "notifications/tools/list_changed" and conn.owner is None and self.group:
            task = asyncio.ensure_future(self.group.refresh())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def upstream_request(
        self, conn: UpstreamConnection, message: Any, call: PendingCall | None
    ) -> dict[str, Any]:
        raise UpstreamRpcError({"code": -32601, "message": "no caller in this test"})

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


def stdio_config(
    script: Path, name: str, *, backoff: float = 0.5, isolation: str = "shared"
) -> UpstreamConfig:
    return UpstreamConfig(
        name=name,
        transport="stdio",
        command=sys.executable,
        args=(str(script),),
        cwd=REPO_ROOT,
        isolation=isolation,  # type: ignore[arg-type]
        timeouts=Timeouts(call=10.0, startup=30.0),
        restart=RestartPolicy(initial_backoff=backoff, max_backoff=backoff),
    )


@contextlib.asynccontextmanager
async def running_group(
    config: UpstreamConfig,
    members: Sequence[UpstreamConfig],
    gateway: RecordingGateway,
    balance: Balance = "round_robin",
) -> AsyncIterator[UpstreamGroup]:
    group = UpstreamGroup(
        config, members, gateway, gateway, client_name="test", client_version="0", balance=balance
    )
    gateway.group = group
    try:
        await group.start()
        yield group
    finally:
        await group.stop()


async def call(conn: UpstreamConnection | None, tool: str, **arguments: Any) -> str:
    assert conn is not None
    reply = await conn.request("tools/call", {"name": tool, "arguments": arguments}, timeout=10)
    assert "result" in reply, reply
    assert not reply["result"].get("isError"), reply
    text: str = reply["result"]["content"][0]["text"]
    return text


async def through(group: UpstreamGroup, tool: str, key: object | None = None, **arguments: Any) -> str:
    return await call(await group.connection_for(key), tool, **arguments)


async def member_pids(group: UpstreamGroup) -> list[int]:
    return [int(await call(member.connection, "pid")) for member in group.members]


async def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def out_of_rotation(group: UpstreamGroup, index: int) -> Callable[[], bool]:
    return lambda: not group.status()[index]["in_rotation"]


# -- distribution ------------------------------------------------------------------------------


async def test_round_robin_spreads_calls_evenly_over_stdio_instances() -> None:
    config = stdio_config(fixture_script("counter"), "counter")
    gateway = RecordingGateway()
    async with running_group(config, member_configs(config, instances=3), gateway) as group:
        assert group.state is UpstreamState.READY
        assert gateway.events == [("ready", COUNTER_TOOLS)]  # one announcement for three instances
        assert group.info is not None and group.info.server_info["name"] == "counter"

        for _ in range(30):
            await through(group, "hit")
        await asyncio.gather(*(through(group, "hit") for _ in range(30)))

        hits = [int(await call(member.connection, "count")) for member in group.members]
        assert hits == [20, 20, 20]
        assert group.last_error is None
        assert [s["in_rotation"] for s in group.status()] == [True, True, True]


@pytest.mark.parametrize(("balance", "calls_to_busy"), [("least_in_flight", 0), ("round_robin", 3)])
async def test_least_in_flight_sends_calls_to_the_idle_instance(balance: Balance, calls_to_busy: int) -> None:
    config = stdio_config(fixture_script("crashy"), "crashy")
    gateway = RecordingGateway()
    async with running_group(config, member_configs(config, instances=2), gateway, balance) as group:
        pids = await member_pids(group)
        slow = asyncio.create_task(through(group, "slow", seconds=2))
        members = group.members
        await wait_for(lambda: any(m.connection is not None and m.connection.in_flight for m in members))
        busy = next(i for i, m in enumerate(members) if m.connection is not None and m.connection.in_flight)

        answered = Counter([int(await through(group, "pid")) for _ in range(6)])
        assert answered[pids[busy]] == calls_to_busy
        assert answered[pids[1 - busy]] == 6 - calls_to_busy
        assert await slow == "slept 2.0"

        # Both idle again: equal loads share the calls in turn.
        assert Counter([int(await through(group, "pid")) for _ in range(4)]) == {pids[0]: 2, pids[1]: 2}


# -- failover ----------------------------------------------------------------------------------


async def test_a_killed_instance_is_skipped_and_comes_back() -> None:
    config = stdio_config(fixture_script("crashy"), "crashy", backoff=2.0)
    gateway = RecordingGateway()
    async with running_group(config, member_configs(config, instances=3), gateway) as group:
        pids = await member_pids(group)
        kill(pids[1])
        await wait_for(out_of_rotation(group, 1))
        assert group.state is UpstreamState.READY
        assert group.last_error is not None and group.last_error.startswith(
            "2/3 instances ready; instance 2:"
        )

        answered = Counter([int(await through(group, "pid")) for _ in range(12)])
        assert answered == {pids[0]: 6, pids[2]: 6}
        assert gateway.kinds() == ["ready"]  # never down: two instances served throughout

        await wait_for(lambda: group.status()[1]["in_rotation"])  # restarted after its backoff
        restarted = int(await call(group.members[1].connection, "pid"))
        assert restarted not in pids
        assert group.restarts == 1
        assert {int(await through(group, "pid")) for _ in range(3)} == {pids[0], restarted, pids[2]}
        assert gateway.kinds() == ["ready"]


async def test_the_group_is_down_only_when_no_instance_is_ready() -> None:
    config = stdio_config(fixture_script("crashy"), "crashy", backoff=3.0)
    gateway = RecordingGateway()
    async with running_group(config, member_configs(config, instances=2), gateway) as group:
        pids = await member_pids(group)
        kill(pids[0])
        await wait_for(out_of_rotation(group, 0))
        assert gateway.kinds() == ["ready"]
        assert group.state is UpstreamState.READY

        kill(pids[1])
        await wait_for(lambda: gateway.kinds() == ["ready", "down"])
        assert group.state is UpstreamState.BACKOFF
        with pytest.raises(
            UpstreamUnavailable, match=r"^upstream crashy is not available: 0/2 instances ready"
        ):
            await group.connection_for(None)
        with pytest.raises(UpstreamUnavailable):
            await group.ready_connection()

        await wait_for(lambda: group.state is UpstreamState.READY)
        assert gateway.kinds() == ["ready", "down", "ready"]  # back with the first instance to return
        assert int(await through(group, "pid")) not in pids


async def test_a_session_sticks_to_its_instance_and_moves_when_it_dies() -> None:
    config = stdio_config(fixture_script("crashy"), "crashy", backoff=5.0)
    gateway = RecordingGateway()
    session = DownstreamSession("s-1", "2025-11-25", {}, {}, "streamable-http")
    principal = ("principal", "alice")  # a stateless caller's key: not weakly referable
    async with running_group(config, member_configs(config, instances=3), gateway) as group:
        pids = await member_pids(group)
        by_session, by_principal, stateless = [], [], []
        for _ in range(6):
            by_session.append(int(await through(group, "pid", session)))
            by_principal.append(int(await through(group, "pid", principal)))
            stateless.append(int(await through(group, "pid")))
        assert len(set(by_session)) == 1 and len(set(by_principal)) == 1
        assert set(stateless) == set(pids)  # calls without a key still rotate

        home = by_session[0]
        kill(home)
        await wait_for(out_of_rotation(group, pids.index(home)))
        moved = [int(await through(group, "pid", session)) for _ in range(6)]
        assert len(set(moved)) == 1 and moved[0] != home and moved[0] in pids

        await group.release_session(session)
        await group.release_session(principal)


async def test_per_session_connections_stay_on_their_instance_and_close_with_the_session() -> None:
    config = stdio_config(fixture_script("counter"), "counter", isolation="per_session")
    gateway = RecordingGateway()
    async with running_group(config, member_configs(config, instances=2), gateway) as group:
        bob, carol = ("principal", "bob"), ("principal", "carol")
        conn = await group.connection_for(bob)
        assert conn not in [m.connection for m in group.members]  # its own connection, not a member's
        for _ in range(3):
            assert await group.connection_for(bob) is conn
            await call(conn, "hit")
        assert group.session_connection(bob) is conn
        assert int(await call(conn, "count")) == 3
        await group.connection_for(carol)
        holders = [[m.session_connection(key) is not None for m in group.members] for key in (bob, carol)]
        assert holders in ([[True, False], [False, True]], [[False, True], [True, False]])

        await group.release_session(bob)
        assert conn.closed and group.session_connection(bob) is None
        await group.release_session(carol)
        assert group.session_connection(carol) is None


# -- consistency -------------------------------------------------------------------------------


async def test_an_instance_with_another_listing_is_kept_out_of_rotation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counter = stdio_config(fixture_script("counter"), "counter")
    impostor = UpstreamConfig(
        name="counter",
        transport="stdio",
        command=sys.executable,
        args=(str(fixture_script("crashy")),),
        cwd=REPO_ROOT,
        timeouts=counter.timeouts,
    )
    gateway = RecordingGateway()
    caplog.set_level(logging.ERROR, logger="broker.upstream.group")
    async with running_group(counter, [counter, counter, impostor], gateway) as group:
        await wait_for(lambda: sum(s["state"] == "ready" for s in group.status()) == 3)
        assert tuple(t["name"] for t in group.listing.tools) == COUNTER_TOOLS
        assert gateway.events == [("ready", COUNTER_TOOLS)]  # judged once all had answered
        assert [s["in_rotation"] for s in group.status()] == [True, True, False]
        assert group.state is UpstreamState.READY
        expected = (
            "instance 3: offers a different listing: missing tools: count, hit, hit_destructive, reset; "
            "extra tools: crash, ok, pid, slow"
        )
        assert group.last_error == f"2/3 instances ready; {expected}"
        assert [r.getMessage() for r in caplog.records] == [
            f"upstream counter: {expected.replace(':', '', 1)}; kept out of rotation until it agrees"
        ]

        for _ in range(6):
            await through(group, "hit")  # the impostor would answer "Unknown tool"
        assert [int(await call(m.connection, "count")) for m in group.members[:2]] == [3, 3]


async def test_a_rolling_change_moves_the_group_when_most_instances_have_moved(tmp_path: Path) -> None:
    script = str(example_script("drifting_server"))
    base = stdio_config(example_script("drifting_server"), "weather")
    members = [
        dataclasses.replace(base, args=(script, "--state-file", str(tmp_path / f"mode-{i}")))
        for i in range(3)
    ]
    gateway = RecordingGateway()
    async with running_group(base, members, gateway) as group:
        honest = group.listing
        assert gateway.listings == [honest]

        async def switch(index: int) -> None:
            assert await call(group.members[index].connection, "switch") == "get_forecast is now drifted"

        await switch(0)  # one of three moved: it leaves the rotation, the group's catalog stays
        await wait_for(out_of_rotation(group, 0))
        assert gateway.listings == [honest] and same_catalog(group.listing, honest)
        assert "changed tools: get_forecast" in (group.last_error or "")

        await switch(1)  # two of three: the group moves, the last honest one leaves the rotation
        await wait_for(out_of_rotation(group, 2))
        assert len(gateway.listings) == 2 and same_catalog(gateway.listings[1], group.listing)
        assert not same_catalog(group.listing, honest)
        assert [s["in_rotation"] for s in group.status()] == [True, True, False]

        await switch(2)
        await wait_for(lambda: all(s["in_rotation"] for s in group.status()))
        assert len(gateway.listings) == 2 and group.last_error is None


def test_listing_difference_names_what_differs() -> None:
    ref = UpstreamListing(tools=({"name": "a"}, {"name": "b", "description": "x"}), prompts=({"name": "p"},))
    other = UpstreamListing(
        tools=({"name": "b", "description": "y"}, {"name": "c"}), prompts=({"name": "p"},)
    )
    assert listing_difference(ref, other) == "missing tools: a; extra tools: c; changed tools: b"
    assert listing_difference(ref, ref) == "the same items in another order"


def test_member_configs_one_per_url_or_copies_of_a_command() -> None:
    stdio = stdio_config(fixture_script("counter"), "counter")
    assert member_configs(stdio, instances=3) == [stdio, stdio, stdio]
    http = UpstreamConfig(name="echo", transport="streamable_http", url="http://127.0.0.1:1/mcp")
    urls = ["http://127.0.0.1:2/mcp", "http://127.0.0.1:3/mcp"]
    assert [m.url for m in member_configs(http, urls=urls)] == urls
    assert [m.url for m in member_configs(http)] == [http.url]
    with pytest.raises(ValueError, match="for the HTTP transports"):
        member_configs(stdio, urls=urls)
    with pytest.raises(ValueError, match="instances is for stdio"):
        member_configs(http, instances=2)
    with pytest.raises(ValueError, match="listed twice"):
        member_configs(http, urls=[urls[0], urls[0]])
    with pytest.raises(ValueError, match="every member carries the group's name"):
        UpstreamGroup(
            http,
            [UpstreamConfig(name="other", transport="streamable_http", url=urls[0])],
            RecordingGateway(),
            RecordingGateway(),
            client_name="t",
            client_version="0",
        )


# -- Streamable HTTP ---------------------------------------------------------------------------


def http_config(urls: list[str], ping_interval: float) -> tuple[UpstreamConfig, list[UpstreamConfig]]:
    config = UpstreamConfig(
        name="echo",
        transport="streamable_http",
        url=urls[0],
        timeouts=Timeouts(call=10.0, startup=10.0, ping_interval=ping_interval, ping=0.5),
        restart=RestartPolicy(initial_backoff=0.5, max_backoff=1.0),
    )
    return config, member_configs(config, urls=urls)


async def test_http_instances_take_turns_and_survive_a_kill() -> None:
    with (
        running_server(example_script("echo_server")) as one,
        running_server(example_script("echo_server")) as two,
    ):
        config, members = http_config([one.url, two.url], ping_interval=0.3)
        gateway = RecordingGateway()
        async with running_group(config, members, gateway) as group:
            chosen = []
            for i in range(4):
                conn = await group.connection_for(None)
                chosen.append([m.connection for m in group.members].index(conn))
                assert await call(conn, "echo", text=f"hello {i}") == f"hello {i}"
            assert chosen == [0, 1, 0, 1]

            kill(two.pid)
            await wait_for(out_of_rotation(group, 1))  # the next failed ping
            assert group.status()[1]["target"] == two.url
            for i in range(6):
                assert await through(group, "echo", text=f"again {i}") == f"again {i}"
            assert group.state is UpstreamState.READY
            assert gateway.kinds() == ["ready"]


async def test_a_dead_http_instance_costs_at_most_one_failed_call() -> None:
    with (
        running_server(example_script("echo_server")) as one,
        running_server(example_script("echo_server")) as two,
    ):
        config, members = http_config([one.url, two.url], ping_interval=30.0)
        async with running_group(config, members, RecordingGateway()) as group:
            kill(two.pid)
            two.process.wait(10)
            failed = 0
            for i in range(6):
                try:
                    await through(group, "echo", text=str(i))
                except BrokerError:
                    failed += 1
            assert failed <= 1
