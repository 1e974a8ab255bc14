"""The live decisions feed: what an ended call leaves in it, bounds, filters, waking streams."""

from __future__ import annotations

import asyncio
import time

import pytest

from broker.catalog.catalog import Catalog
from broker.dashboard.feed import DecisionFeed, FeedFilter
from broker.errors import PolicyDenied
from broker.gateway.call import Call, Target
from broker.gateway.gateway import Gateway, internal_call
from broker.gateway.sessions import SessionRegistry
from broker.identity.principal import Principal
from broker.policy.decision import Decision, Effect, Reason

pytestmark = pytest.mark.anyio

SECRET = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"


def ended_call(
    tool: str = "notes__delete_note",
    who: Principal | None = None,
    effect: Effect = Effect.ALLOW,
) -> Call:
    call = internal_call("tools/call", {"name": tool, "arguments": {"note_id": "a", "api_key": SECRET}})
    call.principal = who or Principal("User", "alice", tenant="acme", roles=("engineer",))
    server, _, name = tool.partition("__")
    call.target = Target(server, "tool", name, True, {"type": "Tool", "id": tool, "server": server})
    call.decision = Decision(effect, (Reason("engineers-change-things", "engineers may"),), "cedar", "v1")
    call.arrived_ns = time.time_ns() - 3_000_000
    call.upstream_ms = 1.5
    call.credential = "mcpb_secret-token-0123456789"
    return call


def test_an_entry_says_who_called_what_and_how_it_ended_without_arguments_or_credentials() -> None:
    feed = DecisionFeed(10)
    feed.record(ended_call(), "ok")
    [entry] = feed.entries()
    shown = entry.to_json()
    assert shown["principal"] == "User:alice@acme" and shown["target"] == "notes__delete_note"
    assert shown["server"] == "notes" and shown["method"] == "tools/call"
    assert shown["effect"] == "allow" and shown["outcome"] == "ok"
    assert shown["reasons"] == [{"id": "engineers-change-things", "message": "engineers may"}]
    assert shown["latency_ms"] >= 3.0 and shown["upstream_ms"] == 1.5
    text = repr(shown)
    assert SECRET not in text and "note_id" not in text and "mcpb_secret" not in text


def test_a_call_refused_before_any_decision_shows_as_none() -> None:
    feed = DecisionFeed(10)
    call = internal_call("tools/call", {"name": "nope"})
    feed.record(call, "unknown_tool")
    [entry] = feed.entries()
    assert (entry.principal, entry.target, entry.effect, entry.latency_ms) == ("-", "-", "none", None)


def test_the_feed_keeps_the_newest_entries_only() -> None:
    feed = DecisionFeed(3)
    for _ in range(5):
        feed.record(ended_call(), "ok")
    assert [e.seq for e in feed.entries()] == [3, 4, 5]
    assert [e.seq for e in feed.entries(after=4)] == [5]
    assert [e.seq for e in feed.recent(2)] == [5, 4]
    assert feed.last_seq == 5


def test_filters_match_substrings_and_the_exact_effect() -> None:
    feed = DecisionFeed(10)
    feed.record(ended_call("notes__delete_note"), "ok")
    feed.record(ended_call("fs__read_file", Principal("Agent", "bot")), "policy_denied")
    feed.record(ended_call("notes__read_note", effect=Effect.REQUIRE_APPROVAL), "approval_denied")
    only = FeedFilter.from_query({"target": "NOTES__", "effect": "allow"})
    assert [e.target for e in feed.entries(only=only)] == ["notes__delete_note"]
    assert [e.principal for e in feed.entries(only=FeedFilter.from_query({"principal": "agent:"}))] == [
        "Agent:bot"
    ]
    denied = FeedFilter.from_query({"outcome": "denied"})
    assert [e.outcome for e in feed.recent(10, denied)] == ["approval_denied", "policy_denied"]
    assert denied.query() == {"outcome": "denied"}


async def test_a_waiting_stream_wakes_on_the_next_entry_and_ends_on_close() -> None:
    feed = DecisionFeed(10)
    assert not await feed.wait_after(0, 0.05)  # nothing yet: the keep-alive timeout
    waiting = asyncio.create_task(feed.wait_after(0, 5))
    await asyncio.sleep(0)
    feed.record(ended_call(), "ok")
    assert await asyncio.wait_for(waiting, 1) is True
    assert await feed.wait_after(0, 5) is True  # already newer: no wait
    closing = asyncio.create_task(feed.wait_after(1, 5))
    await asyncio.sleep(0)
    feed.close()
    assert await asyncio.wait_for(closing, 1) is False
    assert feed.closed and await feed.wait_after(1, 5) is False


def test_upstream_latency_percentiles_come_from_the_kept_calls() -> None:
    feed = DecisionFeed(200)
    for ms in range(1, 101):
        call = ended_call()
        call.upstream_ms = float(ms)
        feed.record(call, "ok")
    latencies = feed.upstream_latencies(["notes", "fs"])
    assert latencies == {"notes": {"p50": 51.0, "p99": 100.0, "samples": 100}}


async def test_the_gateway_hands_every_routed_call_to_the_feed_and_nothing_else() -> None:
    gateway = Gateway(
        server_name="t",
        server_version="0",
        instructions=None,
        catalog=Catalog([], {}),
        sessions=SessionRegistry(idle_timeout=60, max_sessions=10),
        page_size=0,
    )
    feed = DecisionFeed(10)
    gateway.decision_feed = feed.record
    gateway._observe(ended_call(), {"content": []}, None)
    denied = ended_call("fs__write_file", effect=Effect.DENY)
    gateway._observe(denied, None, PolicyDenied("no"))
    gateway._observe(internal_call("tools/list", {}), {"tools": []}, None)  # a list: not a routed call
    assert [(e.target, e.outcome) for e in feed.entries()] == [
        ("notes__delete_note", "ok"),
        ("fs__write_file", "policy_denied"),
    ]
