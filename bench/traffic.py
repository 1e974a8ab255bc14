"""What each traffic check costs per call, and the `limits` library against the hand-written store.

    python bench/traffic.py [--calls 20000] [--no-redis]

Rows, each timed per call with perf_counter_ns on one event loop (p50/p99 in microseconds), with
1000 rotating callers so counters are spread like real traffic and every check is admitted:

- rate limit, 1 and 5 matching rules (1 limit each), through `RateLimiter.check`:
  `memory://` (MemoryRateStore, hand-written), `async+memory://` (the `limits` library's in-memory
  storage, sliding-window counter) and, unless --no-redis, `redis://` against a real redis-server
  started on 127.0.0.1 on a free port and stopped after (a round trip per limit, concurrent);
- the `limits` strategy called directly (`hit` per limit, no broker code), for reference;
- quota charge (2 matching budgets), concurrency gate enter+exit (uncontended), breaker
  admit+record, cache key+hit.

Absolute numbers move with the machine; the ratios between rows transfer. The broker's whole
per-call budget is about 500 us (docs/traffic.md).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from limits import parse  # noqa: E402
from limits.aio.storage import MemoryStorage  # noqa: E402
from limits.aio.strategies import SlidingWindowCounterRateLimiter  # noqa: E402

from broker.traffic.breaker import BreakerPolicy, CircuitBreaker  # noqa: E402
from broker.traffic.cache import ResponseCache  # noqa: E402
from broker.traffic.concurrency import ConcurrencyGate  # noqa: E402
from broker.traffic.patterns import Match, NamePattern  # noqa: E402
from broker.traffic.quota import QuotaBook, QuotaRule  # noqa: E402
from broker.traffic.ratelimit import RateLimiter, RateLimitRule  # noqa: E402
from broker.traffic.ratestore import rate_store_for  # noqa: E402
from broker.traffic.subject import TrafficSubject  # noqa: E402

CALLERS = [
    TrafficSubject(f"Agent:bot-{i}", f"tenant-{i % 10}", "github__search", "github") for i in range(1000)
]


def rules(count: int) -> list[RateLimitRule]:
    """`count` rules that all match every call; big limits so every check is admitted."""
    per = [("principal",), ("tenant",), ("tool",), ("principal", "tool"), ()]
    return [
        RateLimitRule(f"r{i}", Match(tool=NamePattern("github__*")), per[i % 5], (parse("1000000/minute"),))
        for i in range(count)
    ]


async def timed(calls: int, step: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    for i in range(min(1000, calls)):  # warm-up
        await step(i)
    samples: list[int] = []
    for i in range(calls):
        start = time.perf_counter_ns()
        await step(i)
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    return samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000


async def bench_limiter(uri: str, count: int, calls: int) -> tuple[float, float]:
    limiter = RateLimiter(rules(count), rate_store_for(uri))
    try:
        return await timed(calls, lambda i: limiter.check(CALLERS[i % 1000]))
    finally:
        await limiter.aclose()


async def bench_limits_direct(count: int, calls: int) -> tuple[float, float]:
    strategy = SlidingWindowCounterRateLimiter(MemoryStorage())
    items = [parse("1000000/minute") for _ in range(count)]

    async def step(i: int) -> None:
        for n, item in enumerate(items):
            await strategy.hit(item, f"r{n}", CALLERS[i % 1000].principal)

    return await timed(calls, step)


async def bench_others(calls: int) -> list[tuple[str, tuple[float, float]]]:
    book = QuotaBook(
        [
            QuotaRule("tenant", Match(), ("tenant",), 10**12, "day", ((NamePattern("github__*"), 5),)),
            QuotaRule("principal", Match(), ("principal",), 10**12, "hour"),
        ]
    )
    gate = ConcurrencyGate(per_upstream=32, per_principal=8, max_waiters=64, max_wait=5)
    breaker = CircuitBreaker("github", BreakerPolicy())
    cache = ResponseCache(60, 10000)
    result = {"content": [{"type": "text", "text": "x" * 200}], "isError": False}
    arguments = {"query": "is:open label:bug", "repo": "acme/api", "limit": 20}
    for caller in CALLERS:
        cache.put(cache.key(caller.principal, "github__search", arguments), result)

    async def gate_step(i: int) -> None:
        async with gate.slot("github", CALLERS[i % 1000].principal):
            pass

    async def breaker_step(i: int) -> None:
        breaker.record(breaker.admit(), True)

    async def cache_step(i: int) -> None:
        cache.get(cache.key(CALLERS[i % 1000].principal, "github__search", arguments))

    return [
        ("quota charge, 2 budgets", await timed(calls, lambda i: book.charge(CALLERS[i % 1000]))),
        ("concurrency gate enter+exit", await timed(calls, gate_step)),
        ("breaker admit+record", await timed(calls, breaker_step)),
        ("cache key+hit (200 B result)", await timed(calls, cache_step)),
    ]


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: run scripts/install-services.sh or pass --no-redis")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    process.kill()
    raise SystemExit("redis-server did not start")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args()
    calls = max(1000, min(args.calls, 200_000))

    rows: list[tuple[str, tuple[float, float]]] = []
    baseline: dict[int, float] = {}
    for count in (1, 5):
        memory = await bench_limiter("memory://", count, calls)
        baseline[count] = memory[0]
        rows.append((f"rate limit, {count} rule(s), memory:// (hand-written)", memory))
        rows.append(
            (
                f"rate limit, {count} rule(s), async+memory:// (limits)",
                await bench_limiter("async+memory://", count, calls),
            )
        )
        rows.append((f"limits strategy direct, {count} hit(s)", await bench_limits_direct(count, calls)))
    if not args.no_redis:
        process, url = start_redis()
        try:
            for count in (1, 5):
                rows.append(
                    (
                        f"rate limit, {count} rule(s), redis:// (limits, real server)",
                        await bench_limiter(url, count, calls // 4),
                    )
                )
        finally:
            process.terminate()
            process.wait(timeout=5)
    rows += await bench_others(calls)

    print(f"{calls} calls per row, Python {sys.version.split()[0]}")
    print(f"{'check':<58} {'p50 us':>8} {'p99 us':>8} {'x memory p50':>13}")
    for name, (p50, p99) in rows:
        count = 5 if "5 " in name else 1
        compared = name.startswith(("rate limit", "limits strategy"))
        ratio = f"{p50 / baseline[count]:.1f}" if compared else ""
        print(f"{name:<58} {p50:>8.1f} {p99:>8.1f} {ratio:>13}")


if __name__ == "__main__":
    asyncio.run(main())
