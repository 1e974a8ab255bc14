"""The one workload every path gets: S sessions, each calling `echo` in a closed loop.

At S = 1 that is the sequential latency of a single session; at 16 and 64 the same loop in
parallel sessions gives the throughput and the latency under concurrency. Every level is bounded
twice, in calls and in seconds, so a slow peer gateway shortens its own sample instead of
stretching the run; each answer is checked (a gateway that answers with an error has no numbers).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


@dataclass(frozen=True)
class Endpoint:
    """Where a path's sessions connect: a stdio server command, or a Streamable HTTP URL."""

    target: str | StdioServerParameters
    tool: str = "echo"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    """How much one level may do: per-session calls, a time cap and warm-up calls."""

    sessions: int
    calls_per_session: int
    seconds: float
    warmup_per_session: int
    open_timeout: float = 120.0


@dataclass(frozen=True)
class LevelResult:
    """One path at one concurrency: latencies of the timed calls and what they cost the gateway."""

    sessions: int
    calls: int
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    calls_per_s: float
    gateway_cpu_s: float | None = None

    @property
    def gateway_cpu_ms_per_call(self) -> float | None:
        if self.gateway_cpu_s is None or self.calls == 0:
            return None
        return self.gateway_cpu_s * 1000 / self.calls


def quantile(samples: list[float], q: float) -> float:
    """The q-quantile by rank (no interpolation): p99 of 100 samples is the largest but one."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.asynccontextmanager
async def open_session(endpoint: Endpoint, era: str) -> AsyncIterator[Client]:
    """An SDK client session; headers (a peer's bearer token) need an HTTP client of our own."""
    if endpoint.headers and isinstance(endpoint.target, str):
        timeout = httpx2.Timeout(30.0, read=120.0)
        async with (
            httpx2.AsyncClient(headers=dict(endpoint.headers), timeout=timeout) as http,
            Client(streamable_http_client(endpoint.target, http_client=http), mode=era) as client,
        ):
            yield client
    else:
        async with Client(endpoint.target, mode=era) as client:
            yield client


async def call_echo(client: Client, tool: str, text: str) -> None:
    """One call; an error answer or a wrong echo ends the path's measurement."""
    result = await client.call_tool(tool, {"text": text})
    if result.is_error:
        raise RuntimeError(f"{tool} answered with an error: {result.content!r}"[:300])
    got = [getattr(part, "text", None) for part in result.content]
    if text not in got:
        # Seen with a bridge that shares one stdio server between sessions without remapping
        # JSON-RPC ids: the answer belongs to another session's call with the same id.
        raise RuntimeError(f"wrong answer (crossed sessions?): sent {text!r}, got {got!r}"[:300])


async def run_level(
    endpoint: Endpoint, era: str, budget: Budget, cpu: Callable[[], float] | None = None
) -> LevelResult:
    """Open `budget.sessions` sessions, warm each up, then time their closed loops together.

    Each session lives in its own task from open to close (the SDK's sessions must be closed by
    the task that opened them); two barriers line the loops up so the timed window holds only
    the calls, and the gateway's CPU is read at its edges.
    """
    gate = asyncio.Semaphore(8)  # opening 64 sessions at once would only measure the accept queue
    opened, finished = Countdown(budget.sessions), Countdown(budget.sessions)
    go = asyncio.Event()
    latencies: list[float] = []
    deadline = [0.0]

    async def session(n: int) -> None:
        async with gate:
            stack = contextlib.AsyncExitStack()
            client = await stack.enter_async_context(open_session(endpoint, era))
        async with stack:
            await warm_up(client, endpoint.tool, n, budget.warmup_per_session)
            opened.done()
            await go.wait()
            try:
                for i in range(budget.calls_per_session):
                    if time.perf_counter() >= deadline[0]:
                        break
                    started = time.perf_counter()
                    await call_echo(client, endpoint.tool, f"s{n}-{i}")
                    latencies.append((time.perf_counter() - started) * 1000)
            finally:
                finished.done()

    try:
        async with asyncio.timeout(budget.open_timeout + budget.seconds + 60.0), asyncio.TaskGroup() as group:
            for n in range(budget.sessions):
                group.create_task(session(n))
            async with asyncio.timeout(budget.open_timeout):
                await opened.wait()
            cpu_before = cpu() if cpu else None
            started = time.perf_counter()
            deadline[0] = started + budget.seconds  # stops new calls; those in flight finish
            go.set()
            await finished.wait()
            elapsed = time.perf_counter() - started
            cpu_used = cpu() - cpu_before if cpu is not None and cpu_before is not None else None
    except BaseExceptionGroup as group_error:
        raise first_cause(group_error) from group_error
    return LevelResult(
        sessions=budget.sessions,
        calls=len(latencies),
        elapsed_s=elapsed,
        p50_ms=quantile(latencies, 0.5),
        p99_ms=quantile(latencies, 0.99),
        calls_per_s=len(latencies) / elapsed,
        gateway_cpu_s=cpu_used,
    )


class Countdown:
    """An event set once `count` participants have called `done()` (a barrier that never resets)."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.event = asyncio.Event()
        if count <= 0:
            self.event.set()

    def done(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.event.set()

    async def wait(self) -> None:
        await self.event.wait()


def first_cause(error: BaseException) -> BaseException:
    """The first leaf of an exception group: the failure worth one line in the report."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


async def warm_up(client: Client, tool: str, session: int, calls: int) -> None:
    for i in range(calls):
        await call_echo(client, tool, f"warm-{session}-{i}")
